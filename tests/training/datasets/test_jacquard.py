import math

import pytest

from training.datasets import DatasetFormatError, JacquardDataset, open_dataset

from .conftest import rgb


@pytest.fixture
def jacquard_root(tmp_path):
    root = tmp_path / "jacquard"
    for scene, obj in (("0", "1a2b3c"), ("1", "1a2b3c"), ("0", "ffee99")):
        d = root / obj
        d.mkdir(parents=True, exist_ok=True)
        rgb(d / f"{scene}_{obj}_RGB.png", (1024, 1024))
        (d / f"{scene}_{obj}_grasps.txt").write_text("512.0;400.5;30.0;80.0;20.0\n600;600;-90;40;10\n")
    return root


def test_jacquard_reads_ids_objects_and_flipped_angles(jacquard_root):
    ds = open_dataset(jacquard_root)
    assert isinstance(ds, JacquardDataset)
    assert ds.ids == ["0_1a2b3c", "0_ffee99", "1_1a2b3c"]
    assert ds.object_ids() == {"0_1a2b3c": "1a2b3c", "0_ffee99": "ffee99", "1_1a2b3c": "1a2b3c"}
    first, second = ds.labels("0_1a2b3c").positives
    assert first.center == pytest.approx((512.0, 400.5))
    assert math.degrees(first.angle) == pytest.approx(-30.0)  # Jacquard's sign is flipped
    assert (first.length, first.width) == pytest.approx((80.0, 20.0))  # w is the opening
    assert math.degrees(second.angle) == pytest.approx(-90.0)
    sample = ds.load("0_1a2b3c")
    assert sample.image.shape == (1024, 1024, 3) and sample.depth is None


def test_bad_jacquard_line_names_file_and_line(jacquard_root):
    bad = jacquard_root / "ffee99" / "0_ffee99_grasps.txt"
    bad.write_text("1;2;3;4;5\n1;2;3;4\n")
    with pytest.raises(DatasetFormatError, match=r"0_ffee99_grasps.txt:2: expected 'x;y;theta;w;h'"):
        JacquardDataset(jacquard_root).labels("0_ffee99")


def test_grasps_without_image_are_an_error(jacquard_root):
    (jacquard_root / "ffee99" / "0_ffee99_RGB.png").unlink()
    with pytest.raises(DatasetFormatError, match="no 0_ffee99_RGB.png"):
        JacquardDataset(jacquard_root)
