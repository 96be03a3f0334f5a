"""Camera configs by ``type`` and the factory that builds a camera from one.

The table names each backend's module; a module is imported only when a config of its type is read, so
the daemon's settings import no camera backend they do not use (and SDKs load later still, on ``connect``).
"""

from __future__ import annotations

import importlib

from appliance.config import ConfigError, from_dict

from .base import Camera, CameraConfig

CAMERA_TYPES = {  # type -> (module, config class, backend class)
    "sim": ("appliance.camera.sim", "SimCameraConfig", "SimCamera"),
    "replay": ("appliance.camera.replay", "ReplayCameraConfig", "ReplayCamera"),
    "k4a": ("appliance.camera.k4a", "K4aCameraConfig", "K4aCamera"),
    "orbbec": ("appliance.camera.orbbec", "OrbbecCameraConfig", "OrbbecCamera"),
}


def _backend(kind: str, which: int):
    module, *names = CAMERA_TYPES[kind]
    return getattr(importlib.import_module(module), names[which])


def camera_config(data: dict, where: str = "camera") -> CameraConfig:
    """The config dataclass named by ``data['type']``; ``ConfigError`` names a bad type or key."""
    if not isinstance(data, dict) or "type" not in data:
        raise ConfigError(f"{where}.type: required key is missing (one of {', '.join(CAMERA_TYPES)})")
    if data["type"] not in CAMERA_TYPES:
        raise ConfigError(f"{where}.type: unknown camera {data['type']!r} (one of {', '.join(CAMERA_TYPES)})")
    return from_dict(_backend(data["type"], 0), data, where)


def make_camera(config: CameraConfig) -> Camera:
    """A camera backend for its config (not yet connected: the SDK loads on ``connect``)."""
    return _backend(config.type, 1)(config)
