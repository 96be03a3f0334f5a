"""The paper's model size through every stage on this machine: LoRA step, merge, ONNX, GGUF, Q4 bundle, runtime.

    python -m training.model --preset llava-1.5-7b --out runs/l7b        # 14 GB of bfloat16 shards, ~2 min
    python bench/scale.py --model runs/l7b --work runs/scale --json runs/scale/scale.json

Each stage runs as its own process (the commands a user runs), timed, with its
peak resident memory. A stage whose estimated memory does not fit this machine
is recorded with the figure that did not fit, and the whole chain then runs on
the decoder cut to ``--cut-layers`` layers (same widths). Stages that finished
are kept in ``WORK/results.json`` and skipped when the bench runs again.

1. ``lora``: one LoRA step (r64 α32, bfloat16 weights, gradient checkpointing, one image of the model's size).
2. ``merge``: the adapter folded into the base.
3. ``vision``: ``export.vision`` (fp32 ONNX) and its parity against torch.
4. ``gguf``: ``export.gguf`` F16, and its logits on a short prompt against a float32 reference that streams the
   checkpoint one decoder layer at a time (a 7B model in float32 would need 28 GB).
5. ``quantize``: ``python -m export.quantize --bits 4`` → the bundle (and ``--bits 8`` beside it).
6. ``runtime``: the bundle through ``appliance.runtime``: vision, prefill of the image's embeddings and the prompt,
   64 greedy tokens; decode tokens/s against the memory bandwidth measured in the same process.
7. ``speculative``: the verify-cost curve t(k)/t(1), k = 1…16, and speculative decoding with a **replayed
   acceptance pattern**: the demo model's drafts, recorded on its own RT answers (which were kept, which were
   not), become drafts of the big model's own greedy output — right exactly where the demo's were kept, wrong
   where they were refused. A random 7B model does not follow real drafts; this way the real verify code runs
   on real weight traffic with a trained model's acceptance. Every output must equal plain greedy decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# Peak memory per parameter of each stage, measured on llava-1.5-7b's shapes here (bfloat16 checkpoint):
# the LoRA step 20.1 GB for 7.06 B parameters; the others load the bfloat16 model once.
BYTES_PER_PARAMETER = {"lora": 2.9, "merge": 2.3, "vision": 2.3, "quantize": 2.3}
STAGE_OVERHEAD_GB = 1.5
PROMPT = "pick up the book"
DECODE_TOKENS = 64


# -- running a stage -----------------------------------------------------------------------------------
def run(cmd: list[str], log: Path) -> dict:
    """Run a command to completion with its output in ``log``; its wall time and peak resident memory."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:4])} … failed ({code}); {log}:\n" + "\n".join(tail))
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 2)}


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def internal(name: str, out: Path, **kw) -> list[str]:
    """This script run as a child for one measurement, writing its result to ``out``."""
    return python(__file__, "--internal", name, "--internal-out", str(out), "--internal-args", json.dumps(kw))


def available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def parameters(model: Path) -> int:
    from training.model import LlavaShape, parameter_estimate

    config = json.loads((model / "config.json").read_text())
    v, t = config["vision_config"], config["text_config"]
    shape = LlavaShape(
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        vision_hidden=v["hidden_size"],
        vision_intermediate=v["intermediate_size"],
        vision_layers=v["num_hidden_layers"],
        vision_heads=v["num_attention_heads"],
        text_hidden=t["hidden_size"],
        text_layers=t["num_hidden_layers"],
        text_heads=t["num_attention_heads"],
        text_kv_heads=t.get("num_key_value_heads") or t["num_attention_heads"],
        text_intermediate=t["intermediate_size"],
        vocab_size=t["vocab_size"],
    )
    return parameter_estimate(shape)


class Results:
    """``results.json`` in the work folder: each finished stage's figures, written as soon as it finishes."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.data = {} if fresh or not path.is_file() else json.loads(path.read_text())

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict) -> dict:
        self.data[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        tmp.replace(self.path)
        return value


def training_data(model: Path, work: Path) -> Path:
    """A build_dataset folder of four synthetic images at ``model``'s input size (made once in ``work``)."""
    size = json.loads((model / "config.json").read_text())["vision_config"]["image_size"]
    data = work / f"data-{size}"
    if not (data / "train.json").is_file():
        run(python("-m", "training.synth", "--out", str(work / "synth"), "--images", "4", "--seed", "7"),
            work / "synth.log")  # fmt: skip
        run(python("-m", "training.build_dataset", "--root", str(work / "synth"), "--split", "all",
                   "--targets", "one", "--size", str(size), "--out", str(data)), work / "data.log")  # fmt: skip
    return data


