"""Time per stage of the runtime on a bundle, and speculative vs plain greedy decoding, side by side in one run.

    python bench/latency.py --bundle models/rtgrasp-tiny --root data/synth --split iw --fold 0 --limit 50 --json runs/latency.json
    python bench/latency.py --model runs/tp/merged --root runs/tp/data --limit 50 --json runs/latency.json

For every image: preprocess, vision, prefill, decode (plain), decode
(speculative, drafts from the bundle's reasoning corpus and the conversation),
parse and geometry (grasp centre → base frame from the depth image), each
timed; the two decodings must give the same tokens (``identical_output``).
``speculative_speedup`` is the ratio of decode tokens/s (speculative over
plain), over all images; peak RSS is reported too.

With ``--model`` (a merged checkpoint) the run first puts torch (HF
``generate``) and the runtime at F16, Q8 and Q4 side by side on the same
images — accuracy, ms per image, speed ratio to torch, tokens/s, resident
memory (``bench/quantization.py`` does that part) — and then times the stages
of the Q4 bundle (or ``--bundle``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/quantization.py


# A nominal camera for timing the geometry stage on dataset depth images: 0.7 m above the table, looking down.
T_BASE_CAM = [[1, 0, 0, 0.5], [0, -1, 0, 0], [0, 0, -1, 0.7], [0, 0, 0, 1]]


def time_geometry(prediction, depth) -> float:
    """Milliseconds to turn a prediction's grasp centre into a base-frame grasp using the depth image."""
    import numpy as np

    from appliance.geometry import Intrinsics, image_grasp_to_base

    h, w = depth.shape
    K = Intrinsics.from_fovy(45.0, w, h)
    start = time.perf_counter()
    u, v = prediction.crop.to_camera(prediction.pose.x, prediction.pose.y)
    image_grasp_to_base(u, v, prediction.pose.theta, depth, K, np.array(T_BASE_CAM, dtype=float), 5)
    return 1000 * (time.perf_counter() - start)


