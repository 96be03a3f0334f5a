"""A folder of recorded RGB-D frames as a camera, and the recorder that writes such folders.

Layout: ``intrinsics.json`` (fx, fy, cx, cy, width, height) and, per frame,
``NNNNNN-rgb.png`` + ``NNNNNN-depth.npy`` (float32 metres, NaN = no reading).
The daemon can record every frame it acts on (``record`` in the
config), so a session on the robot can be replayed offline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.geometry import Intrinsics

from .base import Camera, CameraError, CameraTimeout, Frame

INTRINSICS_FILE = "intrinsics.json"


@dataclass(frozen=True)
class ReplayCameraConfig:
    """A recorded folder; ``loop`` starts over after the last frame."""

    type: str = "replay"
    directory: str = "recordings/session"
    loop: bool = True


class ReplayCamera(Camera):
    """Serves the recorded frames in order."""

    def __init__(self, config: ReplayCameraConfig):
        self.config = config
        self._frames: list[Path] = []
        self._next = 0
        self._intrinsics: Intrinsics | None = None

    def connect(self) -> ReplayCamera:
        root = Path(self.config.directory)
        path = root / INTRINSICS_FILE
        if not path.is_file():
            raise CameraError(f"replay camera: {path} is missing (not a recording)")
        try:
            self._intrinsics = Intrinsics(**json.loads(path.read_text()))
        except (TypeError, ValueError) as exc:
            raise CameraError(f"replay camera: {path}: {exc}") from exc
        self._frames = sorted(root.glob("*-rgb.png"))
        if not self._frames:
            raise CameraError(f"replay camera: no *-rgb.png frames in {root}")
        self._next = 0
        return self

    def disconnect(self) -> None:
        self._frames = []

    @property
    def is_connected(self) -> bool:
        return bool(self._frames)

    def read(self, timeout_s: float = 2.0) -> Frame:
        if not self._frames:
            raise CameraError("replay camera is not connected")
        if self._next >= len(self._frames):
            if not self.config.loop:
                raise CameraTimeout("replay camera: no more frames")
            self._next = 0
        rgb_path = self._frames[self._next]
        self._next += 1
        depth_path = rgb_path.with_name(rgb_path.name.replace("-rgb.png", "-depth.npy"))
        if not depth_path.is_file():
            raise CameraError(f"replay camera: {depth_path} is missing")
        with Image.open(rgb_path) as img:
            rgb = np.asarray(img.convert("RGB"))
        return Frame(rgb, np.load(depth_path).astype(np.float32), self._intrinsics)


class Recorder:
    """Writes frames in the replay layout (numbered from where the folder ends)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count = len(list(self.directory.glob("*-rgb.png")))

    def write(self, frame: Frame) -> Path:
        """Save one frame; returns the colour image's path."""
        meta = self.directory / INTRINSICS_FILE
        if not meta.is_file():
            meta.write_text(json.dumps(asdict(frame.intrinsics)))
        stem = f"{self._count:06d}"
        self._count += 1
        np.save(self.directory / f"{stem}-depth.npy", frame.depth.astype(np.float32))
        path = self.directory / f"{stem}-rgb.png"
        Image.fromarray(frame.rgb).save(path)
        return path
