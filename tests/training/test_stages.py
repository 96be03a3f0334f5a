"""Base-building stages of the tiny LLaVA: vision heads and the language corpus."""

import csv
import json
import math
import random

import pytest

torch = pytest.importorskip("torch")

from appliance.grasp import angle_difference  # noqa: E402
from training.datasets import open_dataset  # noqa: E402
from training.datasets.augment import center_crop  # noqa: E402
from training.datasets.toy import write_toy_dataset  # noqa: E402
from training.model import TinyConfig, build_tiny, load_llava  # noqa: E402
from training.stages import PATCH_CENTER, PatchHeads, grasp_targets, predict_pose, sincos_2d  # noqa: E402
from training.train import TrainConfig, train  # noqa: E402

from .helpers import changed_parts  # noqa: E402


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    write_toy_dataset(root / "toy", images=10, seed=5, objects=5)
    model, processor = build_tiny(TinyConfig())
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    return root


def losses(out):
    with open(out / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_sincos_positions_are_distinct_and_bounded():
    table = sincos_2d(8, 192)
    assert table.shape == (65, 192)
    assert torch.all(table.abs() <= 1) and torch.all(table[0] == 0)
    assert len({tuple(row.tolist()) for row in table[1:]}) == 64


def test_targets_decode_back_to_the_grasp(workdir):
    ds = open_dataset(workdir / "toy")
    view = center_crop(ds.load(ds.ids[0]), None, (224, 224))
    target = grasp_targets(view, 8, 0)
    out = {
        PATCH_CENTER: target[PATCH_CENTER][None] * 20,
        "offset": target["offset"][None, :, 0],
        "angle": target["angle"][None, :, 0],
    }
    pose = predict_pose(out, 8)
    best = min(view.positives, key=lambda r: math.hypot(r.center[0] - pose.x * 224, r.center[1] - pose.y * 224))
    assert math.hypot(best.center[0] - pose.x * 224, best.center[1] - pose.y * 224) < 1e-3
    assert angle_difference(best.angle, pose.theta) < 1e-4


def test_vision_stage_trains_the_vit_with_fixed_positions(workdir):
    random.seed(0)
    out = workdir / "vision"
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "toy"),
        str(out),
        "vision",
        steps=12,
        batch_size=8,
        micro_batch=8,
        lr=2e-3,
        warmup=1,
        save_every=12,
    )
    last = train(config, progress=False)
    before, _ = load_llava(workdir / "base")
    after, _ = load_llava(last)
    assert changed_parts(before, after) == {"vision_tower"}
    positions = after.model.vision_tower.embeddings.position_embedding.weight
    assert torch.allclose(positions, sincos_2d(8, positions.shape[1]))
    assert (last / "vision_heads.safetensors").is_file()
    values = losses(out)
    assert sum(values[-3:]) < sum(values[:3])


