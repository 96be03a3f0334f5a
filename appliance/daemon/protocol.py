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
import math
import re
from dataclasses import dataclass, field

VERSION = 1
DEFAULT_REQUESTS = "tcp://127.0.0.1:5570"
"""Where the daemon's ROUTER binds by default (``server.requests``), and where clients connect."""
DEFAULT_EVENTS = "tcp://127.0.0.1:5571"
"""Where its PUB binds by default (``server.events``)."""
MAX_JSON_BYTES = 64 * 1024
MAX_AUDIO_BYTES = 4 * 1024 * 1024
"""A 16 kHz mono 16-bit WAV of about two minutes."""
MAX_MESSAGE_BYTES = MAX_JSON_BYTES + MAX_AUDIO_BYTES + 1024
"""All frames of one message together (identity and delimiter included); larger messages are dropped unread."""
MAX_FRAMES = 4
"""Identity, the empty delimiter of a REQ socket, the JSON and a WAV."""
MAX_TEXT_CHARS = 500
MIN_SPEED = 0.05
"""The slowest grasp: the speed factor scales every motion's duration, and below 5 % a grasp outlasts the
arm process's call timeout."""
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PROMPT_MARKUP = re.compile(r"<\s*/?\s*[|A-Za-z_][^<>]{0,40}>|\b(?:USER|ASSISTANT|SYSTEM)\s*:", re.IGNORECASE)
"""What the prompt template is made of (``<image>``, ``<s>``, ``USER:``, ``ASSISTANT:``): an instruction holding
it would be read as part of the template, not as the user's words."""


@dataclass(frozen=True)
class Field:
    """One request field: its exact JSON type, whether it must be there, and what the docs say of it."""

    kind: str
    """``string``, ``id``, ``boolean`` or ``number`` (booleans are not numbers; numbers are finite)."""
    required: bool = False
    low: float | None = None
    high: float | None = None
    doc: str = ""

    def check(self, value) -> str | None:
        """Why ``value`` is not acceptable here (None when it is)."""
        if self.kind in ("string", "id"):
            if type(value) is not str:
                return f"must be a string, got {_json_type(value)}"
            if self.kind == "id" and not _ID.fullmatch(value):
                return "must be 1-64 characters of A-Z a-z 0-9 . _ : -"
            return None
        if self.kind == "boolean":
            return None if type(value) is bool else f"must be true or false, got {_json_type(value)}"
        if type(value) not in (int, float):
            return f"must be a number, got {_json_type(value)}"
        if not math.isfinite(value) or not (self.low <= value <= self.high):
            return f"must be a number in [{self.low}, {self.high}], got {value!r}"
        return None


TEXT = Field(
    "string", doc=f"the instruction, 1-{MAX_TEXT_CHARS} characters of text, no control characters or prompt markup"
)
SESSION = Field("id", doc="the conversation's id (default: the request's id)")