# -- the chain -----------------------------------------------------------------------------------------
STAGES = ("lora", "merge", "vision", "gguf", "quantize", "quantize-q8", "runtime", "speculative-q4", "speculative-q8")


def chain(
    model: Path, label: str, work: Path, results: Results, data: Path, q8: bool, until: str | None = None
) -> str | None:
    """Every stage on ``model`` (up to ``until``); returns the stage that did not fit (the caller then runs the
    cut), or None."""
    w = work / label
    w.mkdir(parents=True, exist_ok=True)
    params = parameters(model)

    def stage(name: str, make) -> dict | None:
        key = f"{label}/{name}"
        done = results.get(key)
        if done is not None:
            print(f"{key}: done before ({done.get('seconds')} s)", flush=True)
            return done
        need = BYTES_PER_PARAMETER.get(name, 0) * params / 1e9 + STAGE_OVERHEAD_GB
        free = available_gb()
        if name in BYTES_PER_PARAMETER and need > free:
            results.put(key, {"fits": False, "needed_gb": round(need, 1), "available_gb": round(free, 1)})
            print(f"{key}: needs about {need:.1f} GB, {free:.1f} GB available: does not fit", flush=True)
            return None
        print(f"{key} …", flush=True)
        value = make(w / f"{name}.log")
        value["fits"] = True
        print(f"{key}: {json.dumps(value)}", flush=True)
        return results.put(key, value)

    def lora(log):
        shutil.rmtree(w / "lora", ignore_errors=True)
        r = run(
            python("-m", "training.train", "--model", str(model), "--data", str(data), "--strategy", "lora",
                   "--steps", "1", "--batch-size", "1", "--micro-batch", "1", "--save-every", "1",
                   "--dtype", "bfloat16", "--gradient-checkpointing", "--out", str(w / "lora")),
            log,
        )  # fmt: skip
        metrics = (w / "lora" / "metrics.csv").read_text().splitlines()[-1].split(",")
        return {**r, "loss": float(metrics[1]), "step_seconds": float(metrics[3])}

    def merge(log):
        shutil.rmtree(w / "merged", ignore_errors=True)
        adapter = w / "lora" / "checkpoint-000001"
        return run(python("-m", "training.merge", "--adapter", str(adapter), "--out", str(w / "merged")), log)

    def vision(log):
        r = run(python("-m", "export.vision", "--model", str(w / "merged"), "--out", str(w / "vision.onnx")), log)
        text = log.read_text()
        r["vision_parity"] = float(text.split("relative error vs torch")[1].split()[0])
        r["onnx_mb"] = round((w / "vision.onnx").stat().st_size / 1e6, 1)
        return r

    def gguf(log):
        f16 = w / "llm-f16.gguf"
        r = run(python("-m", "export.gguf", "--model", str(w / "merged"), "--out", str(f16), "--dtype", "f16"), log)
        out = w / "gguf-parity.json"
        p = run(internal("gguf-parity", out, model=str(w / "merged"), gguf=str(f16)), w / "gguf-parity.log")
        parity = json.loads(out.read_text())
        f16.unlink()  # 14 GB; the bundle writes its own source
        return {**r, "gguf_mb": parity.pop("gguf_mb"), **parity, "parity_seconds": p["seconds"],
                "parity_peak_rss_gb": p["peak_rss_gb"]}  # fmt: skip

    def quantize(log, bits=4):
        out = w / f"bundle-q{bits}"
        r = run(python("-m", "export.quantize", "--bits", str(bits), "--model", str(w / "merged"),
                       "--out", str(out), "--force"), log)  # fmt: skip
        manifest = (out / "manifest.yaml").read_text()
        llm = next(p for p in out.glob("*.gguf"))
        return {**r, "llm_mb": round(llm.stat().st_size / 1e6, 1), "quant": "Q4_K_M" if bits == 4 else "Q8_0",
                "bundle": str(out), "manifest_bytes": len(manifest)}  # fmt: skip

    def runtime(log):
        out = w / "runtime.json"
        r = run(internal("runtime", out, bundle=str(w / "bundle-q4"), data=str(data)), log)
        return {**r, **json.loads(out.read_text())}

    def speculative(log, bits=4):
        out = w / f"speculative-q{bits}.json"
        r = run(
            internal("speculative", out, bundle=str(w / f"bundle-q{bits}"), data=str(data),
                     pattern=str(work / "pattern.json")),
            log,
        )  # fmt: skip
        return {**r, **json.loads(out.read_text())}

    makers = {
        "lora": lora,
        "merge": merge,
        "vision": vision,
        "gguf": gguf,
        "quantize": quantize,
        "quantize-q8": lambda log: quantize(log, 8),
        "runtime": runtime,
        "speculative-q4": speculative,
        "speculative-q8": lambda log: speculative(log, 8),
    }
    for name in STAGES:
        if not q8 and name.endswith("q8"):
            continue
        if stage(name, makers[name]) is None:
            return name
        if name == until:
            print(f"stopped after {name} (--until)", flush=True)
            break
    return None


