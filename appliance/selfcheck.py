"""``python -m appliance.selfcheck``: can this machine run the llama.cpp that is installed?

scripts/setup runs it after installing. It writes a tiny llama GGUF on the spot
(Q4_0 matrices, so the quantized matrix product the demo model uses runs),
loads it with ``appliance.runtime.llm`` and decodes a few tokens, all in a child
process. A llama.cpp built for instructions this CPU cannot run (``-march=native``
on a machine that advertises AMX it does not allow) dies there with SIGILL; the
check then names the signal, says what it means and how to rebuild, and exits
non-zero, instead of letting the daemon die on its first request.

Exit status: 0 the check passed, 1 the child died or decoded garbage, 2 llama-cpp-python
or gguf is not installed.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .runtime.proc import describe_exit

log = logging.getLogger(__name__)

WIDTH = 256
"""Model width: a multiple of every quant block size."""
WORDS = ("grasp", "the", "mug", "by", "its", "handle")
REBUILD = "REBUILD=1 scripts/build_llama_cpp"
CHILD_TIMEOUT_S = 120.0


def write_tiny_gguf(path: Path, seed: int = 0, width: int = WIDTH, layers: int = 1) -> Path:
    """A random llama GGUF (one layer of width 256 by default) with Q4_0 matrices and a SentencePiece-style
    vocabulary (specials, 256 bytes, a few words); bench/cpu_baseline.py writes larger ones."""
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *(f"\u2581{w}" for w in WORDS)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * len(WORDS)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("rtgrasp-selfcheck")
    writer.add_context_length(64)
    writer.add_embedding_length(width)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(width)
    writer.add_head_count(width // 64)
    writer.add_head_count_kv(width // 64)
    writer.add_rope_dimension_count(64)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    def matrix(name: str, rows: int) -> None:
        weights = (rng.standard_normal((rows, width)) * 0.05).astype(np.float32)
        writer.add_tensor(
            name,
            gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_0),
            raw_dtype=gguf.GGMLQuantizationType.Q4_0,
        )

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(width, np.float32))

    matrix("token_embd.weight", len(tokens))
    norm("output_norm.weight")
    matrix("output.weight", len(tokens))
    for layer in range(layers):
        norm(f"blk.{layer}.attn_norm.weight")
        norm(f"blk.{layer}.ffn_norm.weight")
        for name in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            matrix(f"blk.{layer}.{name}.weight", width)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def decode(path: Path, steps: int = 8) -> list[int]:
    """Load ``path`` with appliance.runtime.llm and decode ``steps`` greedy tokens after a short prompt."""
    from .runtime.llm import LlamaSettings, TextModel, greedy

    model = TextModel(path, LlamaSettings(n_ctx=64, n_batch=16))
    try:
        tokens = model.tokenize("grasp the mug", add_bos=True, special=False)
        model.eval_tokens(tokens)
        out = []
        for _ in range(steps):
            logits = model.logits()
            if not np.isfinite(logits).all():
                raise RuntimeError("llama.cpp computed non-finite logits")
            out.append(greedy(logits))
            model.eval_tokens(out[-1:])
        return out
    finally:
        model.close()


def check(timeout_s: float = CHILD_TIMEOUT_S, child_command: list[str] | None = None) -> tuple[bool, str]:
    """Write the GGUF, decode it in a child process; (passed, what to tell the user).

    ``child_command`` replaces the decoding child (the GGUF's path is appended): tests give one that
    dies by a signal, as a llama.cpp built for another CPU does."""
    with tempfile.TemporaryDirectory(prefix="rtgrasp-selfcheck-") as tmp:
        path = write_tiny_gguf(Path(tmp) / "tiny-q4_0.gguf")
        command = [*(child_command or [sys.executable, "-m", "appliance.selfcheck", "--decode"]), str(path)]
        start = time.perf_counter()
        try:
            child = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False, f"llama.cpp did not decode 8 tokens of a tiny model within {timeout_s:.0f} s"
        seconds = time.perf_counter() - start
    if child.returncode == 0:
        return True, f"llama.cpp loads a Q4_0 model and decodes on this CPU ({child.stdout.strip()}; {seconds:.1f} s)"
    how = describe_exit(child.returncode)
    lines = [f"llama.cpp failed its check in a child process: {how}"]
    if child.returncode < 0:
        lines.append(f"rebuild it for a portable CPU baseline: {REBUILD}")
    if child.stderr.strip():
        lines.append("its last output:\n" + "\n".join(child.stderr.strip().splitlines()[-10:]))
    return False, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.selfcheck",
        description="Check that the installed llama.cpp runs on this CPU: write a tiny Q4_0 GGUF and decode "
        "a few tokens in a child process (scripts/setup runs this after installing).",
        epilog="example: python -m appliance.selfcheck",
    )
    parser.add_argument("--decode", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args(argv)
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        print(f"selfcheck: {exc.name} is not installed (scripts/setup appliance installs it)", file=sys.stderr)
        return 2
    if args.decode:
        print(f"decoded tokens {decode(args.decode)}")
        return 0
    passed, message = check()
    print(f"selfcheck: {message}", file=sys.stdout if passed else sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