# type -> {field: Field}; ``text`` and an audio frame are the two instruction forms.
REQUESTS: dict[str, dict[str, Field]] = {
    "predict": {"text": TEXT, "session": SESSION},
    "grasp": {
        "text": TEXT,
        "session": SESSION,
        "speed": Field(
            "number",
            low=MIN_SPEED,
            high=1.0,
            doc="speed factor of every motion of the grasp (observation pose, ready pose, the plan)",
        ),
    },
    "refine": {
        "text": TEXT,
        "session": Field("id", required=True, doc="the session to continue"),
        "execute": Field("boolean", doc="grasp with the refined pose"),
    },
    "status": {},
    "home": {},
    "release": {},
    "stop": {},
}
INSTRUCTED = ("predict", "grasp", "refine")
"""Types that need an instruction: ``text`` or a WAV frame (exactly one)."""
MOTIONS = ("grasp", "home", "release")
"""Types that may move the arm (``refine`` too, with ``execute``)."""
UNCACHED = ("stop",)
"""Types that act every time they arrive, whatever their id: a stop is never answered from a cache."""
EVENTS = {
    "state": "`state`: `idle`, `predicting`, `moving` (grasp, home, release, refine with execute), `stopped`; "
    "`request` (the request it concerns), `reason` (with `stopped`)",
    "prediction": "`request` and the prediction fields of the reply; for speech, first `heard`, `confidence`, `in_grammar`",
    "result": "`request` and the execution outcome: `moved`, `success`, `stage`, `message`, `width`, `seconds`",
    "error": "`request`, `code`, `message` (a request that fails before it starts, e.g. an unknown session, publishes nothing)",
    "heartbeat": "`state`, `uptime_s`, `queue` (every `heartbeat_s`)",
}
PREDICTION_FIELDS = {
    "text": "the model's whole answer",
    "reasoning": "the reasoning before the pose (RT answers). For a first instruction that asks by a relation ('the "
    "mug on the left'), a bundle with spatial leads makes it open with the object its vision found leading that "
    "relation ('The one on the left is a mug.'; docs/export.md)",
    "parsed": "whether the answer parsed into a pose",
    "parse_error": "why it did not (null when it did)",
    "pose": "`{x, y, theta}`: x, y normalised in the model's view, theta in radians; null if the answer did not parse",
    "pixel": "`{u, v}`: the grasp centre in camera pixels (when parsed)",
    "object": "`{category, box}`: the object the answer resolved to, null when the answer did not parse. `category`: "
    "the first category the reasoning names (earliest mention, the longest name at it, whole words; a synonym gives "
    "its category; for a `refine` whose reasoning names none, the one the conversation last named; with the "
    "bundle's target check, the category the pose was put on: a spatial, colour or size request's object), null "
    "when it names none or the bundle lists no categories. `box`: `[u0, v0, u1, v1]`, integer "
    "camera pixels, u0 <= u < u1 and v0 <= v < v1: the region standing 1 cm or more above the table (a plane fitted "
    "to the depth image) that holds `pixel`, or else the nearest one within a finger's reach (4 cm); with the "
    "bundle's target check, the object the pose holds as the colour image shows it where that region is another "
    "object or none (below); null where neither finds one",
    "hint": "the objects the bundle's knowledge table (`knowledge.yaml`) says the instruction's words are for, as "
    "appended to a first turn ('could you pass me a thing to whip cream? Hint: a whisk.'); of several, only those "
    "the bundle's target check sees on the table when it sees any (docs/export.md); `[]` on follow-ups, where "
    "the table names none (or the instruction names its object) and for bundles without a table",
    "written": "`{x, y, theta}`: the pose the model wrote, when the bundle's target check moved it onto the object "
    "its reasoning named, or a turned follow-up onto the heads' turned grasp (`pose`, `text` and `pixel` are then "
    "the moved grasp); null when the pose is the model's own",
    "target": "the base-frame grasp position `[x, y, z]` in metres, when executable (else null)",
    "executable": "whether every check before motion passed",
    "check": "why not ('' when it is executable)",
    "timings": "`preprocess_ms`, `vision_ms`, `prefill_ms`, `prefill_tokens`, `decode_ms`, `decode_tokens`, "
    "`decode_tokens_per_s`, `total_ms`",
    "session": "the session id (for `refine`)",
    "heard": "the transcription of a spoken instruction (null for text)",
    "execution": "after a motion: `moved`, `success`, `stage`, `message`, and with a grasp `width`, `seconds`",
}
"""The fields of a ``predict``, ``grasp`` and ``refine`` reply (``pixel``, ``target``, ``executable``, ``check`` when
the answer parsed; ``object`` always, null when it did not; ``execution`` after a grasp). The annotated PNG comes as a second frame."""
STATUS_FIELDS = {
    "state": "`idle`, `predicting`, `moving`, `stopped`",
    "uptime_s": "seconds since the daemon started",
    "queue": "requests waiting",
    "model": "`bundle`, `quant`, `vision_providers`, `answer` (variant), `presence_check` (whether the bundle's presence check refuses), `target_check` (whether its target check moves poses), `process`: `{pid, alive, restarts, last_crash}` "
    "of the model process",
    "camera": "the camera backend's type",
    "robot": "`{alive, stopping}` of the arm process, null without an arm",
    "speech": "whether spoken instructions can be transcribed",
    "sessions": "conversations held for `refine`",
    "interrupted": "`[{id, type, state}]`: requests the last shutdown cut off",
    "last_result": "the last successful reply's fields, with its `id` and `type`",
    "journal_rows": "requests in the journal",
    "denied_connections": "CurveZMQ handshakes refused since the daemon started (each one is logged)",
}
OTHER_REPLIES = {
    "stop": "`stopped` (true), `dropped` (ids of queued requests it dropped)",
    "home": "`moved` (true)",
    "release": "`moved` (true)",
}
CODES = {
    "bad_frames": "not [json] or [json, wav], or a WAV on a type that takes none",
    "bad_json": "not a UTF-8 JSON object, or nested too deep",
    "bad_id": "id missing or not 1-64 characters of A-Z a-z 0-9 . _ : -",
    "bad_version": "v is not the integer 1",
    "bad_type": "unknown type",
    "bad_field": "an unknown field, a field of the wrong JSON type, or a number out of range",
    "bad_instruction": "no instruction or two, empty or too long text, text that is not valid Unicode, holds "
    "control characters or prompt markup (<image>, USER:, ...)",
    "too_large": f"JSON over {MAX_JSON_BYTES} bytes, audio over {MAX_AUDIO_BYTES} bytes",
    "too_long": "the instruction does not fit the model's context",
    "context_full": "the session has no room for another turn: start a new one",
    "bad_audio": "the WAV is not 16 kHz mono 16-bit, is empty, truncated or too long",
    "speech_unavailable": "this appliance has no speech recognition",
    "not_understood": "the instruction names nothing the model knows, the speech matched no command, or the "
    "model refused (it sees no such object), or the bundle's presence check found too few image patches showing the "
    "object named: nothing moves",
    "busy": "too many requests are waiting",
    "stopped": "a stop request ended this request",
    "unknown_session": "no such session (it ended, or the daemon restarted)",
    "no_robot": "this appliance has no arm",
    "camera": "no frame, or none in time: nothing moves",
    "model_crashed": "the model process died (the signal is named) and was restarted: nothing moves",
    "motion_failed": "the arm refused or aborted a motion",
    "robot_unavailable": "the arm process is gone or did not answer in time (the arm is stopped)",
    "interrupted": "a retry of a request the last shutdown cut off; it is not run again",
    "internal": "a bug: the daemon logged it and carries on",
}
"""Every error code the daemon replies with; docs/protocol.md lists the same (a test checks)."""


