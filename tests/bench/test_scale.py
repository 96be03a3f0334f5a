"""bench/scale.py's measurements and bench/gpu_check.py, on the tiny model; the whole chain at 7B width is slow."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import gpu_check  # noqa: E402
import scale  # noqa: E402


@pytest.fixture(scope="module")
def data(tiny_spm_checkpoint, tmp_path_factory):
    """A build_dataset folder at the tiny model's 224 px."""
    from training.build_dataset import BuildConfig, build
    from training.datasets import open_dataset
    from training.datasets.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("scale")
    toy = open_dataset(write_toy_dataset(root / "toy", images=3, seed=4, objects=2))
    build(toy, "all", 0, BuildConfig(variant="rt", size=224, seed=1), root / "rt", progress=False)
    return root / "rt"


def test_the_streamed_reference_equals_the_whole_model(tiny_spm_checkpoint):
    from training.model import load_llava

    model, processor = load_llava(tiny_spm_checkpoint)
    ids = processor.tokenizer("USER: pick up the mug ASSISTANT: This is a mug")["input_ids"]
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0].numpy()
    got = scale.reference_logits(tiny_spm_checkpoint, ids)
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


def test_gguf_parity_of_an_f16_export(tiny_spm_checkpoint, tmp_path):
    from export.gguf import write_gguf

    path = write_gguf(tiny_spm_checkpoint, tmp_path / "f16.gguf", "f16")
    result = scale.gguf_parity(str(tiny_spm_checkpoint), str(path))
    assert result["gguf_parity"] < 2e-3 and result["gguf_parity_rms"] < result["gguf_parity"]
    assert result["gguf_argmax_agreement"] > 0.9


def test_replay_drafter_is_right_exactly_where_the_recorded_drafts_were_kept():
    reference = [5, 6, 7, 8, 9, 10, 11, 12]
    drafter = scale.ReplayDrafter(reference, [[3, 3], [2, 0], [0, 0], [4, 1], [5, 3]], n_vocab=100)
    assert drafter.draft([]) == [5, 6, 7]
    assert drafter.draft([5, 6, 7]) == [9, 9]  # the first drafted token wrong (8 → 9), as the recorded one was
    assert drafter.draft([5, 6, 7, 8]) == []  # no draft found, then
    assert drafter.draft([5, 6, 7, 8, 9]) == [10, 12, 12]  # 4 recorded, 3 left in the reference: 1 right, then wrong
    assert drafter.draft([5, 6, 7, 8, 9, 10, 11]) == [12]  # the last check: 5 drafted, 3 kept; 1 left
    assert drafter.draft([5]) == []  # the recording is used up


def test_after_a_replay_the_rest_of_the_same_check_is_drafted_again():
    reference = list(range(20, 30))
    drafter = scale.ReplayDrafter(reference, [[6, 4], [3, 3]], n_vocab=100)
    assert drafter.draft(reference[:2]) == [22, 23, 24, 25, 27, 27]  # kept 4 (22..25), then 26 spoiled
    # a near tie after two right tokens threw the batch away: the same text is drafted again, still wrong at 26
    assert drafter.draft(reference[:4]) == [24, 25, 27, 27]
    assert drafter.draft(reference[:6]) == [26, 27, 28]  # past the kept part: the next check
    assert drafter.used == 2


def test_speculative_figures_replay_a_pattern_and_equal_plain_decoding(f32_bundle, data, tmp_path):
    pattern = tmp_path / "pattern.json"
    pattern.write_text(json.dumps({"answers": [[[4, 4], [3, 1], [0, 0], [5, 2]] * 3, [[2, 2], [6, 0]] * 4]}))
    result = scale.speculative_figures(str(f32_bundle), str(data), str(pattern), answers=2, max_new_tokens=32)
    assert result["identical_output"] is True
    assert set(result["verify_cost"]) == set(range(1, 17)) and result["verify_cost"][1] == 1.0
    assert sum(r["drafted"] for r in result["answers"]) > 0
    assert 0 < result["replayed_acceptance"] <= 1 and result["speculative_speedup"] > 0


