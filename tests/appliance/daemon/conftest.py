"""A daemon on loopback over the tiny F32 bundle and a replay camera (real sockets, real runtime)."""

import json
import threading
import time
import uuid

import numpy as np
import pytest
import yaml

pytest.importorskip("llama_cpp")
zmq = pytest.importorskip("zmq")

from appliance.camera.base import Frame  # noqa: E402
from appliance.camera.replay import Recorder  # noqa: E402
from appliance.geometry import Intrinsics  # noqa: E402
from tests.helpers import endpoint  # noqa: E402

HANDEYE = {"T_base_cam": [[1, 0, 0, 0.5], [0, -1, 0, 0], [0, 0, -1, 0.7], [0, 0, 0, 1]], "method": "test"}


@pytest.fixture(scope="session")
def recording(tmp_path_factory):
    """Three recorded RGB-D frames: a table 0.7 m below the camera with a box on it."""
    root = tmp_path_factory.mktemp("recording")
    recorder = Recorder(root)
    rng = np.random.default_rng(0)
    K = Intrinsics.from_fovy(40.0, 640, 480)
    for _ in range(3):
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        depth = np.full((480, 640), 0.7, np.float32)
        depth[200:280, 280:360] = 0.65
        depth[0:10] = np.nan
        recorder.write(Frame(rgb, depth, K))
    return root


def write_config(tmp_path, bundle, recording, requests=None, events=None, **overrides) -> tuple:
    requests = requests or endpoint("requests")
    events = events or endpoint("events")
    config = {
        "server": {"requests": requests, "events": events, "heartbeat_s": 0.2},
        "model": {"bundle": str(bundle), "n_ctx": 512, "n_batch": 64, "max_new_tokens": 24},
        "camera": {"type": "replay", "directory": str(recording)},
        "handeye": HANDEYE,
        "journal": str(tmp_path / "journal.sqlite"),
        "speech": {"enabled": False},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    path = tmp_path / f"appliance-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, requests, events


class Running:
    """A daemon serving in a thread of this process."""

    def __init__(self, config_path):
        from appliance.__main__ import build
        from appliance.daemon.settings import load_appliance_config

        self.config = load_appliance_config(config_path)
        self.daemon = build(self.config)
        self.thread = threading.Thread(target=self.daemon.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.daemon.shutdown.set()
        self.thread.join(timeout=10)
        self.daemon.jobs.model.close()


@pytest.fixture
def daemon(tmp_path, f32_bundle, recording):
    path, requests, events = write_config(tmp_path, f32_bundle, recording)
    running = Running(path)
    running.requests, running.events = requests, events
    yield running
    running.close()


def send(endpoint: str, frames: list[bytes], timeout_s: float = 20.0, socket_type=None):
    """One raw request on a fresh DEALER socket; the reply frames, or None on timeout."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(socket_type or zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return sock.recv_multipart()
    finally:
        sock.close(0)


def wait_status(endpoint: str, timeout_s: float = 90.0) -> dict:
    """Poll ``status`` until a daemon (e.g. one just started as a process) answers; its status."""
    from appliance.daemon import protocol

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = send(endpoint, [b"", protocol.request("status", f"st{time.monotonic_ns()}")], timeout_s=2)
        if reply:
            return json.loads(reply[-1])
    raise AssertionError("the daemon never answered status")


def segfault_model_during(running, request: bytes) -> dict:
    """The reply (JSON) to ``request`` when the model process dies by SIGSEGV inside its next ``ask`` (fault
    injection, ``ModelWorker.inject_fault``: the crash lands mid-call, whatever the timing)."""
    import signal

    running.daemon.jobs.model.inject_fault("ask", signal.SIGSEGV)
    return json.loads(send(running.config.server.requests, [b"", request], timeout_s=60)[1])
