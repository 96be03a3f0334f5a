"""Cameras behind one small protocol: ``connect``, ``read`` → ``Frame``, ``disconnect``.

Backends: ``sim`` (the simulated cell's top-down camera), ``replay`` (a folder
of recorded RGB-D frames), ``k4a`` (Azure Kinect, pyk4a) and ``orbbec`` (Orbbec
Femto, pyorbbecsdk2). SDKs are imported only when their backend connects.
"""

from .base import Camera, CameraConfig, CameraError, CameraTimeout, Frame
from .factory import CAMERA_TYPES, camera_config, make_camera

__all__ = [
    "CAMERA_TYPES",
    "Camera",
    "CameraConfig",
    "CameraError",
    "CameraTimeout",
    "Frame",
    "camera_config",
    "make_camera",
]
