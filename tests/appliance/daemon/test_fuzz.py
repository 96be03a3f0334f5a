"""10,000 malformed requests against a running daemon: each gets an error reply (or is dropped), the daemon
stays up, answers a valid request afterwards, and its memory does not grow without bound."""

import json
import random
import resource
import time

import pytest

from appliance import protocol

zmq = pytest.importorskip("zmq")

VALID = protocol.request("predict", "fuzz-valid", text="pick up the mug")


def malformed(rng: random.Random) -> list[bytes]:
    """A request the daemon must refuse (a draw that happens to be valid is replaced by random bytes)."""
    frames = _draw(rng)
    try:
        protocol.parse_request(frames)
    except protocol.ProtocolError:
        return frames
    return [rng.randbytes(50)]


def _draw(rng: random.Random) -> list[bytes]:
    kind = rng.randrange(6)
    if kind == 0:  # random bytes
        return [rng.randbytes(rng.randrange(0, 300))]
    if kind == 1:  # truncated valid request
        return [VALID[: rng.randrange(0, len(VALID))]]
    if kind == 2:  # wrong types in every field
        value = rng.choice([None, 1, -1.5, True, [], {}, "x" * rng.randrange(0, 80), "\u0000"])
        field = rng.choice(["v", "id", "type", "text", "session", "speed", "execute"])
        message = {"v": 1, "id": f"f{rng.randrange(10**6)}", "type": rng.choice(list(protocol.REQUESTS)), field: value}
        return [json.dumps(message).encode()]
    if kind == 3:  # too many frames, or an audio frame on the wrong type
        return [json.dumps({"v": 1, "id": "a", "type": "status"}).encode()] + [b"x"] * rng.randrange(1, 4)
    if kind == 4:  # oversized JSON
        return [b'{"v": 1, "id": "big", "type": "predict", "text": "' + b"y" * 70_000 + b'"}']
    return [json.dumps(rng.choice([[], 1, "s", None, {"v": 1}])).encode()]  # JSON that is no request


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_ten_thousand_malformed_requests(daemon):
    rng = random.Random(0)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(daemon.requests)
    total, window = 10_000, 200
    replies = 0
    baseline = None
    start = time.monotonic()
    for sent in range(0, total, window):
        for _ in range(window):
            sock.send_multipart([b"", *malformed(rng)])
        for _ in range(window):
            assert sock.poll(10_000), f"no reply after {sent} requests"
            frames = sock.recv_multipart()
            message = json.loads(frames[1])
            assert message["ok"] is False and message["error"]["code"]
            replies += 1
        if sent == 2_000:
            baseline = rss_mb()
    growth = rss_mb() - baseline
    sock.close(0)
    print(f"\n  fuzz: {replies} error replies in {time.monotonic() - start:.1f} s, RSS growth after warm-up {growth:.1f} MB")
    assert replies == total
    assert growth < 50  # no per-request leak (10,000 requests would show one)
    from appliance.client import Client

    client = Client(daemon.requests, timeout_s=30)
    reply, _ = client.request("status")
    client.close()
    assert reply["ok"] and reply["state"] == "idle"
