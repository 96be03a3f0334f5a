"""The daemon: a ROUTER for requests, a PUB for events, one worker thread for the slow work.

The main thread owns both sockets and never blocks on the model or the arm:
it validates each request, journals it, answers ``status`` and ``stop`` at once
(``stop`` ramps any motion down through the robot process's shared event),
and queues the rest for the worker thread. The worker's replies and events
come back over an inproc socket and go out from the main thread. A request
id seen again (a client retrying) is never run twice: it gets the stored reply,
or the reply of the run in progress when that ends. ``stop`` is the exception:
it acts every time it arrives, whatever its id, and is never answered from a
cache. The model and the arm each run in a child process (``model_worker``,
``robot.worker``), so a native crash in either is one failed request.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import zmq

from appliance.camera import CameraError
from appliance.robot.plan import MotionError
from appliance.robot.worker import RobotUnavailable
from appliance.runtime.llm import ContextFull
from appliance.runtime.worker import ModelCrashed

from . import protocol
from .jobs import JobError, Jobs
from .journal import Journal
from .notify import Notifier
from .protocol import ProtocolError, Request
from .settings import ApplianceConfig
from .speech import BadAudio

log = logging.getLogger(__name__)

MAX_QUEUE = 4
REPLY_CACHE = 256
RESULTS = "inproc://rtgrasp-results"
HANDSHAKE_FAILURES_BY_ID = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol: a plaintext client, or another mechanism",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication: a key not in allowed_clients",
}
HANDSHAKE_FAILURES = sum(HANDSHAKE_FAILURES_BY_ID)


@dataclass
class QueuedRequest:
    """A request waiting for the worker thread, with its journal row and the stops counted when it was queued (a
    stop after that one forbids its motions, even one that came after the worker took it off the queue)."""

    request: Request
    seq: int
    stops: int = 0


class Daemon:
    """Serve requests until ``shutdown`` is set."""

    def __init__(
        self, config: ApplianceConfig, jobs: Jobs, transcriber=None, notifier: Notifier | None = None, context=None
    ):
        self.config, self.jobs, self.transcriber = config, jobs, transcriber
        self.notifier = notifier or Notifier()
        self.context = context or zmq.Context.instance()
        self.journal = Journal(config.journal)
        self.queue: queue.Queue[QueuedRequest | None] = queue.Queue()
        self.shutdown = threading.Event()
        self.state = "starting"
        self.started = time.monotonic()
        self.envelopes: dict[str, list[bytes]] = {}
        """Request id → where its reply goes (the latest sender, if it retried)."""
        self.replies: OrderedDict[str, list[bytes]] = OrderedDict()
        self.interrupted = self.journal.interrupted()
        self.last_result: dict | None = None
        self._curve = None
        self.denied = 0
        """CurveZMQ handshakes refused since start."""
        self._stops = 0
        """Stop requests so far: a job that started before the latest one may not move any more."""
        self._stop_lock = threading.Lock()

    # -- sockets ---------------------------------------------------------------------
    def bind(self) -> None:
        server = self.config.server
        if server.secure:
            from .security import CurveServer

            self._curve = CurveServer(self.context, server.server_secret_key, server.allowed_clients)
        self.router = self.context.socket(zmq.ROUTER)
        self.pub = self.context.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
            if self._curve:
                self._curve.secure(sock)
        self.router.setsockopt(
            zmq.MAXMSGSIZE, protocol.MAX_MESSAGE_BYTES
        )  # per frame: libzmq cannot limit a whole message
        self.router.bind(server.requests)
        self.monitor = None
        if self._curve:  # a denied handshake never reaches the ROUTER: the socket monitor is where it shows
            self.monitor = self.router.get_monitor_socket(HANDSHAKE_FAILURES)
        self.pub.bind(server.events)
        self.results = self.context.socket(zmq.PULL)
        self.results.bind(RESULTS)
        log.info(
            "serving requests on %s, events on %s (%s)",
            server.requests,
            server.events,
            "CurveZMQ" if self._curve else "plaintext",
        )

    def serve(self) -> None:
        """Bind, start the worker, tell systemd we are ready, and loop until shutdown."""
        self.bind()
        worker = self._worker = threading.Thread(target=self._work, name="rtgrasp-worker", daemon=True)
        worker.start()
        self._set_state("idle")
        self.notifier.ready(f"serving on {self.config.server.requests}")
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        if self.monitor is not None:
            poller.register(self.monitor, zmq.POLLIN)
        beat = self.config.server.heartbeat_s
        next_beat = time.monotonic()
        try:
            while not self.shutdown.is_set():
                events = dict(poller.poll(timeout=max(0, int(1000 * (next_beat - time.monotonic())))))
                if self.router in events:
                    frames, size = self._receive()
                    try:
                        self._on_request(frames, size)
                    except Exception:  # a request must never take the daemon down
                        log.exception("request handling failed")
                        self.router.send_multipart(
                            _split_envelope(frames)[0]
                            + [protocol.error_reply("internal", "the daemon could not handle this request")]
                        )
                if self.monitor is not None and self.monitor in events:
                    self._on_monitor()
                if self.results in events:
                    self._on_result(self.results.recv_multipart())
                if time.monotonic() >= next_beat:
                    self._heartbeat()
                    next_beat = time.monotonic() + beat
        finally:
            self.notifier.stopping()
            self.queue.put(None)
            worker.join(timeout=5)
            self.close()

    def _receive(self) -> tuple[list[bytes], int]:
        """One message, frame by frame: at most ``MAX_FRAMES`` frames within ``MAX_MESSAGE_BYTES`` are kept, the
        rest is read and dropped at once (the message's total size comes back to say so)."""
        frames, size = [], 0
        while True:
            frame = self.router.recv(copy=False)
            size += len(frame)
            if len(frames) <= protocol.MAX_FRAMES and size <= protocol.MAX_MESSAGE_BYTES:
                frames.append(frame.bytes)
            if not self.router.get(zmq.RCVMORE):
                return frames, size

    def _on_monitor(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        event = recv_monitor_message(self.monitor)
        self.denied += 1
        name = HANDSHAKE_FAILURES_BY_ID.get(event["event"], str(event["event"]))
        log.warning(
            "denied a connection on %s: CurveZMQ handshake failed (%s); a client without an allowed key gets no "
            "service",
            event.get("endpoint", b"").decode(errors="replace"),
            name,
        )

    def close(self) -> None:
        if getattr(self, "monitor", None) is not None:
            self.router.disable_monitor()
            self.monitor.close(0)
        for name in ("router", "pub", "results"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(0)
        if self._curve:
            self._curve.close()
        self.journal.close()

    # -- requests --------------------------------------------------------------------
    def _on_request(self, frames: list[bytes], size: int) -> None:
        envelope, body = _split_envelope(frames)
        try:
            if size > protocol.MAX_MESSAGE_BYTES:
                raise ProtocolError(
                    "too_large", f"the message is {size} bytes, the limit is {protocol.MAX_MESSAGE_BYTES}"
                )
            request = protocol.parse_request(body)
        except ProtocolError as exc:
            message = str(exc)
            if protocol.asks_to_stop(body):  # a stop all the same: the arm, then the queue (not journalled: no id)
                self._halt()
                dropped = self._drop_queued()
                message += f" (the arm was stopped all the same, {len(dropped)} queued request(s) dropped)"
            self.router.send_multipart(envelope + [protocol.error_reply(exc.code, message, exc.request_id)])
            return
        if request.type in protocol.UNCACHED:  # a stop acts every time, whatever its id: never a stored reply
            self._halt()  # first: not even the journal's fsync (or its full disk) comes before the arm stops
            seq = self.journal.record(request.id, envelope[0].hex(), request.type, request.fields)
            self._stop(request, envelope, seq)
            return
        if request.id in self.replies:  # a retry of something already answered
            self.router.send_multipart(envelope + self.replies[request.id])
            return
        if request.id in self.envelopes:  # a retry of something still running: answer the newest sender
            self.envelopes[request.id] = envelope
            return
        earlier = self.journal.find(request.id)
        if earlier is not None:  # seen before this process started: never run it again
            self.router.send_multipart(envelope + [self._journalled_reply(request, earlier)])
            return
        payload = {**request.fields, "audio_bytes": len(request.audio) if request.audio else 0}
        seq = self.journal.record(request.id, envelope[0].hex(), request.type, payload)
        if request.type == "status":
            self._answer(envelope, request, seq, "done", self.status())
        elif self.queue.qsize() >= MAX_QUEUE:
            self._answer(
                envelope, request, seq, "rejected", error=("busy", f"{MAX_QUEUE} requests are waiting; try again")
            )
        else:
            self.envelopes[request.id] = envelope
            with self._stop_lock:
                self.queue.put(QueuedRequest(request, seq, self._stops))

    def _journalled_reply(self, request: Request, row: dict) -> bytes:
        """The reply to a retry of a request an earlier run of the daemon journalled."""
        result = row["result"] or {}
        if row["state"] == "done":
            return protocol.reply(request, **result)
        if row["state"] in ("failed", "rejected") and "error" in result:
            return protocol.error_reply(result["error"], result.get("message", ""), request.id, request.type)
        return protocol.error_reply(
            "interrupted",
            f"request {request.id!r} was cut off by a shutdown of the daemon before it ended; "
            "it is not run again: check the arm and send a new request",
            request.id,
            request.type,
        )

    def _halt(self) -> None:
        """Count a stop and ramp the arm down: every job queued before it may no longer move."""
        with self._stop_lock:
            self._stops += 1
            if self.jobs.robot is not None:
                self.jobs.robot.stop()

    def _stop(self, request: Request, envelope: list[bytes], seq: int) -> None:
        """The rest of a stop, after ``_halt``: drop what is queued, say so, answer."""
        dropped = self._drop_queued()
        self._answer(
            envelope, request, seq, "done", {"stopped": True, "dropped": [j.request.id for j in dropped]}, cache=False
        )

    def _drop_queued(self) -> list[QueuedRequest]:
        """Every queued request ends as ``stopped``; the ``stopped`` state is published."""
        dropped = []
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)
                break
            dropped.append(job)
        for job in dropped:
            self._finish(job.request, job.seq, "failed", error=("stopped", "dropped by a stop request"))
        log.warning("stop requested (%d queued request(s) dropped)", len(dropped))
        self._event("state", state="stopped", reason="stop request")
        return dropped

    def _answer(
        self,
        envelope,
        request: Request,
        seq: int,
        state: str,
        result: dict | None = None,
        error=None,
        extra=(),
        cache: bool = True,
    ) -> None:
        try:
            self.journal.update(seq, state, result if error is None else {"error": error[0], "message": error[1]})
        except Exception:  # a failing journal (a full disk) must not swallow the reply: the client still gets it
            log.exception("could not journal the end of request %s", request.id)
        body = [
            protocol.reply(request, **(result or {}))
            if error is None
            else protocol.error_reply(error[0], error[1], request.id, request.type)
        ]
        frames = body + list(extra)
        if cache:
            self.replies[request.id] = frames
            while len(self.replies) > REPLY_CACHE:
                self.replies.popitem(last=False)
        self.router.send_multipart(envelope + frames)

    def _finish(self, request: Request, seq: int, state: str, result: dict | None = None, error=None, extra=()) -> None:
        envelope = self.envelopes.pop(request.id, None)
        if envelope is not None:
            self._answer(envelope, request, seq, state, result, error, extra)

    def _on_result(self, frames: list[bytes]) -> None:
        kind = frames[0]
        if kind == b"event":
            self.pub.send_multipart(frames[1:])
            if frames[1] == b"state":
                self.state = json.loads(frames[2])["state"]
            return
        message = json.loads(frames[1])
        request = Request(message["id"], message["type"])
        error = tuple(message["error"]) if message.get("error") else None
        if error is None:
            self.last_result = {"id": request.id, "type": request.type, **message["result"]}
        self._finish(request, message["seq"], "failed" if error else "done", message.get("result"), error, frames[2:])

    # -- status, events ----------------------------------------------------------------
    def status(self) -> dict:
        model = self.jobs.model
        robot = self.jobs.robot
        return {
            "state": self.state,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "queue": self.queue.qsize(),
            "model": {
                "bundle": model.manifest.model,
                "quant": model.manifest.quant,
                "vision_providers": model.vision_providers,
                "answer": model.manifest.answer.variant,
                "presence_check": model.presence_active,
                "target_check": model.target_active,
                "process": model.status(),
            },
            "camera": self.config.camera.type,
            "robot": None if robot is None else {"alive": robot.alive, "stopping": robot.stopping},
            "speech": self.transcriber is not None,
            "sessions": len(self.jobs.sessions),
            "interrupted": [{"id": r["id"], "type": r["type"], "state": r["state"]} for r in self.interrupted],
            "last_result": self.last_result,
            "journal_rows": self.journal.count(),
            "denied_connections": self.denied,
        }

    def healthy(self) -> bool:
        """Whether systemd's watchdog is fed: the arm process (if any) and the worker thread live. A daemon whose
        worker died still beats from its main thread but answers nothing: systemd must restart it."""
        worker = getattr(self, "_worker", None)
        robot_alive = self.jobs.robot is None or self.jobs.robot.alive
        return robot_alive and (worker is None or worker.is_alive())

    def _heartbeat(self) -> None:
        self._event(
            "heartbeat", state=self.state, uptime_s=round(time.monotonic() - self.started, 1), queue=self.queue.qsize()
        )
        if self.healthy():
            self.notifier.watchdog()
        self.notifier.status(f"{self.state}, {self.queue.qsize()} queued")

    def _event(self, topic: str, **payload) -> None:
        self.pub.send_multipart(protocol.event(topic, **payload))

    def _set_state(self, state: str) -> None:
        self.state = state
        self._event("state", state=state)

    # -- the worker thread ---------------------------------------------------------------
    def _work(self) -> None:
        out = self.context.socket(zmq.PUSH)
        out.linger = 1000
        out.connect(RESULTS)
        try:
            while True:
                job = self.queue.get()
                if job is None:
                    return
                try:
                    self._run(job, out)
                except Exception as exc:  # e.g. the journal failing before the job began: the worker goes on
                    log.exception("request %s could not be run", job.request.id)
                    error = ("internal", f"the request could not be run: {type(exc).__name__}: {exc}")
                    message = {"id": job.request.id, "type": job.request.type, "seq": job.seq, "result": None}
                    out.send_multipart([b"reply", json.dumps({**message, "error": error}).encode()])
        finally:
            out.close()

    def _run(self, job: QueuedRequest, out) -> None:
        request = job.request

        def event(topic, **payload):
            out.send_multipart([b"event", *protocol.event(topic, **payload)])

        self.journal.update(job.seq, "running")
        result, error, extra = None, None, []
        stops = job.stops
        if request.type == "refine" and request.fields["session"] not in self.jobs.sessions:  # nothing to do: no events
            error = ("unknown_session", f"no session {request.fields['session']!r} (it ended, or the daemon restarted)")
            message = {"id": request.id, "type": request.type, "seq": job.seq, "result": None, "error": error}
            out.send_multipart([b"reply", json.dumps(message).encode()])
            return
        try:
            text = self._instruction(request, event)
            busy = "moving" if request.type in protocol.MOTIONS or request.fields.get("execute") else "predicting"
            event("state", state=busy, request=request.id)
            result, extra = self._dispatch(request, text, event, lambda: self._may_move(stops))
        except (JobError, ProtocolError, BadAudio, ContextFull) as exc:
            error = (exc.code, str(exc))
        except CameraError as exc:
            error = ("camera", f"{exc}: nothing moves")
        except ModelCrashed as exc:
            error = (exc.code, f"{exc}: nothing moves")
        except MotionError as exc:
            error = ("motion_failed", str(exc))
        except RobotUnavailable as exc:
            error = ("robot_unavailable", str(exc))
        except Exception as exc:  # the daemon carries on whatever one request did
            log.exception("request %s failed", request.id)
            error = ("internal", f"{type(exc).__name__}: {exc}")
        if error:
            event("error", request=request.id, code=error[0], message=error[1])
        event("state", state="idle")
        message = {"id": request.id, "type": request.type, "seq": job.seq, "result": result, "error": error}
        out.send_multipart([b"reply", json.dumps(message, allow_nan=False).encode(), *extra])

    def _instruction(self, request: Request, event) -> str | None:
        if request.type not in protocol.INSTRUCTED:
            return None
        if request.audio is None:
            return request.text
        if self.transcriber is None:
            raise JobError("speech_unavailable", "this appliance has no speech recognition (install the speech extra)")
        heard = self.transcriber(request.audio)
        event(
            "prediction", request=request.id, heard=heard.text, confidence=heard.confidence, in_grammar=heard.in_grammar
        )
        if not heard.accepted:
            raise JobError("not_understood", f"spoken instruction not understood ({heard.reason}): nothing moves")
        return heard.text

    def _dispatch(self, request: Request, text: str | None, event, may_move) -> tuple[dict, list[bytes]]:
        jobs, kind = self.jobs, request.type
        session = request.fields.get("session") or request.id
        if kind in ("home", "release"):
            may_move()
            return getattr(jobs, kind)(), []
        jobs.check_instruction(text, first=kind != "refine")  # understood, and fits the model, before anything moves
        if kind == "refine":
            prediction, png = jobs.refine(session, text)
        else:
            if kind == "grasp" and jobs.robot is not None:
                may_move()
                jobs.observe(request.fields.get("speed", 1.0))
            prediction, png = jobs.predict(session, text)
        prediction.update(session=session, heard=text if request.audio else None)
        event("prediction", request=request.id, **prediction)
        if kind == "grasp" or request.fields.get("execute"):
            if prediction.get("executable"):
                may_move()
            outcome = jobs.execute(session, request.fields.get("speed", 1.0))
            event("result", request=request.id, **outcome)
            prediction["execution"] = outcome
        return prediction, [png]

    def _may_move(self, stops_at_start: int) -> None:
        """Re-arm the arm for this job's next motion, unless a stop came in since the job started."""
        with self._stop_lock:
            if self._stops != stops_at_start:
                raise JobError("stopped", "a stop request arrived: this request moves no further")
            if self.jobs.robot is not None:
                self.jobs.robot.clear_stop()


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """[identity, (b""), body...] → (envelope, body): REQ clients add an empty delimiter, DEALERs may not."""
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]
