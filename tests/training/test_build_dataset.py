import json
import math
import random

import numpy as np
import pytest
from PIL import Image

from appliance.answer import AnswerFormat
from appliance.grasp import GraspPose, angle_difference, score_pose
from training.build_dataset import BuildConfig, SampleMaker, build, check, main
from training.datasets import open_dataset
from training.datasets.augment import center_crop
from training.datasets.splits import make_folds
from training.datasets.toy import make_objects, write_toy_dataset
from training.reasoning.refine import SIDES, Refinement, satisfies


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return open_dataset(write_toy_dataset(tmp_path_factory.mktemp("toy"), images=20, seed=4, objects=6))


def rectangles(grasps, size):
    return [GraspPose(x, y, t).to_rectangle(size, length, width) for x, y, t, length, width in grasps]


# The toy set's objects, as write_toy_dataset(seed=4, objects=6) draws them: their colours
# let the test check pixels and labels agree after augmentation, independently of the labels.
COLOURS = {o.object_id: np.array(o.color) for o in make_objects(6, random.Random(4))}


def check_records(records, out, fmt):
    for record in records:
        assert set(record) >= {"id", "image", "conversations", "grasps", "category"}
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and "<image>" not in turns[0]["value"][8:]
        size = Image.open(out / record["image"]).size
        truths = rectangles(record["grasps"], size)
        first = fmt.parse(turns[1]["value"]).pose
        assert score_pose(first, truths, size).correct
        pixels = np.asarray(Image.open(out / record["image"]))
        x, y = int(first.x * size[0]), int(first.y * size[1])
        assert np.abs(pixels[y, x].astype(int) - COLOURS[record["object_id"]]).max() < 30  # on the object
        before = first
        for j, round_ in enumerate(record.get("refinements", [])):
            answer = turns[3 + 2 * j]["value"]
            refined = fmt.parse(answer).pose
            request = Refinement(**{k: v for k, v in round_.items() if k in ("kind", "part", "side")})
            assert satisfies(request, before, refined, round_.get("part"))
            if request.kind == "rotate":  # well inside the check's 60°, and the answer states the change
                assert angle_difference(before.theta, refined.theta) >= math.radians(75)
                assert f"{before.theta:.3f} to {refined.theta:.3f}" in answer or fmt.variant.value != "rt"
            if request.kind == "side":
                dx, dy = SIDES[request.side]
                assert (refined.x - before.x) * dx + (refined.y - before.y) * dy >= 0.07
            before = refined


@pytest.mark.parametrize("variant", ["rt", "nr-a", "nr-b"])
def test_build_writes_llava_json_whose_answers_are_correct_grasps(toy, tmp_path, variant):
    config = BuildConfig(variant=variant, decimals=3, size=96, augment=2, refine_fraction=0.5, seed=1, refine_rounds=3)
    summary = build(toy, "iw", 2, config, tmp_path, progress=False)
    train = json.loads((tmp_path / "train.json").read_text())
    test = json.loads((tmp_path / "test.json").read_text())
    fold = make_folds("iw", toy.object_ids(), 5, seed=1)[2]
    assert {r["source"] for r in test} == set(fold.test)
    assert {r["source"] for r in train} == set(fold.train)
    # one sample per positive grasp per view; the centre-crop view's count is known exactly
    centre = sum(len(center_crop(toy.load(i), None, (96, 96)).positives) for i in fold.train)
    assert sum(r["image"].endswith("_v0.png") for r in train) == centre
    assert len(train) > centre and summary["splits"]["train"]["samples"] == len(train)
    assert summary["splits"]["test"]["samples"] == len(fold.test)
    assert any("refinement" in r for r in train)
    assert any(len(r.get("refinements", [])) > 1 for r in train)  # several rounds
    check_records(train + test, tmp_path, AnswerFormat(variant, 3))
    if variant == "rt":
        assert all(r["category"] in r["conversations"][1]["value"] for r in train)


