"""The GPU paths, checked on any CUDA machine: a bf16 LoRA step, onnxruntime's CUDA provider on the vision tower,
llama.cpp's CUDA build decoding the Q4 bundle — each timed, with its parity where it has one.

    python bench/gpu_check.py --work runs/gpu --json runs/gpu/gpu_check.json
    python bench/gpu_check.py --model runs/l7b --work runs/gpu            # an existing checkpoint

Without ``--model`` it builds llava-1.5-7b's shapes (``training.model --preset llava-1.5-7b``), with as many
decoder layers as the GPU's memory allows for a LoRA step (all 32 on a 40 GB card). A check whose software is
missing (onnxruntime-gpu, a CUDA build of llama-cpp-python) is reported as missing with the install command,
and the others still run. ``--device cpu`` runs the same script on the CPU (to check the script itself).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

GB_PER_DECODER_LAYER = 0.55
"""GPU memory of one llava-1.5-7b decoder layer in a bf16 LoRA step (weights, LoRA state, recomputed activations)."""
GB_BASE = 6.0
"""The rest of that step: vision tower, embeddings, output matrix, logits, CUDA context."""
INSTALL = {
    "onnxruntime": "pip install onnxruntime-gpu (its CUDA provider; the CPU wheel has none)",
    "llama": "REBUILD=1 LLAMA_CMAKE_ARGS='-DGGML_CUDA=on' scripts/build_llama_cpp",
}


def environment(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "device": device}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1e9, 1), cuda=torch.version.cuda)
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime"] = None
    try:
        import llama_cpp

        info["llama_cpp"] = llama_cpp.__version__
        info["llama_gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    except ImportError:
        info["llama_cpp"] = None
    return info


def layers_that_fit(memory_gb: float, total: int = 32) -> int:
    return max(1, min(total, int((memory_gb - GB_BASE) / GB_PER_DECODER_LAYER)))


def build(work: Path, layers: int) -> Path:
    out = work / f"l7b-{layers}"
    if not (out / "config.json").is_file():
        cmd = [sys.executable, "-m", "training.model", "--preset", "llava-1.5-7b", "--layers", str(layers)]
        subprocess.run([*cmd, "--out", str(out)], check=True, cwd=ROOT)
    return out


def lora_step(model: Path, work: Path, device: str, steps: int = 3, data: Path | None = None) -> dict:
    """A few LoRA steps (r64 α32, bf16, gradient checkpointing) on one image; the step time after the first.
    ``data``: a build_dataset folder at the model's input size (default: made here, which needs MuJoCo)."""
    import torch
    from scale import training_data

    from training.train import TrainConfig, train

    if data is None:
        try:
            import mujoco  # noqa: F401  (training_data renders its images)
        except ImportError:
            raise ImportError(
                "no MuJoCo here to render training images: make them where it is "
                "(bench/scale.py's training_data) and pass --data DIR"
            ) from None
        data = training_data(model, work)
    out = work / "lora"
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.monotonic()
    train(
        TrainConfig(str(model), str(data), str(out), "lora", steps, 1, 1, save_every=steps, warmup=1,
                    dtype="bfloat16", gradient_checkpointing=True),
        progress=False,
    )  # fmt: skip
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    seconds = [float(r[3]) for r in rows]
    per_step = [b - a for a, b in zip(seconds, seconds[1:])] or seconds
    result = {
        "steps": steps,
        "wall_s": round(time.monotonic() - start, 1),
        "step_s": round(statistics.median(per_step), 3),
        "loss": [float(r[1]) for r in rows],
        "finite": all(np.isfinite(float(r[1])) for r in rows),
    }
    if device == "cuda":
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return result


def vision_check(model: Path, work: Path, device: str) -> dict:
    """The vision tower + projector as ONNX (fp32 and fp16) on onnxruntime's CUDA provider: parity and time."""
    import onnxruntime as ort

    from export.vision import INPUT, OUTPUT, export_onnx, relative_error, torch_embeddings
    from training.model import load_llava

    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"missing": INSTALL["onnxruntime"]}
    llava, _ = load_llava(model)
    size = llava.config.vision_config.image_size
    pixels = np.random.default_rng(0).normal(size=(2, 3, size, size)).astype(np.float32)
    want = torch_embeddings(llava, pixels)
    result = {}
    for precision in ("fp32", "fp16"):
        path = export_onnx(llava, work / f"vision-{precision}.onnx", precision)
        session = ort.InferenceSession(str(path), providers=[provider])
        used = session.get_providers()[0]
        got = session.run([OUTPUT], {INPUT: pixels})[0]
        times = []
        for _ in range(10):
            start = time.perf_counter()
            session.run([OUTPUT], {INPUT: pixels[:1]})
            times.append(1000 * (time.perf_counter() - start))
        result[precision] = {"provider": used, "parity": relative_error(got, want), "ms": round(min(times), 2)}
    return result


