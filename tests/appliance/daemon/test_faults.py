"""Fault injection against the sim cell: the daemon keeps the arm safe and carries on.

Every test runs the real stack: the sim cell process (MuJoCo + franky-sim), the
daemon (in a thread, or as its own process where it is killed), the robot
process driving the simulated FR3 with pylibfranka, and ZeroMQ on loopback.
The faults come from the cell (``appliance.sim.faults``): frames that never
come or come late, and a reflex that aborts a motion the way a real FR3 does.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")
zmq = pytest.importorskip("zmq")

from appliance.client import Client  # noqa: E402
from appliance.daemon import protocol  # noqa: E402
from appliance.sim.client import SimCellClient  # noqa: E402
from tests.helpers import endpoint, sim_cell, wait_subscribed  # noqa: E402

from .conftest import HANDEYE, Running, segfault_model_during, send, wait_status  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "firmware_config"


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    with sim_cell(tmp_path_factory.mktemp("cell")) as config:
        yield config


@pytest.fixture
def sim(cell):
    with SimCellClient(cell.service, timeout_s=10) as client:
        client.reset(0, seed="e2e")  # the placement where the random NR-A model's pose is executable
        client.fault(camera="none", count=0)
        yield client


def cell_config(tmp_path, cell, bundle, **model) -> Path:
    robot = yaml.safe_load((CONFIGS / "franka-sim.yaml").read_text())
    robot["arm"]["host"] = cell.robot_host
    config = {
        "server": {
            "requests": endpoint("requests"),
            "events": endpoint("events"),
            "heartbeat_s": 0.5,
        },
        "model": {"bundle": str(bundle), "n_ctx": 512, "n_batch": 64, **model},
        "camera": {"type": "sim", "endpoint": cell.service, "timeout_s": 1.0},
        "robot": robot,
        "handeye": HANDEYE,
        "journal": str(tmp_path / "journal.sqlite"),
        "speech": {"enabled": False},
    }
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def daemon(tmp_path, cell, nra_bundle, sim):
    running = Running(cell_config(tmp_path, cell, nra_bundle))
    yield running
    running.daemon.jobs.robot.close()
    running.close()


def request(running, kind, timeout_s=120, **fields):
    client = Client(running.config.server.requests, timeout_s=timeout_s, retries=1)
    try:
        return client.request(kind, **fields)[0]
    finally:
        client.close()


def arm_q(sim) -> np.ndarray:
    return np.array(sim.request("poses")[0]["arm_q"])


def settled(sim, within_s=10.0, still=1e-4) -> np.ndarray:
    """The arm's joints once they stop changing (by less than ``still`` rad in 0.2 s: a joint still creeping at
    1e-3 rad a second, as one may at the end of a motion on a loaded machine, is not at rest); fails unless that
    happens within ``within_s``."""
    deadline = time.monotonic() + within_s
    before = arm_q(sim)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = arm_q(sim)
        if np.abs(now - before).max() < still:
            return now
        before = now
    raise AssertionError(f"the arm was still moving {within_s} s later")


def under_way(sim, by: float = 0.05, within_s: float = 30.0) -> np.ndarray:
    """The joints once a motion has visibly started: some joint ``by`` rad from where it is now."""
    start = arm_q(sim)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        now = arm_q(sim)
        if np.abs(now - start).max() > by:
            return now
        time.sleep(0.02)
    raise AssertionError(f"the arm did not start moving within {within_s} s")


def subscribe(events, *topics):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    for topic in (*topics, b"heartbeat"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(events)
    wait_subscribed(sub)
    return sub


def wait_event(sub, topic: bytes, timeout_s=120.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sub.poll(500):
            got, payload = sub.recv_multipart()
            if got == topic:
                return json.loads(payload)
    raise AssertionError(f"no {topic!r} event")


def test_camera_without_frames_or_too_late_gets_an_error_and_nothing_moves(daemon, sim):
    sim.fault(camera="drop", count=1)
    reply = request(daemon, "predict", text="grasp the box")
    assert not reply["ok"] and reply["error"]["code"] == "camera", reply
    assert "nothing moves" in reply["error"]["message"]
    sim.fault(camera="stall", count=1, stall_s=2.5)  # past the camera's 1 s timeout
    reply = request(daemon, "grasp", text="grasp the box")
    assert not reply["ok"] and reply["error"]["code"] == "camera", reply
    observed = settled(sim)  # the grasp got as far as the observation pose, then no further
    time.sleep(3.0)  # the late frame arrives at the cell's socket long after the daemon gave up
    assert np.abs(arm_q(sim) - observed).max() < 1e-3
    assert request(daemon, "predict", text="grasp the box")["ok"]  # and the camera is back


def test_reflex_mid_motion_is_reported_and_recovered(daemon, sim):
    sim.fault(robot="reflex", after_s=0.3)
    reply = request(daemon, "home")
    assert not reply["ok"] and reply["error"]["code"] == "motion_failed", reply
    assert "reflex" in reply["error"]["message"].lower()
    assert sim.fault(camera="none", count=0)["reflex"] is False  # cleared by automatic error recovery
    assert request(daemon, "status")["robot"]["alive"]
    assert request(daemon, "home")["ok"]  # the arm accepts motions again (the cell refuses them while in reflex)


def test_unparseable_answer_is_rejected_and_nothing_moves(tmp_path, cell, nra_bundle, sim):
    running = Running(cell_config(tmp_path, cell, nra_bundle, max_new_tokens=3))  # the answer is cut off mid-pose
    try:
        reply = request(running, "grasp", text="grasp the box")
        assert reply["ok"] and reply["parsed"] is False and reply["parse_error"], reply
        assert reply["execution"]["moved"] is False and reply["execution"]["stage"] == "check"
        observed = settled(sim)
        time.sleep(1.0)  # a second of watching: nothing moves
        assert np.abs(arm_q(sim) - observed).max() < 1e-3
    finally:
        running.daemon.jobs.robot.close()
        running.close()


def test_stop_mid_grasp_ramps_down_and_the_arm_works_afterwards(daemon, sim):
    events = subscribe(daemon.config.server.events, b"prediction")
    dealer = zmq.Context.instance().socket(zmq.DEALER)  # the grasp waits here while the stop goes out on another socket
    dealer.linger = 0
    dealer.connect(daemon.config.server.requests)
    try:
        dealer.send_multipart([b"", protocol.request("grasp", "grasp-to-stop", text="grasp the box")])
        assert wait_event(events, b"prediction")["executable"], "the random model's pose must be executable here"
        under_way(sim)
        moving = arm_q(sim)
        stopped = request(daemon, "stop", timeout_s=2)
        assert stopped["ok"] and stopped["stopped"]
        assert dealer.poll(30000)
        reply = json.loads(dealer.recv_multipart()[1])
        assert reply["ok"], reply
        execution = reply["execution"]
        assert execution["moved"] and not execution["success"] and "stop" in execution["message"], execution
        rest = settled(sim, within_s=2.0)  # ramped down where it was, not driven on to the target
        assert np.abs(rest - moving).max() < 0.5
        assert request(daemon, "home")["ok"]  # a new motion request re-arms the arm
    finally:
        events.close(0)
        dealer.close(0)


def start_process(config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_mid_grasp_stops_the_arm_and_the_restart_never_repeats_it(tmp_path, cell, nra_bundle, sim):
    path = cell_config(tmp_path, cell, nra_bundle)
    config = yaml.safe_load(path.read_text())
    requests, events_endpoint = config["server"]["requests"], config["server"]["events"]
    proc = start_process(path)
    try:
        wait_status(requests)
        events = subscribe(events_endpoint, b"prediction")
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(requests)
        dealer.send_multipart([b"", protocol.request("grasp", "killed-grasp", text="grasp the box")])
        assert wait_event(events, b"prediction")["executable"]
        under_way(sim)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        events.close(0)
        dealer.close(0)
        rest = settled(sim, within_s=2.0)  # the orphaned arm process ramps the motion down by itself
        time.sleep(3.0)
        assert np.abs(arm_q(sim) - rest).max() < 1e-3, "the orphaned arm process went on with the grasp"
    finally:
        proc.kill()
    import sqlite3

    rows = sqlite3.connect(str(tmp_path / "journal.sqlite")).execute("SELECT id, state FROM requests").fetchall()
    assert ("killed-grasp", "running") in rows
    proc = start_process(path)
    try:
        status = wait_status(requests)
        assert {"id": "killed-grasp", "type": "grasp", "state": "running"} in status["interrupted"]
        retry = json.loads(
            send(requests, [b"", protocol.request("grasp", "killed-grasp", text="grasp the box")], 30)[-1]
        )
        assert not retry["ok"] and retry["error"]["code"] == "interrupted", retry
        time.sleep(2.0)
        assert np.abs(arm_q(sim) - rest).max() < 1e-3  # no duplicate motion
        assert wait_status(requests)["journal_rows"] >= len(rows)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_a_model_process_killed_mid_grasp_is_model_crashed_and_nothing_moves(daemon, sim):
    pid = request(daemon, "status")["model"]["process"]["pid"]
    reply = segfault_model_during(daemon, protocol.request("grasp", "crash-grasp", text="grasp the box"))
    observed = settled(sim)  # where the grasp left the arm: its observation pose, where the picture was taken
    assert np.abs(observed - np.array(daemon.config.robot.poses.observation_q)).max() < 0.06
    assert not reply["ok"] and reply["error"]["code"] == "model_crashed", reply
    assert "SIGSEGV" in reply["error"]["message"] and "nothing moves" in reply["error"]["message"]
    time.sleep(2.0)
    assert np.abs(arm_q(sim) - observed).max() < 1e-3  # no grasp motion came of it
    status = request(daemon, "status")
    assert status["model"]["process"]["restarts"] == 1 and status["model"]["process"]["pid"] != pid
    assert request(daemon, "grasp", text="grasp the box")["ok"]  # the new model process serves the next grasp


def test_a_stop_whose_id_was_used_before_still_stops_a_grasp(daemon, sim):
    first = request(daemon, "stop", timeout_s=5, request_id="stop-1")  # while idle
    assert first["ok"] and first["stopped"]
    events = subscribe(daemon.config.server.events, b"prediction")
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.config.server.requests)
    try:
        dealer.send_multipart([b"", protocol.request("grasp", "grasp-reused-stop", text="grasp the box")])
        assert wait_event(events, b"prediction")["executable"]
        under_way(sim)
        again = request(daemon, "stop", timeout_s=5, request_id="stop-1")  # the same id, mid-motion
        assert again["ok"] and again["stopped"], again
        assert dealer.poll(30000)
        reply = json.loads(dealer.recv_multipart()[1])
        assert reply["ok"] and reply["execution"]["moved"] and not reply["execution"]["success"], reply
        assert "stop" in reply["execution"]["message"]
        settled(sim, within_s=2.0)  # at rest within the stop's ramp, not driven on to the target
    finally:
        events.close(0)
        dealer.close(0)


@pytest.mark.parametrize("text", ["zzzz qqqq xxxx", "\U0001f600"])
def test_a_grasp_the_model_cannot_ground_moves_nothing_at_all(daemon, sim, text):
    before = settled(sim)
    reply = request(daemon, "grasp", text=text)
    assert not reply["ok"] and reply["error"]["code"] == "not_understood", reply
    time.sleep(1.0)
    assert np.abs(arm_q(sim) - before).max() < 1e-3  # not even to the observation pose


def test_home_and_release_publish_moving(daemon, sim):
    assert request(daemon, "status")["ok"]  # serving: its start-up "idle" is out before we subscribe
    events = subscribe(daemon.config.server.events, b"state")
    try:
        for kind in ("home", "release"):
            assert request(daemon, kind)["ok"]
            states = [wait_event(events, b"state")["state"] for _ in range(2)]
            assert states == ["moving", "idle"], (kind, states)
    finally:
        events.close(0)


@pytest.mark.slow
def test_the_slowest_grasp_ends_in_time_and_the_arm_stays_in_step(daemon, sim):
    slow = request(daemon, "grasp", timeout_s=900, text="grasp the box", speed=protocol.MIN_SPEED)
    assert slow["ok"] and slow["execution"]["moved"], (
        slow
    )  # not robot_unavailable: the plan's time limit stretched with it
    assert request(daemon, "release")["ok"]
    assert request(daemon, "home")["ok"]
    assert request(daemon, "grasp", text="grasp the box")["execution"]["moved"]
