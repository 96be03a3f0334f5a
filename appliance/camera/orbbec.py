"""Orbbec Femto (Bolt / Mega / Femto) through pyorbbecsdk2 (optional extra ``camera``).

Colour is requested as RGB, depth as Y16; the SDK's ``AlignFilter`` maps depth
into the colour camera. Depth values times the frame's depth scale are
millimetres. Intrinsics are the colour camera's from the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.geometry import Intrinsics

from .base import Camera, CameraError, CameraTimeout, Frame, depth_from_millimetres


@dataclass(frozen=True)
class OrbbecCameraConfig:
    """Stream sizes and colour controls."""

    type: str = "orbbec"
    width: int = 1280
    height: int = 720
    fps: int = 15
    exposure_us: int | None = None
    """Fixed colour exposure (None: automatic)."""
    white_balance_k: int | None = None


def _sdk():
    try:
        import pyorbbecsdk
    except ImportError as exc:
        raise CameraError("the Orbbec backend needs pyorbbecsdk2: pip install 'rtgrasp[camera]'") from exc
    return pyorbbecsdk


class OrbbecCamera(Camera):
    """An Orbbec Femto-series camera."""

    def __init__(self, config: OrbbecCameraConfig):
        self.config = config
        self._pipeline = None
        self._align = None
        self._intrinsics: Intrinsics | None = None

    def connect(self) -> OrbbecCamera:
        ob = _sdk()
        c = self.config
        pipeline = ob.Pipeline()
        settings = ob.Config()
        try:
            colour = pipeline.get_stream_profile_list(ob.OBSensorType.COLOR_SENSOR).get_video_stream_profile(
                c.width, c.height, ob.OBFormat.RGB, c.fps
            )
            depth = pipeline.get_stream_profile_list(ob.OBSensorType.DEPTH_SENSOR).get_default_video_stream_profile()
            settings.enable_stream(colour)
            settings.enable_stream(depth)
            pipeline.start(settings)
        except Exception as exc:  # OBError
            raise CameraError(f"Orbbec camera did not start ({c.width}x{c.height} RGB @ {c.fps} fps): {exc}") from exc
        device = pipeline.get_device()
        if c.exposure_us is not None:
            device.set_bool_property(ob.OBPropertyID.OB_PROP_COLOR_AUTO_EXPOSURE_BOOL, False)
            device.set_int_property(ob.OBPropertyID.OB_PROP_COLOR_EXPOSURE_INT, c.exposure_us)
        if c.white_balance_k is not None:
            device.set_bool_property(ob.OBPropertyID.OB_PROP_COLOR_AUTO_WHITE_BALANCE_BOOL, False)
            device.set_int_property(ob.OBPropertyID.OB_PROP_COLOR_WHITE_BALANCE_INT, c.white_balance_k)
        k = pipeline.get_camera_param().rgb_intrinsic
        self._intrinsics = Intrinsics(float(k.fx), float(k.fy), float(k.cx), float(k.cy), int(k.width), int(k.height))
        self._align = ob.AlignFilter(align_to_stream=ob.OBStreamType.COLOR_STREAM)
        self._pipeline = pipeline
        return self

    def disconnect(self) -> None:
        if self._pipeline is not None:
            self._pipeline.stop()
            self._pipeline = None

    @property
    def is_connected(self) -> bool:
        return self._pipeline is not None

    def read(self, timeout_s: float = 2.0) -> Frame:
        if self._pipeline is None:
            raise CameraError("Orbbec camera is not connected")
        frames = self._pipeline.wait_for_frames(int(timeout_s * 1000))
        if frames is None:
            raise CameraTimeout(f"Orbbec camera: no frames within {timeout_s} s")
        frames = self._align.process(frames)
        frames = frames.as_frame_set() if hasattr(frames, "as_frame_set") else frames
        colour, depth = frames.get_color_frame(), frames.get_depth_frame()
        if colour is None or depth is None:
            raise CameraTimeout("Orbbec camera: frame set without colour or depth")
        h, w = colour.get_height(), colour.get_width()
        rgb = np.frombuffer(colour.get_data(), dtype=np.uint8).reshape(h, w, 3)
        raw = np.frombuffer(depth.get_data(), dtype=np.uint16).reshape(depth.get_height(), depth.get_width())
        depth_mm = (raw.astype(np.float32) * depth.get_depth_scale()).round().astype(np.uint16)
        return Frame(np.ascontiguousarray(rgb), depth_from_millimetres(depth_mm), self._intrinsics)
