"""The camera protocol: an RGB-D frame with depth aligned to colour, and the intrinsics of that colour image."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from appliance.geometry import Intrinsics


class CameraConfig(Protocol):
    """What every camera backend's config dataclass has: the ``type`` that names its backend."""

    type: str


class CameraError(RuntimeError):
    """The camera is missing, misconfigured or failed; the message says which and how to fix it."""


class CameraTimeout(CameraError):
    """No frame arrived in time."""


@dataclass(frozen=True)
class Frame:
    """One capture: RGB (H, W, 3) uint8, depth (H, W) float32 metres aligned to it (NaN = no reading)."""

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: Intrinsics
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise CameraError(f"colour image must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.depth.shape != self.rgb.shape[:2]:
            raise CameraError(f"depth {self.depth.shape} is not aligned to colour {self.rgb.shape[:2]}")
        if (self.intrinsics.width, self.intrinsics.height) != (self.rgb.shape[1], self.rgb.shape[0]):
            raise CameraError("intrinsics do not describe the colour image's size")


class Camera(ABC):
    """A connected RGB-D source. Use as a context manager."""

    @abstractmethod
    def connect(self) -> Camera: ...

    @abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def read(self, timeout_s: float = 2.0) -> Frame:
        """The next frame; ``CameraTimeout`` when none arrives within ``timeout_s``."""

    def __enter__(self) -> Camera:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()


def depth_from_millimetres(depth_mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres (0 = no reading), the SDKs' format → float32 metres with NaN holes."""
    depth = depth_mm.astype(np.float32) / 1000.0
    depth[depth_mm == 0] = np.nan
    return depth
