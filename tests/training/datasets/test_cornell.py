import json
import math

import numpy as np
import pytest

from training.datasets import CornellDataset, DatasetFormatError, open_dataset
from training.datasets.toy import generate, write_toy_dataset

from .conftest import CPOS, rgb


def test_numbered_layout_reads_pinned_rectangle(numbered_root):
    ds = open_dataset(numbered_root)
    assert isinstance(ds, CornellDataset)
    assert ds.layout == "numbered folders"
    assert ds.ids == ["pcd0100", "pcd0101", "pcd0102"]
    labels = ds.labels("pcd0100")
    assert labels.image_size == (640, 480)
    assert len(labels.positives) == 1 and len(labels.negatives) == 1
    assert labels.skipped == 1  # the NaN rectangle
    rect = labels.positives[0]
    assert rect.center == pytest.approx((280, 335), abs=0.5)
    assert math.degrees(rect.angle) == pytest.approx(-4.09, abs=0.01)
    assert (rect.length, rect.width) == pytest.approx((56.1, 26.1), abs=0.05)


def test_both_layouts_give_the_same_labels(numbered_root, repackaged_root):
    a, b = CornellDataset(numbered_root), CornellDataset(repackaged_root)
    assert b.layout.startswith("re-packaged")
    assert a.ids == b.ids
    for image_id in a.ids:
        la, lb = a.labels(image_id), b.labels(image_id)
        assert la.positives == lb.positives and la.negatives == lb.negatives


def test_without_rounding_corners_stay_as_written(numbered_root):
    rect = CornellDataset(numbered_root, round_to_pixel=False).labels("pcd0100").positives[0]
    assert rect.points[0].tolist() == [253.0, 319.7]


def test_point_cloud_becomes_depth_with_holes(numbered_root):
    sample = CornellDataset(numbered_root).load("pcd0100")
    depth = sample.depth
    assert depth.shape == (480, 640) and depth.dtype == np.float32
    assert depth[0, 0] == pytest.approx(0.5)  # |(300, 400, 0)| mm
    assert depth[2, 3] == pytest.approx(1.2)  # index 1283 = row 2, col 3
    assert depth[479, 639] == pytest.approx(1.0)  # |(-600, 0, 800)| mm
    assert np.isnan(depth).sum() == 480 * 640 - 3


def test_depth_tiff_is_read(repackaged_root):
    sample = CornellDataset(repackaged_root).load("pcd0101")
    assert sample.image.shape == (480, 640, 3)
    assert np.allclose(sample.depth, 0.75)
    assert CornellDataset(repackaged_root).load("pcd0101", with_depth=False).depth is None


def test_object_map_from_z_txt(numbered_root):
    ds = CornellDataset(numbered_root)
    assert ds.object_ids() == {"pcd0100": "7", "pcd0101": "7", "pcd0102": "12"}
    assert ds.labels("pcd0102").object_name == "red scissors"


def test_object_map_csv_with_categories(repackaged_root):
    objects = repackaged_root / "objects.csv"
    objects.write_text("image_id,object_id,name,category\npcd0100,3,blue mug,mug\n100,3,x,mug\n")
    with pytest.raises(DatasetFormatError, match=r"objects.csv:3: image '100' is listed twice"):
        CornellDataset(repackaged_root)
    objects.write_text("image_id,object_id,name,category\npcd0100,3,blue mug,mug\npcd0101,4,pen,pen\n")
    ds = CornellDataset(repackaged_root)
    assert ds.labels("pcd0100").category == "mug"
    assert ds.labels("pcd0102").object_id is None  # unmapped images stay unknown


def test_without_object_map_objects_are_unknown(repackaged_root):
    assert set(CornellDataset(repackaged_root).object_ids().values()) == {None}


@pytest.mark.parametrize(
    "content, message",
    [
        ("1 2\n3 4\n5 6\n7\n", r"cpos.txt:4: expected 'x y'"),
        ("1 2\n3 4\n5 six\n7 8\n", r"cpos.txt:3: not a number"),
        ("1 2\n3 4\n5 6\n", r"cpos.txt:3: 3 corner lines is not a multiple of 4"),
    ],
)
def test_bad_label_file_names_file_and_line(numbered_root, content, message):
    (numbered_root / "01" / "pcd0101cpos.txt").write_text(content)
    ds = CornellDataset(numbered_root)
    with pytest.raises(DatasetFormatError, match=message):
        ds.labels("pcd0101")


