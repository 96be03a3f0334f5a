"""The simulated cell's top-down camera (appliance.sim service), as a camera backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.geometry import Intrinsics

from .base import Camera, CameraError, CameraTimeout, Frame


@dataclass(frozen=True)
class SimCameraConfig:
    """Where the sim cell's service listens."""

    type: str = "sim"
    endpoint: str = "tcp://127.0.0.1:5560"
    timeout_s: float = 5.0


class SimCamera(Camera):
    """Frames rendered by the sim cell (MuJoCo, the same scene the arm moves in)."""

    def __init__(self, config: SimCameraConfig):
        self.config = config
        self._client = None
        self._intrinsics: Intrinsics | None = None

    def connect(self) -> SimCamera:
        from appliance.sim.client import CellUnavailable, SimCellClient

        self._client = SimCellClient(self.config.endpoint, timeout_s=self.config.timeout_s, retries=1)
        try:
            cam = self._client.info()["camera"]
        except CellUnavailable as exc:
            self.disconnect()
            raise CameraError(
                f"sim camera: no cell at {self.config.endpoint} ({exc}); start it: python -m appliance.sim"
            ) from exc
        self._intrinsics = Intrinsics(cam["fx"], cam["fy"], cam["cx"], cam["cy"], cam["width"], cam["height"])
        return self

    def disconnect(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def is_connected(self) -> bool:
        return self._client is not None

    def read(self, timeout_s: float = 2.0) -> Frame:
        from appliance.sim.client import CellUnavailable

        if self._client is None:
            raise CameraError("sim camera is not connected")
        try:
            rgb, depth = self._client.frame()
        except CellUnavailable as exc:
            raise CameraTimeout(f"sim camera: no frame from {self.config.endpoint}: {exc}") from exc
        except RuntimeError as exc:  # the cell answered, without a frame
            raise CameraError(f"sim camera: {exc}") from exc
        return Frame(np.ascontiguousarray(rgb), depth.astype(np.float32), self._intrinsics)
