"""Grasp trials in the simulated cell: objects × poses, executed with pylibfranka.

Each trial puts the target object at a seeded pose (with ``--objects N``, beside
N - 1 others drawn from the cell, none overlapping), takes a picture from the
observation pose, asks a grasp source for an image-space pose (x, y, θ) for
"pick up the <target>", lifts it to the base frame with the depth image and
``T_base_cam``, plans a top-down grasp, executes it (pre-grasp, descend, close,
lift 15 cm) and counts a success only when the hand holds the target, it rose
with it, every finger contact on it lies on an allowed region and none on a
blade, lens or tip (``hold``), and no other object moved more than 2 cm.

    python -m appliance.sim.trials --config firmware_config/sim.yaml --source oracle --poses 5
    python -m appliance.sim.trials --config firmware_config/sim.yaml --source model --bundle models/rtgrasp-tiny
    python -m appliance.sim.trials --config firmware_config/sim.yaml --source model --bundle models/rtgrasp-tiny --objects 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from appliance.config import ConfigError, load_config
from appliance.geometry import Intrinsics, image_grasp_to_base
from appliance.grasp import GraspPose
from appliance.robot.franka import FrankaArm, FrankaConfig
from appliance.robot.plan import GraspLimits, MotionError, UnsafeTarget, Workspace, execute, plan_top_down
from appliance.runtime.proc import describe_exit, tail

from .cell import SimCellConfig, cell_objects
from .client import SimCellClient
from .hold import (
    OTHERS_MOVED_M,
    clutter_scene,
    held_by_allowed_part,
    lifted,
    others_moved,
    quat_pose,
)
from .scene import object_grasps

log = logging.getLogger(__name__)

CELL_START_TIMEOUT_S = 60.0

GraspSource = Callable[[np.ndarray, np.ndarray, dict], GraspPose | None]
"""(rgb, depth, context) → image-space pose; context has 'object', 'category', 'instruction', 'poses'."""


@dataclass(frozen=True)
class TrialResult:
    """One grasp attempt."""

    object: str
    category: str
    pose_index: int
    success: bool
    stage: str
    message: str
    seconds: float
    lift_m: float
    instruction: str = ""
    objects: int = 1
    """Objects on the table."""
    others_moved_m: float = 0.0
    lifted: tuple[str, ...] = ()
    """Every object that left the table, the target or not."""

    @property
    def wrong_object(self) -> bool:
        """Another object left the table and the target did not: the source chose the wrong one (one carried along
        with the target counts among ``others_moved_m``)."""
        return bool(self.lifted) and self.object not in self.lifted


def oracle_source(config: SimCellConfig) -> GraspSource:
    """Ground truth: the middle grasp of the object's first allowed region, at its current pose."""
    library = {o.object_id: o for o in cell_objects(config)}
    camera = config.camera

    def source(rgb, depth, context) -> GraspPose | None:
        obj = library[context["object"]]
        grasps = [g for g in object_grasps(obj, quat_pose(context["poses"][obj.object_id]), camera) if g.allowed]
        if not grasps:
            return None
        first = [g for g in grasps if g.part == grasps[0].part]
        return GraspPose.from_rectangle(first[len(first) // 2].rectangle, (camera.width, camera.height))

    return source


def model_source(bundle: Path) -> GraspSource:
    """A bundle, as the appliance runs it: the camera image and "pick up the <category>" in, its pose out."""
    from appliance.runtime.model import GraspModel

    model = GraspModel.load(bundle)

    def source(rgb, depth, context) -> GraspPose | None:
        prediction = model.predict(rgb, context.get("instruction") or f"pick up the {context['category']}")
        log.info("%s: %s", context["object"], prediction.text)
        if prediction.pose is None:
            return None
        u, v = prediction.crop.to_camera(prediction.pose.x, prediction.pose.y)  # the model's view → camera
        return GraspPose(u / rgb.shape[1], v / rgb.shape[0], prediction.pose.theta)

    return source


class TrialRunner:
    """Runs trials against a live cell (service + libfranka server) with one arm connection."""

    def __init__(
        self,
        config: SimCellConfig,
        client: SimCellClient,
        arm: FrankaArm,
        limits: GraspLimits = GraspLimits(),
        objects_per_scene: int | tuple[int, int] = 1,
    ):
        self.config, self.client, self.arm, self.limits = config, client, arm, limits
        self.library = cell_objects(config)
        low, high = objects_per_scene if isinstance(objects_per_scene, tuple) else (objects_per_scene,) * 2
        if not 1 <= low <= high <= len(self.library):
            raise ValueError(f"--objects must be 1..{len(self.library)} (the cell's objects), got {objects_per_scene}")
        self.objects_range = (low, high)
        info = client.info()
        cam = info["camera"]
        self.K = Intrinsics(cam["fx"], cam["fy"], cam["cx"], cam["cy"], cam["width"], cam["height"])
        self.T_base_cam = np.array(cam["T_base_cam"])
        self.objects = info["objects"]
        self.workspace = Workspace()

    def objects_for(self, seed) -> int:
        """Objects on the table in the trial of ``seed``: drawn from the range by the seed (so every source
        meets the same scenes)."""
        low, high = self.objects_range
        return low if low == high else random.Random(f"{seed}:objects").randint(low, high)

    def trial(self, index: int, pose_index: int, source: GraspSource, seed) -> TrialResult:
        obj = self.objects[index]
        instruction = f"pick up the {obj['category']}"
        start = time.monotonic()
        count = self.objects_for(seed)

        def result(success, stage, message="", lift=0.0, moved=0.0, risen=()):
            return TrialResult(
                obj["id"],
                obj["category"],
                pose_index,
                success,
                stage,
                message,
                time.monotonic() - start,
                lift,
                instruction,
                count,
                moved,
                tuple(risen),
            )

        try:
            self.arm.open_gripper(self.limits.open_width)
            self.arm.move_joints(self.config.observation_q)
        except MotionError as exc:
            return result(False, "observe", str(exc))
        if count == 1:
            self.client.reset(index, seed=seed)
        else:
            rng = random.Random(f"{seed}:scene")
            scene = clutter_scene(self.library, index, count, self.config.table.clutter_area, rng)
            if scene is None:
                return result(False, "scene", f"{count} objects do not fit on the table")
            self.client.reset_scene(scene)
        rgb, depth = self.client.frame()
        before = self.client.objects()
        poses = {k: v["pose"] for k, v in before.items()}
        context = {"object": obj["id"], "category": obj["category"], "instruction": instruction, "poses": poses}
        pose = source(rgb, depth, context)
        if pose is None:
            return result(False, "predict", "no grasp proposed")
        surface = image_grasp_to_base(
            pose.x * self.K.width, pose.y * self.K.height, pose.theta, depth, self.K, self.T_base_cam
        )
        if surface is None:
            return result(False, "geometry", "no valid depth at the grasp")
        try:
            plan = plan_top_down(surface, self.workspace, self.limits)
        except UnsafeTarget as exc:
            return result(False, "plan", str(exc))
        try:
            self.arm.move_joints(self.config.ready_q)
        except MotionError as exc:
            return result(False, "ready", str(exc))
        outcome = execute(self.arm, plan)
        after_all = self.client.objects()
        after = after_all[obj["id"]]
        lift = after["com"][2] - before[obj["id"]]["com"][2]
        risen = lifted(before, after_all)
        moved = others_moved(before, after_all, obj["id"])
        rose = outcome.success and obj["id"] in risen
        held, why = held_by_allowed_part(self.library[index], after["pose"], after["fingers"])
        success = rose and held and moved <= OTHERS_MOVED_M
        if outcome.message:
            message = outcome.message
        elif not rose:
            message = f"object rose {lift * 100:.1f} cm, on the table: {after['on_table']}"
        elif not held:
            message = why
        elif moved > OTHERS_MOVED_M:
            message = f"another object moved {moved * 100:.1f} cm"
        else:
            message = ""
        return result(success, outcome.stage, message, lift, moved, risen)

    def run(self, source: GraspSource, poses: int, categories: set[str] | None = None) -> list[TrialResult]:
        results = []
        for index, obj in enumerate(self.objects):
            if categories and obj["category"] not in categories:
                continue
            for k in range(poses):
                r = self.trial(index, k, source, seed=f"{self.config.seed}:trial:{obj['id']}:{k}")
                log.info(
                    "%-12s pose %d: %s (%s) %s%s",
                    r.category,
                    k,
                    "lifted" if r.success else "failed",
                    r.stage,
                    r.message,
                    f" [left the table: {', '.join(r.lifted)}]" if r.lifted and r.lifted != (r.object,) else "",
                )
                results.append(r)
        return results


def summarise(results: list[TrialResult]) -> str:
    """A success table per category, with the totals and time per trial."""
    by_category: dict[str, list[TrialResult]] = defaultdict(list)
    for r in results:
        by_category[r.category].append(r)
    lines = [f"{'category':<14}{'trials':>7}{'lifted':>8}{'rate':>8}"]
    for category, rs in by_category.items():
        ok = sum(r.success for r in rs)
        lines.append(f"{category:<14}{len(rs):>7}{ok:>8}{ok / len(rs):>8.0%}")
    ok = sum(r.success for r in results)
    mean = sum(r.seconds for r in results) / max(1, len(results))
    lines.append(f"{'all':<14}{len(results):>7}{ok:>8}{ok / max(1, len(results)):>8.0%}   {mean:.1f} s per trial")
    return "\n".join(lines)


def start_cell(config_path: Path, log_path: Path | None = None) -> subprocess.Popen:
    """Start ``python -m appliance.sim`` in its own process and wait until it says it is ready.

    Its output goes to ``log_path`` (a temporary file by default; the path is ``proc.log_path``), never
    to a pipe nobody reads once the cell runs: a full pipe would stall the cell. The cell stops by itself when this
    process ends without ``stop_cell`` (killed: no ``finally`` runs), instead of simulating on for nobody."""
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"), PYTHONUNBUFFERED="1")
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="rtgrasp-cell-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    with open(log_path, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.sim", "--config", str(config_path), "--parent", str(os.getpid())],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    proc.log_path = log_path
    deadline = time.monotonic() + CELL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if "sim cell ready" in log_path.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the sim cell did not start ({describe_exit(proc.returncode)}):\n" + tail(log_path, 20))


def stop_cell(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.sim.trials",
        description="Run grasp trials (objects × poses) in the simulated cell with pylibfranka and print the success per category.",
        epilog="example: python -m appliance.sim.trials --config firmware_config/sim.yaml --source oracle --poses 5",
    )
    parser.add_argument("--config", type=Path, required=True, help="YAML file with a 'sim' section")
    parser.add_argument(
        "--source",
        choices=["oracle", "model"],
        default="oracle",
        help="where grasps come from: the ground truth, or a bundle (--bundle) as the appliance runs it "
        "(bench/sim_table.py adds the CNN baseline, which needs torch)",
    )
    parser.add_argument(
        "--bundle", type=Path, help="with --source model: the bundle directory (e.g. models/rtgrasp-tiny)"
    )
    parser.add_argument("--poses", type=int, default=5, help="poses per object (default 5, as in the paper)")
    parser.add_argument("--categories", help="comma-separated subset of the cell's categories")
    parser.add_argument(
        "--objects",
        type=int,
        default=1,
        help="objects on the table per trial: the target and N - 1 others of the cell, none overlapping "
        "(default 1); the instruction names the target",
    )
    parser.add_argument("--json", type=Path, help="write every trial here")
    parser.add_argument("--connect", action="store_true", help="use a running cell instead of starting one")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        config = load_config(args.config, "sim", SimCellConfig)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    categories = set(args.categories.split(",")) if args.categories else None
    if not 1 <= args.objects <= len(config.categories):
        parser.error(f"--objects must be 1..{len(config.categories)} (the cell's objects)")
    if args.source == "model":
        if args.bundle is None:
            parser.error("--source model needs --bundle DIR")
        try:
            source = model_source(args.bundle)
        except (OSError, ValueError, RuntimeError) as exc:  # a missing or corrupt bundle
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        source = oracle_source(config)
    cell = None if args.connect else start_cell(args.config)
    try:
        with SimCellClient(config.service) as client, FrankaArm(FrankaConfig(host=config.robot_host)) as arm:
            runner = TrialRunner(config, client, arm, objects_per_scene=args.objects)
            results = runner.run(source, args.poses, categories)
    finally:
        if cell is not None:
            stop_cell(cell)
    print(summarise(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
