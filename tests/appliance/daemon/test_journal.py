"""The journal: rows are committed as written, and open rows become 'interrupted' on the next start."""

import sqlite3

import pytest

from appliance.daemon.journal import Journal


def test_rows_survive_and_open_ones_are_reported(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    a = j.record("a", "client", "grasp", {"text": "pick up the mug"})
    b = j.record("b", "client", "predict", {"text": "x"})
    j.update(a, "running")
    j.update(b, "done", {"pose": [0.5, 0.5, 0.0]})
    # another connection sees the committed rows at once (what a kill -9 leaves behind)
    rows = sqlite3.connect(str(path)).execute("SELECT id, state FROM requests ORDER BY seq").fetchall()
    assert rows == [("a", "running"), ("b", "done")]
    assert sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = Journal(path)
    interrupted = again.interrupted()
    assert [r["id"] for r in interrupted] == ["a"] and interrupted[0]["payload"]["text"] == "pick up the mug"
    assert again.interrupted() == []
    assert again.recent(1)[0]["result"] == {"pose": [0.5, 0.5, 0.0]}
    with pytest.raises(ValueError):
        again.update(a, "exploded")


def test_find_returns_the_latest_row_of_an_id_across_restarts(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    first = j.record("x", "c", "grasp", {})
    j.update(first, "failed", {"error": "busy", "message": "try again"})
    second = j.record("x", "c", "grasp", {})
    j.update(second, "done", {"pose": [0.1, 0.2, 0.3]})
    j.close()
    again = Journal(path)
    assert again.find("x")["seq"] == second and again.find("x")["result"] == {"pose": [0.1, 0.2, 0.3]}
    assert again.find("never-seen") is None
