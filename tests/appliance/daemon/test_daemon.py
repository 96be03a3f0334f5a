"""The daemon over real ZeroMQ sockets: predictions, malformed input, retries, stop, status, journal."""

import dataclasses
import json
import time

import pytest

from appliance.client import Client
from appliance.daemon import protocol

from .conftest import send

zmq = pytest.importorskip("zmq")


def test_predict_returns_reasoning_pose_and_annotated_png(daemon):
    client = Client(daemon.requests, timeout_s=30)
    reply, extra = client.request("predict", text="pick up the mug")
    client.close()
    assert reply["ok"] and reply["type"] == "predict"
    assert {"text", "reasoning", "pose", "timings", "session", "parsed"} <= set(reply)
    assert reply["timings"]["vision_ms"] > 0 and reply["timings"]["decode_tokens"] > 0
    assert extra and extra[0][:8] == b"\x89PNG\r\n\x1a\n"
    rows = daemon.daemon.journal.recent()
    assert (
        rows[0]["type"] == "predict" and rows[0]["state"] == "done" and rows[0]["payload"]["text"] == "pick up the mug"
    )


def test_refine_continues_the_session_and_unknown_sessions_are_errors(daemon):
    client = Client(daemon.requests, timeout_s=30)
    first, _ = client.request("predict", text="pick up the mug")
    again, _ = client.request("refine", text="grasp it by the handle instead", session=first["session"])
    assert again["ok"] and again["session"] == first["session"]
    assert again["timings"]["vision_ms"] == 0  # same picture, no new vision pass
    missing, _ = client.request("refine", text="grasp it by the rim", session="nope")
    client.close()
    assert not missing["ok"] and missing["error"]["code"] == "unknown_session"


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b"\xff\xfe not json"], "bad_json"),
        ([b"[1, 2]"], "bad_json"),
        ([b'{"v": 1, "type": "status"}'], "bad_id"),
        ([b'{"v": 2, "id": "a", "type": "status"}'], "bad_version"),
        ([b'{"v": 1, "id": "a", "type": "dance"}'], "bad_type"),
        ([b'{"v": 1, "id": "a", "type": "predict"}'], "bad_instruction"),
        ([b'{"v": 1, "id": "a", "type": "predict", "text": 5}'], "bad_field"),
        ([b'{"v": 1, "id": "a", "type": "grasp", "text": "x", "speed": 3}'], "bad_field"),
        ([b'{"v": 1, "id": "a", "type": "status", "extra": 1}'], "bad_field"),
        ([b'{"v": 1, "id": "a", "type": "status"}', b"RIFF"], "bad_frames"),
        ([b'{"v": 1, "id": "a", "type": "predict", "text": "' + b"x" * 70000 + b'"}'], "too_large"),
        ([b"a", b"b", b"c"], "bad_frames"),
    ],
)
def test_malformed_requests_get_error_replies_and_the_daemon_carries_on(daemon, frames, code):
    reply = send(daemon.requests, [b""] + frames)
    assert reply is not None
    message = json.loads(reply[-1])
    assert message["ok"] is False and message["error"]["code"] == code
    status = json.loads(send(daemon.requests, [b"", protocol.request("status", "s1")])[-1])
    assert status["ok"] and status["state"] in ("idle", "predicting")


def test_a_retried_id_is_run_once_and_gets_the_same_reply(daemon):
    data = protocol.request("predict", "same-id", text="pick up the mug")
    first = send(daemon.requests, [b"", data])
    second = send(daemon.requests, [b"", data])
    assert json.loads(first[1]) == json.loads(second[1])
    rows = [r for r in daemon.daemon.journal.recent(50) if r["id"] == "same-id"]
    assert len(rows) == 1


