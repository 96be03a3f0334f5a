"""The sim cell's request service over ZeroMQ: camera frames, scene resets, object poses.

One REP socket on loopback. Requests are JSON objects with an ``op``:

- ``info``   → robot address, camera intrinsics and ``T_base_cam``, the objects
- ``frame``  → [header JSON, RGB bytes (H×W×3 uint8), depth bytes (H×W float32, metres)]
- ``view``   ``{"camera": "top" | "side", "segment": false}`` → [header JSON, RGB bytes (H×W×3 uint8)]:
  a picture for people (the side camera shows an object held above the table); with ``segment``, a
  third part, H×W int16: the index of the object seen at each pixel (-1: no object)
- ``reset``  ``{"object": i or id, "x", "y", "yaw"}`` or ``{"object", "seed"}`` → the placement;
  ``{"objects": [...]}`` places several at once (a cluttered scene) → the placements
- ``poses``  → every object's pose [x, y, z, qw, qx, qy, qz] in the base frame, its centre
  of mass and whether it touches the table; ``arm_q``, the arm's seven joint angles
- ``fault``  ``{"camera": "drop" | "stall" | "none", "count", "stall_s"}`` makes the next
  ``count`` frames fail or arrive late; ``{"robot": "reflex", "after_s"}`` aborts the
  next motion that has run ``after_s`` seconds with a reflex (see ``faults``)

Every reply carries ``ok``; a bad request gets ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import numpy as np

from .cell import SimCell
from .faults import CameraFaults
from .scene import CameraRenderer, place

log = logging.getLogger(__name__)

POLL_MS = 100
MAX_REQUEST_BYTES = 4096
SETTLE_S = 0.4  # let a reset object come to rest before answering
VIEWS = ("top", "side")
"""The cameras the ``view`` op renders: the model's top-down one and the side one (scene.SideCamera)."""


