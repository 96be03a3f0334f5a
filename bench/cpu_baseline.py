"""The portable llama.cpp build against another build (e.g. -march=native), decode speed side by side in one run.

    python bench/cpu_baseline.py --other /tmp/venv-native/bin/python --json runs/cpu_baseline.json

scripts/build_llama_cpp builds llama.cpp for a fixed x86-64 baseline (AVX2, FMA, F16C; never AVX-512 or
AMX) so that one wheel runs on every machine. This measures what that costs here: each interpreter
(this one, and ``--other``, whose environment holds the other build) decodes the same GGUFs — the
bundled demo model and a larger random Q4_0 model — in alternating rounds, and the ratio of tokens/s
is printed per model. ``--other``'s environment needs numpy and llama-cpp-python; it imports
``appliance`` from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "pick up the mug by its handle"


def decode_rate(path: Path, tokens: int, threads: int) -> dict:
    """Prefill a short prompt, then ``tokens`` greedy steps; tokens/s of the decode and ms of the prefill."""
    from appliance.runtime.llm import LlamaSettings, TextModel, greedy

    model = TextModel(path, LlamaSettings(n_ctx=tokens + 64, n_batch=64, n_threads=threads))
    try:
        prompt = model.tokenize(PROMPT, add_bos=True, special=False)
        start = time.perf_counter()
        model.eval_tokens(prompt)
        mid = time.perf_counter()
        for _ in range(tokens):
            model.eval_tokens([greedy(model.logits())])
        end = time.perf_counter()
    finally:
        model.close()
    return {"tokens_per_s": tokens / (end - mid), "prefill_ms": 1000 * (mid - start)}


def library(python: str) -> str:
    """Where an interpreter's llama.cpp CPU backend lives, and what instructions it holds."""
    code = "import llama_cpp, pathlib; print(next(pathlib.Path(llama_cpp.__file__).parent.rglob('libggml-cpu.so*')))"
    path = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path], capture_output=True, text=True).stdout
    return f"{path} (AVX-512 instructions: {text.count('%zmm')}, AMX: {text.count('tilezero') + text.count('tdpb')})"


def measure(python: str, path: Path, tokens: int, threads: int) -> dict:
    code = f"import json, bench.cpu_baseline as b; print(json.dumps(b.decode_rate({str(path)!r}, {tokens}, {threads})))"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python bench/cpu_baseline.py --other /tmp/venv-native/bin/python",
    )
    parser.add_argument("--other", required=True, help="a Python whose environment holds the other llama.cpp build")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "rtgrasp-tiny")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0: every core")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from appliance.bundle import read_bundle
    from appliance.selfcheck import write_tiny_gguf

    builds = {"portable (this)": sys.executable, "other": args.other}
    report = {"builds": {name: library(py) for name, py in builds.items()}, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "demo bundle": args.bundle / read_bundle(args.bundle, verify=False).llm,
            "random Q4_0, width 1024, 8 layers": write_tiny_gguf(Path(tmp) / "big.gguf", width=1024, layers=8),
        }
        for label, path in models.items():
            rates = {name: [] for name in builds}
            for _ in range(args.rounds):  # alternate, so drift in the machine's load hits both alike
                for name, python in builds.items():
                    rates[name].append(measure(python, path, args.tokens, args.threads)["tokens_per_s"])
            median = {name: statistics.median(r) for name, r in rates.items()}
            report["models"][label] = {
                "size_mb": round(path.stat().st_size / 1e6, 1),
                "tokens_per_s": median,
                "rounds": rates,
                "portable_over_other": median["portable (this)"] / median["other"],
            }
    for name, lib in report["builds"].items():
        print(f"{name}: {lib}")
    for label, row in report["models"].items():
        t = row["tokens_per_s"]
        print(
            f"{label} ({row['size_mb']} MB): portable {t['portable (this)']:.1f} tok/s, other {t['other']:.1f} tok/s "
            f"-> portable/other {row['portable_over_other']:.2f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