def test_stop_is_answered_at_once_even_while_busy(daemon):
    ctx = zmq.Context.instance()
    busy = ctx.socket(zmq.DEALER)
    busy.connect(daemon.requests)
    for i in range(3):
        busy.send_multipart([b"", protocol.request("predict", f"busy-{i}", text="pick up the mug")])
    time.sleep(0.05)
    start = time.monotonic()
    reply = json.loads(send(daemon.requests, [b"", protocol.request("stop", "stop-1")])[-1])
    assert reply["ok"] and reply["stopped"] and time.monotonic() - start < 1.0
    answered = {}
    while len(answered) < 3 and busy.poll(30000):
        frames = busy.recv_multipart()
        message = json.loads(frames[1])
        answered[message["id"]] = message
    busy.close(0)
    assert len(answered) == 3
    dropped = [m for m in answered.values() if not m["ok"]]
    assert all(m["error"]["code"] == "stopped" for m in dropped)
    assert sorted(m["id"] for m in dropped) == sorted(reply["dropped"])  # the stop reply names exactly those


def test_status_and_events(daemon):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(daemon.events)
    from tests.helpers import wait_subscribed

    wait_subscribed(sub)  # the subscription is live before anything is asked: no event can be missed
    topics = {"heartbeat"}
    deadline = time.monotonic() + 30
    send(daemon.requests, [b"", protocol.request("predict", "ev-1", text="pick up the mug")])
    send(daemon.requests, [b"", protocol.request("predict", "ev-2", text="pick up the bowl")])
    while time.monotonic() < deadline and not {"heartbeat", "state", "prediction"} <= topics:
        if sub.poll(500):
            topic, payload = sub.recv_multipart()
            topics.add(topic.decode())
            assert json.loads(payload)["topic"] == topic.decode()
    sub.close(0)
    assert {"heartbeat", "state", "prediction"} <= topics
    status = json.loads(send(daemon.requests, [b"", protocol.request("status", "st")])[-1])
    assert status["model"]["quant"] == "F32" and status["camera"] == "replay" and status["robot"] is None
    assert status["model"]["vision_providers"] == ["CPUExecutionProvider"]


def test_motion_requests_without_an_arm_are_refused(daemon):
    client = Client(daemon.requests, timeout_s=30)
    reply, _ = client.request("home")
    grasp, _ = client.request("grasp", text="pick up the mug")
    client.close()
    assert not reply["ok"] and reply["error"]["code"] == "no_robot"
    assert grasp["ok"] and grasp["execution"]["moved"] is False


def test_a_retry_after_a_restart_is_answered_from_the_journal(tmp_path, f32_bundle, recording):
    """The reply cache is in memory; the journal remembers ids across restarts, so nothing runs twice."""
    from .conftest import Running, write_config

    path, requests, _ = write_config(tmp_path, f32_bundle, recording)
    first = Running(path)
    try:
        done = json.loads(send(requests, [b"", protocol.request("predict", "once", text="pick up the mug")], 60)[1])
        assert done["ok"]
    finally:
        first.close()
    second = Running(path)
    try:
        again = json.loads(send(requests, [b"", protocol.request("predict", "once", text="pick up the mug")], 60)[1])
        assert again["ok"] and again["text"] == done["text"] and again["pose"] == done["pose"]
        assert second.daemon.journal.count() == 1  # answered from the journal, not run (and journalled) again
    finally:
        second.close()


def test_a_model_process_killed_mid_predict_is_model_crashed_and_the_daemon_goes_on(daemon):
    from .conftest import segfault_model_during

    status = json.loads(send(daemon.requests, [protocol.request("status", "crash-st")])[-1])
    pid = status["model"]["process"]["pid"]
    assert status["model"]["process"]["alive"] and status["model"]["process"]["restarts"] == 0
    reply = segfault_model_during(daemon, protocol.request("predict", "crash-1", text="pick up the mug"))
    assert not reply["ok"] and reply["error"]["code"] == "model_crashed", reply
    assert "signal SIGSEGV" in reply["error"]["message"]
    client = Client(daemon.requests, timeout_s=60)
    again, _ = client.request("predict", text="pick up the mug")
    status, _ = client.request("status")
    client.close()
    assert again["ok"], again
    process = status["model"]["process"]
    assert process["restarts"] == 1 and process["pid"] != pid and "SIGSEGV" in process["last_crash"]


def _reply(endpoint, kind, rid, **fields):
    return json.loads(send(endpoint, [protocol.request(kind, rid, **fields)], 60)[0])  # [json] or [json, png]


