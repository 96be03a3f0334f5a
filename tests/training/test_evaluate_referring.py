"""training.evaluate on a root with referring instructions: every instruction is scored under both metrics."""

import pytest

pytest.importorskip("mujoco")

from appliance.grasp import GraspPose  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.datasets.augment import center_crop  # noqa: E402
from training.evaluate import evaluate  # noqa: E402
from training.judging import evaluation_items, to_camera  # noqa: E402
from training.view import ModelView  # noqa: E402

VIEW = ModelView(variant="nr-a", decimals=3, size=224, crop=320, refusals=True)


@pytest.fixture(scope="module")
def clutter(tmp_path_factory):
    from training.synth import SynthConfig, write_synthetic_dataset

    config = SynthConfig(seed=9, instances=2, objects=(2, 3))
    return open_dataset(write_synthetic_dataset(tmp_path_factory.mktemp("c"), 3, config, workers=1, progress=False))


class Scripted:
    """Answers each request in evaluation order with a prepared text (what a model would have said)."""

    def __init__(self, texts):
        self.texts = list(texts)

    def __call__(self, camera_image, view_image, instruction):
        return self.texts.pop(0), 5, {}


def view_pose(dataset, image_id, rect):
    """A camera-image rectangle's pose as the model sees it (the workspace crop)."""
    sample = dataset.load(image_id, with_depth=False)
    w, h = sample.image_size
    side = VIEW.crop
    return GraspPose((rect.center[0] - (w - side) / 2) / side, (rect.center[1] - (h - side) / 2) / side, rect.angle)


def test_the_view_maps_back_onto_the_camera_image(clutter):
    image_id = clutter.ids[0]
    sample = clutter.load(image_id, with_depth=False)
    view = center_crop(sample, VIEW.crop, (VIEW.size, VIEW.size))
    back = to_camera(GraspPose.from_rectangle(view.positives[0], view.image_size), VIEW, sample.image_size)
    u, v = back.pixel_center(sample.image_size)
    assert min(abs(u - r.center[0]) + abs(v - r.center[1]) for r in sample.positives) < 0.01


