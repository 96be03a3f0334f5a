import json

import pytest

from training.datasets import CornellDataset, DatasetFormatError
from training.datasets.referring import read_instructions


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"id": "a-0", "image": "pcd0100", "text": "pick up the mug", "kind": "name", "target": 0}


@pytest.mark.parametrize(
    "row, reason",
    [
        ("{not json", "not JSON"),
        ({**GOOD, "kind": "pointing"}, "unknown kind"),
        ({k: v for k, v in GOOD.items() if k != "target"}, "keys"),
        ({**GOOD, "target": -1}, "target must be"),
        ({**GOOD, "target": True}, "target must be"),
        ({**GOOD, "kind": "absent"}, "absent"),
        ({**GOOD, "text": ""}, "non-empty"),
    ],
)
def test_malformed_instructions_name_file_and_line(tmp_path, row, reason):
    path = write_lines(tmp_path / "instructions.jsonl", [GOOD | {"id": "first"}, row])
    with pytest.raises(DatasetFormatError, match=reason) as err:
        read_instructions(path)
    assert err.value.line == 2


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(DatasetFormatError, match="twice"):
        read_instructions(write_lines(tmp_path / "i.jsonl", [GOOD, GOOD]))


def test_instructions_naming_unknown_images_are_refused(numbered_root):
    write_lines(numbered_root / "instructions.jsonl", [{**GOOD, "image": "pcd9999"}])
    with pytest.raises(DatasetFormatError, match="pcd9999"):
        CornellDataset(numbered_root)


def test_a_root_without_scene_files_cannot_narrow_to_a_target(numbered_root):
    ds = CornellDataset(numbered_root)
    write_lines(numbered_root / "instructions.jsonl", [{**GOOD, "image": ds.ids[0]}])
    ds = CornellDataset(numbered_root)
    assert ds.scene(ds.ids[0]) is None
    with pytest.raises(ValueError, match="per-object ground truth"):
        ds.instruction_labels(ds.instructions[0])
