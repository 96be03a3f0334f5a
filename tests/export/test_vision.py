"""The ONNX vision tower: parity with torch in fp32, measured error of the fp16 and int8 variants."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from export.vision import INPUT, OUTPUT, export_onnx, parity, relative_error, torch_embeddings  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_spm_checkpoint):
    from training.model import load_llava

    return load_llava(tiny_spm_checkpoint)[0].eval()


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "vision.onnx", "fp32")


def test_fp32_parity_on_fresh_random_images(model, fp32):
    for seed in (1, 2):
        assert parity(model, fp32, images=3, seed=seed) <= 1e-4


def test_dynamic_batch_and_opset(model, fp32):
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(fp32))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(5).normal(size=(5, 3, 224, 224)).astype(np.float32)
    got = session.run([OUTPUT], {INPUT: pixels})[0]
    assert got.shape == (5, 64, 256)
    assert relative_error(got, torch_embeddings(model, pixels)) <= 1e-4


@pytest.mark.parametrize("precision, bound", [("fp16", 5e-3), ("int8", 0.1)])
def test_reduced_precision_variants_report_their_error(model, tmp_path, precision, bound, capsys):
    path = export_onnx(model, tmp_path / f"vision-{precision}.onnx", precision)
    error = parity(model, path)
    with capsys.disabled():
        print(f"\n  vision {precision}: relative error vs torch fp32 = {error:.2e}")
    assert 0 < error <= bound  # not bit-exact (it really is reduced), and still close


def test_bad_precision_and_opset(model, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        export_onnx(model, tmp_path / "v.onnx", "int4")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "v.onnx", "fp32", opset=13)
