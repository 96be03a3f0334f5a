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
