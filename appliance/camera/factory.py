"""Camera configs by ``type`` and the factory that builds a camera from one."""

from __future__ import annotations

from appliance.config import ConfigError, from_dict

from .base import Camera
from .k4a import K4aCamera, K4aCameraConfig
from .orbbec import OrbbecCamera, OrbbecCameraConfig
from .replay import ReplayCamera, ReplayCameraConfig
from .sim import SimCamera, SimCameraConfig

CAMERA_TYPES = {  # type -> (config, backend)
    "sim": (SimCameraConfig, SimCamera),
    "replay": (ReplayCameraConfig, ReplayCamera),
    "k4a": (K4aCameraConfig, K4aCamera),
    "orbbec": (OrbbecCameraConfig, OrbbecCamera),
}
CameraConfig = SimCameraConfig | ReplayCameraConfig | K4aCameraConfig | OrbbecCameraConfig


def camera_config(data: dict, where: str = "camera") -> CameraConfig:
    """The config dataclass named by ``data['type']``; ``ConfigError`` names a bad type or key."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{where}.type: required key is missing (one of {', '.join(CAMERA_TYPES)})")
    if data["type"] not in CAMERA_TYPES:
        raise ConfigError(f"{where}.type: unknown camera {data['type']!r} (one of {', '.join(CAMERA_TYPES)})")
    return from_dict(CAMERA_TYPES[data["type"]][0], data, where)


def make_camera(config: CameraConfig) -> Camera:
    """A camera backend for its config (not yet connected: the SDK loads on ``connect``)."""
    return CAMERA_TYPES[config.type][1](config)
