"""The sim cell for real: franky-sim's libfranka server in its own process, pylibfranka here."""

import json

import numpy as np
import pytest

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")
zmq = pytest.importorskip("zmq")

from appliance.robot.franka import FrankaArm, FrankaConfig  # noqa: E402
from appliance.robot.plan import MotionError, tcp_pose  # noqa: E402
from appliance.sim.client import SimCellClient  # noqa: E402
from appliance.sim.hold import LIFT_SUCCESS_M  # noqa: E402
from appliance.sim.trials import TrialRunner, main, model_source, oracle_source  # noqa: E402
from tests.helpers import sim_cell  # noqa: E402


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A cell on its own loopback address and port, so it never meets another running cell."""
    with sim_cell(tmp_path_factory.mktemp("cell"), "mug, knife, ball") as config:
        yield config


@pytest.fixture(scope="module")
def client(cell):
    with SimCellClient(cell.service, timeout_s=10) as c:
        yield c


@pytest.fixture(scope="module")
def arm(cell):
    with FrankaArm(FrankaConfig(host=cell.robot_host)) as a:
        yield a


def test_info_and_an_empty_table_at_the_observation_pose(client, cell):
    info = client.info()
    assert info["robot_host"] == cell.robot_host
    assert [o["category"] for o in info["objects"]] == ["mug", "knife", "ball"]
    rgb, depth = client.frame()
    assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
    # objects are parked and the arm is folded away: the camera sees only the table, 0.7 m down
    assert depth.min() > 0.69
    # the frame op is the model's camera as before; the view op renders the same top picture, or the side one
    header, parts = client.request("frame")
    assert len(parts) == 2 and (header["height"], header["width"]) == (480, 640)
    assert np.array_equal(client.view("top"), rgb)
    assert client.view("side").shape == (480, 640, 3)
    assert (client.object_map("side") == -1).all()  # every object parked out of view
    with pytest.raises(RuntimeError, match="unknown camera"):
        client.view("front")


def test_reset_places_one_object_and_reports_poses(client):
    placement = client.reset("knife-cell", x=0.52, y=-0.04, yaw=0.5)
    assert placement["object"] == "knife-cell"
    pose = client.poses()["knife-cell"]
    assert pose[0] == pytest.approx(0.52, abs=0.01) and pose[1] == pytest.approx(-0.04, abs=0.01)
    assert abs(pose[2]) < 0.01
    _, depth = client.frame()
    assert depth.min() < 0.69  # now something lies on the table


def test_bad_requests_get_an_error_and_the_service_carries_on(client, cell):
    with pytest.raises(RuntimeError, match="unknown op"):
        client.request("fly")
    with pytest.raises(RuntimeError, match="unknown object"):
        client.reset("teapot-cell", seed=1)
    raw = zmq.Context.instance().socket(zmq.REQ)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(cell.service)
    raw.send(b"\xff not json")
    assert raw.poll(5000)
    assert json.loads(raw.recv())["ok"] is False
    raw.close()
    assert client.info()["objects"]


def test_an_empty_grasp_reports_failure_like_a_real_hand(arm, cell):
    arm.open_gripper(0.08)
    arm.move_joints(cell.ready_q)
    assert arm.grasp(0.04, 40.0, 0.036, 0.039) is False
    assert arm.gripper_width() < 0.004
    assert arm.is_grasped() is False
    arm.open_gripper(0.08)


def test_an_unreachable_target_does_not_pass_silently(arm, cell):
    arm.move_joints(cell.ready_q)
    with pytest.raises(MotionError, match="not reached"):
        arm.move_pose(tcp_pose(1.3, 0.0, 0.3, 0.0), speed=0.3)


def test_an_oracle_grasp_lifts_the_mug(client, arm, cell):
    runner = TrialRunner(cell, client, arm)
    result = runner.trial(0, 0, oracle_source(cell), seed="test-mug")
    if not result.success:  # seen once in four full-suite runs ("closed on nothing"), never alone: one retry
        result = runner.trial(0, 0, oracle_source(cell), seed="test-mug")
    assert result.success, result
    assert result.lift_m >= LIFT_SUCCESS_M
    assert arm.is_grasped()  # the hand still judges the lifted mug held (the trial's verify asked it too)
    assert np.isfinite(result.seconds)
    # the top camera sees the hand over the lifted mug; the side camera sees the mug itself under it
    mug = [o["id"] for o in client.info()["objects"]].index("mug-cell")
    side, top = (int((client.object_map(c) == mug).sum()) for c in ("side", "top"))
    assert side > 1000 and side > 2 * top, (side, top)


def test_a_scene_of_several_objects(client):
    placed = client.reset_scene(
        [
            {"object": "mug-cell", "x": 0.45, "y": -0.06, "yaw": 0.0},
            {"object": "ball-cell", "x": 0.56, "y": 0.07, "yaw": 0.0},
        ]
    )
    assert [p["object"] for p in placed] == ["mug-cell", "ball-cell"]
    state = client.objects()
    assert state["mug-cell"]["on_table"] and state["ball-cell"]["on_table"]
    assert not state["knife-cell"]["on_table"]  # parked on the floor
    with pytest.raises(RuntimeError, match="non-empty list"):
        client.request("reset", objects=[])


def test_a_bundle_proposes_the_grasp_as_the_appliance_would(client, arm, cell, nra_bundle):
    """Table II's model rows: the bundle sees the camera image; its pose (in the crop it saw) is mapped back
    to the camera image and executed. The random NR-A model always gives a pose under the grammar, so the
    trial gets past prediction; whether it lifts anything is up to its weights."""
    seen = []

    def source(rgb, depth, context):
        pose = model_source(nra_bundle)(rgb, depth, context)
        seen.append((rgb.shape, pose))
        return pose

    result = TrialRunner(cell, client, arm).trial(2, 0, source, seed="test-model")
    ((shape, pose),) = seen
    assert shape == (480, 640, 3) and pose is not None
    # the model's view is the 320-pixel centre crop of the 640 × 480 image: its poses land inside it
    assert 160 / 640 <= pose.x <= 480 / 640 and 80 / 480 <= pose.y <= 400 / 480
    assert result.stage != "predict", result


def test_trials_cli_refuses_a_model_source_without_a_usable_bundle(tmp_path, capsys):
    config = tmp_path / "sim.yaml"
    config.write_text("sim:\n  categories: [box]\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--source", "model"])
    assert exit_info.value.code == 2 and "--bundle" in capsys.readouterr().err
    assert main(["--config", str(config), "--source", "model", "--bundle", str(tmp_path / "nothing")]) == 2
    assert "not a bundle" in capsys.readouterr().err


def test_a_cluttered_trial_lifts_the_named_object_by_an_allowed_part(client, arm, cell):
    """Three objects on the table, "pick up the knife": a trial succeeds only with the knife lifted, every finger
    contact on its handle and the mug and ball left where they stood. The oracle's handle grasp does not always
    manage that beside the others (once it lifted the mug instead): up to three scenes, each judged."""
    seen = []

    def source(rgb, depth, context):
        seen.append(context)
        return oracle_source(cell)(rgb, depth, context)

    runner = TrialRunner(cell, client, arm, objects_per_scene=3)
    # scene 2 first: there the oracle lifts the knife; in scenes 0 and 1 its hand closed on nothing (session 21)
    for k in (2, 0, 1):
        result = runner.trial(1, k, source, seed=f"test-clutter:{k}")
        assert seen[-1]["instruction"] == "pick up the knife"
        assert sum(abs(p[2]) < 0.02 for p in seen[-1]["poses"].values()) == 3  # three stood on the table
        assert result.objects == 3
        if result.success:
            break
        assert result.message  # a failure says why: lifted nothing, a wrong part, or moved another object
    assert result.success, result
    assert result.lift_m >= LIFT_SUCCESS_M and result.others_moved_m <= 0.02
    fingers = client.objects()["knife-cell"]["fingers"]
    assert fingers and {f["part"] for f in fingers} == {"handle"}
    with pytest.raises(ValueError, match="--objects"):
        TrialRunner(cell, client, arm, objects_per_scene=4)


def test_a_reset_puts_crossed_fingers_back(tmp_path):
    """Two fingers squeezed into each other can slip past one another and stay crossed (the hand then read about
    -49 mm and closed on nothing in every later Table II trial); a reset puts them back open."""
    import random

    import mujoco

    from appliance.sim.cell import SimCell, SimCellConfig

    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    cell = SimCell(SimCellConfig(categories=("box",), robot_host=host)).start()
    try:
        model = cell.model
        data = mujoco.MjData(model)
        fingers = [
            j
            for j in range(model.njnt)
            if (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or "").endswith(
                ("finger_joint1", "finger_joint2")
            )
        ]
        assert len(fingers) == 2
        for j in fingers:
            data.qpos[model.jnt_qposadr[j]] = 0.01  # a hand half open: nothing to heal
        cell._heal_hand(model, data)
        assert cell.hand_heals == 0 and all(data.qpos[model.jnt_qposadr[j]] == 0.01 for j in fingers)
        data.qpos[model.jnt_qposadr[fingers[0]]] = -0.049  # crossed
        data.qvel[model.jnt_dofadr[fingers[0]]] = 0.3
        cell._heal_hand(model, data)
        assert cell.hand_heals == 1
        assert [data.qpos[model.jnt_qposadr[j]] for j in fingers] == [model.jnt_range[j][1] for j in fingers]
        assert data.qvel[model.jnt_dofadr[fingers[0]]] == 0.0
    finally:
        cell.stop()


def test_a_cell_stops_when_the_process_that_started_it_is_killed(tmp_path):
    """A benchmark killed with SIGKILL runs no ``finally``: its cell must not simulate on for nobody (``--parent``)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from appliance.sim.trials import start_cell\n"
        "import tests.helpers as h\n"
        f"path = Path({str(tmp_path)!r}) / 'sim.yaml'\n"
        "path.write_text('sim:\\n  categories: [box]\\n  service: ' + h.endpoint('cell') + '\\n  robot_host: 127.3.4.5\\n')\n"
        "print(start_cell(path).pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        cell = int(starter.stdout.readline())
        os.kill(cell, 0)  # running
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:  # gone, or a zombie its new parent has not reaped yet: either way it stopped
                if Path(f"/proc/{cell}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            except FileNotFoundError:
                break
            time.sleep(0.2)
        else:
            os.kill(cell, signal.SIGKILL)
            raise AssertionError("the cell outlived the process that started it by 15 s")
    finally:
        starter.kill()
