"""Azure Kinect through pyk4a (optional extra ``camera``; needs the Azure Kinect SDK).

Colour as BGRA from the SDK → RGB; depth transformed into the colour camera
(``transformed_depth``, millimetres) so it is aligned pixel for pixel;
intrinsics from the device's factory calibration of the colour camera.
Exposure and white balance are fixed from the config (auto exposure drifts
between the picture and the grasp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.geometry import Intrinsics

from .base import Camera, CameraError, CameraTimeout, Frame, depth_from_millimetres

COLOR_RESOLUTIONS = ("720P", "1080P", "1440P", "1536P", "2160P", "3072P")
DEPTH_MODES = ("NFOV_2X2BINNED", "NFOV_UNBINNED", "WFOV_2X2BINNED", "WFOV_UNBINNED")


@dataclass(frozen=True)
class K4aCameraConfig:
    """Which Kinect and how to run it."""

    type: str = "k4a"
    device: int = 0
    color_resolution: str = "720P"
    depth_mode: str = "NFOV_UNBINNED"
    exposure_us: int | None = 8330
    """Fixed exposure in microseconds (None: automatic)."""
    white_balance_k: int | None = 4500
    """Fixed white balance in kelvin, a multiple of 10 in 2500..12500 (None: automatic)."""

    def __post_init__(self) -> None:
        if self.color_resolution not in COLOR_RESOLUTIONS:
            raise ValueError(f"color_resolution must be one of {COLOR_RESOLUTIONS}")
        if self.depth_mode not in DEPTH_MODES:
            raise ValueError(f"depth_mode must be one of {DEPTH_MODES}")
        if self.white_balance_k is not None and not (
            2500 <= self.white_balance_k <= 12500 and self.white_balance_k % 10 == 0
        ):
            raise ValueError("white_balance_k must be a multiple of 10 in 2500..12500")


def _sdk():
    try:
        import pyk4a
    except ImportError as exc:
        raise CameraError(
            "the Azure Kinect backend needs pyk4a: install the Azure Kinect SDK (libk4a1.4-dev), "
            "then pip install 'rtgrasp[camera]'"
        ) from exc
    return pyk4a


class K4aCamera(Camera):
    """An Azure Kinect DK."""

    def __init__(self, config: K4aCameraConfig):
        self.config = config
        self._device = None
        self._intrinsics: Intrinsics | None = None

    def connect(self) -> K4aCamera:
        pyk4a = _sdk()
        c = self.config
        settings = pyk4a.Config(
            color_resolution=getattr(pyk4a.ColorResolution, f"RES_{c.color_resolution}"),
            depth_mode=getattr(pyk4a.DepthMode, c.depth_mode),
            synchronized_images_only=True,
        )
        device = pyk4a.PyK4A(settings, device_id=c.device)
        try:
            device.start()
        except Exception as exc:  # pyk4a raises its own K4AException types
            raise CameraError(
                f"Azure Kinect {c.device} did not start: {exc} (is it plugged in, udev rules installed?)"
            ) from exc
        if c.exposure_us is not None:
            device.exposure_mode_auto = False
            device.exposure = c.exposure_us
        if c.white_balance_k is not None:
            device.whitebalance_mode_auto = False
            device.whitebalance = c.white_balance_k
        K = np.asarray(device.calibration.get_camera_matrix(pyk4a.CalibrationType.COLOR))
        capture = device.get_capture()
        h, w = capture.color.shape[:2]
        self._intrinsics = Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), w, h)
        self._device = device
        return self

    def disconnect(self) -> None:
        if self._device is not None:
            self._device.stop()
            self._device = None

    @property
    def is_connected(self) -> bool:
        return self._device is not None

    def read(self, timeout_s: float = 2.0) -> Frame:
        if self._device is None:
            raise CameraError("Azure Kinect is not connected")
        try:
            capture = self._device.get_capture(timeout=int(timeout_s * 1000))
        except Exception as exc:
            raise CameraTimeout(f"Azure Kinect: no capture within {timeout_s} s: {exc}") from exc
        if capture.color is None or capture.transformed_depth is None:
            raise CameraTimeout("Azure Kinect: capture without colour or depth")
        rgb = np.ascontiguousarray(capture.color[:, :, 2::-1])  # BGRA → RGB
        return Frame(rgb, depth_from_millimetres(capture.transformed_depth), self._intrinsics)
