"""Client of the sim cell's service (frames, resets, poses), with timeouts and retries."""

from __future__ import annotations

import json
import logging

import numpy as np

log = logging.getLogger(__name__)


class CellUnavailable(RuntimeError):
    """The sim cell did not answer within the timeout, after every retry."""


class SimCellClient:
    """REQ client with the Lazy Pirate pattern: on a timeout, reopen the socket and retry."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5560", timeout_s: float = 5.0, retries: int = 3):
        import zmq

        self.endpoint, self.timeout_ms, self.retries = endpoint, int(timeout_s * 1000), retries
        self._zmq = zmq
        self._context = zmq.Context.instance()
        self._socket = None

    def _open(self):
        socket = self._context.socket(self._zmq.REQ)
        socket.setsockopt(self._zmq.LINGER, 0)
        socket.connect(self.endpoint)
        return socket

    def request(self, op: str, **fields) -> tuple[dict, list[bytes]]:
        """Send one request; returns the reply header and any binary parts."""
        payload = json.dumps({"op": op, **fields}).encode()
        for attempt in range(1, self.retries + 1):
            if self._socket is None:
                self._socket = self._open()
            self._socket.send(payload)
            if self._socket.poll(self.timeout_ms):
                header, *parts = self._socket.recv_multipart()
                reply = json.loads(header)
                if not reply.get("ok"):
                    raise RuntimeError(f"sim cell refused {op!r}: {reply.get('error')}")
                return reply, parts
            log.warning("sim cell did not answer %r within %d ms (attempt %d)", op, self.timeout_ms, attempt)
            self._socket.close()
            self._socket = None
        raise CellUnavailable(f"no answer from the sim cell at {self.endpoint} after {self.retries} tries")

    def info(self) -> dict:
        return self.request("info")[0]

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB H×W×3 uint8, depth H×W float32 metres) as the top-down camera sees the cell now."""
        header, (rgb, depth) = self.request("frame")
        h, w = header["height"], header["width"]
        return np.frombuffer(rgb, np.uint8).reshape(h, w, 3), np.frombuffer(depth, np.float32).reshape(h, w)

    def reset(self, obj: int | str, **placement) -> dict:
        """Place one object (``seed=`` or ``x=, y=, yaw=``) and park the rest."""
        return self.request("reset", object=obj, **placement)[0]["placement"]

    def reset_scene(self, placements: list[dict]) -> list[dict]:
        """Place several objects at once: ``[{"object": id, "seed": s} | {"object", "x", "y", "yaw"}, ...]``."""
        return self.request("reset", objects=placements)[0]["placement"]

    def objects(self) -> dict[str, dict]:
        """Per object: ``pose`` [x, y, z, qw, qx, qy, qz], ``com`` [x, y, z], ``on_table``."""
        return self.request("poses")[0]["objects"]

    def poses(self) -> dict[str, list[float]]:
        return {k: v["pose"] for k, v in self.objects().items()}

    def fault(self, **fields) -> dict:
        """Inject a fault (see ``appliance.sim.service``): ``camera="drop", count=2`` or ``robot="reflex", after_s=0.5``."""
        return self.request("fault", **fields)[0]

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> SimCellClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