def run(bundle: Path, root: Path, split: str, fold: int, limit: int | None) -> dict:
    from appliance.runtime.model import GraspModel
    from training.datasets import open_dataset
    from training.evaluate import held_out_ids

    model = GraspModel.load(bundle)
    auto = GraspModel.load(bundle, speculative="auto")  # the appliance's default: drafts only where it measured a gain
    dataset = open_dataset(root)
    ids = held_out_ids(dataset, split, fold)[:limit]
    rows, identical = [], True
    for image_id in ids:
        sample = dataset.load(image_id, with_depth=True)
        instruction = (
            f"pick up the {sample.category}" if sample.category else "Predict a grasp pose for the object in the image."
        )
        plain = model.session().ask(instruction, sample.image, speculative=False)
        drafted, accepted = model.drafted, model.accepted
        fast = model.session().ask(instruction, sample.image, speculative=True)
        default = auto.session().ask(instruction, sample.image)  # the policy decides
        start = time.perf_counter()
        model.format.parse(fast.text) if fast.ok else None
        parse_ms = 1000 * (time.perf_counter() - start)
        geometry_ms = time_geometry(fast, sample.depth) if fast.ok and sample.depth is not None else float("nan")
        identical &= fast.tokens == plain.tokens == default.tokens
        t, f = plain.timings, fast.timings
        rows.append(
            {
                "image": image_id,
                "tokens": len(plain.tokens),
                "preprocess_ms": t.preprocess_ms,
                "vision_ms": t.vision_ms,
                "prefill_ms": t.prefill_ms,
                "decode_ms": t.decode_ms,
                "decode_ms_speculative": f.decode_ms,
                "decode_ms_auto": default.timings.decode_ms,
                "parse_ms": parse_ms,
                "geometry_ms": geometry_ms,
                "drafted": model.drafted - drafted,
                "accepted": model.accepted - accepted,
                "time_to_pose_ms": t.total_ms,
                "time_to_pose_ms_speculative": f.total_ms,
                "same": fast.tokens == plain.tokens == default.tokens,
            }
        )
    tokens = sum(r["tokens"] for r in rows)
    plain_tps = 1000 * tokens / sum(r["decode_ms"] for r in rows)
    fast_tps = 1000 * tokens / sum(r["decode_ms_speculative"] for r in rows)
    auto_tps = 1000 * tokens / sum(r["decode_ms_auto"] for r in rows)
    median = {
        k: statistics.median(r[k] for r in rows)
        for k in (
            "preprocess_ms",
            "vision_ms",
            "prefill_ms",
            "decode_ms",
            "decode_ms_speculative",
            "decode_ms_auto",
            "parse_ms",
            "geometry_ms",
            "time_to_pose_ms",
            "time_to_pose_ms_speculative",
        )
    }
    return {
        "bundle": str(bundle),
        "quant": model.manifest.quant,
        "images": len(rows),
        "mean_tokens": tokens / len(rows),
        "median_ms": median,
        "decode_tokens_per_s": plain_tps,
        "decode_tokens_per_s_speculative": fast_tps,
        "speculative_speedup": fast_tps / plain_tps,
        "decode_tokens_per_s_auto": auto_tps,
        "auto_speedup": auto_tps / plain_tps,
        "auto_plan": {
            "draft_length": auto.plan.k,
            "expected_gain": auto.plan.gain,
            **(auto.verify_cost.as_dict() if auto.verify_cost else {}),
        },
        "identical_output": identical,
        "draft_acceptance": sum(r["accepted"] for r in rows) / max(1, sum(r["drafted"] for r in rows)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }


def process_boundary(bundle: Path, root: Path, split: str, fold: int, limit: int | None) -> dict:
    """Time one predict turn in this process and through the model process (appliance.runtime.worker), alternately.

    The daemon runs the model in a child so that a native crash is one failed request; the cost is the
    pickled camera image going in and the prediction (with its 224 px view) coming back."""
    from appliance.runtime.model import GraspModel
    from appliance.runtime.worker import ModelWorker
    from training.datasets import open_dataset
    from training.evaluate import held_out_ids

    local, worker = GraspModel.load(bundle), ModelWorker(bundle).start()
    dataset = open_dataset(root)
    rows = []
    try:
        for i, image_id in enumerate(held_out_ids(dataset, split, fold)[:limit]):
            sample = dataset.load(image_id)
            instruction = (
                f"pick up the {sample.category}"
                if sample.category
                else "Predict a grasp pose for the object in the image."
            )
            row = {}
            for where in (
                ("in_process", "worker") if i % 2 == 0 else ("worker", "in_process")
            ):  # alternate who goes first
                start = time.perf_counter()
                row[where] = (local if where == "in_process" else worker).session().ask(instruction, sample.image)
                row[f"{where}_ms"] = 1000 * (time.perf_counter() - start)
            rows.append({**row, "same": row["in_process"].tokens == row["worker"].tokens})
    finally:
        worker.close()
        local.llm.close()
    inside, outside = (statistics.median(r[k] for r in rows) for k in ("in_process_ms", "worker_ms"))
    return {
        "images": len(rows),
        "median_in_process_ms": inside,
        "median_worker_ms": outside,
        "overhead_ms": outside - inside,
        "ratio": outside / inside,
        "identical_output": all(r["same"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-stage latency of a bundle and speculative vs plain decoding, in one run; with --model, "
        "torch vs the runtime at F16 / Q8 / Q4 first.",
        epilog="example: python bench/latency.py --model runs/tp/merged --root runs/tp/data --split iw --fold 0 --limit 50",
    )
    parser.add_argument(
        "--bundle", type=Path, help="the bundle to time stage by stage (default with --model: its Q4 bundle)"
    )
    parser.add_argument(
        "--model", type=Path, help="merged checkpoint: compare torch generate with the runtime at --bits"
    )
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", choices=["iw", "ow", "cw", "all"], default="iw")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--worker", action="store_true", help="also time a predict turn in this process vs in the model process"
    )
    args = parser.parse_args(argv)
    if args.bundle is None and args.model is None:
        parser.error("give --bundle, --model, or both")
    for path in (args.bundle, args.model, args.root):
        if path is not None and not path.is_dir():
            parser.error(f"{path} is not a directory")
    with tempfile.TemporaryDirectory() as work:
        engines = None
        if args.model is not None:
            import quantization

            engines = quantization.run(args.model, args.root, args.split, args.fold, args.limit, args.bits, Path(work))
            print(quantization.table(engines))
        bundle = args.bundle or Path(work) / f"bundle-{min(args.bits)}"
        report = run(bundle, args.root, args.split, args.fold, args.limit)
        if args.worker:
            report["process_boundary"] = process_boundary(bundle, args.root, args.split, args.fold, args.limit)
    if engines is not None:
        report["engines"] = engines
        report["bundle"] = str(args.bundle) if args.bundle else f"{args.model} at {min(args.bits)} bits"
    m = report["median_ms"]
    print(f"{report['quant']}, {report['images']} images, {report['mean_tokens']:.1f} tokens per answer")
    print("median ms: " + ", ".join(f"{k.replace('_ms', '')} {v:.2f}" for k, v in m.items()))
    print(
        f"decode tokens/s: plain {report['decode_tokens_per_s']:.0f}, speculative {report['decode_tokens_per_s_speculative']:.0f} "
        f"-> speedup {report['speculative_speedup']:.2f}x (draft acceptance {100 * report['draft_acceptance']:.0f} %), "
        f"identical output: {report['identical_output']}; peak RSS {report['peak_rss_mb']:.0f} MB"
    )
    plan = report["auto_plan"]
    print(
        f"default (speculative: auto): {report['decode_tokens_per_s_auto']:.0f} tokens/s ({report['auto_speedup']:.2f}x plain); "
        f"measured t(k)/t(1) {', '.join(f'{k}: {v:.2f}' for k, v in plan.get('ratio', {}).items())} -> "
        f"draft length {plan['draft_length']} (expected {plan['expected_gain']:.2f}x)"
    )
    if args.worker:
        b = report["process_boundary"]
        print(
            f"model process: median {b['median_worker_ms']:.1f} ms per predict vs {b['median_in_process_ms']:.1f} ms in process "
            f"({b['overhead_ms']:+.1f} ms, x{b['ratio']:.3f}), identical output: {b['identical_output']}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["identical_output"] and report.get("process_boundary", {}).get("identical_output", True) else 1


if __name__ == "__main__":
    sys.exit(main())