def test_status_and_prediction_replies_carry_the_documented_fields(daemon):
    status = _reply(daemon.requests, "status", "doc-st")
    assert set(status) - {"v", "id", "type", "ok"} == set(protocol.STATUS_FIELDS)
    predicted = json.loads(send(daemon.requests, [protocol.request("predict", "doc-p", text="pick up the mug")], 60)[0])
    assert set(predicted) - {"v", "id", "type", "ok"} <= set(protocol.PREDICTION_FIELDS)
    assert predicted["hint"] == []  # a bundle without a knowledge table hints nothing (tests/export: one with)


@pytest.mark.parametrize("text", ["zzzz qqqq xxxx", "\U0001f600", "what time is it", "open the door please"])
def test_instructions_the_model_cannot_ground_are_not_understood(daemon, text):
    reply = _reply(daemon.requests, "predict", "nu-" + str(abs(hash(text)))[:8], text=text)
    assert not reply["ok"] and reply["error"]["code"] == "not_understood", reply
    assert "nothing moves" in reply["error"]["message"]


def test_a_stop_acts_every_time_whatever_its_id(daemon):
    status = _reply(daemon.requests, "status", "shared-id")
    assert status["ok"]
    for _ in range(2):  # the id of an earlier status, then the same stop again: each one stops
        before = daemon.daemon._stops
        reply = _reply(daemon.requests, "stop", "shared-id")
        assert reply["ok"] and reply["stopped"] is True and reply["type"] == "stop", reply
        assert daemon.daemon._stops == before + 1
    rows = [r for r in daemon.daemon.journal.recent() if r["id"] == "shared-id"]
    assert [r["type"] for r in rows].count("stop") == 2


MALFORMED_STOPS = [
    {"v": protocol.VERSION, "type": "stop"},  # no id
    {"v": protocol.VERSION, "id": "bad id!", "type": "stop"},
    {"v": 99, "id": "s-v", "type": "stop"},
    {"v": protocol.VERSION, "id": "s-f", "type": "stop", "why": "hand in the way"},  # an unknown field
]


def test_a_malformed_stop_is_refused_but_stops_the_arm_all_the_same(daemon):
    for body in MALFORMED_STOPS:  # one daemon for all: each start loads a model
        before = daemon.daemon._stops
        reply = json.loads(send(daemon.requests, [b"", json.dumps(body).encode()])[-1])
        assert not reply["ok"] and "stopped all the same" in reply["error"]["message"], (body, reply)
        assert daemon.daemon._stops == before + 1, body
    before = daemon.daemon._stops
    other = json.loads(send(daemon.requests, [b"", b'{"v": 1, "type": "home"}'])[-1])  # not a stop: no stop
    assert not other["ok"] and "stopped" not in other["error"]["message"]
    assert daemon.daemon._stops == before


def test_a_malformed_stop_drops_the_queue_as_a_stop_does(daemon):
    busy = zmq.Context.instance().socket(zmq.DEALER)
    busy.connect(daemon.requests)
    for i in range(3):
        busy.send_multipart([b"", protocol.request("predict", f"queued-{i}", text="pick up the mug")])
    time.sleep(0.05)
    reply = json.loads(send(daemon.requests, [b"", b'{"v": 1, "type": "stop"}'])[-1])
    assert not reply["ok"] and "queued request(s) dropped" in reply["error"]["message"], reply
    answered = {}
    while len(answered) < 3 and busy.poll(30000):
        message = json.loads(busy.recv_multipart()[1])
        answered[message["id"]] = message
    busy.close(0)
    assert len(answered) == 3 and any((m.get("error") or {}).get("code") == "stopped" for m in answered.values())


