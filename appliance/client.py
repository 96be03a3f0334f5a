"""Command-line client of the daemon (and a small Python API for it).

    python -m appliance.client "grasp the mug by its handle"
    python -m appliance.client --predict-only "pick up the screwdriver" --save-image pred.png
    python -m appliance.client --refine SESSION "grasp it by the handle instead"
    python -m appliance.client --audio instruction.wav
    python -m appliance.client --status | --stop | --home | --release
    python -m appliance.client --events

Requests are retried the Lazy Pirate way: wait ``--timeout`` seconds, then
drop the socket, open a fresh one and send the *same* request id again (the
daemon never runs an id twice: a retry gets the original's reply).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import zmq

from appliance.daemon.protocol import DEFAULT_EVENTS, DEFAULT_REQUESTS

from .daemon import protocol

WATCH_EVERY_S = 0.5
log = logging.getLogger(__name__)


class DaemonUnavailable(RuntimeError):
    """No reply after every retry."""


class LazyPirate:
    """ZeroMQ's Lazy Pirate pattern: a REQ socket whose reply did not come in time is dropped (a REQ socket that lost
    its reply cannot send again) and a fresh one sends the same request, up to ``retries`` times.

    ``setup`` prepares each new socket before it connects (CurveZMQ keys); ``watch``, when given, is called about
    twice a second while a reply is awaited, and raises to give up early (the demo raises when the daemon's
    process has exited: no reply can come then)."""

    def __init__(
        self,
        endpoint: str,
        timeout_s: float,
        retries: int,
        setup: Callable | None = None,
        watch: Callable[[], None] | None = None,
    ):
        self.endpoint, self.timeout_s, self.retries, self.setup, self.watch = endpoint, timeout_s, retries, setup, watch
        self.context = zmq.Context.instance()
        self.socket = None

    def exchange(self, frames: list[bytes]) -> list[bytes] | None:
        """Send ``frames`` and return the reply's frames; None when every try timed out."""
        for attempt in range(1, self.retries + 1):
            if self.socket is None:
                self.socket = self.context.socket(zmq.REQ)
                self.socket.linger = 0
                if self.setup is not None:
                    self.setup(self.socket)
                self.socket.connect(self.endpoint)
            self.socket.send_multipart(frames)
            if self._poll():
                return self.socket.recv_multipart()
            log.info(
                "no reply from %s within %.1f s (try %d of %d)", self.endpoint, self.timeout_s, attempt, self.retries
            )
            self.close()
        return None

    def _poll(self) -> bool:
        if self.watch is None:
            return bool(self.socket.poll(int(self.timeout_s * 1000)))
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if self.socket.poll(int(min(left, WATCH_EVERY_S) * 1000)):
                return True
            self.watch()
        return False

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None


