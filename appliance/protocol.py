"""The ZeroMQ API of the daemon: message types as a table, validated in one place.

Requests arrive on a ROUTER socket as ``[json]`` or ``[json, wav]`` (after the
client identity and, from REQ sockets, an empty delimiter). The JSON is an
object ``{"v": 1, "id": "...", "type": "...", ...fields}``; a reply carries the
same ``id`` and ``type`` with ``"ok": true`` and the result, or ``"ok": false``
and ``{"error": {"code", "message"}}``. Events go out on a PUB socket as
``[topic, json]``. docs/protocol.md is the prose version of this module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

VERSION = 1
MAX_JSON_BYTES = 64 * 1024
MAX_AUDIO_BYTES = 4 * 1024 * 1024
"""A 16 kHz mono 16-bit WAV of about two minutes."""
MAX_TEXT_CHARS = 500
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# type -> {field: (python type, required)}; ``text`` and an audio frame are the two instruction forms.
REQUESTS: dict[str, dict[str, tuple[type, bool]]] = {
    "predict": {"text": (str, False), "session": (str, False)},
    "grasp": {"text": (str, False), "session": (str, False), "speed": (float, False)},
    "refine": {"text": (str, False), "session": (str, True), "execute": (bool, False)},
    "status": {},
    "home": {},
    "release": {},
    "stop": {},
}
INSTRUCTED = ("predict", "grasp", "refine")
"""Types that need an instruction: ``text`` or a WAV frame (exactly one)."""
EVENTS = ("state", "prediction", "result", "error", "heartbeat", "journal")


class ProtocolError(ValueError):
    """A request the daemon will not run; ``code`` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        super().__init__(message)
        self.code, self.request_id = code, request_id


@dataclass(frozen=True)
class Request:
    """A validated request."""

    id: str
    type: str
    fields: dict = field(default_factory=dict)
    audio: bytes | None = None

    @property
    def text(self) -> str | None:
        return self.fields.get("text")


def parse_request(frames: list[bytes]) -> Request:
    """Frames after the identity (and delimiter) → ``Request``; ``ProtocolError`` on anything malformed."""
    if not frames or len(frames) > 2:
        raise ProtocolError("bad_frames", f"expected [json] or [json, wav], got {len(frames)} frames")
    raw = frames[0]
    if len(raw) > MAX_JSON_BYTES:
        raise ProtocolError("too_large", f"request JSON is {len(raw)} bytes, the limit is {MAX_JSON_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_json", f"request is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "request must be a JSON object")
    request_id = data.get("id")
    rid = request_id if isinstance(request_id, str) and _ID.fullmatch(request_id) else None
    if rid is None:
        raise ProtocolError("bad_id", "id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    if data.get("v") != VERSION:
        raise ProtocolError("bad_version", f"protocol version must be {VERSION}, got {data.get('v')!r}", rid)
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in REQUESTS:
        raise ProtocolError("bad_type", f"unknown type {kind!r} (known: {', '.join(REQUESTS)})", rid)
    fields = {k: v for k, v in data.items() if k not in ("v", "id", "type")}
    _check_fields(kind, fields, rid)
    audio = frames[1] if len(frames) == 2 else None
    _check_instruction(kind, fields, audio, rid)
    return Request(rid, kind, fields, audio)


def _check_fields(kind: str, fields: dict, rid: str) -> None:
    schema = REQUESTS[kind]
    for name, value in fields.items():
        if name not in schema:
            raise ProtocolError("bad_field", f"{kind}: unknown field {name!r}", rid)
        want = schema[name][0]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if want is float else isinstance(value, want)
        if not ok:
            raise ProtocolError("bad_field", f"{kind}.{name} must be {want.__name__}, got {type(value).__name__}", rid)
    for name, (_, required) in schema.items():
        if required and name not in fields:
            raise ProtocolError("bad_field", f"{kind}: field {name!r} is required", rid)
    if "session" in fields and not _ID.fullmatch(fields["session"]):
        raise ProtocolError("bad_field", f"{kind}.session is not a valid id", rid)
    if "speed" in fields and not 0 < fields["speed"] <= 1:
        raise ProtocolError("bad_field", f"{kind}.speed is a factor in (0, 1]", rid)


def _check_instruction(kind: str, fields: dict, audio: bytes | None, rid: str) -> None:
    if kind not in INSTRUCTED:
        if audio is not None:
            raise ProtocolError("bad_frames", f"{kind} takes no audio frame", rid)
        return
    text = fields.get("text")
    if (text is None) == (audio is None):
        raise ProtocolError("bad_instruction", f"{kind} needs exactly one instruction: 'text' or a WAV frame", rid)
    if text is not None and not (0 < len(text.strip()) and len(text) <= MAX_TEXT_CHARS):
        raise ProtocolError("bad_instruction", f"text must be 1-{MAX_TEXT_CHARS} characters", rid)
    if audio is not None and len(audio) > MAX_AUDIO_BYTES:
        raise ProtocolError("too_large", f"audio is {len(audio)} bytes, the limit is {MAX_AUDIO_BYTES}", rid)


def encode(message: dict) -> bytes:
    """JSON bytes of a reply or event (NaN is refused: JSON has none)."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()


def reply(request: Request, **result) -> bytes:
    """A success reply to ``request``."""
    return encode({"v": VERSION, "id": request.id, "type": request.type, "ok": True, **result})


def error_reply(code: str, message: str, request_id: str | None = None, kind: str | None = None) -> bytes:
    """An error reply (``request_id`` is None when the request had no readable id)."""
    return encode({"v": VERSION, "id": request_id, "type": kind, "ok": False, "error": {"code": code, "message": message}})


def request(kind: str, request_id: str, **fields) -> bytes:
    """A request as clients send it (validated the way the daemon will)."""
    data = encode({"v": VERSION, "id": request_id, "type": kind, **fields})
    parse_request([data] if kind not in INSTRUCTED or "text" in fields else [data, b"RIFF"])
    return data


def event(topic: str, **payload) -> list[bytes]:
    """A PUB message: ``[topic, json]``."""
    if topic not in EVENTS:
        raise ValueError(f"unknown event topic {topic!r}")
    return [topic.encode(), encode({"v": VERSION, "topic": topic, **payload})]
