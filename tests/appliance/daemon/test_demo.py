"""The demo command itself: sim cell + daemon as their own processes, typed, refined and spoken instructions."""

import shutil
import sqlite3

import pytest

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")

from appliance.demo import STEPS, main  # noqa: E402


def test_the_demo_runs_every_instruction_through_the_real_processes(nra_bundle, tmp_path, capsys):
    spoken = bool(shutil.which("espeak-ng") and shutil.which("sox"))
    code = main(["--bundle", str(nra_bundle), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    ran = [s for s in STEPS if spoken or s.kind != "spoken"]
    for step in ran:
        assert (tmp_path / f"{step.name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{step.name}-after.png").read_bytes()[:4] == b"\x89PNG"
    assert printed.count("pose:      [") == len(ran)  # every answer parsed (the NR-A grammar guarantees a pose)
    assert printed.count("grasp:     ") == len(ran)  # and every grasp ran in the simulation
    if spoken:
        assert "heard:     pick up the ball" in printed
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT type FROM requests ORDER BY seq")]
    assert [k for k in kinds if k in ("grasp", "refine")] == ["grasp" if s.kind != "refine" else "refine" for s in ran]
    assert f"outputs in {tmp_path}/" in printed


def test_the_demo_says_how_to_get_a_bundle_when_there_is_none(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "scripts/build_demo_model" in capsys.readouterr().err