def test_every_instruction_is_scored_with_both_metrics(clutter):
    fmt = VIEW.answer_format
    items = evaluation_items(clutter, clutter.ids)
    assert len(items) == len(clutter.instructions) > len(clutter.ids)
    texts = []
    for image_id, instruction in items:
        if instruction.kind == "absent":
            texts.append(fmt.render_refusal(instruction.object))
        else:
            labels = clutter.instruction_labels(instruction)
            texts.append(fmt.render(view_pose(clutter, image_id, labels.positives[len(labels.positives) // 2])))
    summary = evaluate(Scripted(texts), VIEW, clutter, clutter.ids).summary()
    assert summary["n"] == len(items)
    # labelled grasps are right by the rectangle metric; most centres lie on the target's pixels (not a
    # scissors' grasp between its two handle loops), and a few put a pad on a lens or a neighbour
    assert summary["accuracy"] == 1.0 and summary["target_rate"] >= 0.6
    assert summary["by_kind"]["absent"]["accuracy"] == 1.0 and summary["by_kind"]["absent"]["target_rate"] is None
    assert 0 < summary["part_accuracy"] <= 1.0

    # the same answers shifted onto the next instruction: mostly wrong targets, refusals where objects are
    shifted = evaluate(Scripted(texts[1:] + texts[:1]), VIEW, clutter, clutter.ids).summary()
    assert shifted["accuracy"] < 0.5 and shifted["target_rate"] < summary["target_rate"]
    assert shifted["part_accuracy"] < summary["part_accuracy"]


def test_a_model_trained_with_hints_is_reported_with_what_its_hints_named(clutter):
    from training.reasoning import load_templates
    from training.reasoning.referring import load_referring, use_knowledge

    knowledge = use_knowledge(load_templates(), load_referring())

    class Hinted(Scripted):  # as the torch and bundle answerers do for a model trained with hints
        def __call__(self, camera_image, view_image, instruction):
            return self.texts.pop(0), 5, {"hint": knowledge.objects_for(instruction)}

    items = evaluation_items(clutter, clutter.ids)
    result = evaluate(Hinted(["no pose"] * len(items)), VIEW, clutter, clutter.ids)
    hinted = result.summary()["hint_by_kind"]
    kinds = {instruction.kind for _, instruction in items}
    assert set(hinted) == kinds and "function" in kinds
    assert hinted["function"] == {"hinted": 1.0, "right": 1.0}  # train scenes: every use's phrasing is in the table
    for kind in kinds - {"function"}:
        assert hinted[kind]["hinted"] == 0.0, kind  # the others name their object: no hint
    assert hinted["absent"]["right"] is None  # nothing meant to name
    assert "hint_by_kind" not in evaluate(Scripted(["no pose"] * len(items)), VIEW, clutter, clutter.ids).summary()


def test_the_report_carries_the_baselines_on_the_same_requests(clutter):
    from training.judging import baselines

    rows = baselines(clutter, clutter.ids)
    assert set(rows) == {"floor", "oracle"}  # cnn only with a vision checkpoint
    n = len(evaluation_items(clutter, clutter.ids))
    assert rows["floor"]["n"] == rows["oracle"]["n"] == n
    assert rows["oracle"]["accuracy"] == 1.0
    assert rows["floor"]["target_rate"] < rows["oracle"]["target_rate"]
    assert "baselines" not in evaluate(Scripted(["[0.5, 0.5], 0.0"] * n), VIEW, clutter, clutter.ids).summary()


def test_a_target_checked_bundle_is_scored_as_moved_and_as_the_model_wrote_it(clutter):
    """The answerer of a bundle with a target check reports the model's own pose where the check moved it: the
    summary scores the moved poses (what the robot would do) and, beside them, the model's alone."""
    fmt = VIEW.answer_format
    items = evaluation_items(clutter, clutter.ids)
    answers = []
    for image_id, instruction in items:
        if instruction.kind == "absent":
            answers.append((fmt.render_refusal(instruction.object), None))
            continue
        labels = clutter.instruction_labels(instruction)
        right = view_pose(clutter, image_id, labels.positives[len(labels.positives) // 2])
        wrong = {"x": 0.02, "y": 0.02, "theta": 0.0}  # the view's corner: on no object
        answers.append((fmt.render(right), wrong if len(answers) % 2 == 0 else None))  # every other one moved

    class Checked(Scripted):
        def __call__(self, camera_image, view_image, instruction):
            text, written = self.texts.pop(0)
            return text, 5, {"written": written}

    summary = evaluate(Checked(answers), VIEW, clutter, clutter.ids).summary()
    moved = sum(written is not None for _, written in answers)
    parsed = sum(instruction.kind != "absent" for _, instruction in items)  # refusals are not poses to move
    assert 0 < moved < parsed < len(answers)
    check = summary["target_check"]
    assert check["moved"] == moved / parsed
    alone = check["model_alone"]
    assert summary["accuracy"] == 1.0 and alone["accuracy"] == pytest.approx(1.0 - moved / len(items))
    assert alone["target_rate"] < summary["target_rate"] and set(alone["by_kind"]) == set(summary["by_kind"])
    assert "target_check" not in evaluate(Scripted([t for t, _ in answers]), VIEW, clutter, clutter.ids).summary()


def true_maps(clutter, instruction, classes, grid):
    """The identity map an ideal head gives the model's view of ``instruction``'s image (from the simulator's own
    masks: a patch shows the object covering a quarter of it or more, else the table), and each patch's object."""
    import numpy as np

    scene = clutter.scene(instruction.image)
    w, h = clutter.load(instruction.image, with_depth=False).image_size
    owner = np.full((grid, grid), -1)
    identity = np.zeros((grid * grid, len(classes) + 1), np.float32)
    for row in range(grid):
        for col in range(grid):
            seen = [
                scene.object_at(
                    (w - VIEW.crop) / 2 + (col + a) / grid * VIEW.crop,
                    (h - VIEW.crop) / 2 + (row + b) / grid * VIEW.crop,
                )  # fmt: skip
                for a in np.linspace(0.1, 0.9, 5)
                for b in np.linspace(0.1, 0.9, 5)
            ]
            objects = [k for k in seen if k is not None]
            if len(objects) * 4 >= len(seen):
                owner[row, col] = max(set(objects), key=objects.count)
                identity[row * grid + col, classes.index(scene.objects[owner[row, col]]["category"])] = 1.0
            else:
                identity[row * grid + col, len(classes)] = 1.0
    return identity, owner


def appliance_check():
    """The target check a bundle of these templates carries (the export's leads), and its category names."""
    from appliance.bundle import TargetCheckSpec
    from appliance.runtime.objects import CategoryNames
    from appliance.runtime.target import TargetCheck
    from export.quantize import answer_leads
    from training.reasoning import load_templates
    from training.stages import identity_classes

    classes = identity_classes()
    leads, a_names = answer_leads(classes)
    names = CategoryNames(load_templates().vocabulary())
    return TargetCheck(TargetCheckSpec(8, leads=leads, a_names=a_names), classes, names), classes


def test_the_appliances_spatial_check_finds_the_generators_object_on_true_patch_maps(clutter):
    """``runtime.target.referent`` reads left, right, near and far in the model's view the way the generator asks
    them in the world: on identity maps made from the simulator's own masks, it picks each spatial instruction's
    target. Guards the two conventions (image axes, robot frame) against drifting apart."""
    check, classes = appliance_check()
    spatial = [i for i in clutter.instructions if i.kind == "spatial"]
    assert spatial, "the fixture's scenes ask no spatial instruction"
    for instruction in spatial:
        identity, owner = true_maps(clutter, instruction, classes, 8)
        referent = check.referent(instruction.text, identity)
        assert referent is not None, instruction.text
        picked = owner[referent.patches].tolist()
        assert max(set(picked), key=picked.count) == instruction.target, (instruction.text, instruction.facts)


def test_a_request_by_use_opens_with_the_generators_object_where_the_hint_names_one(clutter):
    """The bundle's knowledge, narrowed to what an ideal head sees, hints the object each request by use was
    generated for, and the answer's lead (``TargetCheck.use_lead``) names that object, as the training data's
    resolution does ("A knife is something to cut with.")."""
    from training.reasoning import load_templates
    from training.reasoning.referring import load_referring, resolution, use_knowledge

    check, classes = appliance_check()
    knowledge = use_knowledge(load_templates(), load_referring())
    by_use = [i for i in clutter.instructions if i.kind == "function"]
    assert by_use, "the fixture's scenes ask no request by use"
    led = 0
    for instruction in by_use:
        identity, _ = true_maps(clutter, instruction, classes, 8)
        objects = knowledge.objects_for(instruction.text)
        hint = tuple(check.shown(objects, identity) or objects)
        lead = check.use_lead(instruction.text, identity, hint)
        category = clutter.scene(instruction.image).objects[instruction.target]["category"]
        a_name = check.spec.a_names[category]
        if lead:
            led += 1
            assert resolution("function", a_name, instruction.facts).startswith(lead + " "), instruction.text
    assert led >= len(by_use) / 2, f"{led} of {len(by_use)} requests by use led"