class CellService:
    """Serves one SimCell on a REP socket from its own thread (the renderer lives there too)."""

    def __init__(self, cell: SimCell, endpoint: str | None = None):
        self.cell = cell
        self.endpoint = endpoint or cell.config.service
        if not self.endpoint.startswith(("tcp://127.", "ipc://", "inproc://")):
            raise ValueError(f"the sim service binds loopback only, got {self.endpoint}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self.camera_faults = CameraFaults()

    def start(self) -> CellService:
        self._thread = threading.Thread(target=self._serve, name="sim-service", daemon=True)
        self._thread.start()
        if not self._bound.wait(30) or self._error:
            raise RuntimeError(f"sim service did not start: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        import mujoco
        import zmq

        context = zmq.Context.instance()
        socket = context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        try:
            socket.bind(self.endpoint)
            data = mujoco.MjData(self.cell.model)
            renderer = CameraRenderer(self.cell.model, self.cell.config.camera)
        except Exception as exc:  # reported to start()
            self._error = exc
            self._bound.set()
            return
        self._bound.set()
        log.info("sim service on %s", self.endpoint)
        try:
            while not self._stop.is_set():
                if not socket.poll(POLL_MS):
                    continue
                raw = socket.recv()
                try:
                    socket.send_multipart(self._handle(raw, data, renderer))
                except Exception as exc:  # one bad request never stops the service
                    log.exception("request failed")
                    socket.send_multipart([_json({"ok": False, "error": f"{type(exc).__name__}: {exc}"})])
        finally:
            renderer.close()
            socket.close()

    def _handle(self, raw: bytes, data, renderer) -> list[bytes]:
        try:
            request = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return [_json({"ok": False, "error": "request is not JSON"})]
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return [_json({"ok": False, "error": "request must be a JSON object with an 'op'"})]
        op = request["op"]
        if op == "info":
            return [_json({"ok": True, **self._info()})]
        if op == "frame":
            return self._frame(data, renderer)
        if op == "view":
            return self._view(request, data, renderer)
        if op == "reset":
            return [_json({"ok": True, "placement": self._reset(request)})]
        if op == "poses":
            self._forward(data)
            arm = [float(data.qpos[a]) for a in self.cell.robot._qpos_addrs]  # franky-sim keeps the arm's addresses
            return [_json({"ok": True, "objects": self.cell.object_states(data), "arm_q": arm})]
        if op == "fault":
            return [_json({"ok": True, **self._fault(request)})]
        return [_json({"ok": False, "error": f"unknown op {op!r}"})]

    def _info(self) -> dict:
        camera = self.cell.config.camera
        K = camera.intrinsics
        return {
            "robot_host": self.cell.robot.hostname,
            "camera": {
                "fx": K.fx,
                "fy": K.fy,
                "cx": K.cx,
                "cy": K.cy,
                "width": K.width,
                "height": K.height,
                "T_base_cam": camera.T_base_cam.tolist(),
            },
            "objects": [{"id": o.object_id, "category": o.category} for o in self.cell.objects],
            "hand_heals": self.cell.hand_heals,
        }

    def _forward(self, data) -> None:
        import mujoco

        data.qpos[:] = self.cell.snapshot_qpos()
        mujoco.mj_forward(self.cell.model, data)

    def _fault(self, request: dict) -> dict:
        if "camera" in request:
            self.camera_faults.arm(request["camera"], request.get("count", 1), request.get("stall_s", 3.0))
        if "robot" in request:
            if request["robot"] != "reflex":
                raise ValueError(f"robot fault must be 'reflex', got {request['robot']!r}")
            self.cell.robot_server.inject_reflex(request.get("after_s", 0.0))
        if "camera" not in request and "robot" not in request:
            raise ValueError("a fault needs 'camera' and/or 'robot'")
        return {
            "camera": self.camera_faults.mode,
            "pending_frames": self.camera_faults.count,
            "reflex": self.cell.robot_server.reflex,
        }

    def _frame(self, data, renderer) -> list[bytes]:
        fault = self.camera_faults.take()
        if fault == "drop":
            return [_json({"ok": False, "error": "no frame (injected camera fault)"})]
        if fault == "stall":
            time.sleep(self.camera_faults.stall_s)
        self._forward(data)
        rgb, depth = renderer.render(data)
        header = {"ok": True, "height": rgb.shape[0], "width": rgb.shape[1], "time": time.time()}
        return [_json(header), np.ascontiguousarray(rgb).tobytes(), np.ascontiguousarray(depth).tobytes()]

    def _view(self, request: dict, data, renderer) -> list[bytes]:
        camera = request.get("camera", "side")
        if camera not in VIEWS:
            raise ValueError(f"unknown camera {camera!r}; known: {', '.join(VIEWS)}")
        self._forward(data)
        rgb = renderer.picture(data, camera)
        header = {"ok": True, "camera": camera, "height": rgb.shape[0], "width": rgb.shape[1], "time": time.time()}
        parts = [_json(header), np.ascontiguousarray(rgb).tobytes()]
        if request.get("segment") is True:
            owner = np.append(self.cell.geom_objects(), np.int16(-1))  # a pixel of no geom (-1) reads the last
            parts.append(np.ascontiguousarray(owner[renderer.segment(data, camera)]).tobytes())
        return parts

    def _reset(self, request: dict) -> dict | list[dict]:
        """One object (``object`` + ``seed`` or ``x, y, yaw``), or a scene: ``objects``, a list of those."""
        many = "objects" in request
        specs = request["objects"] if many else [request]
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise ValueError("'objects' must be a non-empty list of {object, seed} or {object, x, y, yaw}")
        placements, out = {}, []
        for spec in specs:
            index = self._object_index(spec.get("object", 0))
            if "seed" in spec:
                (x, y), yaw = place(self.cell.config.table, random.Random(spec["seed"]))
            else:
                x, y, yaw = (float(spec[k]) for k in ("x", "y", "yaw"))
            placements[index] = (x, y, yaw)
            out.append({"object": self.cell.objects[index].object_id, "x": x, "y": y, "yaw": yaw})
        self.cell.reset(placements)
        time.sleep(SETTLE_S)
        return out if many else out[0]

    def _object_index(self, ref) -> int:
        ids = [o.object_id for o in self.cell.objects]
        index = ids.index(ref) if isinstance(ref, str) and ref in ids else ref
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(ids):
            raise ValueError(f"unknown object {ref!r}; known: {', '.join(ids)}")
        return index


def _json(obj: dict) -> bytes:
    return json.dumps(obj).encode()
