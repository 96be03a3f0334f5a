"""Arms behind one small protocol (``base.Arm``), built by ``factory.make_arm`` from a config with a ``type``;
grasp plans (``plan``); the arm in its own process (``worker``). pylibfranka is imported only when the franka
backend connects."""

from .base import Arm, RobotConfig
from .factory import ROBOT_TYPES, make_arm, robot_config

__all__ = ["ROBOT_TYPES", "Arm", "RobotConfig", "make_arm", "robot_config"]
