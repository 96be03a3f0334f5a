"""The daemon's configuration: ``appliance.yaml`` and the files it names, schema-checked.

    config = load_appliance_config(Path("/etc/rtgrasp/appliance.yaml"))

``appliance.yaml`` holds the server, model, journal and speech settings; the
``camera``, ``robot`` and ``handeye`` entries are either a mapping or the path
of their own file (``camera.yaml``, ``franka.yaml``, ``handeye.yaml``),
relative to ``appliance.yaml``. Every file goes through the one loader
(``appliance.config``), so an unknown key or a bad value is an error naming
the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from appliance.camera import CameraConfig, camera_config
from appliance.config import ConfigError, from_dict, load_yaml
from appliance.robot import RobotConfig, robot_config
from appliance.robot.plan import GraspLimits, Workspace
from appliance.robot.worker import HOME_Q, ArmPoses
from appliance.runtime.llm import LlamaSettings
from appliance.runtime.model import MAX_NEW_TOKENS, SPECULATIVE_POLICIES
from appliance.runtime.vision import PROVIDERS

from .protocol import DEFAULT_EVENTS, DEFAULT_REQUESTS

LOOPBACK = ("tcp://127.", "tcp://localhost:", "tcp://[::1]:", "ipc://", "inproc://")


@dataclass(frozen=True)
class ServerConfig:
    """The ZeroMQ sockets and who may use them."""

    requests: str = DEFAULT_REQUESTS
    """ROUTER: requests and replies."""
    events: str = DEFAULT_EVENTS
    """PUB: state, predictions, results, errors, heartbeats."""
    heartbeat_s: float = 1.0
    server_secret_key: str | None = None
    """CurveZMQ secret key file of the daemon (python -m appliance.keys); required off loopback."""
    allowed_clients: str | None = None
    """Directory of client public key files; only those clients are served."""
    insecure: bool = False
    """Allow plaintext off loopback anyway. Anyone on the network could then move the arm."""

    def __post_init__(self) -> None:
        if self.heartbeat_s <= 0:
            raise ValueError("heartbeat_s must be positive")
        for endpoint in (self.requests, self.events):
            if not endpoint.startswith(("tcp://", "ipc://", "inproc://")):
                raise ValueError(f"endpoint {endpoint!r} must be tcp://, ipc:// or inproc://")
        if bool(self.server_secret_key) != bool(self.allowed_clients):
            raise ValueError("server_secret_key and allowed_clients go together (CurveZMQ)")
        if not self.secure and not self.loopback_only and not self.insecure:
            raise ValueError(
                "the daemon binds beyond loopback without CurveZMQ: set server_secret_key and allowed_clients "
                "(python -m appliance.keys), or insecure: true to accept the risk"
            )

    @property
    def secure(self) -> bool:
        return bool(self.server_secret_key)

    @property
    def loopback_only(self) -> bool:
        return all(e.startswith(LOOPBACK) for e in (self.requests, self.events))


@dataclass(frozen=True, kw_only=True)
class ModelSettings(LlamaSettings):
    """The bundle and how to run it: every ``LlamaSettings`` field (n_ctx, n_batch, n_threads, n_gpu_layers,
    kv_cache, flash_attn) and these."""

    bundle: str
    providers: tuple[str, ...] = PROVIDERS
    max_new_tokens: int = MAX_NEW_TOKENS
    speculative: str = "auto"
    """Draft reasoning tokens from the bundle's corpus (appliance.runtime.draft): ``auto`` measures the verify cost
    when the bundle loads and drafts only where that makes decoding faster (appliance.runtime.speculation), ``on``
    always, ``off`` never. The answers are the same either way; docs/export.md says when it pays."""
    presence_check: bool = True
    """Use the bundle's presence check, when it has one (docs/export.md): an instruction naming a category that too
    few image patches show is refused before decoding. ``false`` sends every instruction to the model."""
    target_check: bool = True
    """Use the bundle's target check, when it has one (docs/export.md): a first pose off the object its reasoning
    named moves to the vision heads' best grasp on that object. ``false`` keeps every pose as the model wrote it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.speculative not in SPECULATIVE_POLICIES:
            raise ValueError(f"speculative must be one of {', '.join(SPECULATIVE_POLICIES)}, got {self.speculative!r}")

    @property
    def llama(self) -> LlamaSettings:
        """The llama.cpp part of these settings."""
        return LlamaSettings(**{f.name: getattr(self, f.name) for f in fields(LlamaSettings)})