def test_runtime_figures_put_decode_beside_the_bandwidth(f32_bundle, data):
    result = scale.runtime_figures(str(f32_bundle), str(data))
    assert result["prefill_positions"] > 64 and result["decode_tokens"] == scale.DECODE_TOKENS
    assert result["bandwidth_gb_s"] > 0 and 0 < result["bandwidth_fraction"]
    want = result["weight_bytes_per_token"] * result["decode_tokens_per_s"] / (result["bandwidth_gb_s"] * 1e9)
    assert result["bandwidth_fraction"] == pytest.approx(want, rel=0.02)


def test_gpu_check_runs_each_check_on_the_cpu_and_refuses_cuda_without_a_gpu(tiny_spm_checkpoint, tmp_path, capsys):
    if not torch.cuda.is_available():
        assert gpu_check.main(["--work", str(tmp_path)]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    model = tmp_path / "model"
    shutil.copytree(tiny_spm_checkpoint, model)
    out = tmp_path / "gpu.json"
    assert (
        gpu_check.main(["--device", "cpu", "--model", str(model), "--work", str(tmp_path / "w"), "--json", str(out)])
        == 0
    )
    checks = json.loads(out.read_text())["checks"]
    assert checks["lora"]["finite"] and checks["lora"]["steps"] == 3
    assert checks["vision"]["fp32"]["parity"] < 1e-4 and checks["vision"]["fp16"]["parity"] < 1e-2
    assert checks["llama"]["decode_tokens_per_s"] > 0
    assert gpu_check.layers_that_fit(80.0) == 32 and gpu_check.layers_that_fit(16.0) == 18


@pytest.mark.slow
def test_every_stage_runs_at_7b_width_on_a_two_layer_cut(tmp_path):
    """llava-1.5-7b's widths (4096, 32064 tokens, CLIP ViT-L/14 at 336 px) with 2 decoder layers, through
    LoRA, merge, ONNX, GGUF, Q4 and Q8 bundles, the runtime and replayed speculative decoding."""
    from training.model import main as build

    assert build(["--preset", "llava-1.5-7b", "--layers", "2", "--out", str(tmp_path / "cut2")]) == 0
    out = tmp_path / "scale.json"
    assert scale.main(["--model", str(tmp_path / "cut2"), "--work", str(tmp_path / "w"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "full"  # every stage of this cut fits
    assert report["vision_parity"] <= 1e-4 and report["gguf_parity_rms"] <= 1e-3
    assert report["identical_output"] is True and report["decode_tokens_per_s"] > 0
    stages = report["stages"]
    for name in ("lora", "merge", "vision", "gguf", "quantize", "quantize-q8", "runtime", "speculative-q4"):
        assert stages[f"full/{name}"]["fits"] and stages[f"full/{name}"]["peak_rss_gb"] > 0
    assert stages["full/runtime"]["prefill_positions"] > 576


def test_a_stage_that_does_not_fit_is_recorded_with_its_figures_and_stops_the_chain(
    tiny_spm_checkpoint, data, tmp_path, monkeypatch
):
    monkeypatch.setattr(scale, "available_gb", lambda: 0.5)
    results = scale.Results(tmp_path / "results.json", fresh=True)
    assert scale.chain(tiny_spm_checkpoint, "full", tmp_path, results, data, q8=False) == "lora"
    saved = json.loads((tmp_path / "results.json").read_text())["full/lora"]
    assert saved == {"fits": False, "needed_gb": saved["needed_gb"], "available_gb": 0.5}
    assert saved["needed_gb"] > 0.5


def test_free_verify_speedup_counts_one_step_per_check_and_per_token_outside_them():
    # one answer of 10 tokens: a check keeping 3 (4 tokens), a check finding no draft (1 token), 5 pose tokens
    assert scale.free_verify_speedup([[[5, 3], [0, 0]]], [10]) == pytest.approx(10 / (2 + 5))
    assert scale.free_verify_speedup([[]], [7]) == 1.0  # nothing drafted: plain decoding