def test_build_is_deterministic(toy, tmp_path):
    config = BuildConfig(augment=1, refine_fraction=0.3, seed=5, size=64)
    build(toy, "ow", 0, config, tmp_path / "a", progress=False)
    build(toy, "ow", 0, config, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "train.json").read_text() == (tmp_path / "b" / "train.json").read_text()


def test_worker_processes_build_the_same_records_and_images(toy, tmp_path):
    config = BuildConfig(augment=2, refine_fraction=0.5, seed=3, size=64, refine_rounds=2)
    build(toy, "iw", 1, config, tmp_path / "one", progress=False)
    build(toy, "iw", 1, config, tmp_path / "two", progress=False, workers=2)
    for name in ("train.json", "test.json"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()
    images = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "images").rglob("*.png"))
    assert len(images) > 40
    assert all((tmp_path / "one" / p).read_bytes() == (tmp_path / "two" / p).read_bytes() for p in images)
    assert sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two" / "images").rglob("*.png")) == images


def test_check_tells_a_build_the_code_would_now_write_otherwise_without_touching_it(toy, tmp_path, monkeypatch, capsys):
    config = BuildConfig(augment=2, refine_fraction=0.5, seed=3, size=64)
    out = tmp_path / "built"
    build(toy, "iw", 0, config, out, progress=False)
    images = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert check(toy, "iw", 0, config, out, images=3) is None
    args = ["--root", str(toy.root), "--out", str(out), "--augment", "2", "--refine-fraction", "0.5", "--seed", "3"]
    assert main([*args, "--size", "64", "--check", "3"]) == 0
    assert "the records are what this code writes" in capsys.readouterr().out
    assert main([*args, "--size", "96", "--check"]) == 1  # another size: other records
    assert "differs in" in capsys.readouterr().out
    real = SampleMaker.answer
    monkeypatch.setattr(SampleMaker, "answer", lambda self, pose, reasoning: real(self, pose, reasoning) + " Done.")
    differs = check(toy, "iw", 0, config, out, images=3)  # the code changed, the command did not
    assert "record 0" in differs and "'conversations'" in differs and "Done." in differs
    monkeypatch.undo()
    records = json.loads((out / "train.json").read_text())
    (out / "train.json").write_text(json.dumps(records[:2]))
    assert "holds 2 records of the first 3 images" in check(toy, "iw", 0, config, out, images=3)
    (out / "train.json").write_text(json.dumps([r for r in records if r != records[-1]]))  # the last image's last
    assert check(toy, "iw", 0, config, out, images=len({r["source"] for r in records})).endswith(
        f"the code now writes {len(records)}"
    )
    with pytest.raises(ValueError, match="at least one image"):
        check(toy, "iw", 0, config, out, images=0)
    (out / "train.json").unlink()
    assert "train.json is missing" in check(toy, "iw", 0, config, out)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == images  # the check wrote nothing there


def test_cli_reports_bad_arguments(toy, tmp_path, capsys):
    assert main(["--root", str(toy.root), "--out", str(tmp_path), "--fold", "7"]) == 2
    assert "fold must be in 0..4" in capsys.readouterr().err
    assert main(["--root", str(toy.root), "--out", str(tmp_path), "--refine-fraction", "2"]) == 2
    assert "refine_fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--root", str(toy.root), "--out", str(tmp_path), "--workers", "0"])
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert main(["--root", str(toy.root), "--out", str(tmp_path), "--split", "all", "--size", "64"]) == 0
    assert "train: " in capsys.readouterr().out


def test_one_target_per_view_is_the_most_central_grasp(toy, tmp_path):
    from training.build_dataset import central

    every = build(toy, "iw", 1, BuildConfig(variant="nr-a", decimals=3, augment=1), tmp_path / "all", progress=False)
    one = build(
        toy,
        "iw",
        1,
        BuildConfig(variant="nr-a", decimals=3, augment=1, targets="one"),
        tmp_path / "one",
        progress=False,
    )
    records = json.loads((tmp_path / "one" / "train.json").read_text())
    assert len({r["image"] for r in records}) == len(records)  # one record per view
    assert one["splits"]["train"]["samples"] < every["splits"]["train"]["samples"]
    assert central([_Rect((0, 0)), _Rect((10, 0)), _Rect((4, 1)), _Rect((20, 0))], side=100) == 1  # mean (8.5, 0.25)
    with pytest.raises(ValueError, match="targets"):
        BuildConfig(targets="some")


