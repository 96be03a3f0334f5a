"""[N]'s training data on scenes of several objects: RT answers that resolve the instruction to its object,
follow-ups over several rounds, per-patch identity targets for the vision stage, and refinement judged per
request kind beside the baselines."""

import json
import math
import random

import numpy as np
import pytest

pytest.importorskip("mujoco")

from appliance.answer import AnswerFormat, AnswerRefused  # noqa: E402
from appliance.grasp import GraspPose  # noqa: E402
from training.build_dataset import BuildConfig, build, check  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.datasets.augment import Augmentation, center_crop  # noqa: E402
from training.datasets.referring import with_scene  # noqa: E402
from training.evaluate import Evaluation, evaluate  # noqa: E402
from training.judging import evaluation_items  # noqa: E402
from training.reasoning import load_templates  # noqa: E402
from training.view import ModelView  # noqa: E402

VIEW = ModelView(variant="rt", decimals=2, size=224, crop=320, refusals=True)


@pytest.fixture(scope="module")
def clutter(tmp_path_factory):
    from training.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(seed=11, instances=2, objects=(2, 4))
    return open_dataset(write_synthetic_dataset(tmp_path_factory.mktemp("c"), 5, config, workers=1, progress=False))


@pytest.fixture(scope="module")
def rt_data(clutter, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    config = BuildConfig(variant="rt", decimals=2, size=224, crop=320, augment=2, refine_fraction=1.0,
                         refine_rounds=3, absent_fraction=1.0, seed=2)  # fmt: skip
    build(clutter, "all", 0, config, out, progress=False)
    return out, json.loads((out / "train.json").read_text())


def segment_owner(dataset, record, out, pose):
    """The scene object under a pose in a record's view (None: the table), read from the view's own mask."""
    image_id, k = record["source"], int(record["image"].rsplit("_v", 1)[1].split(".")[0])
    assert k == 0, "only the upright view's mask is rebuilt here"
    sample = with_scene(dataset.load(image_id, with_depth=False), dataset.scene(image_id))
    view = center_crop(sample, 320, (224, 224))
    value = view.mask[min(int(pose.y * 224), 223), min(int(pose.x * 224), 223)]
    return dataset.scene(image_id).segments[value - 1][0] if value else None


def test_answers_resolve_the_instruction_to_its_object_then_say_how_it_is_held(clutter, rt_data):
    out, records = rt_data
    fmt = AnswerFormat("rt", 2, refusals=True)
    by_id = {i.id: i for i in clutter.instructions}
    kinds, on_target, upright = set(), 0, 0
    for record in records:
        instruction = by_id[record["instruction"]]
        answer = record["conversations"][1]["value"]
        kinds.add(instruction.kind)
        if instruction.kind == "absent":
            with pytest.raises(AnswerRefused):
                fmt.parse(answer)
            continue
        objects = clutter.scene(instruction.image).objects
        category = objects[instruction.target]["category"]
        assert record["target"] == instruction.target and category in answer.split("[")[0]
        if instruction.kind == "attribute":
            assert f"The {instruction.facts['word']} one is" in answer
        if instruction.kind == "function":  # the object first: what a hint names
            a_name = next(c.a_name for c in load_templates().categories.values() if c.name == category)
            assert answer.startswith(f"{a_name[:1].upper()}{a_name[1:]} is something"), answer
        if record["image"].endswith("_v0.png"):
            upright += 1
            on_target += segment_owner(clutter, record, out, fmt.parse(answer).pose) == instruction.target
        else:
            assert instruction.kind != "spatial"  # rotated views turn left and right
    assert {"name", "absent"} <= kinds
    assert on_target >= 0.8 * upright  # most central grasps lie on the object's own pixels


def test_follow_ups_run_over_several_rounds_and_state_the_change(rt_data):
    _, records = rt_data
    answered = [r for r in records if r["kind"] != "absent"]
    with_rounds = [r for r in answered if r.get("refinements")]
    assert len(with_rounds) >= 0.9 * len(answered)
    assert max(len(r["refinements"]) for r in with_rounds) >= 2
    fmt = AnswerFormat("rt", 2)
    for record in with_rounds:
        turns = record["conversations"]
        assert len(turns) == 2 + 2 * len(record["refinements"])
        for j, step in enumerate(record["refinements"]):
            answer = turns[3 + 2 * j]["value"]
            after = fmt.parse(answer).pose
            assert [after.x, after.y, after.theta] == pytest.approx(step["grasp"], abs=0.006)
            before = GraspPose(*step["before"])
            if step["kind"] == "rotate":
                assert f"{before.theta:.2f} to {after.theta:.2f}" in answer
            if step["kind"] == "object":
                assert answer.startswith(f"Switching to the {step['name']}.")


def test_augmentation_carries_the_mask_and_each_grasps_object(clutter):
    image_id = clutter.ids[0]
    scene = clutter.scene(image_id)
    sample = with_scene(clutter.load(image_id, with_depth=False), scene)
    for seed in range(5):
        view = Augmentation(out_size=(224, 224), crop=320)(sample, random.Random(seed))
        assert view.mask.shape == (224, 224) and len(view.labels.owners) == len(view.positives)
        hits = 0
        for rect, owner in zip(view.positives, view.labels.owners):
            x, y = (min(int(c), 223) for c in rect.center)
            value = view.mask[y, x]
            hits += bool(value) and scene.segments[value - 1][0] == owner
        assert hits >= 0.7 * len(view.positives)  # a centre between a scissors' loops sees the table


def test_patch_identity_targets_follow_the_segments():
    from training.stages import COLOURS, identity_targets

    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:4, :4] = 1  # object 0 fills the top-left patch
    mask[4:, 4:5] = 2  # object 1 covers a quarter of the bottom-right patch: below the share
    objects = ({"category": "mug", "colour": "red"}, {"category": "ball", "colour": None})
    category, colour = identity_targets(mask, ((0, "rim"), (1, "body")), objects, 2, {"ball": 0, "mug": 1, "object": 2})
    assert category.tolist() == [1, 3, 3, 3]  # the table is the last class
    assert colour.tolist() == [COLOURS.index("red"), -100, -100, -100]
    assert identity_targets(None, (), (), 2, {"object": 0})[0].tolist() == [-100] * 4


