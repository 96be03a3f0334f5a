import math

import numpy as np
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