class ProtocolError(ValueError):
    """A request the daemon will not run; ``code`` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        assert code in CODES, code
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


def _json_type(value) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), "null"
    )


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def asks_to_stop(frames: list[bytes]) -> bool:
    """Whether a message ``parse_request`` refused still says ``"type": "stop"``: the daemon stops the arm for it
    all the same (a stop must never be lost to a missing id or an unknown field)."""
    if not frames or len(frames[0]) > MAX_JSON_BYTES:
        return False
    try:
        data = json.loads(frames[0].decode("utf-8"), parse_constant=_refuse_constant)
    except (RecursionError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "stop"


def parse_request(frames: list[bytes]) -> Request:
    """Frames after the identity (and delimiter) → ``Request``; ``ProtocolError`` on anything malformed."""
    if not frames or len(frames) > 2:
        raise ProtocolError("bad_frames", f"expected [json] or [json, wav], got {len(frames)} frames")
    raw = frames[0]
    if len(raw) > MAX_JSON_BYTES:
        raise ProtocolError("too_large", f"request JSON is {len(raw)} bytes, the limit is {MAX_JSON_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise ProtocolError("bad_json", "request JSON is nested too deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("bad_json", f"request is not UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "request must be a JSON object")
    request_id = data.get("id")
    rid = request_id if type(request_id) is str and _ID.fullmatch(request_id) else None
    if rid is None:
        raise ProtocolError("bad_id", "id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    version = data.get("v")
    if type(version) is not int or version != VERSION:
        raise ProtocolError("bad_version", f"v must be the integer {VERSION}, got {json.dumps(version)[:20]}", rid)
    kind = data.get("type")
    if type(kind) is not str or kind not in REQUESTS:
        raise ProtocolError("bad_type", f"unknown type {str(kind)[:40]!r} (known: {', '.join(REQUESTS)})", rid)
    fields = {k: v for k, v in data.items() if k not in ("v", "id", "type")}
    _check_fields(kind, fields, rid)
    audio = frames[1] if len(frames) == 2 else None
    _check_instruction(kind, fields, audio, rid)
    return Request(rid, kind, fields, audio)


def _check_fields(kind: str, fields: dict, rid: str) -> None:
    schema = REQUESTS[kind]
    for name, value in fields.items():
        if name not in schema:
            raise ProtocolError("bad_field", f"{kind}: unknown field {name[:40]!r}", rid)
        why = schema[name].check(value)
        if why:
            raise ProtocolError("bad_field", f"{kind}.{name} {why}", rid)
    for name, spec in schema.items():
        if spec.required and name not in fields:
            raise ProtocolError("bad_field", f"{kind}: field {name!r} is required", rid)


def check_text(text: str) -> str | None:
    """Why a typed instruction cannot be given to the model (None when it can)."""
    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        return f"text must be 1-{MAX_TEXT_CHARS} characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text is not valid Unicode (a lone surrogate)"
    if _CONTROL.search(text):
        return "text holds control characters"
    markup = _PROMPT_MARKUP.search(text)
    if markup:
        return f"text holds prompt markup ({markup.group(0)!r}), which the model would read as part of its template"
    return None


def _check_instruction(kind: str, fields: dict, audio: bytes | None, rid: str) -> None:
    if kind not in INSTRUCTED:
        if audio is not None:
            raise ProtocolError("bad_frames", f"{kind} takes no audio frame", rid)
        return
    text = fields.get("text")
    if (text is None) == (audio is None):
        raise ProtocolError("bad_instruction", f"{kind} needs exactly one instruction: 'text' or a WAV frame", rid)
    why = None if text is None else check_text(text)
    if why:
        raise ProtocolError("bad_instruction", why, rid)
    if audio is not None and len(audio) > MAX_AUDIO_BYTES:
        raise ProtocolError("too_large", f"audio is {len(audio)} bytes, the limit is {MAX_AUDIO_BYTES}", rid)


def markdown() -> str:
    """docs/protocol.md's reference tables, made from the tables above (a test keeps the page equal to this)."""
    out = ["| type | fields | reply |", "|---|---|---|"]
    for kind, schema in REQUESTS.items():
        fields = "; ".join(
            f"`{n}` ({f.kind}{', required' if f.required else ''}{_range(f)}): {f.doc}" for n, f in schema.items()
        )
        if kind in INSTRUCTED:
            fields += "; or a WAV frame instead of `text`"
        reply = "the status fields" if kind == "status" else OTHER_REPLIES.get(kind, "the prediction fields")
        out.append(f"| `{kind}` | {fields or '—'} | {reply} |")
    for title, table in (
        ("Prediction fields", PREDICTION_FIELDS),
        ("Status fields", STATUS_FIELDS),
        ("Error codes", CODES),
        ("Events (topic, payload)", EVENTS),
    ):
        out += ["", f"**{title}**", "", "| name | meaning |", "|---|---|"]
        out += [f"| `{name}` | {text} |" for name, text in table.items()]
    return "\n".join(out) + "\n"


def _range(f: Field) -> str:
    return f", {f.low}-{f.high}" if f.kind == "number" else ""


def encode(message: dict) -> bytes:
    """JSON bytes of a reply or event (NaN is refused: JSON has none)."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")).encode()


def reply(request: Request, **result) -> bytes:
    """A success reply to ``request``."""
    return encode({"v": VERSION, "id": request.id, "type": request.type, "ok": True, **result})


def error_reply(code: str, message: str, request_id: str | None = None, kind: str | None = None) -> bytes:
    """An error reply (``request_id`` is None when the request had no readable id)."""
    if code not in CODES:
        raise ValueError(f"undocumented error code {code!r}")
    return encode(
        {"v": VERSION, "id": request_id, "type": kind, "ok": False, "error": {"code": code, "message": message}}
    )


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


if __name__ == "__main__":
    print(markdown(), end="")