class Repeater:
    """A model that answers each instruction with a prepared pose and every follow-up with that pose again."""

    def __init__(self, answer):
        self.answer, self.last = answer, None

    def __call__(self, camera_image, view_image, instruction):
        self.last = self.answer(instruction)
        return self.last, 5, {}

    def follow_up(self, text):
        return self.last


def test_refinement_is_judged_per_kind_beside_the_repeat_and_rule_baselines(clutter):
    fmt = VIEW.answer_format
    items = [(i, r) for i, r in evaluation_items(clutter, clutter.ids) if r.kind != "absent"]
    first = {}
    for _, instruction in items:
        rect = clutter.instruction_labels(instruction).positives[0]
        cx, cy = rect.center
        first[instruction.text] = GraspPose((cx - 160) / 320, (cy - 80) / 320, rect.angle)  # the 640×480 crop

    def answer(text):
        return fmt.render(first[text], "Here.") if text in first else fmt.render_refusal("thing")

    result = evaluate(Repeater(answer), VIEW, clutter, clutter.ids, refine=True)
    summary = result.summary()
    turns = [r["refinement"] for r in result.rows if r.get("refinement")]
    assert turns and summary["refinement_turns"] == len(turns)
    assert {"rotate", "side"} <= set(summary["refinement_by_kind"])
    for kind, row in summary["refinement_by_kind"].items():
        assert row["success"] == row["repeat"], kind  # the same poses, the same verdicts
        assert (row["rule"] is not None) == (kind in ("rotate", "side"))
    assert summary["refinement_success"] < 0.5  # repeating is not refining
    again = evaluate(Repeater(answer), VIEW, clutter, clutter.ids, refine=True)
    requests = [(r.get("refinement") or {}).get("request") for r in result.rows]
    assert [(r.get("refinement") or {}).get("request") for r in again.rows] == requests  # seeded per request


def test_refinement_summary_counts_success_per_kind():
    rows = [
        {"refinement": {"kind": "rotate", "satisfied": True, "correct": True,
                        "baselines": {"repeat": {"satisfied": False, "correct": True},
                                      "rule": {"satisfied": True, "correct": False}}}},
        {"refinement": {"kind": "rotate", "satisfied": True, "correct": False,
                        "baselines": {"repeat": {"satisfied": False, "correct": True},
                                      "rule": {"satisfied": True, "correct": True}}}},
        {"refinement": {"kind": "part", "satisfied": True, "correct": True,
                        "baselines": {"repeat": {"satisfied": False, "correct": True}, "rule": None},
                        "written_judged": {"satisfied": False, "correct": True}}},  # a check moved it
    ]  # fmt: skip
    summary = Evaluation(rows=rows).refinement_summary()
    assert summary["refinement_by_kind"]["rotate"] == {"n": 2, "success": 0.5, "model_alone": 0.5, "moved": 0.0,
                                                       "repeat": 0.0, "rule": 0.5}  # fmt: skip
    assert summary["refinement_by_kind"]["part"] == {"n": 1, "success": 1.0, "model_alone": 0.0, "moved": 1.0,
                                                     "repeat": 0.0, "rule": None}  # fmt: skip
    assert math.isclose(summary["refinement_success"], 2 / 3)


