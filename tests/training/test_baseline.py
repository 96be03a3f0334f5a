import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from appliance.grasp import GraspRectangle, angle_difference
from training.baseline import main, predict


def test_baseline_grasps_across_a_bar():
    img = Image.new("RGB", (320, 240), (150, 140, 120))
    bar = GraspRectangle.from_center(200, 100, math.radians(30), 120, 20)
    ImageDraw.Draw(img).polygon([tuple(p) for p in bar.points], fill=(30, 60, 200))
    pose = predict(np.asarray(img))
    assert abs(pose.x * 320 - 200) < 2 and abs(pose.y * 240 - 100) < 2
    assert angle_difference(pose.theta, math.radians(120)) < math.radians(3)  # across the bar


def test_baseline_cli_writes_scorable_predictions(tmp_path):
    from training.datasets.toy import write_toy_dataset
    from training.metric import main as metric

    root = write_toy_dataset(tmp_path / "toy", images=9, seed=2, objects=9)
    assert main(["--root", str(root), "--out", str(tmp_path / "p.jsonl"), "--vis", str(tmp_path / "vis")]) == 0
    assert len(list((tmp_path / "vis").glob("*.png"))) == 9
    assert metric(["--predictions", str(tmp_path / "p.jsonl"), "--root", str(root)]) == 0


def bar_depth(bars, size=(320, 240), table=0.7):
    """A depth image of a table with raised bars (cx, cy, angle, length, width, height)."""
    depth = Image.new("F", size, table)
    draw = ImageDraw.Draw(depth)
    for cx, cy, angle, length, width, height in bars:
        rect = GraspRectangle.from_center(cx, cy, angle, length, width)
        draw.polygon([tuple(p) for p in rect.points], fill=table - height)
    return np.asarray(depth, dtype=np.float32)


def test_floor_grasps_across_the_largest_blob_above_the_table():
    from training.baseline import label_blobs, predict_depth

    depth = bar_depth([(200, 100, math.radians(30), 120, 20, 0.02), (60, 180, 0.0, 40, 20, 0.03)])
    assert sorted(len(b[0]) for b in label_blobs(depth < 0.69)) == [
        pytest.approx(800, rel=0.1),
        pytest.approx(2400, rel=0.1),
    ]
    pose = predict_depth(depth)
    assert abs(pose.x * 320 - 200) < 2 and abs(pose.y * 240 - 100) < 2
    assert angle_difference(pose.theta, math.radians(120)) < math.radians(3)
    # the default step (1 cm): a 12 mm handle counts, an 8 mm blade does not
    assert predict_depth(bar_depth([(100, 100, 0.0, 80, 10, 0.012)])).x * 320 == pytest.approx(100, abs=2)
    assert predict_depth(bar_depth([(100, 100, 0.0, 80, 10, 0.008)])) == predict_depth(bar_depth([]))
    # a lower step: a thin blade (4 mm) counts; a 2 mm ripple of the table does not
    assert predict_depth(bar_depth([(100, 100, 0.0, 80, 10, 0.004)]), step=0.003).x * 320 == pytest.approx(100, abs=2)
    assert predict_depth(bar_depth([(100, 100, 0.0, 80, 10, 0.002)]), step=0.003) == predict_depth(bar_depth([]))


def test_floor_without_depth_and_cnn_without_checkpoint_are_clear_errors(tmp_path, capsys):
    from training.datasets import open_dataset
    from training.datasets.toy import write_toy_dataset

    root = write_toy_dataset(tmp_path / "toy", images=2, seed=2, objects=2)
    for depth in root.glob("*d.tiff"):
        depth.unlink()
    assert main(["--root", str(root), "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "no depth image" in capsys.readouterr().err
    assert main(["--root", str(root), "--kind", "cnn", "--out", str(tmp_path / "p.jsonl")]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert len(open_dataset(root)) == 2


def test_baselines_answer_every_instruction_of_a_cluttered_root(tmp_path):
    pytest.importorskip("mujoco")
    import json

    from training.metric import main as metric
    from training.synth import SynthConfig, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "c", 3, SynthConfig(seed=4, instances=2, objects=(2, 4)), progress=False)
    instructions = [json.loads(line) for line in (root / "instructions.jsonl").read_text().splitlines()]
    for kind in ("floor", "oracle"):
        out = tmp_path / f"{kind}.jsonl"
        assert main(["--root", str(root), "--kind", kind, "--out", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["instruction"] for r in rows] == [i["id"] for i in instructions]
        refused = {r["instruction"] for r in rows if r.get("refused")}
        assert refused == ({i["id"] for i in instructions if i["kind"] == "absent"} if kind == "oracle" else set())
        if kind == "floor":  # blind to the instruction: one pose per image
            assert len({(r["image"], r["x"], r["y"]) for r in rows}) == len({r["image"] for r in rows})
        report = tmp_path / f"{kind}.json"
        assert metric(["--predictions", str(out), "--root", str(root), "--json", str(report)]) == 0
        accuracy = json.loads(report.read_text())["accuracy"]
        assert accuracy == 1.0 if kind == "oracle" else accuracy < 0.8
