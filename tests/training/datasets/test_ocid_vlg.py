"""The OCID-VLG reader on crafted files in the dataset's layout (refer/<version>/<split>_expressions.json,
<sequence>/rgb|depth|seg_mask_instances_combi/<name>.png)."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from appliance.grasp import GraspPose
from training.datasets import DatasetFormatError, OcidVlgDataset, open_dataset
from training.metric import grade

SEQ = "ARID20/table/top/seq07"
NAME = "result_2018-08-21-14-44-31.png"


def corners(cx, cy, opening, jaw, angle=0.0):
    """A rectangle as OCID-VLG writes it: its opening runs from corner 1 to corner 4."""
    c, s = math.cos(angle), -math.sin(angle)
    along, across = np.array([c, s]) * opening / 2, np.array([-s, c]) * jaw / 2
    centre = np.array([cx, cy])
    return [
        list(p)
        for p in (centre - along - across, centre - along + across, centre + along + across, centre + along - across)
    ]


def entry(index, sentence, answer, target, grasps):
    return {
        "image_filename": f"{SEQ},{NAME}",
        "question": sentence,
        "question_index": index,
        "answer": answer,
        "target": target,
        "box": [0, 0, 10, 10],
        "grasps": grasps,
        "program": [],
    }


@pytest.fixture
def ocid_root(tmp_path):
    root = tmp_path / "OCID-VLG"
    for folder in ("rgb", "depth", "seg_mask_instances_combi"):
        (root / SEQ / folder).mkdir(parents=True)
    Image.fromarray(np.full((480, 640, 3), 120, np.uint8)).save(root / SEQ / "rgb" / NAME)
    depth = np.full((480, 640), 800, np.uint16)
    depth[0, 0] = 0  # no reading
    mask = np.zeros((480, 640), np.uint8)
    mask[200:240, 100:200] = 3  # the apple
    mask[300:340, 400:440] = 7  # the bowl
    depth[mask > 0] = 760
    Image.fromarray(depth).save(root / SEQ / "depth" / NAME)
    Image.fromarray(mask).save(root / SEQ / "seg_mask_instances_combi" / NAME)
    refer = root / "refer" / "multiple"
    refer.mkdir(parents=True)
    data = [
        entry(11, "the apple on the left", 3, "apple_1", [corners(150, 220, 50, 20)]),
        entry(
            12,
            "the bowl near the back",
            7,
            "bowl_2",
            [corners(420, 320, 50, 20, math.pi / 2), corners(410, 320, 50, 20)],
        ),
    ]
    (refer / "test_expressions.json").write_text(json.dumps({"data": data}))
    return root


def test_referring_entries_become_instructions_with_their_targets_grasps(ocid_root):
    ds = open_dataset(ocid_root)
    assert isinstance(ds, OcidVlgDataset) and ds.ids == [f"{SEQ}/{NAME}"]
    assert [(i.id, i.text, i.kind, i.target) for i in ds.instructions] == [
        ("11", "the apple on the left", "referring", 3),
        ("12", "the bowl near the back", "referring", 7),
    ]
    apple = ds.instruction_labels(ds.instructions[0])
    assert apple.category == "apple" and len(apple.positives) == 1
    rect = apple.positives[0]
    # our convention: the first edge is the closing axis, as long as the opening (50 px), angle 0
    assert rect.length == pytest.approx(50) and rect.width == pytest.approx(20) and abs(rect.angle) < 1e-9
    assert len(ds.labels(ds.ids[0]).positives) == 3  # every referred object's rectangles
    sample = ds.load(ds.ids[0])
    assert sample.image.shape == (480, 640, 3)
    assert sample.depth[1, 1] == pytest.approx(0.8) and math.isnan(sample.depth[0, 0])


def test_the_target_rate_comes_from_the_instance_mask(ocid_root):
    ds = open_dataset(ocid_root)
    image, apple, bowl = ds.ids[0], ds.instructions[0], ds.instructions[1]
    on_apple = GraspPose(150 / 640, 220 / 480, 0.0)
    g = grade(ds, image, on_apple, apple)
    assert g.rectangle and g.on_target and g.part is None  # no part regions in a real dataset
    g = grade(ds, image, on_apple, bowl)
    assert not g.rectangle and g.on_target is False


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda d: d["data"][0].pop("grasps"), "lacks"),
        (lambda d: d["data"][0].update(answer="3"), "integer"),
        (lambda d: d["data"][0].update(image_filename="noComma.png"), "sequence"),
        (lambda d: d["data"][1].update(question_index=11), "twice"),
        (lambda d: d["data"][0].update(image_filename=f"{SEQ},missing.png"), "no RGB image"),
    ],
)
def test_malformed_expressions_are_named(ocid_root, spoil, reason):
    path = ocid_root / "refer" / "multiple" / "test_expressions.json"
    data = json.loads(path.read_text())
    spoil(data)
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=reason):
        OcidVlgDataset(ocid_root)


def test_bad_grasps_and_unknown_splits_are_refused(ocid_root):
    path = ocid_root / "refer" / "multiple" / "test_expressions.json"
    data = json.loads(path.read_text())
    data["data"][0]["grasps"] = [[[1, 2], [3, 4], [5, 6]]]
    path.write_text(json.dumps(data))
    ds = OcidVlgDataset(ocid_root)
    with pytest.raises(DatasetFormatError, match="4 \\(x, y\\) corners"):
        ds.instruction_labels(ds.instructions[0])
    with pytest.raises(ValueError, match="split"):
        OcidVlgDataset(ocid_root, split="dev")
