"""The simulated grasp cell: franky-sim's MuJoCo FR3, our table, camera and objects.

franky-sim serves the libfranka protocol on loopback, so the appliance drives
this cell with the same pylibfranka code as a real FR3 (from another process:
pylibfranka never releases the GIL). MuJoCo steps in franky-sim's thread; we
touch its state only from step callbacks (teleporting objects, copying the
state for rendering), never from another thread directly.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from .objects import CATEGORIES, ObjectModel, make_object
from .scene import CellCamera, SideCamera, TableConfig, camera_xml, lights_xml, side_camera_xml, table_xml

log = logging.getLogger(__name__)

# Arm folded back over its base, out of the top-down camera's view (checked by a test).
OBSERVATION_Q = (0.0, -1.0, 0.0, -2.9, 0.0, 2.0, 0.785)
# Hand pointing down above the table centre: where grasps start after the picture.
READY_Q = (0.0, -0.2, 0.0, -2.2, 0.0, 2.0, 0.785)
GROUND_Z = -0.05  # franky-sim's floor, lowered below our table top (z = 0)
PARK_Y = 1.2  # parked objects wait on the floor here, out of reach and view
SNAPSHOT_TIMEOUT = 2.0
FINGER_SLACK = 0.002
"""Metres a finger may sit beyond its joint range (MuJoCo's limits are soft) before a reset puts it back."""


@dataclass(frozen=True)
class SimCellConfig:
    """The sim cell: which objects, camera, table, service endpoint and robot address."""

    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES
    camera: CellCamera = CellCamera()
    side_camera: SideCamera = SideCamera()
    """For pictures only (the service's ``view`` op): the model never sees it."""
    table: TableConfig = TableConfig()
    service: str = "tcp://127.0.0.1:5560"
    robot_host: str = "127.0.0.1"
    observation_q: tuple[float, float, float, float, float, float, float] = OBSERVATION_Q
    ready_q: tuple[float, float, float, float, float, float, float] = READY_Q
    realtime: float = 1.0
    """Simulation speed relative to wall-clock time (1.0 = real time)."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
        if not self.categories:
            raise ValueError("the cell needs at least one object category")
        if self.realtime <= 0:
            raise ValueError(f"realtime must be positive, got {self.realtime}")
        if not self.robot_host.startswith("127."):
            raise ValueError(f"the simulated robot serves on loopback only, got {self.robot_host}")


def cell_objects(config: SimCellConfig) -> list[ObjectModel]:
    """One instance per category, drawn from the cell's seed."""
    rng = random.Random(f"{config.seed}:cell")
    return [make_object(c, rng, f"{c.replace(' ', '_')}-cell") for c in config.categories]


class SimCell:
    """Owns the simulator and its libfranka server; offers snapshots, resets and object poses."""

    def __init__(self, config: SimCellConfig):
        self.config = config
        self.objects = cell_objects(config)
        self._lock = threading.Lock()
        self._pending: list = []  # callables run in the sim thread before a step
        self._fingers: list[int] | None = None
        self.hand_heals = 0
        """Resets that found the fingers out of their range and put them back (reported by the service's info)."""
        self._snapshot_wanted = threading.Event()
        self._snapshot_ready = threading.Event()
        self._qpos: np.ndarray | None = None
        self.sim = self.server = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> SimCell:
        """Build the scene, bind the libfranka server on loopback and start stepping."""
        import franky_sim
        from franky_sim import franka_robot_server
        from franky_sim.mujoco_simulator import MujocoSimulator

        from . import faults
        from .hand import RealHandGripperServer

        franka_robot_server.FrankaGripperServer = RealHandGripperServer  # a hand that squeezes like a real one
        faults.install()  # reflexes on demand, for the fault-injection tests
        self.sim = MujocoSimulator()
        self.sim.init()
        self.robot = self.sim.add_robot(initial_q=self.config.observation_q, initial_hand_width=0.08)
        self._build_scene()
        self.sim.register_pre_step_callback(self._pre_step)
        self.sim.register_post_step_callback(self._post_step)
        self.server = franky_sim.SimulationServer(self.sim, hostname_candidates=[self.config.robot_host])
        self.server.init()
        self.server.run_async(realtime=self.config.realtime)
        log.info("sim cell running: robot at %s, %d objects", self.robot.hostname, len(self.objects))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
        if self.sim is not None:
            self.sim.cleanup()
        self.server = self.sim = None

    def __enter__(self) -> SimCell:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def model(self):
        return self.sim.model

    @property
    def robot_server(self):
        """The libfranka server of the arm (a ``faults.FaultyRobotServer``)."""
        return self.server.robot_servers[0]

    def _build_scene(self) -> None:
        scene, world = self.sim.scene, self.sim.worldbody
        for light in [e for e in world if e.tag == "light"]:
            world.remove(light)  # ours match the dataset's lighting
        for geom in world.iter("geom"):
            if geom.get("name") == "ground":
                geom.set("pos", f"0 0 {GROUND_Z}")
        option = scene.find("option")
        if option is None:
            option = ET.SubElement(scene, "option")
        # Elliptic friction cones and a high impratio keep grasped objects from creeping out of the
        # fingers (MuJoCo's defaults let a squeezed ball roll out while the hand lifts it).
        option.set("cone", "elliptic")
        option.set("impratio", "10")
        quality = scene.find("visual/quality")
        if quality is not None:
            quality.set("offsamples", "0")  # the dataset renders without multisampling
        visual = scene.find("visual")
        ET.SubElement(
            visual, "global", offwidth=str(self.config.camera.width), offheight=str(self.config.camera.height)
        )
        table_rgba = (0.72, 0.62, 0.48, 1.0)
        fragment = lights_xml() + camera_xml(self.config.camera) + side_camera_xml(self.config.side_camera)
        fragment += table_xml(self.config.table, table_rgba)
        for i, obj in enumerate(self.objects):
            x, y = self._park(i)
            fragment += obj.to_mjcf(self._body(i), (x, y), 0.0, base_z=GROUND_Z)
        for element in ET.fromstring(f"<root>{fragment}</root>"):
            world.append(element)
        asset = scene.find("asset")
        textures = "".join(obj.assets_mjcf(self._body(i)) for i, obj in enumerate(self.objects))
        for element in ET.fromstring(f"<root>{textures}</root>"):
            asset.append(element)

    @staticmethod
    def _body(i: int) -> str:
        return f"object{i}"

    @staticmethod
    def _park(i: int) -> tuple[float, float]:
        return 0.25 * (i % 8) - 0.5, PARK_Y + 0.3 * (i // 8)

    # ------------------------------------------------------------ sim-thread callbacks
    def _pre_step(self, sim) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for apply in pending:
            apply(sim.model, sim.data)

    def _post_step(self, sim) -> None:
        if self._snapshot_wanted.is_set():
            self._qpos = sim.data.qpos.copy()
            self._snapshot_wanted.clear()
            self._snapshot_ready.set()

    def _run_in_sim(self, apply) -> None:
        with self._lock:
            self._pending.append(apply)

    # ------------------------------------------------------------ requests (any thread)
    def snapshot_qpos(self) -> np.ndarray:
        """A consistent copy of the simulation's joint positions, taken between two steps."""
        self._snapshot_ready.clear()
        self._snapshot_wanted.set()
        if not self._snapshot_ready.wait(SNAPSHOT_TIMEOUT):
            raise TimeoutError("the simulation did not step within 2 s")
        return self._qpos

    def reset(self, placements: dict[int, tuple[float, float, float]]) -> None:
        """Put each object ``index → (x, y, yaw)`` on the table and park every other object."""
        for index in placements:
            if not 0 <= index < len(self.objects):
                raise IndexError(f"object index {index} outside 0..{len(self.objects) - 1}")
        poses = {}
        for i, obj in enumerate(self.objects):
            if i in placements:
                x, y, yaw = placements[i]
                poses[i] = (x, y, obj.rest_offset, yaw)
            else:
                px, py = self._park(i)
                poses[i] = (px, py, GROUND_Z + obj.rest_offset, 0.0)
        done = threading.Event()

        def apply(model, data):
            import mujoco

            self._heal_hand(model, data)
            for i, (px, py, pz, pyaw) in poses.items():
                joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"{self._body(i)}_joint")
                qa, va = model.jnt_qposadr[joint], model.jnt_dofadr[joint]
                data.qpos[qa : qa + 7] = [px, py, pz, math.cos(pyaw / 2), 0, 0, math.sin(pyaw / 2)]
                data.qvel[va : va + 6] = 0.0
            done.set()

        self._run_in_sim(apply)
        if not done.wait(SNAPSHOT_TIMEOUT):
            raise TimeoutError("the simulation did not apply the reset within 2 s")

    def _heal_hand(self, model, data) -> None:
        """Fingers outside their joint range (crossed, or pushed through something) are put back open, at rest: a
        reset starts every trial with a working hand, whatever the last one did to it."""
        import mujoco

        if self._fingers is None:  # the model never changes: look its finger joints up once
            self._fingers = [
                j
                for j in range(model.njnt)
                if (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or "").endswith(
                    ("finger_joint1", "finger_joint2")
                )
            ]
        fingers = self._fingers
        broken = [
            j
            for j in fingers
            if not (
                model.jnt_range[j][0] - FINGER_SLACK
                <= data.qpos[model.jnt_qposadr[j]]
                <= model.jnt_range[j][1] + FINGER_SLACK
            )
        ]
        if not broken:
            return
        width = sum(float(data.qpos[model.jnt_qposadr[j]]) for j in fingers)
        for j in fingers:
            data.qpos[model.jnt_qposadr[j]] = model.jnt_range[j][1]
            data.qvel[model.jnt_dofadr[j]] = 0.0
        self.hand_heals += 1
        log.warning("the hand's fingers were out of their range (width %.1f mm): put back open", 1000 * width)

    def geom_objects(self) -> np.ndarray:
        """Per geom of the model: the index of the cell object it belongs to, -1 for the arm, table and the rest."""
        import mujoco

        model = self.model
        owner = np.full(model.ngeom, -1, np.int16)
        for i in range(len(self.objects)):
            owner[model.geom_bodyid == mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self._body(i))] = i
        return owner

    def object_states(self, data) -> dict[str, dict]:
        """Pose [x, y, z, qw, qx, qy, qz], centre of mass, table contact and finger contacts of every object
        (``fingers``: each contact of a finger with the object, its ``part`` and world ``pos``).

        ``data`` must hold a snapshot forwarded with ``mj_forward`` (contacts computed).
        """
        import mujoco

        model = self.model
        table = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table")
        touching: set[int] = set()
        fingers: dict[int, list[dict]] = {}
        for contact in data.contact[: data.ncon]:
            for geom, other in ((contact.geom1, contact.geom2), (contact.geom2, contact.geom1)):
                if other == table:
                    touching.add(int(model.geom_bodyid[geom]))
                elif _is_finger(model, other):
                    part = (mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom) or "").split("_", 2)[-1]
                    entry = {"part": part, "pos": [float(v) for v in contact.pos]}
                    fingers.setdefault(int(model.geom_bodyid[geom]), []).append(entry)
        out = {}
        for i, obj in enumerate(self.objects):
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, self._body(i))
            qa = model.jnt_qposadr[model.body_jntadr[body]]
            out[obj.object_id] = {
                "pose": [float(v) for v in data.qpos[qa : qa + 7]],
                "com": [float(v) for v in data.xipos[body]],
                "on_table": body in touching,
                "fingers": fingers.get(body, []),
            }
        return out


def _is_finger(model, geom: int) -> bool:
    """Whether a geom belongs to one of the hand's fingers (franky-sim's FR3: bodies *left_finger, *right_finger)."""
    import mujoco

    name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, int(model.geom_bodyid[geom])) or ""
    return name.endswith("_finger")
