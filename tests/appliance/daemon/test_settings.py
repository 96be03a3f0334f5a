"""appliance.yaml and the files it names: the shipped configs load, and bad ones name the key at fault."""

from pathlib import Path

import pytest
import yaml

from appliance.config import ConfigError
from appliance.daemon.settings import load_appliance_config

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "firmware_config"


@pytest.mark.parametrize("name", ["appliance.yaml", "appliance-sim.yaml"])
def test_shipped_configs_load(name):
    config = load_appliance_config(CONFIGS / name)
    assert config.robot is not None and config.handeye.matrix.shape == (4, 4)
    assert Path(config.model.bundle).is_absolute()


def test_real_config_requires_curve_off_loopback():
    config = load_appliance_config(CONFIGS / "appliance.yaml")
    assert config.server.secure and not config.server.loopback_only
    assert config.camera.type == "k4a" and config.robot.arm.host == "172.16.0.2"


def test_sim_handeye_matches_the_sim_camera():
    from appliance.sim.scene import CellCamera

    config = load_appliance_config(CONFIGS / "appliance-sim.yaml")
    assert (config.handeye.matrix == CellCamera().T_base_cam).all()


def _write(tmp_path, **changes):
    data = yaml.safe_load((CONFIGS / "appliance-sim.yaml").read_text())
    for key in ("camera", "robot", "handeye"):
        data[key] = yaml.safe_load((CONFIGS / data[key]).read_text())
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = data
        for p in path:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"server.colour": 1}, r"server\.colour: unknown key"),
        ({"model.bundle": None}, r"model\.bundle: required key is missing"),
        ({"model.n_ctx": "big"}, r"model\.n_ctx: expected int"),
        ({"model.presence_check": "no"}, r"model\.presence_check: expected bool"),
        ({"camera.type": "webcam"}, r"camera\.type: unknown camera 'webcam'"),
        ({"camera.exposure": 5}, r"camera\.exposure: unknown key"),
        ({"robot.arm.joint_speed": 9.0}, r"robot.*joint_speed"),
        ({"robot.limits.force": "strong"}, r"robot\.limits\.force: expected a number"),
        ({"robot.limits.force": 400.0}, r"robot\.limits: force must be at most 70 N"),
        ({"robot.limits.timeout_s": float("inf")}, r"robot\.limits: timeout_s must be a finite number"),
        ({"robot.limits.min_tcp_z": -0.05}, r"robot\.limits: min_tcp_z must be a finite number of metres"),
        ({"robot.workspace.x": [0.3, float("inf")]}, r"robot\.workspace: workspace\.x must be \[low, high\]"),
        ({"robot.workspace.z": [0.45, 0.008]}, r"robot\.workspace: workspace\.z .*low < high"),
        ({"robot.recheck_after_s": -1.0}, r"robot.*recheck_after_s must be a finite number of seconds"),
        ({"robot.workspace": None}, r"robot.*workspace: required key is missing"),
        ({"robot.workspace.z": None}, r"robot.*workspace: required key is missing or incomplete.*\['x', 'y'\]"),
        ({"robot.arm.collision_torque": [20.0, 20.0, 18.0, 18.0, 60.0, 14.0, 12.0]}, r"collision_torque must be 7"),
        ({"robot.arm.collision_force": [20.0, 20.0, 20.0, 25.0, 25.0, 2500.0]}, r"robot.*collision_force must be 6"),
        ({"robot.arm.collision_torque": [20.0] * 6 + [-1.0]}, r"robot.*collision_torque must be 7"),
        ({"handeye.T_base_cam": [[1, 0, 0], [0, 1, 0]]}, r"handeye"),
        ({"server.requests": "tcp://0.0.0.0:5570"}, r"beyond loopback without CurveZMQ"),
        ({"camera": None}, r"camera: required key is missing"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        load_appliance_config(_write(tmp_path, **changes))


def test_insecure_must_be_said_explicitly(tmp_path):
    path = _write(tmp_path, **{"server.requests": "tcp://0.0.0.0:5570", "server.insecure": True})
    assert load_appliance_config(path).server.insecure


def test_files_are_named_relative_to_the_config(tmp_path):
    (tmp_path / "cam.yaml").write_text("type: replay\ndirectory: rec\nfps: 3\n")
    data = yaml.safe_load(_write(tmp_path).read_text())
    data["camera"] = "cam.yaml"
    path = tmp_path / "appliance.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"cam\.yaml.*fps: unknown key"):
        load_appliance_config(path)


def test_a_heartbeat_slower_than_half_the_units_watchdog_is_refused(monkeypatch):
    from appliance.daemon.notify import Notifier

    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2
    notifier = Notifier(address="")
    notifier.check_heartbeat(1.0)
    with pytest.raises(ValueError, match="WatchdogSec"):
        notifier.check_heartbeat(1.5)
    monkeypatch.delenv("WATCHDOG_USEC")
    Notifier(address="").check_heartbeat(60.0)  # no watchdog: nothing to check against


def test_the_unit_watchdog_and_the_shipped_heartbeat_agree():
    import re

    from appliance.daemon.settings import ServerConfig

    unit = (ROOT / "systemd" / "rtgrasp.service").read_text()
    watchdog_s = float(re.search(r"^WatchdogSec=(\d+)", unit, re.MULTILINE).group(1))
    for name in ("appliance.yaml", "appliance-sim.yaml"):
        heartbeat = yaml.safe_load((ROOT / "firmware_config" / name).read_text())["server"].get(
            "heartbeat_s", ServerConfig.heartbeat_s
        )
        assert heartbeat <= watchdog_s / 2, name
