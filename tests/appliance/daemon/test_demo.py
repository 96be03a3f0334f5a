"""The demo command itself: sim cell + daemon as their own processes, four objects on the table, typed, refined
and spoken instructions, and what the simulation says was lifted."""

import shutil
import sqlite3

import pytest

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")

from appliance.demo import STEPS, main, verdict  # noqa: E402


def test_the_demo_runs_every_instruction_through_the_real_processes(nra_bundle, tmp_path, capsys):
    spoken = bool(shutil.which("espeak-ng") and shutil.which("sox"))
    code = main(["--bundle", str(nra_bundle), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    ran = [s for s in STEPS if spoken or s.kind != "spoken"]
    for step in ran:
        assert (tmp_path / f"{step.name}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{step.name}-after.png").read_bytes()[:4] == b"\x89PNG"  # the side camera
        assert (tmp_path / f"{step.name}-after-top.png").read_bytes()[:4] == b"\x89PNG"
    assert printed.count("pose:      [") == len(ran)  # every answer parsed (the NR-A grammar guarantees a pose)
    assert printed.count("grasp:     ") == len(ran)  # and every grasp ran in the simulation
    assert printed.count("   table:     knife (") == len(ran)  # the four objects, every time
    assert printed.count("lifted:    ") == len(ran)  # and what rose, from the simulation's state
    assert "'hand me something to cut with', meant: the knife" in printed
    if spoken:
        assert "heard:     pick up the pink ball" in printed  # the cell's ball (seed 0) is pink
    with sqlite3.connect(tmp_path / "journal.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT type FROM requests ORDER BY seq")]
    assert [k for k in kinds if k in ("grasp", "refine")] == ["grasp" if s.kind != "refine" else "refine" for s in ran]
    assert f"outputs in {tmp_path}/" in printed


def test_the_demo_says_which_object_rose_against_the_one_meant():
    assert verdict([], "knife-cell") == "nothing left the table (meant: knife-cell)"
    assert verdict(["knife-cell"], "knife-cell") == "knife-cell, the object meant"
    assert verdict(["mug-cell"], "knife-cell") == "mug-cell, NOT knife-cell, the object meant"


def test_the_demo_table_fits_and_its_words_single_out_what_they_mean(tmp_path):
    """Four objects side by side, none overlapping; the only thing to cut with; a colour no other object has."""
    from appliance.config import load_config
    from appliance.demo import DEFAULT_BUNDLE, cell_categories, instruction, table_scene, write_configs
    from appliance.sim.cell import SimCellConfig, cell_objects
    from appliance.sim.clutter import footprint, inside, overlaps

    sim_path, _, _ = write_configs(tmp_path, DEFAULT_BUNDLE, cell_categories(), tmp_path)  # the demo's cell
    config = load_config(sim_path, "sim", SimCellConfig)
    library = {o.object_id: o for o in cell_objects(config)}
    for step in STEPS:
        scene = table_scene(config, step.scene, seed=0)
        assert [library[p["object"]].category for p in scene] == list(step.scene)
        prints = [footprint(library[p["object"]], p["x"], p["y"], p["yaw"]) for p in scene]
        assert all(inside(f, config.table.clutter_area) for f in prints)
        assert not any(overlaps(a, b) for i, a in enumerate(prints) for b in prints[i + 1 :])
    assert [instruction(s, config) for s in STEPS] == [
        "hand me something to cut with",
        "rotate the gripper by 90 degrees",
        "pick up the pink ball",
    ]
    assert "scissors" not in STEPS[0].scene  # the knife is the one thing to cut with


def test_the_demo_says_how_to_get_a_bundle_when_there_is_none(tmp_path, capsys):
    assert main(["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "scripts/build_demo_model" in capsys.readouterr().err


def children(pid: int) -> dict[int, str]:
    """Direct child processes of ``pid`` and their command lines (from /proc)."""
    from pathlib import Path

    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize("victim, name", [("-m appliance --config", "daemon"), ("-m appliance.sim ", "sim cell")])
def test_the_demo_stops_within_2_s_when_the_daemon_or_the_cell_dies(nra_bundle, tmp_path, victim, name):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    demo = subprocess.Popen(
        [sys.executable, "-m", "appliance.demo", "--bundle", str(nra_bundle), "--out", str(tmp_path)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read(stream):
        for line in stream:
            lines.append((time.monotonic(), line))

    readers = [threading.Thread(target=read, args=(s,), daemon=True) for s in (demo.stdout, demo.stderr)]
    for r in readers:
        r.start()
    try:
        deadline = time.monotonic() + 120
        while not any("== 1-typed" in line for _, line in lines):  # the daemon answered status: the run is on
            assert time.monotonic() < deadline and demo.poll() is None, "".join(line for _, line in lines)
            time.sleep(0.1)
        pid = next(p for p, cmd in children(demo.pid).items() if victim in cmd)
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while not any(line.startswith("error: ") for _, line in lines):
            assert time.monotonic() < killed + 30, "".join(line for _, line in lines)
            time.sleep(0.05)
        said = next(t for t, line in lines if line.startswith("error: "))
        assert demo.wait(60) == 1
    finally:
        demo.kill()
    for r in readers:
        r.join(5)
    text = "".join(line for _, line in lines)
    assert said - killed < 2.0, f"{said - killed:.1f} s"
    assert f"the {name} exited with signal SIGKILL" in text
    assert "the last lines of" in text
