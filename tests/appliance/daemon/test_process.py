"""The daemon as systemd runs it: a process with NOTIFY_SOCKET, killed with SIGKILL, restarted; and CurveZMQ."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.daemon import protocol

from .conftest import send, wait_status, write_config

ROOT = Path(__file__).resolve().parents[3]
zmq = pytest.importorskip("zmq")


def start(config_path, notify: Path | None = None, watchdog_usec: int | None = None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if notify:
        env["NOTIFY_SOCKET"] = str(notify)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "--config", str(config_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_ready_status_and_watchdog_reach_a_real_notify_socket(tmp_path, f32_bundle, recording):
    path, requests, _ = write_config(tmp_path, f32_bundle, recording)
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(60)
    proc = start(path, notify, watchdog_usec=2_000_000)
    try:
        messages = []
        while not (any("READY=1" in m for m in messages) and sum("WATCHDOG=1" in m for m in messages) >= 2):
            messages.append(listener.recv(4096).decode())
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        assert wait_status(requests)["state"] == "idle"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        listener.settimeout(2)
        tail = []
        try:
            while True:
                tail.append(listener.recv(4096).decode())
        except TimeoutError:
            pass
        assert any("STOPPING=1" in m for m in tail)
    finally:
        proc.kill()
        listener.close()


def journalled(path: Path, prefix: str) -> int:
    """Rows of the journal whose id starts with ``prefix`` (read while the daemon writes: WAL allows it)."""
    import sqlite3

    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT count(*) FROM requests WHERE id LIKE ?", (prefix + "%",)).fetchone()[0]


def test_sigkill_mid_request_keeps_the_journal_and_reports_what_was_in_flight(tmp_path, f32_bundle, recording):
    path, requests, _ = write_config(tmp_path, f32_bundle, recording, model={"max_new_tokens": 160})
    proc = start(path)
    try:
        wait_status(requests)
        ctx = zmq.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(requests)
        for i in range(4):
            dealer.send_multipart([b"", protocol.request("predict", f"inflight-{i}", text="pick up the mug")])
        deadline = time.monotonic() + 30
        while journalled(tmp_path / "journal.sqlite", "inflight-") < 4:  # all four written down, some still open
            assert time.monotonic() < deadline, "the daemon never journalled the four requests"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        dealer.close(0)
    finally:
        proc.kill()
    import sqlite3

    rows = sqlite3.connect(str(tmp_path / "journal.sqlite")).execute("SELECT id, state FROM requests").fetchall()
    assert {r[0] for r in rows} >= {f"inflight-{i}" for i in range(4)}  # every acknowledged-or-queued request is there
    open_before = {r[0] for r in rows if r[1] in ("received", "running")}
    assert open_before, "the kill should have caught some request unfinished"
    proc = start(path)
    try:
        status = wait_status(requests)
        assert {r["id"] for r in status["interrupted"]} == open_before
        assert status["journal_rows"] >= len(rows)
        again = json.loads(
            send(requests, [b"", protocol.request("predict", "after-restart", text="pick up the mug")], 60)[1]
        )
        assert again["ok"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_curve_serves_allowed_keys_only(tmp_path, f32_bundle, recording):
    from appliance.client import Client
    from appliance.keys import create

    keys, allowed = tmp_path / "keys", tmp_path / "clients"
    create(keys, "server")
    _, alice = create(keys, "alice", allow=allowed)
    _, mallory = create(keys, "mallory")
    allowed.mkdir(exist_ok=True)
    path, requests, events = write_config(
        tmp_path,
        f32_bundle,
        recording,
        server={"server_secret_key": str(keys / "server.key_secret"), "allowed_clients": str(allowed)},
    )
    proc = start(path)
    try:
        ok = Client(requests, timeout_s=60, retries=1, curve=(alice, keys / "server.key"))
        reply, _ = ok.request("status")
        assert reply["ok"] and reply["denied_connections"] == 0
        stranger = Client(requests, timeout_s=2, retries=1, curve=(mallory, keys / "server.key"))
        with pytest.raises(Exception, match="no reply"):
            stranger.request("status")
        stranger.close()
        assert send(requests, [b"", protocol.request("status", "plain")], timeout_s=2) is None  # plaintext: nothing
        deadline = time.monotonic() + 30
        while ok.request("status")[0]["denied_connections"] < 2:  # both refusals seen (and logged) by the daemon
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ok.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    log = out.decode(errors="replace")
    assert log.count("denied a connection") >= 2, log  # mallory, then the plaintext client
    assert "authentication: a key not in allowed_clients" in log, (
        log
    )  # (libzmq gives the plaintext one as no detail or protocol)


def test_a_fatal_signal_leaves_a_traceback_in_the_daemons_log(tmp_path, f32_bundle, recording):
    path, requests, _ = write_config(tmp_path, f32_bundle, recording)
    proc = start(path)
    try:
        wait_status(requests)
        proc.send_signal(signal.SIGSEGV)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGSEGV
    text = out.decode(errors="replace")
    assert "Fatal Python error: Segmentation fault" in text and "File " in text  # faulthandler's dump, with frames
