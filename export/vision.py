"""The vision side of a LLaVA checkpoint → ONNX: pixels → image embeddings (tower, feature layer, projector).

    python -m export.vision --model runs/rt-merged --out runs/vision.onnx --precision fp32

The graph takes ``pixel_values`` (N, 3, H, W), already normalised as the
training processor does, and returns ``image_embeds`` (N, tokens, width): the
hidden state of the config's ``vision_feature_layer`` (a list concatenates
several), minus CLS under the ``default`` selection strategy, through the
multi-modal projector — what LLaVA splices in place of its ``<image>`` tokens.

Exporter: plain ``torch.onnx.export`` of that wrapper. optimum's exporter
(optimum-onnx) pins ``transformers<4.58`` while training uses transformers 5,
and it exports whole LLaVA models rather than this tower + projector slice.

Precisions: ``fp32`` (the reference), ``fp16`` (weights and activations,
inputs/outputs kept fp32: for a GPU), ``int8`` (dynamic weight quantisation
of MatMul/Gemm: for a CPU). ``parity`` measures each against torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")
INPUT, OUTPUT = "pixel_values", "image_embeds"


def vision_embedder(model):
    """A torch module: pixel_values → image embeddings exactly as the LLaVA model computes them."""
    import torch

    config = model.config
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower.float(), projector.float()  # only these: a 7B model's language half would take 28 GB in float32
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    drop_cls = config.vision_feature_select_strategy == "default"

    class VisionEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower, self.projector = tower, projector

        def forward(self, pixel_values):
            hidden = self.tower(pixel_values, output_hidden_states=True).hidden_states
            features = torch.cat([hidden[i] for i in layers], dim=-1)
            if drop_cls:
                features = features[:, 1:]
            return self.projector(features)

    return VisionEmbedder().eval()


def export_onnx(model, out: Path, precision: str = "fp32", opset: int = OPSET) -> Path:
    """Export the vision embedder (dynamic batch) and convert it to ``precision``; atomic write."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if opset < 17:
        raise ValueError("opset must be >= 17")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = model.config.vision_config.image_size
    embedder = vision_embedder(model)
    example = torch.zeros(1, 3, size, size)
    fp32 = out.with_name(f".{out.stem}.fp32.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape checks that are constant for a fixed size
        torch.onnx.export(
            embedder,
            (example,),
            str(fp32),
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            dynamo=False,
        )
    tmp = out.with_name(f".{out.name}.tmp")
    if precision == "fp32":
        fp32.replace(tmp)
    elif precision == "fp16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(tmp))
        fp32.unlink()
    else:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        fp32.unlink()
    tmp.replace(out)
    log.info("wrote %s (%s, opset %d)", out, precision, opset)
    return out


def torch_embeddings(model, pixels: np.ndarray) -> np.ndarray:
    """The reference: the LLaVA model's own image features for these pixels."""
    import torch

    model.model.vision_tower.float(), model.model.multi_modal_projector.float()
    with torch.no_grad():
        features = model.get_image_features(pixel_values=torch.from_numpy(pixels).float())
    if hasattr(features, "pooler_output"):  # transformers >= 5 returns a model output
        features = features.pooler_output
    if isinstance(features, (list, tuple)):
        features = torch.stack(list(features))
    return features.reshape(pixels.shape[0], -1, features.shape[-1]).numpy()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| / max |want|: the parity figure."""
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-12))


def parity(model, onnx_path: Path, images: int = 4, seed: int = 0) -> float:
    """Relative error of the ONNX graph against torch on fresh random images (normalised pixel space)."""
    import onnxruntime as ort

    size = model.config.vision_config.image_size
    pixels = np.random.default_rng(seed).normal(size=(images, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {INPUT: pixels})[0]
    return relative_error(got, torch_embeddings(model, pixels))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.vision",
        description="Export a LLaVA checkpoint's vision tower + projector to ONNX and report its parity with torch. "
        "python -m export.quantize builds the whole bundle; this is the step on its own.",
        epilog="example: python -m export.vision --model runs/rt-merged --out runs/vision.onnx --precision fp16",
    )
    parser.add_argument("--model", type=Path, required=True, help="HF LLaVA checkpoint directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        from training.model import load_llava

        model, _ = load_llava(args.model)
        export_onnx(model, args.out, args.precision, args.opset)
        print(f"{args.out}: relative error vs torch {parity(model, args.out):.2e} ({args.precision})")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