# -- measurements run as children ----------------------------------------------------------------------
def reference_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    """Float32 logits of the checkpoint's text model for ``ids``, one decoder layer in memory at a time.

    ``gguf_parity`` compares llama.cpp's logits with these: the largest difference over the largest logit
    (``gguf_parity``), and the root-mean-square difference over the logits' (``gguf_parity_rms``). llama.cpp's
    F16 matrix products round the activations to F16 too (about 5e-4 relative), which sets the floor."""
    import torch
    from safetensors import safe_open
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding

    config = json.loads((model_dir / "config.json").read_text())
    text = LlamaConfig(**config["text_config"])
    text._attn_implementation = "sdpa"  # causal without a mask
    where = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            where.update({name: path for name in f.keys()})
    prefix = next(p for p in ("model.language_model.", "language_model.model.") if p + "norm.weight" in where)
    head = next(n for n in ("lm_head.weight", "language_model.lm_head.weight") if n in where)

    def get(name: str):
        with safe_open(str(where[name]), framework="pt") as f:
            return f.get_tensor(name).float()

    with torch.no_grad():
        hidden = get(prefix + "embed_tokens.weight")[torch.tensor(ids)][None]
        positions = torch.arange(len(ids))[None]
        rope = LlamaRotaryEmbedding(text)(hidden, positions)
        for i in range(text.num_hidden_layers):
            with torch.device("meta"):
                layer = LlamaDecoderLayer(text, i)
            own = f"{prefix}layers.{i}."
            layer.load_state_dict({n[len(own) :]: get(n) for n in where if n.startswith(own)}, assign=True)
            hidden = layer(hidden, position_ids=positions, position_embeddings=rope)
            del layer
        norm = LlamaRMSNorm(text.hidden_size, eps=text.rms_norm_eps)
        norm.weight.data = get(prefix + "norm.weight")
        return (norm(hidden) @ get(head).T)[0].numpy()


def gguf_parity(model: str, gguf: str) -> dict:
    from transformers import AutoTokenizer

    from appliance.runtime.llm import LlamaSettings, TextModel

    tokenizer = AutoTokenizer.from_pretrained(model)
    ids = tokenizer("USER: pick up the mug by its handle, please ASSISTANT: This is a mug")["input_ids"]
    start = time.perf_counter()
    want = reference_logits(Path(model), ids)
    reference_s = time.perf_counter() - start
    llm = TextModel(Path(gguf), LlamaSettings.exact(n_ctx=64, n_batch=64))
    llm.eval_tokens(ids, all_logits=True)
    got = np.stack([llm.logits(i) for i in range(len(ids))])
    llm.close()
    diff = got.astype(np.float64) - want
    error = float(np.abs(diff).max() / np.abs(want).max())
    rms = float(np.sqrt((diff**2).mean() / (want.astype(np.float64) ** 2).mean()))
    same = float((got.argmax(-1) == want.argmax(-1)).mean())
    return {"gguf_parity": error, "gguf_parity_rms": rms, "gguf_argmax_agreement": same, "parity_tokens": len(ids),
            "reference_seconds": round(reference_s, 1), "gguf_mb": round(Path(gguf).stat().st_size / 1e6, 1)}  # fmt: skip


def first_image(data: Path):
    from PIL import Image

    record = json.loads((data / "train.json").read_text())[0]
    return np.asarray(Image.open(data / record["image"]).convert("RGB")), record.get("category") or "object"


def weight_bytes_per_token(gguf: Path) -> int:
    """Bytes one decoded token reads: every tensor but the token embeddings (one row of those)."""
    import gguf as gguf_lib

    return sum(int(t.n_bytes) for t in gguf_lib.GGUFReader(str(gguf)).tensors if t.name != "token_embd.weight")


