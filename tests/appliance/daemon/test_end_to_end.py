"""End to end: the sim cell (MuJoCo + franky-sim), the daemon with a bundle, the client, a grasp executed.

The bundles here are the random tiny model with the NR-A and the RT answer contracts. The grammar
guarantees a parseable pose (a random RT model never ends its reasoning by itself: the runtime makes it
give its pose when the reasoning has used its share of the budget); where it points is random, and the
test checks the loop, not the grasp: reasoning + pose come back, the arm moves through the plan in the
simulation, and the result event says whether the object was lifted.
"""

import json

import pytest
import yaml

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")
zmq = pytest.importorskip("zmq")

from appliance.sim.client import SimCellClient  # noqa: E402
from tests.helpers import endpoint, sim_cell, wait_subscribed  # noqa: E402

from .conftest import HANDEYE, Running  # noqa: E402

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[3] / "firmware_config"


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    with sim_cell(tmp_path_factory.mktemp("cell")) as config:
        yield config


# NR-A is slow-marked: the demo test runs an NR-A bundle through the same loop (real processes, every grasp
# in the sim) in the default run, so this case only repeats it
@pytest.mark.parametrize("variant", [pytest.param("nr-a", marks=pytest.mark.slow), "rt"])
def test_grasp_instruction_runs_the_whole_loop_in_simulation(cell, nra_bundle, f32_bundle, tmp_path, variant):
    from appliance.client import Client

    robot = yaml.safe_load((CONFIGS / "franka-sim.yaml").read_text())
    robot["arm"]["host"] = cell.robot_host
    requests, events = endpoint("requests"), endpoint("events")
    config = {
        "server": {"requests": requests, "events": events, "heartbeat_s": 0.5},
        "model": {
            "bundle": str(nra_bundle if variant == "nr-a" else f32_bundle),
            "n_ctx": 512,
            "n_batch": 64,
            "max_new_tokens": 64,
        },
        "camera": {"type": "sim", "endpoint": cell.service},
        "robot": robot,
        "handeye": HANDEYE,
        "journal": str(tmp_path / "journal.sqlite"),
        "speech": {"enabled": False},
    }
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(config))
    with SimCellClient(cell.service, timeout_s=10) as sim:
        sim.reset(0, seed="e2e")
    running = Running(path)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"result")
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sub.connect(events)
    wait_subscribed(sub)
    try:
        client = Client(requests, timeout_s=180, retries=1)
        reply, extra = client.request("grasp", text="grasp the box")
        client.close()
        assert reply["ok"], (reply.get("error"), reply.get("execution"))
        assert reply["pose"] is not None and extra[0][:4] == b"\x89PNG"
        assert bool(reply["reasoning"]) == (variant == "rt")  # an RT answer reasons first, even a random model's
        execution = reply["execution"]
        assert execution["moved"] is True, execution  # the pose passed the checks and the plan ran in the sim
        assert isinstance(execution["success"], bool) and execution["stage"] in (
            "open",
            "pre-grasp",
            "approach",
            "close",
            "lift",
            "verify",
        )
        sub.setsockopt(zmq.UNSUBSCRIBE, b"heartbeat")  # heartbeats already queued are skipped below
        topic = b""
        while topic != b"result":
            assert sub.poll(10000)
            topic, payload = sub.recv_multipart()
        result = json.loads(payload)
        assert result["success"] == execution["success"] and result["moved"]
        if variant == "rt":
            refine_after_the_arm_moved(client_for(requests), cell, reply)
    finally:
        sub.close(0)
        running.daemon.jobs.robot.close()
        running.close()


def client_for(requests: str):
    from appliance.client import Client

    return Client(requests, timeout_s=180, retries=1)


def refine_after_the_arm_moved(client, cell, reply):
    """A grasp moved the arm: a refinement executed on that session's picture is first checked against a new
    one. The same table passes the check (and the arm moves); a box set down where the hand would go fails it."""
    session = reply["session"]
    try:
        for kind in ("release", "home"):
            assert client.request(kind)[0]["ok"]
        with SimCellClient(cell.service, timeout_s=10) as sim:
            sim.reset(0, seed="e2e")  # the table as the session's picture shows it
        again, _ = client.request("refine", text="grasp it a little to the left", session=session, execute=True)
        assert again["ok"], again
        assert again["execution"]["moved"] is True, again["execution"]  # checked, unchanged, planned on the new one
        for kind in ("release", "home"):
            assert client.request(kind)[0]["ok"]
        with SimCellClient(cell.service, timeout_s=10) as sim:
            box = sim.reset(0, x=again["target"][0], y=again["target"][1], yaw=0.0)  # where the hand would go
        assert abs(box["x"] - again["target"][0]) < 1e-6
        changed, _ = client.request("refine", text="grasp it a little to the right", session=session, execute=True)
        assert changed["ok"], changed
        execution = changed["execution"]
        assert execution["moved"] is False and execution["stage"] == "check", execution
        assert "the table has changed where the hand would go" in execution["message"], execution
    finally:
        client.close()