def test_a_vision_stage_resumes_from_its_last_checkpoint_with_its_heads(workdir, tmp_path, monkeypatch):
    """A crash after checkpoint 3 of 6 costs three steps, not the stage: --resume continues from its weights,
    heads and optimizer, and keeps the log."""
    import shutil

    from safetensors.torch import load_file

    from training.stages import HEADS_FILE

    def config(steps):
        return TrainConfig(
            str(workdir / "base"), str(workdir / "toy"), str(tmp_path / "v"), "vision",
            steps=steps, batch_size=4, micro_batch=4, lr=2e-3, warmup=1, save_every=3,
        )  # fmt: skip

    whole = train(config(6), progress=False)
    shutil.copytree(whole, tmp_path / "whole-6")
    shutil.rmtree(whole)  # the crash: step 6 never saved
    whole_losses = losses(tmp_path / "v")
    first = whole_losses[:3]
    import training.stages

    counted, calls = training.stages.vision_loss, []
    monkeypatch.setattr(training.stages, "vision_loss", lambda *a: calls.append(1) or counted(*a))
    resumed = train(config(6), resume=True, progress=False)
    assert len(calls) == 3  # steps 4 to 6 only
    assert resumed.name == "checkpoint-000006"
    steps = [int(r["step"]) for r in csv.DictReader(open(tmp_path / "v" / "metrics.csv"))]
    assert steps[:3] == [1, 2, 3] and steps[-3:] == [4, 5, 6]
    assert losses(tmp_path / "v")[:3] == first  # the log kept
    theirs, ours = load_file(tmp_path / "whole-6" / HEADS_FILE), load_file(resumed / HEADS_FILE)
    torch.manual_seed(123)
    fresh = PatchHeads(192, theirs["category.weight"].shape[0]).state_dict()
    for name in ("identity.weight", "grasp.weight"):  # three steps apart, not a fresh start
        assert (ours[name] - theirs[name]).abs().mean() < 0.3 * (fresh[name] - theirs[name]).abs().mean()
    assert torch.load(resumed / "trainer_state.pt", weights_only=False)["step"] == 6
    # each batch draws from its own seeded generator: the resumed run trained on the very batches of the whole one
    assert losses(tmp_path / "v")[-3:] == pytest.approx(whole_losses[3:], rel=1e-4)


def test_loader_processes_draw_the_vision_batches_the_stage_would_draw_itself(workdir, tmp_path):
    """--workers for the vision stage: the same batches, in the same order, so the same training."""
    from training.stages import VisionBatches, identity_classes, prefetched

    ds = open_dataset(workdir / "toy")
    _, processor = load_llava(workdir / "base")

    def batches(start=0):
        return VisionBatches(ds, list(ds.ids), processor, identity_classes(), 224, None, seed=7, start=start)

    own = batches()
    expected = [own(4, 8) for _ in range(5)]
    stream = prefetched(batches(), 4, 8, workers=2)
    drawn = [next(stream) for _ in range(5)]
    stream.close()
    resumed = batches(start=3)  # a run resumed after step 3 goes on with batch 3
    for (pixels, target), (their_pixels, theirs) in zip(expected[3:], [resumed(4, 8), resumed(4, 8)]):
        assert torch.equal(pixels, their_pixels) and all(torch.equal(target[k], theirs[k]) for k in target)
    for (pixels, target), (their_pixels, theirs) in zip(expected, drawn):
        assert torch.equal(pixels, their_pixels) and all(torch.equal(target[k], theirs[k]) for k in target)
    assert not torch.equal(expected[0][0], expected[1][0])  # fresh views every batch

    def run(workers):
        config = TrainConfig(
            str(workdir / "base"), str(workdir / "toy"), str(tmp_path / f"w{workers}"), "vision",
            steps=3, batch_size=4, micro_batch=4, lr=2e-3, warmup=1, save_every=3, workers=workers,
        )  # fmt: skip
        train(config, progress=False)
        return losses(tmp_path / f"w{workers}")

    assert run(2) == pytest.approx(run(0), rel=1e-5)


def test_language_stage_trains_the_decoder_only(workdir):
    out = workdir / "language"
    config = TrainConfig(
        str(workdir / "base"),
        "none",
        str(out),
        "language",
        steps=10,
        batch_size=16,
        micro_batch=16,
        lr=2e-3,
        warmup=1,
        save_every=10,
    )
    last = train(config, progress=False)
    before, _ = load_llava(workdir / "base")
    after, _ = load_llava(last)
    assert changed_parts(before, after) == {"language_model", "lm_head"}
    values = losses(out)
    assert values[-1] < values[0]
    # the stage cuts its lines at 96 tokens itself: no limit is saved with the tokenizer for later prompts
    saved = json.loads((last / "tokenizer.json").read_text())
    assert saved.get("truncation") is None
    assert "max_length" not in json.loads((last / "tokenizer_config.json").read_text())


