"""The daemon's journal: every request, prediction and result, written before it is acknowledged.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives
``kill -9`` and power loss. On start the daemon marks whatever was still
``received`` or ``running`` as ``interrupted`` and reports it (a grasp that was
moving when the process died is never re-run on its own: the arm may be
anywhere, and a person decides).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    client TEXT NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    received REAL NOT NULL,
    finished REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS requests_state ON requests(state);
CREATE INDEX IF NOT EXISTS requests_id ON requests(id);
"""
OPEN_STATES = ("received", "running")
STATES = OPEN_STATES + ("done", "failed", "interrupted", "rejected")


class Journal:
    """One SQLite file; safe to call from the daemon's threads (one connection, one lock)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def record(self, request_id: str, client: str, kind: str, payload: dict) -> int:
        """A request as received (committed on return); returns its sequence number."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO requests (id, client, type, payload, state, received) VALUES (?, ?, ?, ?, 'received', ?)",
                (request_id, client, kind, json.dumps(payload), time.time()),
            )
            return int(cur.lastrowid)

    def update(self, seq: int, state: str, result: dict | None = None) -> None:
        """Move a request on (``running``, ``done``, ``failed`` …), with its result when it ends."""
        if state not in STATES:
            raise ValueError(f"unknown journal state {state!r}")
        finished = None if state in OPEN_STATES else time.time()
        with self._lock:
            self._db.execute(
                "UPDATE requests SET state = ?, result = COALESCE(?, result), finished = COALESCE(?, finished) WHERE seq = ?",
                (state, None if result is None else json.dumps(result), finished, seq),
            )

    def interrupted(self) -> list[dict]:
        """Mark what a previous run left open as ``interrupted``; returns those rows."""
        with self._lock:
            rows = self._rows("SELECT * FROM requests WHERE state IN ('received', 'running') ORDER BY seq")
            self._db.execute(
                "UPDATE requests SET state = 'interrupted', finished = ? WHERE state IN ('received', 'running')",
                (time.time(),),
            )
        return rows

    def find(self, request_id: str) -> dict | None:
        """The latest row with this request id (from this run or an earlier one), or None."""
        with self._lock:
            rows = self._rows("SELECT * FROM requests WHERE id = ? ORDER BY seq DESC LIMIT 1", (request_id,))
        return rows[0] if rows else None

    def recent(self, limit: int = 20) -> list[dict]:
        """The latest rows, newest first."""
        with self._lock:
            return self._rows("SELECT * FROM requests ORDER BY seq DESC LIMIT ?", (limit,))

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def _rows(self, sql: str, args=()) -> list[dict]:
        cur = self._db.execute(sql, args)
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            row["payload"] = json.loads(row["payload"])
            row["result"] = json.loads(row["result"]) if row["result"] else None
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()