class Client:
    """Request/reply with the daemon, retried the Lazy Pirate way with the *same* request id (the daemon never runs
    an id twice); ``request`` returns (reply dict, extra frames such as the PNG). ``watch``: see ``LazyPirate``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_REQUESTS,
        timeout_s: float = 120.0,
        retries: int = 3,
        curve: tuple | None = None,
        watch: Callable[[], None] | None = None,
    ):
        self.endpoint, self.timeout_s, self.retries = endpoint, timeout_s, retries
        self._pirate = LazyPirate(endpoint, timeout_s, retries, setup=self._secure(curve), watch=watch)

    @staticmethod
    def _secure(curve: tuple | None):
        if not curve:
            return None
        from .daemon.security import secure_client

        return lambda sock: secure_client(sock, *curve)

    def request(self, kind: str, audio: bytes | None = None, **fields) -> tuple[dict, list[bytes]]:
        request_id = fields.pop("request_id", None) or uuid.uuid4().hex[:16]
        data = protocol.encode({"v": protocol.VERSION, "id": request_id, "type": kind, **fields})
        reply = self._pirate.exchange([data] + ([audio] if audio is not None else []))
        if reply is None:
            raise DaemonUnavailable(
                f"no reply from {self.endpoint} after {self.retries} tries of {self.timeout_s:.0f} s"
            )
        return json.loads(reply[0]), reply[1:]

    def close(self) -> None:
        self._pirate.close()


def follow_events(endpoint: str, curve: tuple | None = None, count: int | None = None, out=None) -> None:
    """Print the PUB stream as JSON lines (``count`` events, or forever)."""
    out = out or sys.stdout
    sock = zmq.Context.instance().socket(zmq.SUB)
    if curve:
        from .daemon.security import secure_client

        secure_client(sock, *curve)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    seen = 0
    try:
        while count is None or seen < count:
            _, payload = sock.recv_multipart()
            out.write(payload.decode() + "\n")
            out.flush()
            seen += 1
    finally:
        sock.close(0)


def show(reply: dict, out=None) -> None:
    """The human-readable form of a reply."""
    out = out or sys.stdout
    if not reply.get("ok"):
        err = reply.get("error", {})
        out.write(f"error ({err.get('code')}): {err.get('message')}\n")
        return
    if "reasoning" in reply:
        if reply.get("heard"):
            out.write(f"heard:     {reply['heard']}\n")
        if reply.get("hint"):  # what the bundle's knowledge table appended to the instruction
            out.write(f"hint:      {', '.join(reply['hint'])}\n")
        out.write(f"reasoning: {reply['reasoning'] or '-'}\n")
        pose = reply.get("pose")
        if pose:
            out.write(f"pose:      [{pose['x']:.3f}, {pose['y']:.3f}], {pose['theta']:.3f} rad\n")
            out.write(f"object:    {describe_object(reply.get('object'))}\n")
        else:
            out.write(f"pose:      none ({reply.get('parse_error')}); answer: {reply.get('text')!r}\n")
        if reply.get("check"):
            out.write(f"check:     {reply['check']}\n")
        ex = reply.get("execution")
        if ex:
            out.write(f"grasp:     {'lifted' if ex['success'] else 'failed'} ({ex['stage']}) {ex.get('message', '')}\n")
        out.write(f"session:   {reply.get('session')}\n")
    else:
        out.write(json.dumps({k: v for k, v in reply.items() if k not in ("v",)}, indent=1) + "\n")


def describe_object(obj: dict | None) -> str:
    """The resolved object as one line: category and pixel box (each '?' when unknown)."""
    if not obj:
        return "?"
    box = obj.get("box")
    where = f"box [{', '.join(str(int(b)) for b in box)}] px" if box else "no box"
    return f"{obj.get('category') or '?'}, {where}"


def what_to_check(endpoint: str, curve: bool) -> str:
    """The advice printed when the daemon did not answer."""
    return "\n".join(
        [
            "check that the daemon runs: systemctl status rtgrasp (its log: journalctl -u rtgrasp -n 50)",
            f"check the endpoint: the daemon's server.requests in appliance.yaml must be {endpoint} (or pass --endpoint)",
            "check the keys: is this client's public key in the daemon's allowed_clients, and --server-key the daemon's public "
            "key? (the daemon logs each denied handshake)"
            if curve
            else "a daemon with CurveZMQ (server.server_secret_key in appliance.yaml; required off loopback) answers only clients "
            "with a key: pass --key (this client's .key_secret) and --server-key (the daemon's .key)",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.client",
        description="Send an instruction (typed or spoken) to the rtgrasp daemon and print the reasoning and pose.",
        epilog='example: python -m appliance.client "grasp the mug by its handle"',
    )
    parser.add_argument("text", nargs="?", help="the instruction")
    parser.add_argument("--audio", type=Path, help="a 16 kHz mono WAV instead of text")
    parser.add_argument("--refine", metavar="SESSION", help="a follow-up in this session")
    parser.add_argument("--execute", action="store_true", help="with --refine: grasp with the refined pose")
    parser.add_argument("--predict-only", action="store_true", help="reasoning and pose, no motion")
    group = parser.add_mutually_exclusive_group()
    for name in ("status", "stop", "home", "release", "events"):
        group.add_argument(f"--{name}", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the raw reply")
    parser.add_argument("--save-image", type=Path, help="write the annotated image here")
    parser.add_argument("--endpoint", default=DEFAULT_REQUESTS)
    parser.add_argument("--events-endpoint", default=DEFAULT_EVENTS)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait before retrying")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--key", type=Path, help="CurveZMQ: this client's .key_secret")
    parser.add_argument("--server-key", type=Path, help="CurveZMQ: the daemon's public .key")
    args = parser.parse_args(argv)
    curve = (args.key, args.server_key) if args.key else None
    if args.events:
        follow_events(args.events_endpoint, curve)
        return 0
    fields: dict = {}
    audio = None
    if any(getattr(args, n) for n in ("status", "stop", "home", "release")):
        kind = next(n for n in ("status", "stop", "home", "release") if getattr(args, n))
    else:
        if (args.text is None) == (args.audio is None):
            parser.error("give an instruction: text or --audio FILE (not both)")
        if args.audio:
            try:
                audio = args.audio.read_bytes()
            except OSError as exc:
                parser.error(f"cannot read {args.audio}: {exc}")
        else:
            fields["text"] = args.text
        kind = "refine" if args.refine else "predict" if args.predict_only else "grasp"
        if args.refine:
            fields.update(session=args.refine, execute=args.execute)
    client = Client(args.endpoint, args.timeout, args.retries, curve)
    try:
        reply, extra = client.request(kind, audio, **fields)
    except DaemonUnavailable as exc:
        print(f"error: {exc}\n{what_to_check(args.endpoint, curve is not None)}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if args.save_image and extra:
        args.save_image.write_bytes(extra[0])
    print(json.dumps(reply, indent=1)) if args.json else show(reply)
    return 0 if reply.get("ok") else 3


if __name__ == "__main__":
    sys.exit(main())
