"""The arm protocol: what the daemon's arm process and the grasp trials drive, whatever the robot."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import numpy as np


class RobotConfig(Protocol):
    """What every arm backend's config dataclass has: the ``type`` that names its backend."""

    type: str
    host: str


class Arm(ABC):
    """An arm with a parallel gripper: connect, read its state, move, grasp. Motions block until they end and
    raise ``MotionError`` (``appliance.robot.plan``) when they fail or are stopped; a motion or hand command asked
    for while a stop is held is refused before it starts."""

    @abstractmethod
    def connect(self) -> Arm:
        """Open the connection (the vendor SDK is imported here); returns self."""

    @abstractmethod
    def disconnect(self) -> None: ...

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> Arm:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.disconnect()

    @abstractmethod
    def pose(self) -> np.ndarray:
        """The TCP pose in the base frame (row-major 4×4)."""

    @abstractmethod
    def joints(self) -> np.ndarray: ...

    @abstractmethod
    def recover(self) -> None:
        """Clear a reflex or error so the arm accepts motions again."""

    @abstractmethod
    def move_joints(self, target_q, speed_factor: float = 1.0) -> None: ...

    @abstractmethod
    def move_pose(self, target: np.ndarray, speed: float) -> None: ...

    @abstractmethod
    def open_gripper(self, width: float) -> None: ...

    @abstractmethod
    def grasp(self, width: float, force: float, epsilon_inner: float, epsilon_outer: float) -> bool: ...

    @abstractmethod
    def gripper_width(self) -> float: ...

    @abstractmethod
    def is_grasped(self) -> bool: ...
