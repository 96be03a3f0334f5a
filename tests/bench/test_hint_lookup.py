"""bench/hint_lookup.py: what the hints' lookup alone gives each instruction kind of a scene set."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def scene_set(root: Path) -> Path:
    """Two scenes as training.synth writes them (instructions.jsonl, <image>scene.json), by hand."""
    root.mkdir()
    objects = [{"category": "box"}, {"category": "tape roll"}, {"category": "mug"}]
    for image in ("pcd0000", "pcd0001"):
        (root / f"{image}scene.json").write_text(json.dumps({"objects": objects}))
    rows = [
        {"image": "pcd0000", "text": "Can you lift the box?", "kind": "name", "target": 0},
        {"image": "pcd0000", "text": "I need something to seal a box with", "kind": "function", "target": 1},
        {"image": "pcd0001", "text": "hand me something to drink tea from", "kind": "function", "target": 2},
        {"image": "pcd0001", "text": "pick up the orange box", "kind": "absent", "target": None},
    ]
    (root / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def run(*args) -> str:
    done = subprocess.run(
        [sys.executable, "bench/hint_lookup.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_function_instructions_get_their_object_and_named_ones_none(tmp_path):
    root = scene_set(tmp_path / "scenes")
    out = run(str(root))
    assert "| function | 2 | 2 | 2/2 | 1/2 |" in out  # the mug shares 'drink' with the cup and others
    assert "| name | 1 | 0 | 0/1 | 0/1 |" in out and "| absent | 1 | 0 | – | – |" in out
    found = {line.split(": ")[0]: line.split(": ")[1] for line in out.splitlines() if line.startswith("use phrasings")}
    assert set(found) == {"use phrasings, train", "use phrasings, test", "use phrasings, train, each left out"}
    for what in ("use phrasings, train", "use phrasings, test"):  # every train and test phrasing finds its objects
        assert found[what].split(" ")[0].split("/")[0] == found[what].split(" ")[0].split("/")[1], what
    assert 0 < int(found["use phrasings, train, each left out"].split("/")[0])
    before = run(str(root), "--no-names")  # as before the names rule: the box drew the tape roll's hint
    assert "| name | 1 | 1 | 0/1 | 0/1 |" in before and "| absent | 1 | 1 | – | – |" in before


def test_a_missing_set_or_a_broken_table_is_named(tmp_path):
    (tmp_path / "k.yaml").write_text("uses: [unclosed\n")
    done = subprocess.run(
        [sys.executable, "bench/hint_lookup.py", "--knowledge", str(tmp_path / "k.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "k.yaml" in done.stderr
    done = subprocess.run(
        [sys.executable, "bench/hint_lookup.py", str(tmp_path / "nowhere")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "instructions.jsonl does not exist" in done.stderr
