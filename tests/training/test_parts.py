"""The part head: which part of its object each grasp patch holds, trained on a frozen vision tower."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training.datasets import open_dataset  # noqa: E402
from training.datasets.augment import center_crop  # noqa: E402
from training.parts import (  # noqa: E402
    PARTS_FILE,
    PARTS_META,
    PartHead,
    category_parts,
    labelled,
    main,
    part_classes,
    part_loss,
    part_targets,
    place_loss,
    place_targets,
    train,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from training.model import TinyConfig, build_tiny
    from training.synth import SynthConfig, write_synthetic_dataset

    root = tmp_path_factory.mktemp("parts")
    write_synthetic_dataset(root / "scenes", 3, SynthConfig(seed=11, instances=2, objects=(2, 4)), workers=1,
                            progress=False)  # fmt: skip
    model, processor = build_tiny(TinyConfig())
    model.save_pretrained(root / "vision")
    processor.save_pretrained(root / "vision")
    return root


def test_the_classes_are_the_parts_grasps_are_labelled_on():
    classes = part_classes()
    assert classes == sorted(set(classes)) and {"handle", "rim", "neck", "body"} <= set(classes)
    assert "blade" not in classes  # a knife is labelled on its handle only
    parts = category_parts()
    assert parts["mug"] == ["handle", "rim"] and all(set(p) <= set(classes) for p in parts.values())


@pytest.fixture(scope="module")
def views(workdir):
    """Each scene's view as the head sees it (the 320-pixel crop at 224), by image id."""
    dataset = open_dataset(workdir / "scenes")
    return {i: center_crop(dataset.load(i, with_depth=False), 320, (224, 224)) for i in dataset.ids}


INDEX = {part: i for i, part in enumerate(part_classes())}


def test_each_grasp_patch_is_labelled_with_every_part_its_centres_are_on(views):
    mixed = 0
    for view in views.values():
        target = part_targets(view, 8, INDEX)
        want = torch.zeros_like(target)
        for rect, part in zip(view.positives, view.labels.parts):
            x, y = np.asarray(rect.points).mean(axis=0)
            want[min(int(y / 28), 7) * 8 + min(int(x / 28), 7), INDEX[part]] = 1.0
        assert torch.equal(target, want) and int(labelled(target).sum()) == int((want.sum(-1) > 0).sum())
        mixed += int((target.sum(-1) > 1).sum())
    assert mixed > 0  # some patches hold grasps on two parts
    # a part the head has no class for is not a target
    assert part_targets(next(iter(views.values())), 8, {"handle": 0}).shape == (64, 1)


def test_each_part_grasp_is_placed_in_its_patch_as_the_grasp_heads_write_theirs(views):
    from training.stages import PATCH_ANGLE, PATCH_OFFSET, grasp_targets

    placed = 0
    for image_id, view in views.items():
        places, slots = place_targets(view, 8, INDEX)
        target = part_targets(view, 8, INDEX)
        assert torch.equal(slots.sum(-1) > 0, target > 0)  # a placement wherever the part is there
        assert ((places[..., :2] >= 0) & (places[..., :2] <= 1)).all()  # offsets inside the patch
        heads = grasp_targets(view, 8, 0)  # the grasp heads' targets: every grasp's offset and angle, by patch
        for k, c, j in slots.nonzero().tolist():
            if int(heads["slots"][k].sum()) < 4:  # the grasp heads keep every grasp of this patch: it is among them
                theirs = torch.cat([heads[PATCH_OFFSET][k], heads[PATCH_ANGLE][k]], dim=-1)
                assert any(torch.allclose(places[k, c, j], t, atol=1e-5) for t in theirs), (image_id, k, c)
                placed += 1
    assert placed > 0


