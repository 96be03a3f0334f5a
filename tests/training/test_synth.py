import numpy as np
import pytest

pytest.importorskip("mujoco")

from training.datasets import CornellDataset  # noqa: E402
from training.synth import SynthConfig, main, object_library, render_sample, write_synthetic_dataset  # noqa: E402


def test_synthetic_dataset_reads_back_without_loss(tmp_path):
    config = SynthConfig(seed=7, instances=2)
    root = write_synthetic_dataset(tmp_path / "synth", images=6, config=config, workers=1, progress=False)
    ds = CornellDataset(root, round_to_pixel=False)
    assert len(ds) == 6 and ds.layout == "flat"
    library = object_library(config)
    for index, image_id in enumerate(ds.ids):
        expected = render_sample(index, config, library)
        sample = ds.load(image_id)
        assert np.array_equal(sample.image, expected["rgb"])
        assert np.allclose(sample.depth, expected["depth"])
        assert len(sample.positives) == len(expected["positives"]) > 0
        for got, want in zip(sample.positives, expected["positives"]):
            assert np.allclose(got.points, want.points, atol=1e-3)
        assert list(sample.labels.parts) == expected["parts"]
        assert sample.category == expected["object"].category
        assert sample.object_id == expected["object"].object_id


def test_workers_do_not_change_the_output(tmp_path):
    config = SynthConfig(seed=3, instances=1, categories=("mug", "knife", "ball"))
    a = write_synthetic_dataset(tmp_path / "a", images=4, config=config, workers=1, progress=False)
    b = write_synthetic_dataset(tmp_path / "b", images=4, config=config, workers=2, progress=False)
    for name in ("pcd0003cpos.txt", "pcd0002parts.txt", "objects.csv"):
        assert (a / name).read_text() == (b / name).read_text()
    assert (a / "pcd0001r.png").read_bytes() == (b / "pcd0001r.png").read_bytes()