def test_equally_central_grasps_resolve_the_same_way_whatever_their_order():
    """A ring (a bowl's rim) and a block's two axes: the picture, not the label order, decides."""
    from training.build_dataset import central

    ring = [
        _Rect((50 + 30 * math.cos(a), 50 + 30 * math.sin(a)), angle=a)
        for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)
    ]
    block = [_Rect((40, 40), angle=1.2), _Rect((40, 40), angle=1.2 - math.pi / 2)]
    rng = random.Random(0)
    for rects, expected in ((ring, ring[9]), (block, block[1])):  # the topmost rim point; the axis nearer horizontal
        for _ in range(5):
            shuffled = rng.sample(rects, len(rects))
            assert shuffled[central(shuffled, side=100)] is expected
    # a clearly more central grasp still wins over a higher one
    assert central([_Rect((50, 10)), _Rect((50, 48)), _Rect((50, 90))], side=100) == 1


class _Rect:
    def __init__(self, center, angle=0.0):
        self.center, self.angle = center, angle


def test_absent_objects_are_answered_with_the_refusal_and_the_view_says_so(toy, tmp_path):
    from appliance.answer import AnswerRefused
    from training.view import ModelView

    config = BuildConfig(variant="rt", decimals=2, size=64, augment=1, seed=3, absent_fraction=0.5)
    build(toy, "iw", 0, config, tmp_path, progress=False)
    train = json.loads((tmp_path / "train.json").read_text())
    absent = [r for r in train if "absent" in r]
    assert 0 < len(absent) < len(train)
    fmt = ModelView.load(tmp_path).answer_format
    assert fmt.refusals and "refusal" in fmt.grammar()
    for record in absent:
        assert (
            record["absent"] != record["category"] and record["absent"] in record["conversations"][0]["value"].lower()
        )
        with pytest.raises(AnswerRefused) as refused:
            fmt.parse(record["conversations"][1]["value"])
        assert refused.value.object == record["absent"]
    test = json.loads((tmp_path / "test.json").read_text())
    assert not any("absent" in r for r in test)  # test records stay one per image, all grasps
    build(toy, "iw", 0, BuildConfig(size=64), tmp_path / "plain", progress=False)
    assert not ModelView.load(tmp_path / "plain").refusals  # no absent records: not trained to refuse


def test_instruction_first_records_put_the_image_after_the_instruction_and_the_view_says_so(toy, tmp_path):
    from dataclasses import replace

    from training.data import conversation_text
    from training.view import ModelView

    plain = BuildConfig(variant="nr-a", size=64, augment=1, seed=2, absent_fraction=0.3)
    for name, config in (("before", plain), ("after", replace(plain, prompt_order="instruction"))):
        build(toy, "iw", 0, config, tmp_path / name, progress=False)
    view = ModelView.load(tmp_path / "after")
    assert view.prompt_order == "instruction" and ModelView.load(tmp_path / "before").prompt_order == "image"
    after = json.loads((tmp_path / "after" / "train.json").read_text())
    before = json.loads((tmp_path / "before" / "train.json").read_text())
    assert len(after) == len(before) and any("absent" in r for r in after)
    for a, b in zip(after, before):  # the same records, only the first turn's order differs
        question = b["conversations"][0]["value"].removeprefix("<image>\n")
        assert a["conversations"][0]["value"] == f"{question}\n<image>"
        assert a["conversations"][1:] == b["conversations"][1:]
        text, _ = conversation_text(a["conversations"][:1])
        assert text == view.prompt_template.format(instruction=question)  # what the runtime and torch are shown
    with pytest.raises(ValueError, match="prompt_order"):
        BuildConfig(prompt_order="sideways")
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        main(["--root", str(toy.root), "--out", str(tmp_path / "x"), "--prompt-order", "sideways"])
