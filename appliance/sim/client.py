"""Client of the sim cell's service (frames, resets, poses), with timeouts and retries."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np


class CellUnavailable(RuntimeError):
    """The sim cell did not answer within the timeout, after every retry."""


class SimCellClient:
    """Client of the cell's service, retried the Lazy Pirate way (``appliance.client.LazyPirate``); ``watch``, when
    given, is called while a reply is awaited and raises to give up early (the demo's check that the cell lives)."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5560",
        timeout_s: float = 5.0,
        retries: int = 3,
        watch: Callable[[], None] | None = None,
    ):
        from appliance.client import LazyPirate

        self.endpoint, self.retries = endpoint, retries
        self._pirate = LazyPirate(endpoint, timeout_s, retries, watch=watch)

    def request(self, op: str, **fields) -> tuple[dict, list[bytes]]:
        """Send one request; returns the reply header and any binary parts."""
        frames = self._pirate.exchange([json.dumps({"op": op, **fields}).encode()])
        if frames is None:
            raise CellUnavailable(f"no answer from the sim cell at {self.endpoint} after {self.retries} tries")
        header, *parts = frames
        reply = json.loads(header)
        if not reply.get("ok"):
            raise RuntimeError(f"sim cell refused {op!r}: {reply.get('error')}")
        return reply, parts

    def info(self) -> dict:
        return self.request("info")[0]

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB H×W×3 uint8, depth H×W float32 metres) as the top-down camera sees the cell now."""
        header, (rgb, depth) = self.request("frame")
        h, w = header["height"], header["width"]
        return np.frombuffer(rgb, np.uint8).reshape(h, w, 3), np.frombuffer(depth, np.float32).reshape(h, w)

    def view(self, camera: str = "side") -> np.ndarray:
        """An RGB picture (H×W×3 uint8) from one of the cell's cameras: ``side`` shows what the hand holds."""
        header, (rgb, *_) = self.request("view", camera=camera)
        return np.frombuffer(rgb, np.uint8).reshape(header["height"], header["width"], 3)

    def object_map(self, camera: str = "side") -> np.ndarray:
        """H×W int16: which object (its index in ``info``'s list) each pixel of the camera's picture shows, -1 none."""
        header, (_, ids) = self.request("view", camera=camera, segment=True)
        return np.frombuffer(ids, np.int16).reshape(header["height"], header["width"])

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
        self._pirate.close()

    def __enter__(self) -> SimCellClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
