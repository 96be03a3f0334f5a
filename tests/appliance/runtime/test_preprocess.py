"""Numpy preprocessing equals the training side: HF's CLIP processor and the dataset's centre crop."""

import numpy as np
import pytest
from PIL import Image

from appliance.bundle import ImageSpec
from appliance.runtime.preprocess import CropBox, as_rgb, pixel_values, prepare, workspace_view

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)), np.ones((8, 8, 1)))[:h, :w]
    return np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "size, resize, shape", [(224, 224, (224, 224)), (224, 224, (300, 200)), (224, 256, (480, 640))]
)
def test_pixel_values_equal_the_hf_processor(size, resize, shape):
    pytest.importorskip("transformers")
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor

    processor = Processor(
        size={"shortest_edge": resize}, crop_size={"height": size, "width": size}, image_mean=MEAN, image_std=STD
    )
    image = _image(shape[1], shape[0])
    want = processor(images=Image.fromarray(image), return_tensors="np")["pixel_values"]
    got = pixel_values(image, ImageSpec(size, resize, MEAN, STD))
    assert got.shape == want.shape == (1, 3, size, size)
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("crop", [None, 320, 400])
def test_workspace_view_equals_the_dataset_centre_crop(crop):
    from training.datasets.augment import center_crop

    image = _image(640, 480, seed=2)
    want = center_crop(_sample(image), crop, (224, 224)).image
    got, box = workspace_view(image, ImageSpec(224, 224, MEAN, STD, crop=crop))
    assert np.array_equal(got, want)
    side = crop or 480
    assert box == CropBox(320 - side / 2, 240 - side / 2, side)


def _sample(image):
    from training.datasets.sample import GraspLabels, GraspSample

    return GraspSample(image, GraspLabels("x", (image.shape[1], image.shape[0]), ()))


def test_crop_box_maps_back_to_camera_pixels():
    box = CropBox(160, 80, 320)
    assert box.to_camera(0.0, 0.0) == (160, 80)
    assert box.to_camera(0.5, 0.5) == (320, 240)
    assert box.to_camera(1.0, 0.25) == (480, 160)


def test_bad_images_are_refused():
    spec = ImageSpec(224, 224, MEAN, STD)
    with pytest.raises(ValueError, match="RGB uint8"):
        prepare(np.zeros((10, 10), np.uint8), spec)
    with pytest.raises(ValueError, match="RGB uint8"):
        prepare(np.zeros((10, 10, 3), np.float32), spec)
    with pytest.raises(ValueError, match="empty"):
        as_rgb(np.zeros((0, 10, 3), np.uint8))
    assert as_rgb(Image.new("L", (4, 3))).shape == (3, 4, 3)