def prefill(model, instruction: str, image) -> dict:
    """The image and the prompt into the model's cache; timings of vision and prefill."""
    start = time.perf_counter()
    embedded = model.embed(image)
    embeddings, pre_ms, vision_ms = embedded.embeddings, embedded.preprocess_ms, embedded.vision_ms
    segments = model.prompt_segments(instruction, first=True)
    cut = segments.index(None)
    t0 = time.perf_counter()
    model.llm.truncate(0)
    model.llm.eval_tokens(segments[:cut])
    model.llm.eval_embeddings(embeddings)
    model.llm.eval_tokens(segments[cut + 1 :])
    t1 = time.perf_counter()
    return {"preprocess_ms": pre_ms, "vision_ms": vision_ms, "prefill_ms": 1000 * (t1 - t0),
            "prefill_positions": model.llm.n_past, "embed_total_ms": 1000 * (t0 - start),
            "prompt": [t for t in segments if t is not None]}  # fmt: skip


def runtime_figures(bundle: str, data: str) -> dict:
    from edge import measure_bandwidth

    from appliance.runtime.llm import LlamaSettings, greedy
    from appliance.runtime.model import GraspModel

    bandwidth = measure_bandwidth()
    model = GraspModel.load(Path(bundle), llama=LlamaSettings(n_ctx=1024, n_batch=256))
    image, category = first_image(Path(data))
    first = prefill(model, f"pick up the {category}", image)
    token = greedy(model.llm.logits())
    model.llm.eval_tokens([token])  # the first decode step allocates: not timed
    start = time.perf_counter()
    for _ in range(DECODE_TOKENS):
        token = greedy(model.llm.logits())
        model.llm.eval_tokens([token])
    decode_s = time.perf_counter() - start
    rate = DECODE_TOKENS / decode_s
    per_token = weight_bytes_per_token(Path(bundle) / model.manifest.llm)
    model.llm.close()
    return {
        "bandwidth_gb_s": round(bandwidth / 1e9, 2),
        "weight_bytes_per_token": per_token,
        "vision_ms": round(first["vision_ms"], 1),
        "prefill_ms": round(first["prefill_ms"], 1),
        "prefill_positions": first["prefill_positions"],
        "decode_tokens": DECODE_TOKENS,
        "decode_ms": round(1000 * decode_s, 1),
        "decode_tokens_per_s": round(rate, 3),
        "achieved_gb_s": round(per_token * rate / 1e9, 2),
        "bandwidth_fraction": round(per_token * rate / bandwidth, 3),
    }


class ReplayDrafter:
    """Drafts of a known greedy output that are right exactly as often, and where, as a recorded model's were.

    ``checks`` is a recorded sequence of [tokens drafted, of them kept] (0 drafted: no draft was found). Each new
    check drafts that many tokens of ``reference`` from the current position, the first ``kept`` of them right and
    the next one wrong. Asked again inside the right part of the last check (after a near-tie replay threw the
    batch away), it drafts the rest of that check again, as the n-gram drafter would: the same text follows."""

    def __init__(self, reference: list[int], checks: list[list[int]], n_vocab: int, k: int = 16):
        self.reference, self.checks, self.n_vocab, self.k = reference, list(checks), n_vocab, k
        self.used = 0
        self._span: tuple[int, int, int] | None = None
        """The last check: (position it started at, tokens it drafted, tokens of them kept)."""

    def _spoiled(self, start: int, drafted: int, kept: int, at: int) -> list[int]:
        out = list(self.reference[at : start + drafted])
        wrong = start + kept - at
        if 0 <= wrong < len(out):
            out[wrong] = (out[wrong] + 1) % self.n_vocab  # any other token: greedy decoding refuses it
        return out

    def draft(self, tokens, context=()) -> list[int]:
        at = len(tokens)
        if self._span is not None:
            start, drafted, kept = self._span
            if start < at < start + kept:
                return self._spoiled(start, drafted, kept, at)
        if self.used >= len(self.checks):
            return []
        drafted, kept = self.checks[self.used]
        self.used += 1
        self._span = (at, drafted, kept)
        return self._spoiled(at, drafted, kept, at)