@dataclass(frozen=True)
class HandEye:
    """``T_base_cam`` (camera pose in the robot base frame) and how it was obtained."""

    T_base_cam: tuple[tuple[float, float, float, float], ...]
    method: str = "unknown"
    calibrated: str = ""
    residual_mm: float | None = None

    def __post_init__(self) -> None:
        T = np.asarray(self.T_base_cam, dtype=float)
        if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise ValueError("T_base_cam must be a 4x4 homogeneous transform")
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0.999:
            raise ValueError("T_base_cam's rotation is not orthonormal")

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.T_base_cam, dtype=float)


@dataclass(frozen=True)
class RobotSettings:
    """franka.yaml: the arm (a config of ``appliance.robot.factory``), its named poses, grasp limits and the workspace box."""

    arm: RobotConfig = field(default_factory=lambda: robot_config(None))
    poses: ArmPoses = field(default_factory=lambda: ArmPoses(HOME_Q, HOME_Q))
    limits: GraspLimits = field(default_factory=GraspLimits)
    workspace: Workspace = field(default_factory=Workspace)
    recheck_after_s: float = 10.0
    """A picture older than this (or taken before the arm last moved) is checked against a new one before a grasp
    is planned on it (``appliance.daemon.jobs``)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.recheck_after_s) and self.recheck_after_s >= 0):
            raise ValueError(
                f"recheck_after_s must be a finite number of seconds, 0 or more, got {self.recheck_after_s}"
            )


@dataclass(frozen=True)
class SpeechSettings:
    """Offline speech recognition of spoken instructions."""

    enabled: bool = True
    max_seconds: float = 15.0


@dataclass(frozen=True)
class ApplianceConfig:
    """Everything ``python -m appliance`` needs."""

    server: ServerConfig
    model: ModelSettings
    camera: CameraConfig
    handeye: HandEye
    robot: RobotSettings | None = None
    """None: a predict-only appliance (no arm)."""
    journal: str = "/var/lib/rtgrasp/journal.sqlite"
    record: str | None = None
    """Directory to record every frame the daemon acts on (replay camera layout)."""
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    depth_window: int = 5
    """Pixels of the median window for the grasp centre's depth."""


def load_appliance_config(path: Path) -> ApplianceConfig:
    """Read appliance.yaml and the files it names; ``ConfigError`` names the file and key at fault."""
    path = Path(path)
    data = dict(load_yaml(path))
    parts = {}
    for key in ("camera", "robot", "handeye"):
        value = data.pop(key, None)
        where = f"{path}: {key}"
        if isinstance(value, str):
            sub = (path.parent / value).resolve()
            value, where = load_yaml(sub), str(sub)
        parts[key] = (value, where)
    for key in ("model", "server", "journal", "record"):
        _relative(data, key, path.parent)
    camera_data, camera_where = parts["camera"]
    if camera_data is None:
        raise ConfigError(f"{path}: camera: required key is missing")
    handeye_data, handeye_where = parts["handeye"]
    if handeye_data is None:
        raise ConfigError(f"{path}: handeye: required key is missing")
    robot_data, robot_where = parts["robot"]
    base = from_dict(_Base, data, str(path))
    return ApplianceConfig(
        server=base.server,
        model=base.model,
        camera=camera_config(camera_data, camera_where),
        handeye=from_dict(HandEye, handeye_data, handeye_where),
        robot=None if robot_data is None else _robot_settings(robot_data, robot_where),
        journal=base.journal,
        record=base.record,
        speech=base.speech,
        depth_window=base.depth_window,
    )


@dataclass(frozen=True)
class _Base:
    """appliance.yaml without the parts that live in their own files."""

    server: ServerConfig
    model: ModelSettings
    journal: str = "/var/lib/rtgrasp/journal.sqlite"
    record: str | None = None
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    depth_window: int = 5


def _robot_settings(data: dict, where: str) -> RobotSettings:
    """franka.yaml: its ``arm`` goes through the robot factory (by ``type``), the rest through the loader."""
    data = dict(data)
    # the default box fits the sim cell, not every real table: each of its axes must be said
    box = data.get("workspace")
    if not isinstance(box, dict) or not {"x", "y", "z"} <= set(box):
        said = sorted(box) if isinstance(box, dict) else box
        raise ConfigError(
            f"{where}: workspace: required key is missing or incomplete: x, y and z, each [low, high] in metres "
            f"(the box every TCP position must stay in); got {said}"
        )
    arm = robot_config(data.pop("arm", None), f"{where}: arm")
    return replace(from_dict(RobotSettings, data, where), arm=arm)


def _relative(data: dict, key: str, base: Path) -> None:
    """Paths in the config are relative to the config file."""
    if isinstance(data.get(key), str):
        data[key] = str((base / data[key]).resolve())
    nested = {"model": ("bundle",), "server": ("server_secret_key", "allowed_clients")}.get(key, ())
    if isinstance(data.get(key), dict):
        data[key] = {
            k: str((base / v).resolve()) if k in nested and isinstance(v, str) else v for k, v in data[key].items()
        }
