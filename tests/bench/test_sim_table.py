"""Table II's bench: one cell, the same seeded poses for every source, a table of what was lifted."""

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")
pytest.importorskip("llama_cpp")

from bench.sim_table import main  # noqa: E402
from tests.helpers import endpoint  # noqa: E402


def test_oracle_and_model_meet_the_same_poses(nra_bundle, tmp_path, capsys):
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    config = tmp_path / "sim.yaml"
    config.write_text(f"sim:\n  categories: [box]\n  service: {endpoint('cell')}\n  robot_host: {host}\n")
    assert (
        main(["--config", str(config), "--bundle", str(nra_bundle), "--poses", "1", "--out", str(tmp_path / "t2")]) == 0
    )
    trials = json.loads((tmp_path / "t2" / "table2.json").read_text())
    assert list(trials) == ["oracle", "model"]
    assert [t["object"] for t in trials["oracle"]] == [t["object"] for t in trials["model"]] == ["box-cell"]
    oracle = trials["oracle"][0]
    assert oracle["success"], oracle  # the ground truth lifts a box
    table = (tmp_path / "t2" / "table2.md").read_text()
    assert "| object | oracle | model |" in table and "| box | 1/1 |" in table
    assert "1 objects × 1 poses per source" in table


def test_nothing_to_try_is_an_error(tmp_path, capsys):
    config = tmp_path / "sim.yaml"
    config.write_text("sim:\n  categories: [box]\n")
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--no-oracle", "--out", str(tmp_path)])
    assert "nothing to try" in capsys.readouterr().err


def test_the_cnn_baseline_proposes_the_grasp_from_the_workspace_crop(tiny_spm_checkpoint, tmp_path):
    """Table II's baseline rows: a vision-stage checkpoint's grasp heads (random here) on the 320-pixel crop."""
    import shutil

    pytest.importorskip("torch")
    from safetensors.torch import save_file

    from appliance.robot.franka import FrankaArm, FrankaConfig
    from appliance.sim.client import SimCellClient
    from appliance.sim.trials import TrialRunner
    from bench.sim_table import heads_source
    from tests.helpers import sim_cell
    from training.reasoning import load_templates
    from training.stages import PatchHeads

    checkpoint = tmp_path / "vision"
    shutil.copytree(tiny_spm_checkpoint, checkpoint)
    save_file(
        PatchHeads(192, len(load_templates().categories) + 1).state_dict(), str(checkpoint / "vision_heads.safetensors")
    )
    source = heads_source(checkpoint)
    seen = []
    with (
        sim_cell(tmp_path, "mug") as cell,
        SimCellClient(cell.service, timeout_s=10) as client,
        FrankaArm(FrankaConfig(host=cell.robot_host)) as arm,
    ):
        result = TrialRunner(cell, client, arm).trial(
            0, 0, lambda *a: seen.append(source(*a)) or seen[-1], seed="test-heads"
        )
    (pose,) = seen
    assert 160 / 640 <= pose.x <= 480 / 640 and 80 / 480 <= pose.y <= 400 / 480
    assert result.stage != "predict", result


def test_cluttered_trials_draw_three_or_four_objects_per_scene_from_the_seed(tmp_path):
    """Table II with clutter: the named object among 3-4 on the table, success by the part-aware rule."""
    host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    config = tmp_path / "sim.yaml"
    config.write_text(
        f"sim:\n  categories: [box, ball, mug, bottle]\n  service: {endpoint('cell')}\n  robot_host: {host}\n"
    )
    args = ["--config", str(config), "--categories", "box", "--poses", "1", "--objects", "3-4"]
    assert main([*args, "--out", str(tmp_path / "t2")]) == 0
    trials = json.loads((tmp_path / "t2" / "table2.json").read_text())["oracle"]
    assert len(trials) == 1 and {t["objects"] for t in trials} <= {3, 4}
    assert all(t["success"] for t in trials), trials  # the ground truth lifts the box and leaves the rest
    assert [t["lifted"] for t in trials] == [["box-cell"]]
    table = (tmp_path / "t2" / "table2.md").read_text()
    assert "3-4 objects on the table" in table and "(cell seed 0)" in table
    assert "| another object lifted | 0/1 |" in table
    with pytest.raises(SystemExit):
        main([*args, "--objects", "three", "--out", str(tmp_path / "bad")])


def test_a_fresh_seed_and_several_bundles_are_named_in_the_table(tmp_path):
    from bench.sim_table import bundle_names, with_seed

    assert bundle_names([Path("models/rtgrasp-tiny")]) == ["model"]
    assert bundle_names([Path("a/tiny"), Path("b/big"), Path("c/tiny")]) == ["model:tiny", "model:big", "model:tiny#2"]
    config = tmp_path / "sim.yaml"
    config.write_text("sim:\n  seed: 0\n  categories: [box]\n  realtime: 2.0\n")
    out = tmp_path / "out"
    out.mkdir()
    fresh = with_seed(config, 5301, out)
    from appliance.config import load_config
    from appliance.sim.cell import SimCellConfig

    loaded = load_config(fresh, "sim", SimCellConfig)
    assert loaded.seed == 5301 and tuple(loaded.categories) == ("box",) and loaded.realtime == 2.0
    assert load_config(config, "sim", SimCellConfig).seed == 0  # the user's file is left alone
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "missing.yaml"), "--seed", "1", "--out", str(out)])


def test_a_busy_machine_is_warned_of():
    from bench.sim_table import busy_warning

    assert busy_warning(0.3, 2) is None and busy_warning(1.0, 2) is None
    assert "idle machine" in busy_warning(3.9, 2)
    assert busy_warning(0.6, 1) is not None and busy_warning(6.0, 8) is None


def test_a_wrong_object_is_one_lifted_instead_of_the_target():
    from appliance.sim.trials import TrialResult

    def trial(*lifted):
        return TrialResult("mug-cell", "mug", 0, False, "verify", "", 1.0, 0.0, objects=3, lifted=lifted)

    assert trial("ball-cell").wrong_object
    assert not trial("mug-cell").wrong_object
    assert not trial("mug-cell", "ball-cell").wrong_object  # carried along: counted as another object moved
    assert not trial().wrong_object