def record_pattern(bundle: str, images: int, seed: int, work: str) -> dict:
    """The demo bundle's RT answers decoded speculatively: per answer, which drafted tokens were kept."""
    from appliance.runtime.model import GraspModel
    from training.datasets import open_dataset

    data = Path(work) / f"pattern-data-{seed}"
    if not (data / "objects.csv").is_file():
        subprocess.run(python("-m", "training.synth", "--out", str(data), "--images", str(images), "--seed",
                              str(seed)), check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    model = GraspModel.load(Path(bundle), speculative="on")
    dataset = open_dataset(data)
    answers, tokens = [], []
    for image_id in dataset.ids[:images]:
        sample = dataset.load(image_id)
        before = len(model.checks)
        answer = model.session().ask(f"pick up the {sample.category}", sample.image, speculative=True)
        answers.append([list(c) for c in list(model.checks)[before:]])
        tokens.append(len(answer.tokens))
    drafted = sum(n for a in answers for n, _ in a)
    kept = sum(k for a in answers for _, k in a)
    return {"bundle": bundle, "images": images, "seed": seed, "answers": answers, "tokens": tokens,
            "drafted": drafted, "kept": kept, "acceptance": kept / max(1, drafted),
            "free_verify_speedup": free_verify_speedup(answers, tokens)}  # fmt: skip


def free_verify_speedup(answers: list[list[list[int]]], tokens: list[int]) -> float:
    """The speed-up these recorded checks give where checking a draft costs what one token costs (the bound a
    bandwidth-bound device approaches): each check yields its kept tokens plus one for the price of one step;
    every token outside the checks (the pose) costs a step of its own."""
    steps = sum(len(checks) + (n - sum(kept + 1 for _, kept in checks)) for checks, n in zip(answers, tokens))
    return sum(tokens) / steps


def speculative_figures(bundle: str, data: str, pattern: str, answers: int = 2, max_new_tokens: int = DECODE_TOKENS):
    """Verify-cost curve and replayed-pattern speculative decoding against plain greedy, on the same prefill."""
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from appliance.runtime.speculation import measure

    recorded = json.loads(Path(pattern).read_text())["answers"]
    model = GraspModel.load(Path(bundle), llama=LlamaSettings(n_ctx=1024, n_batch=256), speculative="on")
    image, category = first_image(Path(data))
    instructions = [f"pick up the {category}", "hand me the object on the table", "grasp it by the handle"]
    rows, identical = [], True
    for i in range(answers):
        state = prefill(model, instructions[i % len(instructions)], image)
        n, last = model.llm.n_past, state["prompt"][-1]

        def restart(n=n, last=last):  # back to the end of the prompt, its last token evaluated alone
            model.llm.truncate(n - 1)
            model.llm.eval_tokens([last])

        restart()
        start = time.perf_counter()
        plain, _, _ = model.generate(max_new_tokens, constrain=True, speculative=False)
        plain_s = time.perf_counter() - start
        checks = [c for a in recorded[i::answers] for c in a]  # this answer's share of the recorded checks
        model.drafter = ReplayDrafter(plain, checks, model.llm.n_vocab)
        restart()
        replays, drafted, accepted = model.replays, model.drafted, model.accepted
        start = time.perf_counter()
        fast, _, _ = model.generate(max_new_tokens, True, True, state["prompt"], draft_length=16)
        fast_s = time.perf_counter() - start
        identical &= fast == plain
        rows.append({"tokens": len(plain), "plain_ms": round(1000 * plain_s, 1), "speculative_ms": round(1000 * fast_s, 1),
                     "drafted": model.drafted - drafted, "kept": model.accepted - accepted,
                     "replays": model.replays - replays, "identical": fast == plain})  # fmt: skip
    curve_tokens = model.prompt_segments("pick up the mug by its handle and lift it from the table", first=True)
    behind = model.embed(image)[1]  # the curve at the depth answers are decoded at: behind the image
    tokens = [t for t in curve_tokens if t is not None] * 2
    cost = measure(model.llm, tokens, ks=range(1, 17), repeats=2, prefix=behind)
    plain_total = sum(r["plain_ms"] for r in rows)
    fast_total = sum(r["speculative_ms"] for r in rows)
    model.llm.close()
    return {
        "quant": model.manifest.quant,
        "answers": rows,
        "speculative_speedup": round(plain_total / fast_total, 3),
        "identical_output": identical,
        "replayed_acceptance": round(sum(r["kept"] for r in rows) / max(1, sum(r["drafted"] for r in rows)), 3),
        "verify_cost": {k: round(v, 3) for k, v in cost.ratio.items()},
        "verify_single_ms": round(cost.single_ms, 1),
        "batched_logit_error": cost.logit_error,
        "margin": model.speculative_margin,
    }


INTERNAL = {"gguf-parity": gguf_parity, "runtime": runtime_figures, "speculative": speculative_figures,
            "pattern": record_pattern}  # fmt: skip


# -- the report ----------------------------------------------------------------------------------------
def summary(results: dict) -> dict:
    """The headline figures, from the largest model every stage ran on."""
    label = "cut" if any(k.startswith("cut/") for k in results) else "full"
    get = lambda name: results.get(f"{label}/{name}") or {}  # noqa: E731
    stages = {k: v for k, v in results.items() if "/" in k}
    runtime, spec = get("runtime"), get("speculative-q4")
    return {
        "model": label,
        "decode_tokens_per_s": runtime.get("decode_tokens_per_s"),
        "bandwidth_fraction": runtime.get("bandwidth_fraction"),
        "peak_rss_gb": max((v.get("peak_rss_gb", 0) for v in stages.values()), default=None),
        "vision_parity": get("vision").get("vision_parity"),
        "gguf_parity": get("gguf").get("gguf_parity"),
        "gguf_parity_rms": get("gguf").get("gguf_parity_rms"),
        "speculative_speedup": spec.get("speculative_speedup"),
        "speculative_speedup_q8": get("speculative-q8").get("speculative_speedup"),
        "identical_output": all(
            v.get("identical_output", True) for k, v in stages.items() if k.startswith(label + "/speculative")
        ),
        "acceptance_replayed": "the demo model's recorded draft acceptance, replayed on the big model's own output",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Every stage of training, export and the runtime at a checkpoint's full size (e.g. llava-1.5-7b "
        "shapes from python -m training.model --preset llava-1.5-7b), timed with peak memory; stages that do not "
        "fit run on a decoder cut.",
        epilog="example: python bench/scale.py --model runs/l7b --work runs/scale --json runs/scale/scale.json",
    )
    parser.add_argument("--model", type=Path, help="a LLaVA checkpoint directory (bfloat16 for a 7B)")
    parser.add_argument("--work", type=Path, default=Path("runs/scale"), help="outputs and results.json")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--cut-layers", type=int, default=4, help="decoder layers of the cut that runs if needed")
    parser.add_argument("--demo-bundle", type=Path, default=ROOT / "models" / "rtgrasp-tiny",
                        help="the trained bundle whose draft acceptance is replayed")  # fmt: skip
    parser.add_argument("--pattern-images", type=int, default=20, help="demo answers to record the pattern from")
    parser.add_argument("--no-q8", action="store_true", help="skip the Q8_0 bundle and its speculative run")
    parser.add_argument("--fresh", action="store_true", help="forget finished stages and run every one again")
    parser.add_argument(
        "--until",
        choices=STAGES,
        help="stop after this stage (a later run goes on from there: timings of the runtime want a quiet machine)",
    )
    parser.add_argument("--internal", choices=sorted(INTERNAL), help=argparse.SUPPRESS)
    parser.add_argument("--internal-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--internal-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.internal:
        result = INTERNAL[args.internal](**json.loads(args.internal_args))
        args.internal_out.write_text(json.dumps(result, indent=1) + "\n")
        return 0
    if args.model is None or not (args.model / "config.json").is_file():
        parser.error("--model must be a checkpoint directory with config.json")
    args.work.mkdir(parents=True, exist_ok=True)
    results = Results(args.work / "results.json", args.fresh)
    data = training_data(args.model, args.work)
    pattern = args.work / "pattern.json"
    if not pattern.is_file():
        run(internal("pattern", pattern, bundle=str(args.demo_bundle), images=args.pattern_images, seed=4242,
                     work=str(args.work)), args.work / "pattern.log")  # fmt: skip
    recorded = json.loads(pattern.read_text())
    print(f"recorded pattern: {recorded['kept']} of {recorded['drafted']} drafted tokens kept "
          f"({100 * recorded['acceptance']:.0f} %) over {recorded['images']} demo answers", flush=True)  # fmt: skip

    failed = chain(args.model, "full", args.work, results, data, not args.no_q8, args.until)
    if failed:
        cut = args.work / f"cut{args.cut_layers}"
        if not (cut / "config.json").is_file():
            run(python("-m", "training.model", "--preset", "llava-1.5-7b", "--layers", str(args.cut_layers),
                       "--out", str(cut)), args.work / "cut.log")  # fmt: skip
        chain(cut, "cut", args.work, results, data, not args.no_q8, args.until)
    report = {**summary(results.data), "pattern": {k: recorded.get(k) for k in ("drafted", "kept", "acceptance", "free_verify_speedup")},
              "stages": results.data}  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "stages"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