def test_cli_refuses_unknown_categories(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--images", "1", "--categories", "mug,teapot"])
    assert "teapot" in capsys.readouterr().err


def test_a_scene_seed_shows_the_same_objects_in_new_poses():
    """A test set with the training set's --seed and another --scene-seed: seen objects, unseen poses."""
    train = SynthConfig(seed=5, instances=2, categories=("mug", "knife", "ball"))
    fresh = SynthConfig(seed=5, instances=2, categories=("mug", "knife", "ball"), scene_seed=6)
    assert [o.object_id for o in object_library(train)] == [o.object_id for o in object_library(fresh)]
    assert object_library(train)[0] == object_library(fresh)[0]  # the same instance, not only the same name
    a, b = render_sample(0, train, object_library(train)), render_sample(0, fresh, object_library(fresh))
    assert not np.array_equal(a["rgb"], b["rgb"])
    assert (
        render_sample(
            0,
            SynthConfig(seed=5, instances=2, categories=("mug", "knife", "ball"), scene_seed=5),
            object_library(train),
        )["rgb"].tobytes()
        == a["rgb"].tobytes()
    )


def test_cluttered_scenes_carry_instructions_and_per_object_labels(tmp_path):
    from appliance.sim.clutter import footprint, overlaps
    from training.datasets.splits import choose_fold
    from training.evaluate import held_out

    config = SynthConfig(seed=7, instances=2, objects=(2, 4))
    root = write_synthetic_dataset(tmp_path / "clutter", images=5, config=config, workers=1, progress=False)
    ds = CornellDataset(root, round_to_pixel=False)
    library = object_library(config)
    assert {i.image for i in ds.instructions} == set(ds.ids)
    for index, image_id in enumerate(ds.ids):
        expected = render_sample(index, config, library)
        objects = expected["objects"]
        assert 2 <= len(objects) <= 4
        scene = ds.scene(image_id)
        assert [o["category"] for o in scene.objects] == [o.category for o in objects]
        for k in range(len(scene.objects)):  # every object is seen in the mask
            assert scene.object_mask(k).sum() > 50
        # the positives of all objects are in the Cornell file, each with its owner and part
        assert [k for k, _ in scene.positives] == expected["owners"]
        assert len(ds.labels(image_id).positives) == len(expected["owners"])
        prints = [footprint(o, *row["position"], row["yaw"]) for o, row in zip(objects, scene.objects)]
        assert not any(overlaps(prints[i], prints[j], gap=0.0) for i in range(len(prints)) for j in range(i))
    # a category-wise split holds out the categories a scene shows, whichever object the label file names
    shown = ds.split_keys("cw")
    assert shown == {i: frozenset(o["category"] for o in ds.scene(i).objects) for i in ds.ids}
    assert ds.split_keys("ow") == ds.object_ids()
    scored = 0
    for fold in range(5):  # a category-wise test fold scores only instructions about its held-out categories
        narrowed, ids = held_out(ds, "cw", fold)
        held = choose_fold("cw", shown, fold).categories
        assert ids == list(choose_fold("cw", shown, fold).test)
        assert set(narrowed.instructions) <= set(ds.instructions)
        for i in narrowed.instructions:
            assert i.kind != "absent" and ds.scene(i.image).objects[i.target]["category"] in held
        scored += len(narrowed.instructions)
    assert scored and len(ds.instructions) > len(held_out(ds, "cw", 0)[0].instructions)
    for instruction in ds.instructions:
        labels = ds.instruction_labels(instruction)
        scene = ds.scene(instruction.image)
        if instruction.kind == "absent":
            assert not labels.positives
            assert instruction.object not in {o["category"] for o in scene.objects}
            continue
        assert labels.positives and labels.category == scene.objects[instruction.target]["category"]
        # every target positive's centre lies on the target's own pixels (or within a pad of them)
        mask = scene.object_mask(instruction.target)
        for rect in labels.positives:
            u, v = (int(round(c)) for c in rect.center)
            assert mask[max(0, v - 12) : v + 13, max(0, u - 12) : u + 13].any()


def test_single_object_scenes_also_carry_scene_truth(tmp_path):
    config = SynthConfig(seed=7, instances=2)
    root = write_synthetic_dataset(tmp_path / "one", images=3, config=config, workers=1, progress=False)
    ds = CornellDataset(root)
    kinds = {i.kind for i in ds.instructions}
    assert kinds == {"generic", "name", "attribute", "function", "absent"}
    for image_id in ds.ids:
        scene = ds.scene(image_id)
        assert len(scene.objects) == 1 and scene.object_mask(0).any()
        assert [p for _, p in scene.positives] == list(ds.labels(image_id).parts)


def test_cli_refuses_bad_object_counts(tmp_path, capsys):
    for bad in ("0-2", "3-2", "two"):
        with pytest.raises(SystemExit):
            main(["--out", str(tmp_path), "--images", "1", "--objects", bad])
        assert "--objects" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # two objects of a one-object library: no scene can be drawn
        main(["--out", str(tmp_path), "--images", "1", "--objects", "2-2", "--categories", "mug", "--instances", "1"])
    assert "--objects up to 2" in capsys.readouterr().err


def test_the_scene_regions_in_pixels_match_the_labelled_rectangles(tmp_path):
    """Every positive's centre lies on its object's allowed region as written in pixels, at the region's angle."""
    import math

    from appliance.grasp import angle_difference

    config = SynthConfig(seed=5, instances=1, objects=(2, 3), categories=("mug", "knife", "bottle", "sunglasses"))
    root = write_synthetic_dataset(tmp_path / "c", images=2, config=config, workers=1, progress=False)
    ds = CornellDataset(root, round_to_pixel=False)
    for image_id in ds.ids:
        scene = ds.scene(image_id)
        for rect, (k, part) in zip(ds.labels(image_id).positives, scene.positives):
            centre = np.array(rect.center)
            fits = []
            for r in scene.objects[k]["regions"]:
                if not r["allowed"] or r["part"] != part:
                    continue
                a, b = np.array(r["start"]), np.array(r["end"])
                t = 0.0 if not (b - a).any() else float(np.clip((centre - a) @ (b - a) / ((b - a) @ (b - a)), 0, 1))
                on_segment = np.linalg.norm(centre - (a + t * (b - a))) < 0.5
                aligned = r["angle"] is None or angle_difference(rect.angle, r["angle"]) < math.radians(0.5)
                fits.append(on_segment and aligned and abs(rect.length - r["opening"]) < 0.5)
            assert any(fits), (image_id, k, part)
