import json

import pytest

from appliance.grasp import GraspPose
from training.datasets import open_dataset
from training.datasets.toy import write_toy_dataset
from training.metric import PredictionFileError, main, read_predictions


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), images=10, seed=1, objects=5)


def write_predictions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ground_truth_rows(root, spoil=()):
    ds = open_dataset(root)
    rows = []
    for image_id in ds.ids:
        labels = ds.labels(image_id)
        pose = GraspPose.from_rectangle(labels.positives[0], labels.image_size)
        x = pose.x + (0.3 if image_id in spoil else 0.0)  # far off the object
        rows.append({"image": image_id, "x": x, "y": pose.y, "theta": pose.theta})
    return rows


def test_cli_scores_and_writes_json(toy_root, tmp_path, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", ground_truth_rows(toy_root, spoil={"pcd0002", "pcd0007"}))
    out = tmp_path / "m.json"
    assert main(["--predictions", str(preds), "--root", str(toy_root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 10 and report["accuracy"] == pytest.approx(0.8)
    assert {f["image"] for f in report["failures"]} == {"pcd0002", "pcd0007"}
    printed = capsys.readouterr().out
    assert "accuracy 80.00%" in printed and "pcd0007" in printed


def test_missing_image_is_named(toy_root, tmp_path, capsys):
    rows = ground_truth_rows(toy_root)[:2] + [{"image": "pcd0420", "x": 0.5, "y": 0.5, "theta": 0.0}]
    preds = write_predictions(tmp_path / "p.jsonl", rows)
    assert main(["--predictions", str(preds), "--root", str(toy_root)]) == 2
    assert "pcd0420" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"p.jsonl:2: not JSON"),
        ('{"image": "pcd0001", "x": 0.5, "y": 0.5}', r"p.jsonl:2: missing \['theta'\]"),
        ('{"image": "pcd0001", "x": "0.5", "y": 0.5, "theta": 0}', r"p.jsonl:2: x, y and theta must be finite"),
        ('{"image": "pcd0001", "x": NaN, "y": 0.5, "theta": 0}', r"p.jsonl:2: x, y and theta must be finite"),
        (
            '{"image": "pcd0000", "x": 0.5, "y": 0.5, "theta": 0}',
            r"p.jsonl:2: image 'pcd0000' already predicted on line 1",
        ),
        ("[1, 2]", r"p.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_prediction_lines_are_named(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"image": "pcd0000", "x": 0.5, "y": 0.5, "theta": 0}\n' + line + "\n")
    with pytest.raises(PredictionFileError, match=message):
        read_predictions(path)


def test_cli_reports_bad_file_without_traceback(toy_root, tmp_path, capsys):
    assert main(["--predictions", str(tmp_path / "absent.jsonl"), "--root", str(toy_root)]) == 2
    assert "absent.jsonl: cannot read" in capsys.readouterr().err