def test_a_stop_acts_before_the_journal_and_even_when_the_journal_fails(daemon, monkeypatch):
    import sqlite3

    d = daemon.daemon
    before = d._stops

    def full(*_args, **_kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(d.journal, "record", full)
    reply = _reply(daemon.requests, "stop", "stop-disk-full")
    assert not reply["ok"] and reply["error"]["code"] == "internal"  # it could not be recorded, and says so
    assert d._stops == before + 1  # but the stop was counted (and the arm told) first


def test_a_journal_that_fails_as_a_job_starts_answers_it_and_the_worker_goes_on(daemon, monkeypatch):
    import sqlite3

    d = daemon.daemon
    real = d.journal.update
    failed = []

    def full_once(seq, state, result=None):
        if state == "running" and not failed:
            failed.append(seq)
            raise sqlite3.OperationalError("database or disk is full")
        return real(seq, state, result)

    monkeypatch.setattr(d.journal, "update", full_once)
    reply = _reply(daemon.requests, "predict", "journal-full", text="pick up the box")
    assert not reply["ok"] and reply["error"]["code"] == "internal" and "disk is full" in reply["error"]["message"]
    assert failed and d._worker.is_alive()
    again = _reply(daemon.requests, "predict", "journal-ok", text="pick up the box")
    assert again["ok"], again  # the worker took the next job


def test_a_stop_counted_after_a_job_was_queued_stops_it_though_it_dropped_nothing(daemon, monkeypatch):
    """A stop that lands between the queueing of a job and its run (the worker already took it off the queue, so
    the stop dropped nothing) still forbids the job's motions: the job's baseline is the count when it was queued."""
    d = daemon.daemon
    real_put = d.queue.put

    def put_then_stop(job):
        d._stops += 1  # a stop counted right after the job's baseline (the queueing holds the stop lock already)
        real_put(job)

    monkeypatch.setattr(d.queue, "put", put_then_stop)
    reply = _reply(daemon.requests, "home", "count-home")
    assert not reply["ok"] and reply["error"]["code"] == "stopped", reply


def test_a_refine_of_an_unknown_session_publishes_nothing(daemon):
    from tests.helpers import wait_subscribed

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    for topic in (b"state", b"prediction", b"result", b"error", b"heartbeat"):
        sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.connect(daemon.events)
    try:
        wait_subscribed(sub)
        reply = _reply(daemon.requests, "refine", "ghost-1", text="grasp it by the rim", session="ghost", execute=True)
        assert reply["error"]["code"] == "unknown_session"
        deadline, seen = time.monotonic() + 1.0, []
        while (left := deadline - time.monotonic()) > 0:
            if sub.poll(int(1000 * left)):
                seen.append(sub.recv_multipart()[0])
        assert set(seen) <= {b"heartbeat"}, seen
    finally:
        sub.close(0)


def test_a_message_over_the_total_limit_is_too_large_and_kept_by_nobody(daemon):
    frames = [protocol.request("status", "big")] + [b"x" * 600_000] * 8  # each frame under the socket's limit
    reply = json.loads(send(daemon.requests, frames)[-1])
    assert reply["error"]["code"] == "too_large", reply
    assert _reply(daemon.requests, "status", "after-big")["ok"]


def test_an_instruction_that_cannot_fit_the_context_is_too_long_and_a_full_conversation_is_context_full(
    tmp_path, f32_bundle, recording
):
    from .conftest import Running, write_config

    path, requests, _ = write_config(
        tmp_path, f32_bundle, recording, model={"n_ctx": 256, "n_batch": 64, "max_new_tokens": 100}
    )
    running = Running(path)
    try:
        long = _reply(
            requests, "predict", "long-1", text="pick up the mug " + "\U0001f600" * 100
        )  # 4 byte tokens an emoji
        assert long["error"]["code"] == "too_long", long
        first = json.loads(send(requests, [protocol.request("predict", "room-1", text="pick up the mug")], 60)[0])
        assert first["ok"], first
        codes = []
        for i in range(8):
            reply = _reply(
                requests, "refine", f"room-r{i}", text="grasp it by the handle instead", session=first["session"]
            )
            codes.append(reply["ok"] or reply["error"]["code"])
        assert "context_full" in codes and "internal" not in codes, codes
        assert codes[codes.index("context_full") :] == ["context_full"] * (len(codes) - codes.index("context_full"))
    finally:
        running.close()


def test_a_refusal_from_the_model_is_not_understood_and_never_planned(daemon, f32_bundle):
    import numpy as np

    from appliance.daemon.jobs import JobError
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel, Timings

    model = GraspModel.load(f32_bundle, llama=LlamaSettings(n_ctx=256, n_batch=64))
    try:
        embedded = model.embed(np.zeros((480, 640, 3), np.uint8))
        refused = model.session()._parse("I see no banana here.", Timings(), embedded.box, embedded.view, [])
    finally:
        model.llm.close()
    assert refused.pose is None and refused.refusal == "banana"
    with pytest.raises(JobError) as info:
        daemon.daemon.jobs._describe(refused, None)
    assert info.value.code == "not_understood" and "the model sees no banana" in str(info.value)
    with pytest.raises(JobError) as info:  # the bundle's presence check refused: the reply says which refused
        daemon.daemon.jobs._describe(dataclasses.replace(refused, gated=True), None)
    assert "the presence check sees no banana here: too few image patches show one" in str(info.value)


OBJECT_BOX = [260, 200, 380, 280]
"""[u0, v0, u1, v1] of the blue box on the test's table (inside the 320-pixel workspace crop)."""
DEMO_BUNDLE = __import__("pathlib").Path(__file__).resolve().parents[3] / "models" / "rtgrasp-tiny"


@pytest.fixture
def object_recording(tmp_path):
    """A wooden table 0.7 m below the camera, a blue box 6 cm tall on it, and a red block outside the workspace."""
    import numpy as np

    from appliance.camera.base import Frame
    from appliance.camera.replay import Recorder
    from appliance.geometry import Intrinsics

    rgb = np.empty((480, 640, 3), np.uint8)
    rgb[:] = (196, 170, 130)
    depth = np.full((480, 640), 0.7, np.float32)
    for (u0, v0, u1, v1), colour, height in (
        (OBJECT_BOX, (40, 60, 200), 0.06),
        ((20, 410, 100, 470), (200, 30, 30), 0.04),
    ):
        rgb[v0:v1, u0:u1] = colour
        depth[v0:v1, u0:u1] -= height
    Recorder(tmp_path / "objects").write(Frame(rgb, depth, Intrinsics.from_fovy(40.0, 640, 480)))
    return tmp_path / "objects"


@pytest.mark.parametrize("with_categories", [True, False])
def test_predict_replies_and_events_name_the_resolved_object(tmp_path, object_recording, with_categories):
    """The bundled demo model on a box: the reply and the prediction event name it (category from the reasoning,
    box from the depth image). With its manifest's ``categories`` taken out of a copy (a bundle exported before
    them, and so without the checks that read them), the category is unknown."""
    import shutil

    import yaml

    from tests.helpers import wait_subscribed

    from .conftest import Running, write_config

    bundle = tmp_path / "bundle"
    shutil.copytree(DEMO_BUNDLE, bundle)
    if not with_categories:
        manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
        for key in ("categories", "presence", "target_check"):
            manifest.pop(key)
        (bundle / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    path, requests, events = write_config(tmp_path, bundle, object_recording, model={"max_new_tokens": 96})
    running = Running(path)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"prediction")
    sub.setsockopt(zmq.SUBSCRIBE, b"heartbeat")
    sub.connect(events)
    try:
        wait_subscribed(sub)
        client = Client(requests, timeout_s=60)
        reply, _ = client.request("predict", text="pick up the box")
        client.close()
        topic, event = b"", None
        while topic != b"prediction" and sub.poll(10000):
            topic, payload = sub.recv_multipart()
            event = json.loads(payload)
    finally:
        sub.close(0)
        running.close()
    assert reply["ok"] and reply["parsed"], reply
    obj, pixel = reply["object"], reply["pixel"]
    assert obj["box"] == OBJECT_BOX
    assert OBJECT_BOX[0] <= pixel["u"] < OBJECT_BOX[2] and OBJECT_BOX[1] <= pixel["v"] < OBJECT_BOX[3]
    assert " box" in reply["reasoning"]
    assert obj["category"] == ("box" if with_categories else None)
    assert event["request"] == reply["id"] and event["object"] == obj


def test_the_watchdog_is_fed_only_while_the_worker_thread_lives(daemon):
    """A daemon whose worker thread died still answers status from its main thread: systemd must restart it."""
    import threading

    d = daemon.daemon
    assert _reply(daemon.requests, "status", "wd-status")["ok"]  # serving: the worker has been started
    assert d.healthy() and d._worker.is_alive()
    real = d._worker
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    d._worker = dead  # read by the main loop's next beat: not fed while it stays
    try:
        assert not d.healthy()
    finally:
        d._worker = real
    assert d.healthy()
