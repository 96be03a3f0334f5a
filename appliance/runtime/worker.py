"""The model in its own process: a native crash in onnxruntime or llama.cpp must not take the daemon down.

    worker = ModelWorker(Path("models/rtgrasp-tiny")).start()
    session = worker.session()
    first = session.ask("pick up the mug", image)            # runs in the child
    second = session.ask("grasp it by the handle instead")   # the same conversation

The child owns a ``GraspModel`` and its sessions and answers over a pipe. Each
call carries a sequence number; a reply to an earlier call (one that timed out)
is logged and dropped, so the parent can never read the answer to another
question. A child that dies (SIGILL from a CPU it cannot run on, SIGSEGV, an
abort from llama.cpp) or does not answer in time ends the call with
``ModelCrashed`` naming the signal; the child is started again at once, and a
conversation that lived in the dead child is replayed in the new one (greedy
decoding is deterministic, so the replayed turns are the same answers).
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing as mp
import os
import threading
import time
from itertools import count
from multiprocessing.connection import wait
from pathlib import Path

from appliance.bundle import Manifest, read_bundle

from .llm import ContextFull, LlamaError, LlamaSettings, TooLong
from .model import MAX_NEW_TOKENS, Prediction
from .proc import describe_exit
from .vision import PROVIDERS

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""Loading a 7B bundle from a slow disk takes a while; the tiny one loads in about a second."""
CALL_TIMEOUT_S = 120.0
MAX_SESSIONS = 32
"""Conversations the child keeps; an older one is replayed when it is asked again."""


class ModelCrashed(RuntimeError):
    """The model process died (or hung and was killed) during a call; it has been restarted."""

    code = "model_crashed"


class MissingSession(LookupError):
    """The child does not hold this conversation (it was restarted, or dropped it for space)."""


ERRORS = {cls.__name__: cls for cls in (LlamaError, ContextFull, TooLong, ValueError, MissingSession)}
"""Exceptions the child reports that the parent raises again as themselves; anything else is a RuntimeError."""


