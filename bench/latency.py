"""Time per stage of the runtime on a bundle, and speculative vs plain greedy decoding, side by side in one run.

    python bench/latency.py --bundle models/rtgrasp-tiny --root data/synth --split iw --fold 0 --limit 50 --json runs/latency.json

For every image: preprocess, vision, prefill, decode (plain), decode
(speculative, drafts from the bundle's reasoning corpus and the conversation)
and parse, each timed; the two decodings must give the same tokens
(``identical_output``). ``speculative_speedup`` is the ratio of decode tokens/s
(speculative over plain), over all images; peak RSS is reported too.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(bundle: Path, root: Path, split: str, fold: int, limit: int | None) -> dict:
    from appliance.model import GraspModel
    from training.datasets import open_dataset
    from training.evaluate import held_out_ids

    model = GraspModel.load(bundle)
    dataset = open_dataset(root)
    ids = held_out_ids(dataset, split, fold)[:limit]
    rows, identical = [], True
    for image_id in ids:
        sample = dataset.load(image_id, with_depth=False)
        instruction = f"pick up the {sample.category}" if sample.category else "Predict a grasp pose for the object in the image."
        plain = model.session().ask(instruction, sample.image, speculative=False)
        drafted, accepted = model.drafted, model.accepted
        fast = model.session().ask(instruction, sample.image, speculative=True)
        start = time.perf_counter()
        model.format.parse(fast.text) if fast.ok else None
        parse_ms = 1000 * (time.perf_counter() - start)
        identical &= fast.tokens == plain.tokens
        t, f = plain.timings, fast.timings
        rows.append({
            "image": image_id, "tokens": len(plain.tokens), "preprocess_ms": t.preprocess_ms, "vision_ms": t.vision_ms,
            "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms, "decode_ms_speculative": f.decode_ms, "parse_ms": parse_ms,
            "drafted": model.drafted - drafted, "accepted": model.accepted - accepted, "time_to_pose_ms": t.total_ms,
            "time_to_pose_ms_speculative": f.total_ms, "same": fast.tokens == plain.tokens,
        })  # fmt: skip
    tokens = sum(r["tokens"] for r in rows)
    plain_tps = 1000 * tokens / sum(r["decode_ms"] for r in rows)
    fast_tps = 1000 * tokens / sum(r["decode_ms_speculative"] for r in rows)
    median = {k: statistics.median(r[k] for r in rows) for k in
              ("preprocess_ms", "vision_ms", "prefill_ms", "decode_ms", "decode_ms_speculative", "parse_ms",
               "time_to_pose_ms", "time_to_pose_ms_speculative")}  # fmt: skip
    return {
        "bundle": str(bundle), "quant": model.manifest.quant, "images": len(rows), "mean_tokens": tokens / len(rows),
        "median_ms": median, "decode_tokens_per_s": plain_tps, "decode_tokens_per_s_speculative": fast_tps,
        "speculative_speedup": fast_tps / plain_tps, "identical_output": identical,
        "draft_acceptance": sum(r["accepted"] for r in rows) / max(1, sum(r["drafted"] for r in rows)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": rows,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Per-stage latency of a bundle and speculative vs plain decoding, in one run.",
        epilog="example: python bench/latency.py --bundle models/rtgrasp-tiny --root data/synth --split iw --fold 0 --limit 50",
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", choices=["iw", "ow", "all"], default="iw")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    report = run(args.bundle, args.root, args.split, args.fold, args.limit)
    m = report["median_ms"]
    print(f"{report['quant']}, {report['images']} images, {report['mean_tokens']:.1f} tokens per answer")
    print("median ms: " + ", ".join(f"{k.replace('_ms', '')} {v:.1f}" for k, v in m.items()))
    print(f"decode tokens/s: plain {report['decode_tokens_per_s']:.0f}, speculative {report['decode_tokens_per_s_speculative']:.0f} "
          f"-> speedup {report['speculative_speedup']:.2f}x (draft acceptance {100 * report['draft_acceptance']:.0f} %), "
          f"identical output: {report['identical_output']}; peak RSS {report['peak_rss_mb']:.0f} MB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["identical_output"] else 1


if __name__ == "__main__":
    sys.exit(main())