def test_bad_point_cloud_names_file(numbered_root):
    (numbered_root / "01" / "pcd0100.txt").write_text("FIELDS x y z\nDATA ascii\n1 2 3\n")
    with pytest.raises(DatasetFormatError, match=r"pcd0100.txt:2: FIELDS lacks \['index'\]"):
        CornellDataset(numbered_root).load("pcd0100")


def test_missing_and_duplicate_files_are_errors(numbered_root, tmp_path):
    (numbered_root / "02" / "pcd0102cpos.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"pcd0102r.png: no pcd0102cpos.txt"):
        CornellDataset(numbered_root)
    (numbered_root / "02" / "pcd0102cpos.txt").write_text(CPOS)
    (numbered_root / "03").mkdir()
    (numbered_root / "03" / "pcd0100cpos.txt").write_text(CPOS)
    with pytest.raises(DatasetFormatError, match="pcd0100 appears twice"):
        CornellDataset(numbered_root)
    with pytest.raises(FileNotFoundError, match="no grasp dataset"):
        open_dataset(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        open_dataset(tmp_path / "nowhere")


def _empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    rgb(empty / "unrelated.png", (8, 8))
    return empty


def test_unknown_image_id_is_named(numbered_root):
    with pytest.raises(KeyError, match="pcd0999"):
        CornellDataset(numbered_root).labels("pcd0999")


def test_toy_dataset_reads_back_without_loss(tmp_path):
    root = write_toy_dataset(tmp_path / "toy", images=6, seed=3, objects=3)
    ds = CornellDataset(root, round_to_pixel=False)
    for item in generate(6, seed=3, objects=3):
        sample = ds.load(item.image_id)
        assert np.array_equal(sample.image, item.rgb)
        assert np.array_equal(sample.depth, item.depth)
        for got, want in ((sample.positives, item.positives), (sample.negatives, item.negatives)):
            assert len(got) == len(want)
            assert all(np.allclose(g.points, w.points, atol=1e-3) for g, w in zip(got, want))
        assert (sample.object_id, sample.category) == (item.obj.object_id, item.obj.shape)


def test_a_record_of_the_root_tells_whether_it_changed_since(numbered_root, tmp_path, capsys):
    from training.datasets.__main__ import main

    record = tmp_path / "found" / "data.json"
    assert main([str(numbered_root), "--record", str(record), "--check"]) == 1  # nothing recorded yet
    assert "no record to compare with" in capsys.readouterr().out
    assert main([str(numbered_root), "--record", str(record)]) == 0
    found = json.loads(record.read_text())
    assert found["images"] == 3 and found["dataset"] == "Cornell" and found["files"].startswith("md5 ")
    assert main([str(numbered_root), "--record", str(record), "--check"]) == 0
    (numbered_root / "01" / "notes.txt").write_text("a file added")
    assert main([str(numbered_root), "--record", str(record), "--check"]) == 1
    assert "changed since" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(numbered_root), "--check"])
    assert "--check compares the root with a --record FILE" in capsys.readouterr().err


def test_summary_cli_and_depth_conversion(numbered_root, capsys):
    from training.datasets.__main__ import main

    assert main([str(numbered_root), "--write-depth"]) == 0
    out = capsys.readouterr().out
    assert "images:     3" in out and "skipped:    3" in out and "objects:    2 known" in out
    assert "wrote 3 depth TIFFs" in out
    tiff = numbered_root / "01" / "pcd0100d.tiff"
    assert tiff.is_file()
    (numbered_root / "01" / "pcd0100.txt").unlink()  # the TIFF alone now carries the depth
    depth = CornellDataset(numbered_root).load("pcd0100").depth
    assert depth[2, 3] == pytest.approx(1.2) and np.isnan(depth[100, 100])
