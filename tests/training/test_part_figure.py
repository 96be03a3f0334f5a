import pytest

pytest.importorskip("mujoco")

from PIL import Image  # noqa: E402

from appliance.grasp import score_pose  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.part_figure import find_grasps, main  # noqa: E402
from training.part_metric import score_part  # noqa: E402


@pytest.fixture(scope="module")
def clutter(tmp_path_factory):
    from training.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(seed=12, instances=2, objects=(3, 4))
    return write_synthetic_dataset(tmp_path_factory.mktemp("fig"), 3, config, workers=1, progress=False)


def test_the_figure_shows_a_right_and_a_wrong_grasp(clutter, tmp_path):
    ds = open_dataset(clutter)
    drawn = 0
    for instruction in ds.instructions:
        if instruction.target is None:
            continue
        found = find_grasps(ds, instruction)
        if found is None:
            continue
        right, wrong, reason = found
        labels, scene = ds.instruction_labels(instruction), ds.scene(instruction.image)
        assert score_part(right, scene, instruction.target, labels.image_size).correct
        assert not score_part(wrong, scene, instruction.target, labels.image_size).correct
        assert score_pose(wrong, labels.positives, labels.image_size).correct  # what the rectangle metric misses
        out = tmp_path / f"{instruction.id}.png"
        assert main(["--root", str(clutter), "--instruction", instruction.id, "--out", str(out)]) == 0
        with Image.open(out) as img:
            assert img.width > 640 and img.height > 480
        drawn += 1
    assert drawn > 0


def test_the_figure_refuses_unknown_and_absent_instructions(clutter, tmp_path, capsys):
    ds = open_dataset(clutter)
    absent = next(i for i in ds.instructions if i.kind == "absent")
    assert main(["--root", str(clutter), "--instruction", absent.id, "--out", str(tmp_path / "a.png")]) == 2
    assert "absent" in capsys.readouterr().err
    assert main(["--root", str(clutter), "--instruction", "pcd9999-0", "--out", str(tmp_path / "a.png")]) == 2
    assert "pcd9999-0" in capsys.readouterr().err
