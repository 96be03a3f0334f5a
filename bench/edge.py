"""How fast a 7B model would decode on a Jetson, from what our runtime achieves here.

    python bench/edge.py --tokenizer runs/tp/merged --tokens 51.5 --json runs/edge.json

Decoding one token reads every weight once, so on a memory-bound machine
tokens/s ≤ bandwidth / bytes of weights. This bench measures both sides of
that on the machine it runs on:

1. the memory bandwidth this process can reach (a float32 matrix-vector
   product over a 1 GiB matrix, the access pattern of decoding, BLAS threads);
2. a randomly initialised ~1B-parameter llama (TinyLlama's shape, our
   tokenizer) written with ``export.gguf.write_llama``, quantized to Q4_K_M by
   llama.cpp, and decoded token by token through ``appliance.runtime.llm.TextModel``
   — large enough to be bandwidth-bound, which the tiny model is not.

Achieved bytes/s over measured bandwidth is the runtime's efficiency; applied
to the Jetsons' bandwidth and a 7B Q4_K_M model's weight bytes it gives the
expected decode rate and the decode time of an RT answer of ``--tokens``
tokens. docs/edge.md explains the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Peak memory bandwidth (NVIDIA's data sheets) and the weight bytes of LLaVA-1.5-7B's language model at Q4_K_M.
JETSONS = {"Jetson AGX Orin 64GB": 204.8e9, "Jetson Orin NX 16GB": 102.4e9, "Jetson Orin Nano 8GB": 68e9}
LLAMA_7B_Q4_K_M_BYTES = 4.08e9
"""llava-v1.5-7b language model at Q4_K_M: 6.74 B parameters at ~4.85 bits (llama.cpp's reported file size)."""
ONE_B = {"hidden": 2048, "layers": 22, "intermediate": 5632, "heads": 32, "kv_heads": 4}
"""TinyLlama-1.1B's shape (grouped-query attention, 4 KV heads)."""


def measure_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of a float32 matrix-vector product over a ``gib`` GiB matrix (best of ``repeats``)."""
    n = int((gib * 2**30 / 4) ** 0.5)
    matrix = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    vector = np.ones(n, dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matrix @ vector
        best = min(best, time.perf_counter() - start)
    return matrix.nbytes / best


def random_llama(out: Path, tokenizer_dir: Path, shape: dict, seed: int = 0) -> Path:
    """An F16 GGUF of a random llama with ``shape`` and the tokenizer of ``tokenizer_dir`` (a checkpoint)."""
    from export.gguf import TextConfig, read_vocab, write_llama

    config_json = json.loads((tokenizer_dir / "config.json").read_text())
    vocab_size = (config_json.get("text_config") or config_json).get("vocab_size")
    h, layers, ff = shape["hidden"], shape["layers"], shape["intermediate"]
    head_dim = h // shape["heads"]
    config = TextConfig(
        hidden=h,
        layers=layers,
        intermediate=ff,
        heads=shape["heads"],
        kv_heads=shape["kv_heads"],
        head_dim=head_dim,
        rms_eps=1e-5,
        rope_theta=10000.0,
        context=2048,
        vocab=vocab_size,
        tied=False,
    )
    vocab = read_vocab(tokenizer_dir, vocab_size)
    rng = np.random.default_rng(seed)
    kv = shape["kv_heads"] * head_dim

    def weights(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def tensors():
        yield "token_embd.weight", weights(vocab_size, h)
        yield "output_norm.weight", np.ones(h, np.float32)
        yield "output.weight", weights(vocab_size, h)
        for i in range(layers):
            yield f"blk.{i}.attn_norm.weight", np.ones(h, np.float32)
            yield f"blk.{i}.attn_q.weight", weights(h, h)
            yield f"blk.{i}.attn_k.weight", weights(kv, h)
            yield f"blk.{i}.attn_v.weight", weights(kv, h)
            yield f"blk.{i}.attn_output.weight", weights(h, h)
            yield f"blk.{i}.ffn_norm.weight", np.ones(h, np.float32)
            yield f"blk.{i}.ffn_gate.weight", weights(ff, h)
            yield f"blk.{i}.ffn_up.weight", weights(ff, h)
            yield f"blk.{i}.ffn_down.weight", weights(h, ff)

    return write_llama(out, config, vocab, tensors(), "f16", "random-1b")


def tensor_bytes(path: Path) -> int:
    """Bytes of all tensors in a GGUF (what one decoded token reads)."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors)


def decode_rate(path: Path, tokens: int, threads: int) -> float:
    """Tokens/s of greedy one-token-at-a-time decoding through our runtime (after a short prompt)."""
    from appliance.runtime.llm import LlamaSettings, TextModel, greedy

    model = TextModel(path, LlamaSettings(n_ctx=512, n_batch=64, n_threads=threads))
    try:
        model.eval_tokens(model.tokenize("USER: pick up the mug ASSISTANT:", add_bos=True, start=True))
        token = greedy(model.logits())
        model.eval_tokens([token])  # warm-up
        start = time.perf_counter()
        for _ in range(tokens):
            token = greedy(model.logits())
            model.eval_tokens([token])
        return tokens / (time.perf_counter() - start)
    finally:
        model.close()


def project(efficiency: float, answer_tokens: float) -> list[dict]:
    rows = []
    for name, bandwidth in JETSONS.items():
        bound = bandwidth / LLAMA_7B_Q4_K_M_BYTES
        expected = bound * efficiency
        rows.append(
            {
                "device": name,
                "bandwidth_gb_s": bandwidth / 1e9,
                "bound_tokens_per_s": round(bound, 1),
                "expected_tokens_per_s": round(expected, 1),
                "answer_decode_s": round(answer_tokens / expected, 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Memory-bandwidth efficiency of our decode path on a ~1B Q4_K_M llama, projected to Jetsons.",
        epilog="example: python bench/edge.py --tokenizer runs/tp/merged --tokens 51.5 --json runs/edge.json",
    )
    parser.add_argument(
        "--tokenizer", type=Path, required=True, help="a checkpoint directory whose tokenizer the random model uses"
    )
    parser.add_argument("--tokens", type=float, default=51.5, help="RT answer length to project (tokens)")
    parser.add_argument("--decode", type=int, default=48, help="tokens to decode for the measurement")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--work", type=Path, help="keep the GGUFs here (default: a temporary directory)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not (args.tokenizer / "config.json").is_file():
        parser.error(f"{args.tokenizer} is not a checkpoint directory (no config.json)")
    from export.quantize import quantize_gguf

    bandwidth = measure_bandwidth()
    print(f"memory bandwidth (1 GiB float32 gemv): {bandwidth / 1e9:.1f} GB/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        f16 = random_llama(work / "random-1b-f16.gguf", args.tokenizer, ONE_B)
        q4 = quantize_gguf(f16, work / "random-1b-q4_k_m.gguf", 15)
        f16.unlink()
        print(f"random ~1B llama written and quantized to Q4_K_M in {time.monotonic() - start:.0f} s", flush=True)
        weights = tensor_bytes(q4)
        rate = decode_rate(q4, args.decode, args.threads)
    achieved = weights * rate
    efficiency = achieved / bandwidth
    report = {
        "bandwidth_gb_s": bandwidth / 1e9,
        "model_bytes": weights,
        "decode_tokens_per_s": rate,
        "achieved_gb_s": achieved / 1e9,
        "efficiency": efficiency,
        "threads": args.threads,
        "answer_tokens": args.tokens,
        "projection": project(efficiency, args.tokens),
    }
    print(
        f"random 1B Q4_K_M: {weights / 1e9:.2f} GB of weights, {rate:.1f} tokens/s -> {achieved / 1e9:.1f} GB/s "
        f"= {100 * efficiency:.0f} % of the measured bandwidth ({args.threads} threads)"
    )
    print(
        f"| device | bandwidth | bound, 7B Q4_K_M | expected at this efficiency | decode of a {args.tokens:.0f}-token answer |"
    )
    print("|---|---|---|---|---|")
    for r in report["projection"]:
        print(
            f"| {r['device']} | {r['bandwidth_gb_s']:.0f} GB/s | {r['bound_tokens_per_s']} tok/s | {r['expected_tokens_per_s']} tok/s | {r['answer_decode_s']} s |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
