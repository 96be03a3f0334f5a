"""Arm configs by ``type`` and the factory that builds an arm from one (a backend's module is imported only
when a config of its type is read; its SDK only when the arm connects)."""

from __future__ import annotations

import importlib

from appliance.config import ConfigError, from_dict

from .base import Arm, RobotConfig

ROBOT_TYPES = {  # type -> (module, config class, backend class)
    "franka": ("appliance.robot.franka", "FrankaConfig", "FrankaArm"),
}


def _backend(kind: str, which: int):
    module, *names = ROBOT_TYPES[kind]
    return getattr(importlib.import_module(module), names[which])


def robot_config(data: dict | None, where: str = "arm") -> RobotConfig:
    """The config dataclass named by ``data['type']`` (default ``franka``); ``ConfigError`` names a bad type or key."""
    data = {"type": "franka", **(data or {})}
    if data["type"] not in ROBOT_TYPES:
        raise ConfigError(f"{where}.type: unknown arm {data['type']!r} (one of {', '.join(ROBOT_TYPES)})")
    return from_dict(_backend(data["type"], 0), data, where)


def make_arm(config: RobotConfig, **kwargs) -> Arm:
    """An arm backend for its config (not yet connected); ``kwargs`` go to the backend (e.g. ``stop``)."""
    return _backend(config.type, 1)(config, **kwargs)
