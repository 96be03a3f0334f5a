"""Torch vs the bundle at F16, Q8 and Q4, side by side in one run: accuracy, ms per image, file sizes.

    python bench/quantization.py --model runs/tp/merged --root runs/tp/data --split iw --fold 0 --json runs/quant.json

Every bundle is built from the same merged checkpoint with ``export.quantize``
and scored with ``training.evaluate`` on the same images, through the
appliance's runtime (grammar-constrained greedy decoding), next to the torch
checkpoint (plain greedy). Ratios are against the torch row and the F16 file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.datasets import open_dataset  # noqa: E402
from training.evaluate import bundle_answerer, bundle_view, evaluate, held_out_ids, torch_answerer  # noqa: E402


def rss_mb() -> float:
    """This process's resident memory now (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median(values) -> float:
    import statistics

    return statistics.median(values)


def bundle_size(directory: Path) -> dict:
    return {p.name: p.stat().st_size for p in directory.iterdir() if p.is_file()}


def run(
    model_dir: Path, root: Path, split: str, fold: int, limit: int | None, bits: list[int], work: Path
) -> list[dict]:
    from appliance.runtime.model import GraspModel
    from export.quantize import build_bundle
    from training.model import load_llava
    from training.view import ModelView

    dataset = open_dataset(root)
    ids = held_out_ids(dataset, split, fold)[:limit]
    model, processor = load_llava(model_dir)
    view = ModelView.load(model_dir)
    rows = []
    # one request at a time, as each bundle answers: the speed column compares like with like
    result = evaluate(
        torch_answerer(model, processor, view), view, dataset, ids, progress=sys.stderr.isatty(), batch=False
    )
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    tokens = sum(r["tokens"] for r in result.rows)
    rows.append(
        {
            "model": "torch fp32",
            **result.summary(),
            "llm_bytes": weights,
            "vision_bytes": 0,
            "tokens_per_s": tokens / result.seconds,
            "rss_mb": rss_mb(),
        }
    )
    del model
    for b in bits:
        out = work / f"bundle-{b}"
        manifest = build_bundle(model_dir, out, bits=b, force=True, progress=False)
        grasp_model = GraspModel.load(out)
        result = evaluate(
            bundle_answerer(grasp_model), bundle_view(manifest), dataset, ids, progress=sys.stderr.isatty()
        )
        timings = [r["timings"] for r in result.rows]
        sizes = bundle_size(out)
        rows.append(
            {
                "model": manifest.quant,
                **result.summary(),
                "llm_bytes": sizes[manifest.llm],
                "vision_bytes": sizes[manifest.vision],
                **{
                    f"median_{k}": median(t[k] for t in timings)
                    for k in ("preprocess_ms", "vision_ms", "prefill_ms", "decode_ms", "total_ms")
                },
                "tokens_per_s": 1000 * sum(t["decode_tokens"] for t in timings) / sum(t["total_ms"] for t in timings),
                "decode_tokens_per_s": 1000
                * sum(t["decode_tokens"] for t in timings)
                / sum(t["decode_ms"] for t in timings),
                "rss_mb": rss_mb(),
            }
        )
        grasp_model.llm.close()
    return rows


def table(rows: list[dict]) -> str:
    torch_ms = rows[0]["ms_per_image"]
    f16 = next((r["llm_bytes"] for r in rows if r["model"] == "F16"), None)
    lines = [
        "| model | accuracy | parse failures | ms / image | speed vs torch | LLM file | vs F16 | tok/s (answer) | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_f16 = f"{r['llm_bytes'] / f16:.2f}" if f16 else "-"
        lines.append(
            f"| {r['model']} | {100 * r['accuracy']:.1f} % | {100 * r['parse_failure_rate']:.1f} % | {r['ms_per_image']:.0f} | "
            f"{torch_ms / r['ms_per_image']:.2f}× | {r['llm_bytes'] / 1e6:.2f} MB | {vs_f16} | {r['tokens_per_s']:.0f} | {r['rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Torch vs the bundle at F16 / Q8 / Q4 on the same images, in one run.",
        epilog="example: python bench/quantization.py --model runs/tp/merged --root runs/tp/data --split iw --fold 0",
    )
    parser.add_argument("--model", type=Path, required=True, help="merged checkpoint with view.json")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--split", choices=["iw", "ow", "cw", "all"], default="iw")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--work", type=Path, help="where to keep the bundles (default: a temporary directory)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.model, args.root, args.split, args.fold, args.limit, args.bits, args.work or Path(tmp))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
