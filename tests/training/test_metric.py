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


@pytest.fixture(scope="module")
def clutter_root(tmp_path_factory):
    pytest.importorskip("mujoco")
    from training.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(seed=7, instances=2, objects=(2, 3))
    return write_synthetic_dataset(tmp_path_factory.mktemp("clutter"), 4, config, workers=1, progress=False)


def instruction_rows(root, pose_for):
    ds = open_dataset(root)
    rows = []
    for instruction in ds.instructions:
        row = {"image": instruction.image, "instruction": instruction.id}
        pose = pose_for(ds, instruction)
        rows.append(
            {**row, "refused": True} if pose is None else {**row, "x": pose.x, "y": pose.y, "theta": pose.theta}
        )
    return rows


def labelled(ds, instruction):
    """The middle labelled grasp of the target; a refusal for an absent object."""
    if instruction.kind == "absent":
        return None
    labels = ds.instruction_labels(instruction)
    return GraspPose.from_rectangle(labels.positives[len(labels.positives) // 2], labels.image_size)


def test_instructions_are_scored_against_their_target(clutter_root, tmp_path):
    preds = write_predictions(tmp_path / "p.jsonl", instruction_rows(clutter_root, labelled))
    out = tmp_path / "m.json"
    assert main(["--predictions", str(preds), "--root", str(clutter_root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["accuracy"] == 1.0 and report["target_rate"] > 0.9
    assert report["by_kind"]["absent"]["accuracy"] == 1.0 and set(report["by_kind"]) >= {"name", "spatial"}
    assert main(["--predictions", str(preds), "--root", str(clutter_root), "--metric", "part", "--json", str(out)]) == 0
    part = json.loads(out.read_text())
    assert part["metric"] == "part" and part["by_category"]
    assert part["n"] == report["n"] and part["correct"] <= report["correct"]


def test_a_grasp_of_another_object_is_wrong_and_refusals_only_fit_absent_objects(clutter_root, tmp_path):
    def other_object(ds, instruction):
        scene = ds.scene(instruction.image)
        other = 1 if instruction.target == 0 else 0
        u, v = scene.objects[other]["pixel"]
        w, h = ds.labels(instruction.image).image_size
        return GraspPose(u / w, v / h, 0.0)

    preds = write_predictions(tmp_path / "p.jsonl", instruction_rows(clutter_root, other_object))
    out = tmp_path / "m.json"
    for metric in ("rectangle", "part"):
        assert (
            main(["--predictions", str(preds), "--root", str(clutter_root), "--metric", metric, "--json", str(out)])
            == 0
        )
        report = json.loads(out.read_text())
        assert report["correct"] == 0 and report["target_rate"] == 0.0
    refusals = write_predictions(tmp_path / "r.jsonl", instruction_rows(clutter_root, lambda ds, i: None))
    assert main(["--predictions", str(refusals), "--root", str(clutter_root), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["correct"] == report["by_kind"]["absent"]["n"] > 0


def test_cluttered_images_need_an_instruction_and_ids_must_exist(clutter_root, tmp_path, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", [{"image": "pcd0000", "x": 0.5, "y": 0.5, "theta": 0.0}])
    assert main(["--predictions", str(preds), "--root", str(clutter_root)]) == 2
    assert "must name an instruction" in capsys.readouterr().err
    preds = write_predictions(
        tmp_path / "p.jsonl", [{"image": "pcd0000", "instruction": "pcd0000-99", "x": 0.5, "y": 0.5, "theta": 0.0}]
    )
    assert main(["--predictions", str(preds), "--root", str(clutter_root)]) == 2
    assert "pcd0000-99" in capsys.readouterr().err


def test_the_part_metric_needs_scene_truth(toy_root, tmp_path, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", ground_truth_rows(toy_root))
    assert main(["--predictions", str(preds), "--root", str(toy_root), "--metric", "part"]) == 2
    assert "no part regions" in capsys.readouterr().err
