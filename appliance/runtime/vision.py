"""The vision tower in onnxruntime: pixel tensor → image embeddings, on the best provider present.

Providers are tried in the order TensorRT → CUDA → CPU; the ones onnxruntime
really activated are logged and kept in ``active`` (a TensorRT or CUDA build
that fails to initialise silently falls back, and a user must see that).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
INPUT, OUTPUT = "pixel_values", "image_embeds"
PRESENCE = "object_patches"
"""An optional output: expected patches per category (``runtime.presence``)."""


def provider_list(wanted, available, trt_cache: Path | None = None) -> list:
    """The wanted providers that this onnxruntime has, in order, CPU always last (with options)."""
    chosen = []
    for name in wanted:
        if name not in available or name in [c if isinstance(c, str) else c[0] for c in chosen]:
            continue
        if name == "TensorrtExecutionProvider" and trt_cache is not None:
            chosen.append(
                (
                    name,
                    {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache)},
                )
            )
        else:
            chosen.append(name)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


class VisionEncoder:
    """An onnxruntime session of ``vision.onnx``."""

    def __init__(self, path: Path, providers=PROVIDERS, threads: int = 0, trt_cache: Path | None = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.log_severity_level = 3
        chosen = provider_list(providers, ort.get_available_providers(), trt_cache)
        self.session = ort.InferenceSession(str(path), options, providers=chosen)
        self.active = tuple(self.session.get_providers())
        names = [o.name for o in self.session.get_outputs()]
        if OUTPUT not in names:
            raise ValueError(f"{path}: the graph has no {OUTPUT!r} output ({', '.join(names)})")
        self.outputs = [OUTPUT] + [name for name in names if name != OUTPUT]
        self.shapes = {o.name: tuple(o.shape[1:]) for o in self.session.get_outputs()}
        """Each output's shape for one image (the batch axis left out)."""
        self.has_presence = PRESENCE in names
        log.info(
            "vision tower on %s (asked for %s)",
            ", ".join(self.active),
            ", ".join(p if isinstance(p, str) else p[0] for p in chosen),
        )

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Embeddings (tokens, width) of one image's pixel tensor (1, 3, H, W)."""
        return self.encode(pixels)[0]

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Embeddings (tokens, width) of one image's pixel tensor (1, 3, H, W), and the graph's other outputs for
        that image by name (``PRESENCE``, the target check's patch maps, where it has them): one run."""
        if pixels.ndim != 4 or pixels.shape[0] != 1:
            raise ValueError(f"expected one image (1, 3, H, W), got {pixels.shape}")
        got = self.session.run(self.outputs, {INPUT: pixels.astype(np.float32, copy=False)})
        return got[0][0], {name: value[0] for name, value in zip(self.outputs[1:], got[1:])}