def test_the_vision_stage_learns_patch_identity_on_scenes(clutter, tiny_spm_checkpoint):
    """One vision step on scenes of several objects: the identity and colour heads get targets and gradients,
    the pooled category head none (a scene has no one category), and the loss is finite."""
    import torch

    from training.model import load_llava
    from training.stages import PATCH_IDENTITY, VisionBatches, vision_step_fn

    model, processor = load_llava(tiny_spm_checkpoint)
    params, loss_fn, heads, _ = vision_step_fn(model, processor, str(clutter.root), seed=0, crop=320)
    vit = model.model.vision_tower
    grid = vit.config.image_size // vit.config.patch_size
    batches = VisionBatches(clutter, list(clutter.ids), processor, ["mug", "object"], vit.config.image_size, 320, 1)
    _, target = batches(4, grid)
    assert (target["category"] == -100).all()
    assert (target[PATCH_IDENTITY] == 2).any() and (target[PATCH_IDENTITY] < 2).any()  # table and objects
    torch.manual_seed(0)
    loss = loss_fn(4)
    assert torch.isfinite(loss)
    loss.backward()
    for head in (heads.identity, heads.colour):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0  # the heads are trained
    assert heads.category.weight.grad is None or heads.category.weight.grad.abs().sum() == 0


@pytest.mark.parametrize("task", ["grasp", "locate", "describe"])
def test_a_scene_build_checks_as_what_the_code_writes(clutter, tmp_path, task):
    """``build_dataset --check`` on scene records (hints, follow-ups, points, descriptions) as train.json holds
    them: nothing changed, nothing reported."""
    config = BuildConfig(variant="rt", decimals=2, size=224, crop=320, augment=1, refine_fraction=1.0, refine_rounds=3,
                         absent_fraction=1.0, seed=3, task=task, hints="default" if task == "grasp" else None)  # fmt: skip
    build(clutter, "all", 0, config, tmp_path, progress=False)
    assert check(clutter, "all", 0, config, tmp_path, images=3) is None


def test_locate_answers_point_at_every_visible_part_of_the_object_meant(clutter, tmp_path):
    """[O]'s neutral ground stage: where each part of the instruction's object lies, allowed and forbidden parts
    alike, in no answer variant's form (no brackets, no angle); each point lies on its own part."""
    import re

    config = BuildConfig(variant="nr-a", decimals=2, size=224, crop=320, augment=1, absent_fraction=1.0, seed=3,
                         task="locate")  # fmt: skip
    build(clutter, "all", 0, config, tmp_path, progress=False)
    records = json.loads((tmp_path / "train.json").read_text())
    by_id = {i.id: i for i in clutter.instructions}
    allowed_and_forbidden = set()
    for record in records:
        instruction = by_id[record["instruction"]]
        answer = record["conversations"][1]["value"]
        assert "[" not in answer and "]" not in answer
        if instruction.kind == "absent":
            assert not record["points"] and answer.startswith("I see no")
            continue
        scene = clutter.scene(instruction.image)
        category = scene.objects[instruction.target]["category"]
        found = re.findall(r"The ([a-z ]+) of the ([a-z ]+) is at x (\d\.\d\d) y (\d\.\d\d)\.", answer)
        assert found and len(found) == len(record["points"]) and all(c == category for _, c, _, _ in found)
        own_parts = {p for k, p in scene.segments if k == instruction.target}
        assert {p for p, _, _, _ in found} <= own_parts
        if record["image"].endswith("_v0.png"):  # the upright view: each point lies on its part in the mask
            sample = with_scene(clutter.load(instruction.image, with_depth=False), scene)
            view = center_crop(sample, 320, (224, 224))
            values = {v + 1 for v, (k, p) in enumerate(scene.segments) if k == instruction.target}
            for part, _, x, y in found:  # two decimals are 2.24 pixels: the part lies within 2 of the point
                col, row = int(float(x) * 224), int(float(y) * 224)
                near = view.mask[max(0, row - 2) : row + 3, max(0, col - 2) : col + 3]
                assert any(scene.segments[v - 1][1] == part for v in set(near.ravel()) & values)
        allowed_and_forbidden |= {p for p, _, _, _ in found}
    assert len(allowed_and_forbidden) >= 3


