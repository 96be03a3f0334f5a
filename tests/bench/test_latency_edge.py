"""The latency bench (torch vs runtime, stages, speculative) and the edge bench's pieces, on tiny models."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from training.datasets.toy import write_toy_dataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import edge  # noqa: E402
import latency  # noqa: E402


def test_latency_puts_torch_and_the_runtime_side_by_side(tmp_path, tiny_spm_checkpoint, capsys):
    root = write_toy_dataset(tmp_path / "toy", images=3, seed=5, objects=2)
    out = tmp_path / "latency.json"
    latency.main(
        [
            "--model",
            str(tiny_spm_checkpoint),
            "--root",
            str(root),
            "--split",
            "all",
            "--limit",
            "2",
            "--bits",
            "16",
            "4",
            "--json",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    engines = [e["model"] for e in report["engines"]]
    assert engines == ["torch fp32", "F16", "Q4_K_M"]
    assert all(
        e["n"] == 2 and e["ms_per_image"] > 0 and e["tokens_per_s"] > 0 and e["rss_mb"] > 0 for e in report["engines"]
    )
    stages = report["median_ms"]
    for stage in (
        "preprocess_ms",
        "vision_ms",
        "prefill_ms",
        "decode_ms",
        "parse_ms",
        "geometry_ms",
        "time_to_pose_ms",
    ):
        assert stage in stages
    assert (
        report["quant"] == "Q4_K_M"
        and isinstance(report["identical_output"], bool)
        and report["speculative_speedup"] > 0
        and report["auto_speedup"] > 0
        and report["auto_plan"]["ratio"]["1"] == 1.0
    )
    printed = capsys.readouterr().out
    assert "speed vs torch" in printed and "speculative" in printed


def test_latency_needs_a_model_or_a_bundle(tmp_path):
    with pytest.raises(SystemExit):
        latency.main(["--root", str(tmp_path)])
    with pytest.raises(SystemExit):
        latency.main(["--bundle", str(tmp_path / "missing"), "--root", str(tmp_path)])


def test_random_llama_decodes_through_our_runtime_and_projection_is_bandwidth_over_bytes(tmp_path, tiny_spm_checkpoint):
    from export.quantize import quantize_gguf

    shape = {"hidden": 128, "layers": 2, "intermediate": 256, "heads": 4, "kv_heads": 2}
    f16 = edge.random_llama(tmp_path / "r.gguf", tiny_spm_checkpoint, shape)
    q4 = quantize_gguf(f16, tmp_path / "r-q4.gguf", 15)
    assert 0 < edge.tensor_bytes(q4) < edge.tensor_bytes(f16)
    assert edge.decode_rate(q4, tokens=8, threads=1) > 0
    assert edge.measure_bandwidth(gib=0.05, repeats=2) > 1e8  # any machine moves more than 100 MB/s
    rows = edge.project(efficiency=0.5, answer_tokens=50)
    agx = next(r for r in rows if "AGX" in r["device"])
    assert agx["bound_tokens_per_s"] == pytest.approx(204.8e9 / edge.LLAMA_7B_Q4_K_M_BYTES, abs=0.1)
    assert agx["answer_decode_s"] == pytest.approx(50 / agx["expected_tokens_per_s"], rel=0.01)


def test_latency_times_the_model_process_beside_the_in_process_model(tmp_path, f32_bundle):
    root = write_toy_dataset(tmp_path / "toy", images=2, seed=6, objects=2)
    out = tmp_path / "latency.json"
    latency.main(
        [
            "--bundle",
            str(f32_bundle),
            "--root",
            str(root),
            "--split",
            "all",
            "--limit",
            "2",
            "--worker",
            "--json",
            str(out),
        ]
    )
    boundary = json.loads(out.read_text())["process_boundary"]
    assert boundary["images"] == 2 and boundary["identical_output"] is True
    assert boundary["median_worker_ms"] > 0 and boundary["median_in_process_ms"] > 0