def _serve(
    directory: str,
    providers,
    llama: LlamaSettings,
    speculative: str,
    presence: bool,
    target_check: bool,
    conn,
    log_level: int,
) -> None:
    """The child: load the bundle, then answer calls until the pipe closes."""
    faulthandler.enable()  # a fatal signal leaves a Python traceback on stderr (the daemon's log)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s[model %(process)d]: %(message)s")
    from collections import OrderedDict

    from .model import GraspModel

    try:
        # the parent verified the hashes
        model = GraspModel.load(
            Path(directory),
            providers,
            llama,
            verify=False,
            speculative=speculative,
            presence=presence,
            target_check=target_check,
        )
    except Exception as exc:
        conn.send((0, "error", type(exc).__name__, str(exc)))
        return
    sessions: OrderedDict = OrderedDict()

    def ask(session_id: str, instruction: str, image, max_new_tokens: int, speculative: bool | None) -> Prediction:
        if image is None and session_id not in sessions:
            raise MissingSession(session_id)
        session = sessions.pop(session_id, None) or model.session()
        sessions[session_id] = session
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        return session.ask(instruction, image, max_new_tokens, speculative=speculative)

    def check(instruction: str) -> None:
        model.session().check_room(instruction)

    faults: dict[str, int] = {}

    def fault(command: str, signal_number: int) -> None:
        faults[command] = signal_number

    commands = {"ask": ask, "check": check, "fault": fault}
    try:
        ready = {"vision_providers": list(model.vision.active), "presence": model.presence is not None}
        conn.send((0, "ok", ready | {"target_check": model.target is not None}))
    except OSError:  # the daemon closed the pipe while the bundle loaded
        return
    while True:
        try:
            seq, name, args = conn.recv()
        except (EOFError, OSError):
            return
        if name in faults:  # fault injection: die by this signal inside the call, as a native crash would
            os.kill(os.getpid(), faults.pop(name))
        try:
            reply = (seq, "ok", commands[name](*args))
        except Exception as exc:  # reported; the process carries on
            if type(exc).__name__ not in ERRORS:
                log.exception("model command %s failed", name)
            reply = (seq, "error", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except OSError:  # the daemon is gone
            return


class ModelWorker:
    """A ``GraspModel`` served by a child process, restarted when it dies."""

    def __init__(
        self,
        directory: Path,
        providers=PROVIDERS,
        llama: LlamaSettings = LlamaSettings(),
        call_timeout_s: float = CALL_TIMEOUT_S,
        speculative: str = "off",
        presence: bool = True,
        target_check: bool = True,
    ):
        self.directory, self.providers, self.llama, self.call_timeout_s = (
            Path(directory),
            tuple(providers),
            llama,
            call_timeout_s,
        )
        self.speculative = speculative
        """The model's drafting policy (``appliance.runtime.model.SPECULATIVE_POLICIES``)."""
        self.presence = presence
        """Use the bundle's presence check when it has one (``appliance.runtime.presence``)."""
        self.presence_active = False
        """Whether the loaded model refuses through the presence check (known once the child is ready)."""
        self.target_check = target_check
        """Use the bundle's target check when it has one (``appliance.runtime.target``)."""
        self.target_active = False
        """Whether the loaded model moves poses through the target check (known once the child is ready)."""
        self.manifest: Manifest = read_bundle(self.directory, verify=True)
        self.format = self.manifest.answer.format
        self.vision_providers: list[str] = []
        self.restarts = 0
        """Children started after the first one (each after a crash or a hang)."""
        self.last_crash: str | None = None
        self._ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited threads, sockets or locks
        self._proc = self._conn = None
        self._seq = count(1)
        self._generation = 0
        """Bumped at every start: a session knows whether the child still holds its conversation."""

    # -- the child's life ------------------------------------------------------------------
    def start(self) -> ModelWorker:
        """Start the child and wait until the bundle is loaded; ``LlamaError`` if it cannot load."""
        self._spawn()
        self._wait_ready()
        return self

    def _spawn(self) -> None:
        self._conn, child = self._ctx.Pipe()
        args = (
            str(self.directory),
            self.providers,
            self.llama,
            self.speculative,
            self.presence,
            self.target_check,
            child,
            logging.getLogger().getEffectiveLevel(),
        )
        self._proc = self._ctx.Process(target=_serve, args=args, name="rtgrasp-model", daemon=True)
        self._proc.start()
        child.close()
        self._generation += 1
        self._ready = False

    def _wait_ready(self) -> None:
        if self._ready:
            return
        try:
            info = self._receive(0, START_TIMEOUT_S, "loading the bundle", restart=False)
        except ModelCrashed as exc:
            raise LlamaError(f"the model process could not start: {exc}") from None
        self.vision_providers = info["vision_providers"]
        self.presence_active = info["presence"]
        self.target_active = info["target_check"]
        self._ready = True
        log.info(
            "model process %d ready (%s, vision on %s)", self.pid, self.manifest.model, ", ".join(self.vision_providers)
        )

    def _restart(self, why: str) -> None:
        """Kill what is left of the child and start another (it loads while the daemon answers)."""
        log.error("model process %s: %s; starting a new one", self.pid, why)
        self.last_crash = why
        self._kill()
        self.restarts += 1
        self._spawn()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(5)
        if self._conn is not None:
            self._conn.close()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def close(self) -> None:
        """End the child (closing the pipe ends its loop; it is killed if it does not)."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)

    # -- calls -------------------------------------------------------------------------------
    def call(self, name: str, *args, timeout_s: float | None = None):
        """Run one command in the child; ``ModelCrashed`` if it dies or hangs (it is restarted)."""
        if not self.alive:
            self._restart(f"found dead ({describe_exit(self._proc.exitcode if self._proc else None)})")
        self._wait_ready()
        seq, timeout_s = next(self._seq), timeout_s or self.call_timeout_s
        # An image is larger than the pipe's buffer, so sending waits for the child to read: a child that
        # cannot (hung) is killed when the call's time is up, and the send fails like any crash.
        proc, expired = self._proc, threading.Event()
        guard = threading.Timer(timeout_s, lambda: (expired.set(), proc.kill()))
        guard.start()
        try:
            self._conn.send((seq, name, args))
        except OSError:
            raise self._crashed(
                name, f"gave no answer within {timeout_s:.0f} s and was killed" if expired.is_set() else None
            ) from None
        finally:
            guard.cancel()
        return self._receive(seq, timeout_s, name)

    def _crashed(self, what: str, how: str | None = None, restart: bool = True) -> ModelCrashed:
        """The child has died during ``what``: restart it, and the error that says how it died."""
        self._proc.join(5)
        how = how or f"died with {describe_exit(self._proc.exitcode)}"
        if not restart:
            return ModelCrashed(f"the model process {how} during {what!r}")
        self._restart(f"{how} during {what!r}")
        return ModelCrashed(f"the model process {how} during {what!r}; it has been restarted")

    def _receive(self, seq: int, timeout_s: float, what: str, restart: bool = True):
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._proc.kill()
                raise self._crashed(what, f"gave no answer within {timeout_s:.0f} s and was killed", restart)
            ready = wait([self._conn, self._proc.sentinel], left)
            if self._conn in ready:
                try:
                    got, status, *payload = self._conn.recv()
                except (EOFError, OSError):
                    ready = [self._proc.sentinel]
                else:
                    if got != seq:  # the answer to a call that timed out earlier: never someone else's reply
                        log.warning("dropped a late model reply (call %d, waiting for %d)", got, seq)
                        continue
                    if status == "ok":
                        return payload[0]
                    kind, message = payload
                    raise ERRORS.get(kind, RuntimeError)(message if kind in ERRORS else f"{kind}: {message}")
            if self._proc.sentinel in ready:
                raise self._crashed(what, restart=restart)

    def session(self) -> RemoteSession:
        """A new conversation (the image comes with its first turn)."""
        return RemoteSession(self)

    def inject_fault(self, command: str, sig: int) -> None:
        """Fault injection for tests (like the sim cell's ``fault`` op): the model process kills itself with ``sig``
        when the next ``command`` (``ask``, ``check``) arrives, so that call ends as a native crash would end it."""
        self.call("fault", command, int(sig))

    def check_room(self, instruction: str) -> None:
        """``TooLong`` unless a first turn with ``instruction`` fits the model's context (before the arm moves for it)."""
        self.call("check", instruction)

    def status(self) -> dict:
        """What ``status`` reports about the model process."""
        return {"pid": self.pid, "alive": self.alive, "restarts": self.restarts, "last_crash": self.last_crash}


class RemoteSession:
    """A conversation held by the model process, with the same ``ask`` and ``turns`` as ``model.Session``."""

    _ids = count(1)

    def __init__(self, worker: ModelWorker):
        self.worker = worker
        self.id = f"s{next(self._ids)}"
        self.turns: list[Prediction] = []
        self._asked: list[tuple[str, int, bool | None]] = []
        """Earlier instructions with their budget and decoding: what a replay asks again."""
        self._image = None

    def ask(
        self, instruction: str, image=None, max_new_tokens: int = MAX_NEW_TOKENS, speculative: bool | None = None
    ) -> Prediction:
        """One turn: a new image starts the conversation over; without one, a follow-up on the last."""
        if image is not None:
            prediction = self.worker.call("ask", self.id, instruction, image, max_new_tokens, speculative)
            self._image, self._asked, self.turns = image, [], []
        elif self._image is None:
            raise ValueError("the first turn of a session needs an image")
        else:
            try:
                prediction = self.worker.call("ask", self.id, instruction, None, max_new_tokens, speculative)
            except MissingSession:
                self._replay()
                prediction = self.worker.call("ask", self.id, instruction, None, max_new_tokens, speculative)
        self._asked.append((instruction, max_new_tokens, speculative))
        self.turns.append(prediction)
        return prediction

    def _replay(self) -> None:
        """Ask the earlier turns again in a child that does not hold them."""
        log.info("replaying %d turn(s) of session %s in the model process", len(self._asked), self.id)
        for i, (instruction, max_new_tokens, speculative) in enumerate(self._asked):
            self.worker.call("ask", self.id, instruction, self._image if i == 0 else None, max_new_tokens, speculative)