def test_locate_needs_scenes(tmp_path):
    from training.synth import SynthConfig, write_synthetic_dataset

    root = write_synthetic_dataset(tmp_path / "s", 2, SynthConfig(seed=1, instances=1), workers=1, progress=False)
    (root / "instructions.jsonl").unlink()
    with pytest.raises(ValueError, match="locate needs referring instructions"):
        build(open_dataset(root), "all", 0, BuildConfig(variant="nr-a", task="locate"), tmp_path / "o", progress=False)


def test_hints_ride_on_every_first_instruction_and_the_view_carries_their_knowledge(clutter, tmp_path):
    config = BuildConfig(variant="rt", decimals=2, size=224, crop=320, seed=3, hints="default")
    build(clutter, "all", 0, config, tmp_path / "rt", progress=False)
    view = ModelView.load(tmp_path / "rt")
    assert view.hints is not None and view.knowledge["uses"]["cut"]["objects"]
    by_id = {i.id: i for i in clutter.instructions}
    hinted = kinds = 0
    for record in json.loads((tmp_path / "rt" / "train.json").read_text()):
        instruction = by_id[record["instruction"]]
        first = record["conversations"][0]["value"]
        assert first == view.first_turn(instruction.text)  # the appliance's first turn, word for word
        hint = view.hints.hint(instruction.text)
        hinted += bool(hint)
        if instruction.kind == "function":
            kinds += 1
            target = clutter.scene(instruction.image).objects[instruction.target]["category"]
            assert load_templates().category(target).a_name in view.hints.objects_for(instruction.text), hint
    assert kinds and hinted >= kinds
    plain = BuildConfig(variant="rt", decimals=2, size=224, crop=320, seed=3)
    assert plain.view.knowledge is None and "Hint" not in plain.view.first_turn("something to cut with")


def test_a_knowledge_file_of_ones_own_is_checked_before_anything_is_built(clutter, tmp_path, capsys):
    from training.build_dataset import main

    mine = tmp_path / "mine.yaml"
    mine.write_text("uses:\n  whip:\n    words: [People whip cream with.]\n    objects: []\n")
    args = ["--root", str(clutter.root), "--split", "all", "--out", str(tmp_path / "out"), "--hints"]
    assert main([*args, str(mine)]) == 2
    assert "mine.yaml" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main([*args, str(tmp_path / "missing.yaml")]) == 2
    assert "no knowledge file" in capsys.readouterr().err
    mine.write_text("uses:\n  whip:\n    words: [People whip cream with.]\n    objects: [a whisk]\n")
    config = BuildConfig(hints=str(mine))
    assert config.view.first_turn("a thing to whip cream") == "<image>\na thing to whip cream Hint: a whisk."


def test_masked_use_phrases_leave_the_hint_alone_to_tell_the_object(clutter, tmp_path):
    from training.build_dataset import use_phrase

    config = BuildConfig(variant="rt", decimals=2, size=224, crop=320, seed=4, hints="default", hint_masking=1.0)
    build(clutter, "iw", 0, config, tmp_path / "rt", progress=False)
    view = ModelView.load(tmp_path / "rt")
    by_id = {i.id: i for i in clutter.instructions}
    seen = {"train": 0, "test": 0}
    names = {w for c in load_templates().categories.values() for n in (c.name, *c.synonyms) for w in n.split()}
    for split in seen:
        for record in json.loads((tmp_path / "rt" / f"{split}.json").read_text()):
            instruction = by_id[record["instruction"]]
            if instruction.kind != "function":
                continue
            seen[split] += 1
            first = record["conversations"][0]["value"]
            target = clutter.scene(instruction.image).objects[instruction.target]["category"]
            assert load_templates().category(target).a_name in view.hints.objects_for(instruction.text), first
            if split == "test":  # scored as asked
                assert first == view.first_turn(instruction.text)
            else:
                assert use_phrase(instruction) not in first and first.endswith(view.hints.hint(instruction.text))
                said = first.removeprefix("<image>\n").partition(" Hint: ")[0]
                before, _, after = instruction.text.partition(use_phrase(instruction))
                assert said.startswith(before) and said.endswith(after), (said, instruction.text)
                masked = said[len(before) : len(said) - len(after)].split()
                assert 2 <= len(masked) <= 4 and not set(masked) & names, said  # no object named in the mask
    assert seen["train"] and seen["test"]
    with pytest.raises(ValueError, match="hint_masking needs hints"):
        BuildConfig(hint_masking=0.5)
    with pytest.raises(ValueError, match="hint_masking must be in"):
        BuildConfig(hints="default", hint_masking=2.0)