def test_align_trains_the_projector_on_descriptions(workdir):
    import json

    from training.build_dataset import BuildConfig, build

    toy = open_dataset(workdir / "toy")
    build(toy, "all", 0, BuildConfig(size=224, task="describe", seed=3), workdir / "describe", progress=False)
    records = json.loads((workdir / "describe" / "train.json").read_text())
    assert len(records) == len(toy)
    answer = records[0]["conversations"][1]["value"]
    assert records[0]["category"] in answer and " of the image" in answer and "[" not in answer
    out = workdir / "align"
    config = TrainConfig(
        str(workdir / "base"),
        str(workdir / "describe"),
        str(out),
        "align",
        steps=4,
        batch_size=4,
        micro_batch=2,
        warmup=1,
        save_every=4,
    )
    last = train(config, progress=False)
    before, _ = load_llava(workdir / "base")
    after, _ = load_llava(last)
    assert changed_parts(before, after) == {"multi_modal_projector"}
    assert losses(out)[-1] < losses(out)[0]


def test_vision_heads_are_scored_as_a_baseline(workdir, tmp_path):
    import json

    from training.evaluate import main as evaluate_main

    checkpoint = workdir / "vision" / "checkpoint-000012"
    if not checkpoint.is_dir():
        pytest.skip("needs the vision checkpoint of the earlier test")
    out = tmp_path / "heads.json"
    assert (
        evaluate_main(
            [
                "--model",
                str(checkpoint),
                "--root",
                str(workdir / "toy"),
                "--split",
                "all",
                "--heads",
                "--cnn",
                str(checkpoint),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["n"] == 10 and report["parse_failure_rate"] == 0 and 0 <= report["accuracy"] <= 1
    # the same heads as the cnn baseline, scored on the camera image: the same figure
    assert report["baselines"]["cnn"]["n"] == 10 and report["baselines"]["cnn"]["accuracy"] == report["accuracy"]
    from training.baseline import main as baseline_main

    for kind in ("cnn", "cnn-words", "cnn-told"):  # no scenes: told nothing, the told heads are the plain ones
        args = ["--root", str(workdir / "toy"), "--kind", kind, "--checkpoint", str(checkpoint)]
        assert baseline_main([*args, "--out", str(tmp_path / f"{kind}.jsonl")]) == 0
    assert (tmp_path / "cnn.jsonl").read_text() == (tmp_path / "cnn-told.jsonl").read_text()
    assert (tmp_path / "cnn.jsonl").read_text() == (tmp_path / "cnn-words.jsonl").read_text()


def test_heads_told_the_category_grasp_the_best_patch_of_that_category():
    from training.stages import PATCH_IDENTITY, told_pose

    grid = 4
    center = torch.zeros(1, 16)
    center[0, 5], center[0, 10] = 9.0, 3.0  # a mug's patch is likelier than the knife's
    identity = torch.zeros(1, 16, 3)
    identity[0, :, 2] = 1.0  # the table everywhere ...
    identity[0, 5, 0] = identity[0, 10, 1] = 5.0  # ... but patch 5 shows class 0, patch 10 class 1
    out = {
        PATCH_CENTER: center,
        "offset": torch.full((1, 16, 2), 0.5),
        "angle": torch.tensor([1.0, 0.0]).expand(1, 16, 2),
        PATCH_IDENTITY: identity,
    }
    assert told_pose(out, grid, 0) == predict_pose(out, grid)
    pose = told_pose(out, grid, 1)
    assert (pose.x, pose.y) == (2.5 / grid, 2.5 / grid)  # patch 10: row 2, column 2, its centre
    assert told_pose(out, grid, 7) == predict_pose(out, grid)  # no patch of that class: every patch
    assert told_pose(out, grid, {1, 7}) == pose  # several classes: the best patch showing any of them
    assert told_pose(out, grid, {0, 1}) == predict_pose(out, grid)


def test_the_words_rule_reads_a_name_or_a_use_and_nothing_else():
    from training.baseline import words_categories

    assert words_categories("pick up the pink ball") == ({"ball"}, True)
    assert words_categories("Can you lift the knife?") == ({"knife"}, True)  # the can is no object asked for
    wanted, named = words_categories("hand me something to cut with")  # a use: the knowledge's objects
    assert "knife" in wanted and not named
    assert words_categories("the object on the left") == (set(), False)  # neither: the blind heads answer


def test_the_words_rule_grasps_what_the_instruction_names_and_refuses_what_no_patch_shows():
    from training.baseline import words_pose
    from training.stages import PATCH_IDENTITY, identity_classes

    classes, grid = identity_classes(), 4
    knife, mug = classes.index("knife"), classes.index("mug")
    center = torch.zeros(1, 16)
    center[0, 5], center[0, 10] = 9.0, 3.0  # the mug's patch is the likelier grasp
    identity = torch.zeros(1, 16, len(classes) + 1)
    identity[0, :, -1] = 1.0  # the table everywhere but two patches
    identity[0, 5, mug] = identity[0, 10, knife] = 5.0
    out = {
        PATCH_CENTER: center,
        "offset": torch.full((1, 16, 2), 0.5),
        "angle": torch.tensor([1.0, 0.0]).expand(1, 16, 2),
        PATCH_IDENTITY: identity,
    }
    blind = predict_pose(out, grid)
    on_knife = words_pose(out, grid, classes, "pick up the knife")
    assert (on_knife.x, on_knife.y) == (2.5 / grid, 2.5 / grid) and on_knife != blind
    assert words_pose(out, grid, classes, "hand me something to cut with") == on_knife  # a use that finds the knife
    assert words_pose(out, grid, classes, "pick up the whisk") is None  # named, and no patch shows one: refused
    assert words_pose(out, grid, classes, "the thing on the left") == blind  # no words to go by
    assert words_pose(out, grid, classes, "could you pass me a thing to whip cream?") == blind  # no whisk shown
    assert words_pose(out, grid, classes, None) == blind


def test_answer_digits_are_the_digits_the_answer_writes():
    from appliance.answer import AnswerFormat, AnswerVariant
    from appliance.grasp import GraspPose
    from training.stages import DIGIT_GROUPS, answer_digits

    for x, y, theta in [(0.354, 0.7391, -0.3149), (0.0, 1.0, 1.5), (0.996, 0.004, -0.001)]:
        text = AnswerFormat(AnswerVariant.NR_A, decimals=2).render(GraspPose(x, y, theta))
        digits = answer_digits(x, y, theta)
        assert len(digits) == DIGIT_GROUPS and all(0 <= d <= 9 for d in digits)
        written = "".join(c for c in text if c.isdigit())  # x, y, |θ|: units, tenths, hundredths each
        assert "".join(map(str, digits[:6] + digits[7:])) == written, (text, digits)
        assert digits[6] == int("-" in text)


def test_vision_loss_fits_the_nearest_of_a_patchs_grasps():
    """Two grasps in one patch: predicting either one exactly costs nothing in offset and angle (their
    average would), and the digits are scored against the grasp the offset points at."""
    from training.stages import (
        CANDIDATES,
        DIGIT_GROUPS,
        PATCH_ANGLE,
        PATCH_DIGITS,
        PATCH_OFFSET,
        PATCH_WHERE,
        patch_centres,
        vision_loss,
    )

    patches = 4
    target = {
        PATCH_CENTER: torch.tensor([[1.0, 0, 0, 0]]),
        "slots": torch.zeros(1, patches, CANDIDATES),
        PATCH_OFFSET: torch.zeros(1, patches, CANDIDATES, 2),
        PATCH_ANGLE: torch.zeros(1, patches, CANDIDATES, 2),
        PATCH_DIGITS: torch.zeros(1, patches, CANDIDATES, DIGIT_GROUPS, dtype=torch.long),
        "category": torch.tensor([0]),
    }
    target["slots"][0, 0, :2] = 1
    target[PATCH_OFFSET][0, 0, :2] = torch.tensor([[0.2, 0.2], [0.8, 0.7]])
    target[PATCH_ANGLE][0, 0, :2] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target[PATCH_DIGITS][0, 0, 1] = 7

    def loss(offset, angle, digit):
        logits = torch.full((1, patches, DIGIT_GROUPS, 10), -30.0)
        logits[..., digit] = 30.0
        out = {
            PATCH_CENTER: torch.tensor([[30.0, 0, 0, 0]]),
            PATCH_OFFSET: torch.tensor([[offset] * patches]),
            PATCH_ANGLE: torch.tensor([[angle] * patches]),
            PATCH_DIGITS: logits,
            PATCH_WHERE: patch_centres(2)[None],
            "category": torch.tensor([[30.0, 0.0]]),
        }
        return float(vision_loss(out, target))

    assert loss([0.8, 0.7], [0.0, 1.0], 7) < 1e-3  # the second grasp, its digits
    assert loss([0.2, 0.2], [1.0, 0.0], 0) < 1e-3  # the first grasp, its digits
    assert loss([0.8, 0.7], [0.0, 1.0], 0) > 10  # the second grasp's offset with the first's digits
    assert loss([0.5, 0.45], [0.7, 0.7], 0) > 0.1  # the average of both


def reference_targets(view, grid):
    """The per-rectangle reading of grasp_targets' contract: up to CANDIDATES centres per patch, in label order."""
    from training.stages import CANDIDATES, answer_digits

    cell = view.image_size[0] / grid
    kept: dict[int, list] = {}
    for rect in view.positives:
        x, y = rect.center
        col, row = min(int(x / cell), grid - 1), min(int(y / cell), grid - 1)
        slot = kept.setdefault(row * grid + col, [])
        if len(slot) < CANDIDATES:
            slot.append(
                (
                    x / cell - col,
                    y / cell - row,
                    rect.angle,
                    answer_digits(x / view.image_size[0], y / view.image_size[1], rect.angle),
                )
            )
    return kept


def test_grasp_targets_keep_the_first_centres_of_each_patch_in_label_order():
    """A crowded patch (more centres than CANDIDATES), centres on the image's far edges, every angle range."""
    from types import SimpleNamespace

    from appliance.grasp import GraspRectangle
    from training.stages import CANDIDATES

    rng = random.Random(3)
    rects = [GraspRectangle.from_center(10 + k, 12 + k / 2, rng.uniform(-3, 3), 30, 10) for k in range(7)]
    rects += [GraspRectangle.from_center(224.0, 223.999, 0.7, 20, 8), GraspRectangle.from_center(0.0, 0.0, -1.5, 20, 8)]
    rects += [
        GraspRectangle.from_center(rng.uniform(0, 224), rng.uniform(0, 224), rng.uniform(-4, 4), 25, 9)
        for _ in range(60)
    ]
    view = SimpleNamespace(image_size=(224, 224), positives=rects)
    target = grasp_targets(view, 8, 2)
    kept = reference_targets(view, 8)
    assert max(len(v) for v in kept.values()) == CANDIDATES  # the crowded patch was cut
    assert set(torch.nonzero(target[PATCH_CENTER]).flatten().tolist()) == set(kept)
    for k, candidates in kept.items():
        assert target["slots"][k].tolist() == [1.0] * len(candidates) + [0.0] * (CANDIDATES - len(candidates))
        for j, (ox, oy, theta, digits) in enumerate(candidates):
            assert target["offset"][k, j].tolist() == pytest.approx([ox, oy], abs=1e-6)
            assert target["angle"][k, j].tolist() == pytest.approx([math.cos(2 * theta), math.sin(2 * theta)], abs=1e-6)
            assert target["digits"][k, j].tolist() == digits