def llama_check(model: Path, work: Path, device: str) -> dict:
    """The Q4 bundle with every layer offloaded: vision, prefill and 64 decoded tokens, timed."""
    import llama_cpp
    from scale import DECODE_TOKENS, prefill

    from appliance.runtime.llm import LlamaSettings, greedy
    from appliance.runtime.model import GraspModel
    from export.quantize import build_bundle
    from training.view import ModelView

    if device == "cuda" and not llama_cpp.llama_supports_gpu_offload():
        return {"missing": INSTALL["llama"]}
    config = json.loads((model / "config.json").read_text())
    if not (model / "view.json").is_file():  # a base checkpoint: the answer contract of a tuned one
        ModelView(size=config["vision_config"]["image_size"]).save(model / "view.json")
    bundle = work / "bundle-q4"
    if not (bundle / "manifest.yaml").is_file():
        build_bundle(model, bundle, bits=4, force=True, progress=False)
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider") if device == "cuda" else ("CPUExecutionProvider",)
    grasp = GraspModel.load(
        bundle, providers, LlamaSettings(n_ctx=1024, n_batch=256, n_gpu_layers=99 if device == "cuda" else 0)
    )
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    prefill(grasp, "pick up the mug", image)  # warm-up: kernels, allocations
    timed = prefill(grasp, "pick up the mug", image)
    token = greedy(grasp.llm.logits())
    start = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        grasp.llm.eval_tokens([token])
        token = greedy(grasp.llm.logits())
    decode_s = time.perf_counter() - start
    grasp.llm.close()
    return {
        "vision_ms": round(timed["vision_ms"], 1),
        "prefill_ms": round(timed["prefill_ms"], 1),
        "prefill_positions": timed["prefill_positions"],
        "decode_tokens_per_s": round(DECODE_TOKENS / decode_s, 1),
        "time_to_pose_52_tokens_ms": round(
            timed["vision_ms"] + timed["prefill_ms"] + 1000 * decode_s * 52 / DECODE_TOKENS, 1
        ),
    }


def table(report: dict) -> str:
    env = report["environment"]
    lines = [f"{env.get('gpu', env['device'])}, torch {env['torch']}, onnxruntime {env.get('onnxruntime')}, "
             f"llama-cpp-python {env.get('llama_cpp')} (GPU offload: {env.get('llama_gpu_offload')})", "",
             "| check | result |", "|---|---|"]  # fmt: skip
    for name, value in report["checks"].items():
        lines.append(f"| {name} | {json.dumps(value)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check the GPU paths on a CUDA machine: bf16 LoRA step, onnxruntime CUDA vision tower, "
        "llama.cpp CUDA decode of the Q4 bundle; each timed.",
        epilog="example: python bench/gpu_check.py --work runs/gpu --json runs/gpu/gpu_check.json",
    )
    parser.add_argument("--model", type=Path, help="a LLaVA checkpoint (default: llava-1.5-7b shapes, built here)")
    parser.add_argument("--layers", type=int, help="decoder layers of the built model (default: what fits)")
    parser.add_argument("--work", type=Path, default=Path("runs/gpu"))
    parser.add_argument(
        "--data",
        type=Path,
        help="lora: a build_dataset folder at the model's size (default: rendered here, needs MuJoCo)",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: check the script itself")
    parser.add_argument("--skip", action="append", default=[], choices=("lora", "vision", "llama"))
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA device (torch.cuda.is_available() is false); --device cpu checks the script",
            file=sys.stderr,
        )
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    env = environment(args.device)
    model = args.model
    if model is None:
        layers = args.layers or (layers_that_fit(env["gpu_memory_gb"]) if args.device == "cuda" else 1)
        model = build(args.work, layers)
    checks = {}
    lora = lambda model, work, device: lora_step(model, work, device, data=args.data)  # noqa: E731
    for name, check in (("lora", lora), ("vision", vision_check), ("llama", llama_check)):
        if name in args.skip:
            continue
        start = time.monotonic()
        try:
            checks[name] = check(model, args.work, args.device)
        except ImportError as exc:
            checks[name] = {"missing": str(exc)}
        except Exception as exc:  # one failing check must not hide the others' figures
            checks[name] = {"error": f"{type(exc).__name__}: {exc}"}
        checks[name]["check_s"] = round(time.monotonic() - start, 1)
        print(f"{name}: {json.dumps(checks[name])}", flush=True)
    report = {"environment": env, "model": str(model), "checks": checks}
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if not any("error" in c for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