def test_the_placement_is_fitted_to_the_nearest_of_the_parts_grasps():
    places = torch.zeros(1, 2, 1, 4, 4)
    slots = torch.zeros(1, 2, 1, 4)
    places[0, 0, 0, 0] = torch.tensor([0.2, 0.2, 1.0, 0.0])
    places[0, 0, 0, 1] = torch.tensor([0.8, 0.8, 0.0, 1.0])
    slots[0, 0, 0, :2] = 1.0
    on_one = torch.zeros(1, 2, 1, 4)
    on_one[0, 0, 0] = torch.tensor([0.8, 0.8, 0.0, 1.0])  # the second grasp, exactly
    between = torch.zeros(1, 2, 1, 4)
    between[0, 0, 0] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # the mean of the two: on neither
    assert float(place_loss(on_one, places, slots)) < 1e-6 < 0.1 < float(place_loss(between, places, slots))
    on_one[0, 1, 0] = torch.tensor([0.9, 0.1, -1.0, 0.0])  # a patch without a grasp of the part: not judged
    assert float(place_loss(on_one, places, slots)) < 1e-6
    nothing = torch.zeros(1, 2, 1, 4, requires_grad=True)
    loss = place_loss(nothing, places, torch.zeros_like(slots))
    loss.backward()  # no placement target in the batch: zero, and the step still runs
    assert float(loss) == 0.0 and nothing.grad is not None


def test_the_loss_judges_only_the_labelled_patches():
    target = torch.zeros(1, 3, 2)
    target[0, 0] = torch.tensor([1.0, 0.0])
    right = torch.tensor([[[9.0, -9.0], [5.0, 5.0], [-5.0, 9.0]]])  # right on patch 0, anything elsewhere
    wrong = torch.tensor([[[-9.0, 9.0], [5.0, 5.0], [-5.0, 9.0]]])
    assert float(part_loss(right, target)) < 0.01 < 5 < float(part_loss(wrong, target))
    own = torch.zeros(1, 3, 2, dtype=torch.bool)
    own[0, 0, 0] = True  # the patch's object has only part 0: part 1's logit is not judged
    off = torch.tensor([[[9.0, 9.0], [5.0, 5.0], [-5.0, 9.0]]])
    assert float(part_loss(off, target, own)) < 0.01 < float(part_loss(off, target))


def test_the_stage_trains_the_head_on_the_frozen_tower_and_writes_it(workdir):
    from safetensors.torch import load_file

    from appliance.bundle import sha256_file

    before = (workdir / "vision" / "model.safetensors").read_bytes()
    meta = train(workdir / "vision", workdir / "scenes", workdir / "out", steps=3, batch_size=4, log=lambda _: None)
    assert (workdir / "vision" / "model.safetensors").read_bytes() == before  # the tower is left as it was
    written = json.loads((workdir / "out" / PARTS_META).read_text())
    assert written == meta and written["classes"] == part_classes() and written["steps"] == 3
    assert written["vision_sha256"] == sha256_file(workdir / "vision" / "model.safetensors")
    assert written["activation"] == "sigmoid" and written["held_out_images"] == 1 and written["judged"] > 0
    assert 0.0 <= written["accuracy"] <= 1.0 and 0.0 <= written["recall"] <= 1.0
    assert written["place"] == 4 and isinstance(written["place_offset"], float)  # held-out figures, measured
    assert isinstance(written["place_angle_deg"], float)
    head = PartHead(written["hidden"], len(written["classes"]), written["width"])
    head.load_state_dict(load_file(str(workdir / "out" / PARTS_FILE)))
    tokens = torch.randn(2, 65, written["hidden"])
    logits, placed = head.both(tokens)
    assert head(tokens).shape == logits.shape == (2, 64, len(written["classes"]))
    assert placed.shape == (2, 64, len(written["classes"]), 4)
    assert ((placed[..., :2] > 0) & (placed[..., :2] < 1)).all() and (placed[..., 2:].abs() < 1).all()


def test_bad_arguments_are_named(workdir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(workdir / "vision"), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", str(workdir / "vision"), "--data", str(workdir / "scenes"), "--out", str(tmp_path), "--steps",
              "0"])  # fmt: skip
    assert "at least 1" in capsys.readouterr().err
    assert main(["--model", str(tmp_path), "--data", str(workdir / "scenes"), "--out", str(tmp_path / "o")]) == 2
    assert "not a Hugging Face checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
