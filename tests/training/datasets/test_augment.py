import math
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw

from appliance.grasp import GraspRectangle, angle_difference
from training.datasets.augment import Augmentation, center_crop, resize, rotation, warp
from training.datasets.sample import GraspLabels, GraspSample

SIZE = (320, 240)
RED = (255, 0, 0)


def drawn_sample(rect: GraspRectangle) -> GraspSample:
    """A grey image with ``rect`` painted red and the same rectangle as the only positive."""
    img = Image.new("RGB", SIZE, (128, 128, 128))
    ImageDraw.Draw(img).polygon([tuple(p) for p in rect.points], fill=RED)
    depth = np.full((SIZE[1], SIZE[0]), 0.7, np.float32)
    labels = GraspLabels("pcd0001", SIZE, (rect,))
    return GraspSample(np.asarray(img), labels, depth)


def inside(rect: GraspRectangle, xs, ys, margin: float):
    """Which points lie within the rectangle grown (margin > 0) or shrunk (< 0) by margin px."""
    cx, cy = rect.center
    t = rect.angle
    dx, dy = xs - cx, ys - cy
    along = dx * math.cos(t) - dy * math.sin(t)
    across = dx * math.sin(t) + dy * math.cos(t)
    return (np.abs(along) <= rect.length / 2 + margin) & (np.abs(across) <= rect.width / 2 + margin)


def assert_rectangle_covers_drawing(sample: GraspSample, rect: GraspRectangle):
    img = sample.image.astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 60)
    reddish = (img[..., 0] > 150) & (img[..., 1] < 110)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]] + 0.5
    # every clearly red pixel is inside the mapped rectangle ...
    assert inside(rect, xs[red], ys[red], margin=1.5).all()
    # ... and the mapped rectangle's interior is painted
    core = inside(rect, xs, ys, margin=-1.5)
    if core.sum() > 20:
        assert reddish[core].mean() > 0.97


@pytest.mark.parametrize("seed", range(25))
def test_random_augmentation_keeps_rectangle_on_the_drawing(seed):
    rng = random.Random(seed)
    rect = GraspRectangle.from_center(rng.uniform(120, 200), rng.uniform(90, 150), rng.uniform(-1.5, 1.5), 70, 24)
    augment = Augmentation(out_size=(160, 160), crop=200, zoom=(0.7, 1.4), max_shift=0.15)
    out = augment(drawn_sample(rect), rng)
    assert out.image.shape == (160, 160, 3) and out.depth.shape == (160, 160)
    assert len(out.positives) == 1
    assert_rectangle_covers_drawing(out, out.positives[0])


def test_rotation_adds_to_every_angle_and_keeps_size():
    rect = GraspRectangle.from_center(160, 120, 0.3, 60, 20)
    a = math.radians(50)
    out = warp(drawn_sample(rect), rotation(a, (160, 120)), SIZE)
    (moved,) = out.positives
    assert angle_difference(moved.angle, 0.3 + a) == pytest.approx(0.0, abs=1e-9)
    assert (moved.length, moved.width) == pytest.approx((60, 20))
    assert_rectangle_covers_drawing(out, moved)


def test_resize_and_center_crop_map_labels_and_fill_depth():
    rect = GraspRectangle.from_center(160, 120, 0.0, 60, 20)
    small = resize(drawn_sample(rect), (160, 120))
    assert small.positives[0].center == pytest.approx((80, 60))
    assert (small.positives[0].length, small.positives[0].width) == pytest.approx((30, 10))
    zoomed_out = center_crop(drawn_sample(rect), 480, (240, 240))  # larger than the image
    assert np.isnan(zoomed_out.depth[0, 0]) and zoomed_out.depth[120, 120] == pytest.approx(0.7)
    assert zoomed_out.positives[0].center == pytest.approx((120, 120))


def test_rectangles_leaving_the_view_are_dropped():
    rect = GraspRectangle.from_center(20, 20, 0.0, 30, 10)
    assert center_crop(drawn_sample(rect), 100, (100, 100)).positives == ()


def test_augmentation_is_deterministic_for_a_seed_and_validates_config():
    sample = drawn_sample(GraspRectangle.from_center(160, 120, 0.5, 60, 20))
    augment = Augmentation(out_size=(96, 96))
    a, b = augment(sample, random.Random(7)), augment(sample, random.Random(7))
    assert np.array_equal(a.image, b.image) and a.positives == b.positives
    with pytest.raises(ValueError, match="zoom"):
        Augmentation(zoom=(1.2, 0.8))
    with pytest.raises(ValueError, match="out_size"):
        Augmentation(out_size=(0, 10))
