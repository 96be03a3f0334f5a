"""Table II of the paper in simulation: grasp success over objects × poses, per grasp source, in one run.

    python bench/sim_table.py --config firmware_config/sim.yaml --bundle models/rtgrasp-tiny \\
        --heads runs/demo-model/vision/checkpoint-001500 --poses 5 --out bench/results/table2
    python bench/sim_table.py --config firmware_config/sim.yaml --seed 5301 --objects 3-4 --poses 3 \\
        --bundle models/rtgrasp-tiny --bundle runs/my-bundle --heads runs/n-vision/checkpoint-004000 --out runs/t2

One sim cell, one arm connection; every source meets the same objects at the same seeded poses
(the trials of ``appliance.sim.trials``: observe, predict, lift to the base frame with the depth image,
plan, execute with pylibfranka, count a lift). Sources: the ground truth (``oracle``), each ``--bundle`` as the
appliance runs it (``model``, or ``model:<folder>`` when there are several) and, with ``--heads``, the vision
stage's grasp heads (the GR-ConvNet-style CNN baseline trained on the same data, blind to the instruction).
With ``--objects``, the table's last rows count the trials in which another object left the table: the
source chose the wrong one. ``--seed`` draws other object instances and poses than the cell's YAML (a fresh
test). Writes ``table2.md`` and ``table2.json`` (every trial) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def heads_source(checkpoint: Path, crop: int = 320, size: int = 224):
    """The vision stage's grasp heads (the GR-ConvNet-style CNN baseline), on the workspace crop the
    stage trained on. Needs the train extra (torch)."""
    from types import SimpleNamespace

    from appliance.grasp import GraspPose
    from appliance.runtime.preprocess import workspace_view
    from training.model import load_llava
    from training.stages import heads_predictor

    model, processor = load_llava(checkpoint)
    predict = heads_predictor(checkpoint, model, processor)
    spec = SimpleNamespace(crop=crop, size=size)  # what workspace_view reads of an ImageSpec

    def source(rgb, depth, context):
        view, box = workspace_view(rgb, spec)
        pose = predict(view)
        u, v = box.to_camera(pose.x, pose.y)
        return GraspPose(u / rgb.shape[1], v / rgb.shape[0], pose.theta)

    return source


def table(results: dict[str, list], categories: list[str]) -> str:
    """Rows: categories; columns: sources (lifted / trials); then the totals and, in clutter, the trials in
    which another object than the one named left the table."""
    sources = list(results)
    lines = ["| object | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
    for category in categories:
        cells = []
        for source in sources:
            rs = [r for r in results[source] if r.category == category]
            cells.append(f"{sum(r.success for r in rs)}/{len(rs)}")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    totals = [
        f"**{100 * sum(r.success for r in rs) / max(1, len(rs)):.1f} %** ({sum(r.success for r in rs)}/{len(rs)})"
        for rs in results.values()
    ]
    lines.append("| all | " + " | ".join(totals) + " |")
    if any(r.objects > 1 for rs in results.values() for r in rs):
        wrong = [f"{sum(r.wrong_object for r in rs)}/{len(rs)}" for rs in results.values()]
        lines.append("| another object lifted | " + " | ".join(wrong) + " |")
    return "\n".join(lines) + "\n"


def busy_warning(load: float, cores: int) -> str | None:
    """A warning when the machine is already busy: the cell simulates in real time beside the sources, and the
    trials' time and timing depend on the CPU it gets."""
    if load <= max(0.5, cores - 1):
        return None
    return (
        f"warning: the load average is {load:.1f} on {cores} cores before the cell starts; the cell simulates in "
        "real time: run Table II on an otherwise idle machine"
    )


def bundle_names(bundles: list[Path]) -> list[str]:
    """Source names of the bundles: ``model`` for one, ``model:<folder>`` for several (made unique)."""
    if len(bundles) == 1:
        return ["model"]
    names = []
    for bundle in bundles:
        name = f"model:{bundle.resolve().name}"
        names.append(name if name not in names else f"{name}#{len(names)}")
    return names


def with_seed(config: Path, seed: int, out: Path) -> Path:
    """A copy of the cell's YAML under ``out`` with its ``sim.seed`` replaced (the cell reads it from its file)."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("sim") or {}, dict):
        raise ValueError(f"{config}: expected a mapping with a 'sim' section")
    data["sim"] = {**(data.get("sim") or {}), "seed": seed}
    path = out / f"sim-seed{seed}.yaml"
    if path.resolve() == config.resolve():
        raise ValueError(f"--seed would overwrite {config}: give another --out")
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def failure_stages(results: dict[str, list]) -> dict[str, dict[str, int]]:
    """Per source, how many trials failed at each stage (predict, plan, close, lift, ...)."""
    out: dict[str, dict[str, int]] = {}
    for source, rs in results.items():
        counts: dict[str, int] = defaultdict(int)
        for r in rs:
            if not r.success:
                counts[r.stage] += 1
        out[source] = dict(counts)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/sim_table.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="the sim cell's YAML (its 'sim' section)")
    parser.add_argument(
        "--bundle",
        type=Path,
        action="append",
        default=[],
        help="a model bundle to try (source 'model'); repeat it to compare bundles on the same trials",
    )
    parser.add_argument("--heads", type=Path, help="a vision-stage checkpoint (source 'heads', the CNN baseline)")
    parser.add_argument("--crop", type=int, default=320, help="the workspace crop the heads trained on")
    parser.add_argument("--poses", type=int, default=5, help="poses per object (the paper: 5)")
    parser.add_argument("--categories", help="comma-separated subset of the cell's categories")
    parser.add_argument(
        "--objects",
        default="1",
        help="objects on the table per trial, N or LO-HI (drawn per trial from its seed, the same for every "
        "source): the target and others of the cell, none overlapping (default 1)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="the cell's seed (object instances, colours, poses, scenes) instead of the YAML's: a fresh test",
    )
    parser.add_argument("--no-oracle", action="store_true", help="leave out the ground-truth row")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-v", "--verbose", action="store_true", help="a line per trial as it ends")
    args = parser.parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")

    from appliance.config import ConfigError, load_config
    from appliance.robot.franka import FrankaArm, FrankaConfig
    from appliance.sim.cell import SimCellConfig
    from appliance.sim.client import SimCellClient
    from appliance.sim.trials import TrialRunner, model_source, oracle_source, start_cell, stop_cell

    if args.seed is not None:
        if not args.config.is_file():
            parser.error(f"--config: no such file: {args.config}")
        args.out.mkdir(parents=True, exist_ok=True)
        try:
            args.config = with_seed(args.config, args.seed, args.out)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        config = load_config(args.config, "sim", SimCellConfig)
    except ConfigError as exc:
        parser.error(str(exc))
    sources = {} if args.no_oracle else {"oracle": oracle_source(config)}
    try:
        for name, bundle in zip(bundle_names(args.bundle), args.bundle):
            sources[name] = model_source(bundle)
        if args.heads:
            sources["heads"] = heads_source(args.heads, args.crop)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sources:
        parser.error("nothing to try: give --bundle and/or --heads, or keep the oracle")
    categories = args.categories.split(",") if args.categories else list(config.categories)
    try:
        low, _, high = args.objects.partition("-")
        objects = (int(low), int(high or low))
    except ValueError:
        parser.error(f"--objects: expected N or LO-HI, got {args.objects!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    warning = busy_warning(os.getloadavg()[0], cores)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    results: dict[str, list] = {}
    start = time.monotonic()
    cell = start_cell(args.config)
    try:
        with (
            SimCellClient(config.service, timeout_s=10) as client,
            FrankaArm(FrankaConfig(host=config.robot_host)) as arm,
        ):
            try:
                runner = TrialRunner(config, client, arm, objects_per_scene=objects)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for name, source in sources.items():
                results[name] = runner.run(source, args.poses, set(categories))
                ok = sum(r.success for r in results[name])
                print(f"{name}: {ok}/{len(results[name])} lifted ({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        stop_cell(cell)
    markdown = table(results, categories)
    scenes = "one object" if objects == (1, 1) else f"{args.objects} objects on the table"
    rule = "the named object lifted, held by an allowed part, the others in place"
    note = (
        f"{len(categories)} objects × {args.poses} poses per source ({scenes}; success: {rule}), "
        f"the same seeded poses for every source (cell seed {config.seed}); "
        f"sources: {', '.join(sources)}"
        + "".join(f"; {name} `{bundle}`" for name, bundle in zip(bundle_names(args.bundle), args.bundle))
        + (f"; heads `{args.heads}`" if args.heads else "")
        + f". Failures by stage: {json.dumps(failure_stages(results))}."
        + f" Load average at the end (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {cores} cores."
    )
    (args.out / "table2.md").write_text("# Table II in simulation\n\n" + markdown + "\n" + note + "\n")
    (args.out / "table2.json").write_text(
        json.dumps({name: [asdict(r) for r in rs] for name, rs in results.items()}, indent=1) + "\n"
    )
    print("\n" + markdown + "\n" + note)
    print(f"written: {args.out / 'table2.md'}, {args.out / 'table2.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
