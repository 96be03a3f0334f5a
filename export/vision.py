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

With ``heads`` (a vision-stage checkpoint, ``--heads``), the graph has a second output, ``object_patches``
(N, categories): how many of the image's patches the stage's identity head gives each category, in expected
value (its softmax summed over the patches). The appliance reads it to refuse an instruction that names
something not on the table (``appliance.runtime.presence``). The heads read the tower's last hidden state; the
tower must be the very one they were trained with (checked, up to bfloat16 rounding).

Precisions: ``fp32`` (the reference), ``fp16`` (weights and activations,
inputs/outputs kept fp32: for a GPU), ``int8`` (dynamic weight quantisation
of MatMul/Gemm: for a CPU). ``parity`` measures each against torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.bundle import PART_GRASP_FIELDS, PATCH_COLOUR, PATCH_GRASP, PATCH_IDENTITY, PATCH_PART_GRASP, PATCH_PARTS

log = logging.getLogger(__name__)

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8")
INPUT, OUTPUT = "pixel_values", "image_embeds"
PRESENCE = "object_patches"
TOWER_TOLERANCE = 2.0**-7
"""Elementwise relative difference allowed between the exported tower and the heads' own: a tower stored in
bfloat16 and read back (at most 2⁻⁸ off) is the same tower; one trained further is not."""


@dataclass(frozen=True)
class PresenceHead:
    """The vision stage's identity head: per patch, which category it shows (the table's class dropped)."""

    weight: np.ndarray
    """(classes + 1, hidden): the categories, then the table."""
    bias: np.ndarray
    classes: tuple[str, ...]
    """The category names, in the head's order."""
    source: str
    grasp_weight: np.ndarray | None = None
    """(5, hidden): the grasp heads (centre logit, offset x/y, cos 2θ, sin 2θ), for the target check's maps."""
    grasp_bias: np.ndarray | None = None
    colour_weight: np.ndarray | None = None
    """(colours + 1, hidden): the colour head (``training.stages.COLOURS``, then no word); None in vision stages
    trained before it."""
    colour_bias: np.ndarray | None = None


def presence_head(checkpoint: Path, model) -> PresenceHead:
    """The identity head of a vision-stage checkpoint, after checking that ``model``'s vision tower is the one
    the head was trained on. ``ValueError`` says what does not match."""
    from safetensors import safe_open

    from training.stages import COLOURS, HEADS_FILE, identity_classes

    checkpoint = Path(checkpoint)
    heads_file, weights_file = checkpoint / HEADS_FILE, checkpoint / "model.safetensors"
    for path in (heads_file, weights_file):
        if not path.is_file():
            raise ValueError(f"--heads {checkpoint}: no {path.name} (give the vision stage's checkpoint)")
    with safe_open(str(heads_file), "np") as f:
        if "identity.weight" not in f.keys():
            raise ValueError(f"--heads {checkpoint}: its heads have no identity head (an older vision stage)")
        weight, bias = f.get_tensor("identity.weight"), f.get_tensor("identity.bias")
        grasp_weight, grasp_bias = f.get_tensor("grasp.weight"), f.get_tensor("grasp.bias")
        colour = (f.get_tensor("colour.weight"), f.get_tensor("colour.bias")) if "colour.weight" in f.keys() else None
    classes = tuple(identity_classes())
    if weight.shape[0] != len(classes) + 1:
        raise ValueError(
            f"--heads {checkpoint}: the identity head has {weight.shape[0]} classes, these templates make "
            f"{len(classes)} categories + the table"
        )
    tower = {k: v.detach().float().numpy() for k, v in model.model.vision_tower.state_dict().items()}
    width = model.config.vision_config.hidden_size
    if weight.shape[1] != width:
        raise ValueError(f"--heads {checkpoint}: the identity head reads width {weight.shape[1]}, the tower {width}")
    with safe_open(str(weights_file), "np") as f:
        theirs = {k.split("vision_tower.", 1)[1]: k for k in f.keys() if "vision_tower." in k}
        if set(theirs) != set(tower):
            raise ValueError(f"--heads {checkpoint}: its vision tower has other parameters than the model's")
        for name, mine in tower.items():
            their = f.get_tensor(theirs[name]).astype(np.float32)
            if their.shape != mine.shape or np.any(np.abs(mine - their) > TOWER_TOLERANCE * np.abs(their) + 1e-6):
                raise ValueError(
                    f"--heads {checkpoint}: the model's vision tower differs from the one its heads were trained "
                    f"on (first at {name}): export with the vision stage the model was built on"
                )
    if colour is not None and colour[0].shape != (len(COLOURS) + 1, width):
        raise ValueError(f"--heads {checkpoint}: the colour head is {colour[0].shape}, not {len(COLOURS) + 1} words")
    return PresenceHead(weight, bias, classes, str(checkpoint), grasp_weight, grasp_bias, *(colour or ()))


@dataclass(frozen=True)
class PartMaps:
    """The part head (``training.parts``): per patch token, a hidden layer (GELU) and one logit per part of
    ``classes`` (the graph gives their sigmoids: does the patch hold a grasp on that part); with ``place_weight``,
    where in the patch each part's grasp is (the graph's ``patch_part_grasp``)."""

    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    out_weight: np.ndarray
    out_bias: np.ndarray
    classes: tuple[str, ...]
    source: str
    place_weight: np.ndarray | None = None
    """(classes × ``PART_GRASP_FIELDS``, width), None for a head trained before placements."""
    place_bias: np.ndarray | None = None


def part_maps(directory: Path, heads: Path) -> PartMaps:
    """The part head saved in ``directory``, after checking that it was trained on the vision-stage checkpoint
    ``heads`` (the same weights file). ``ValueError`` says what does not match."""
    import json

    from safetensors import safe_open

    from appliance.bundle import sha256_file
    from training.parts import PARTS_FILE, PARTS_META

    directory, heads = Path(directory), Path(heads)
    for name in (PARTS_FILE, PARTS_META):
        if not (directory / name).is_file():
            raise ValueError(f"--parts {directory}: no {name} (give the output of python -m training.parts)")
    meta = json.loads((directory / PARTS_META).read_text())
    if meta.get("vision_sha256") != sha256_file(heads / "model.safetensors"):
        raise ValueError(
            f"--parts {directory}: the part head was trained on another vision stage than --heads {heads} "
            f"({meta.get('model')}): train it on the one the bundle is exported with"
        )
    with safe_open(str(directory / PARTS_FILE), "np") as f:
        names = set(f.keys())
        placing = {"place.weight", "place.bias"} & names
        if len(placing) == 1:
            raise ValueError(f"--parts {directory}: {placing.pop()} without its pair (python -m training.parts again)")
        wanted = ("hidden.weight", "hidden.bias", "out.weight", "out.bias", *sorted(placing))
        tensors = {k: f.get_tensor(k) for k in wanted}
    classes = tuple(meta.get("classes") or ())
    if meta.get("activation") != "sigmoid":
        raise ValueError(f"--parts {directory}: a part head of an older format (python -m training.parts again)")
    if tensors["out.weight"].shape[0] != len(classes) or not classes:
        raise ValueError(f"--parts {directory}: {tensors['out.weight'].shape[0]} outputs for {len(classes)} classes")
    place = tensors.get("place.weight")
    if place is not None and (
        place.shape[0] != len(classes) * PART_GRASP_FIELDS or tensors["place.bias"].shape != (place.shape[0],)
    ):
        raise ValueError(
            f"--parts {directory}: {place.shape[0]} placement outputs, not {PART_GRASP_FIELDS} for each of "
            f"{len(classes)} classes"
        )
    return PartMaps(
        tensors["hidden.weight"], tensors["hidden.bias"], tensors["out.weight"], tensors["out.bias"],
        classes, str(directory), place, tensors.get("place.bias"),
    )  # fmt: skip


def has_colour(presence: PresenceHead | None) -> bool:
    """Whether the vision stage's heads have a colour head (the graph's ``patch_colour`` with the patch maps)."""
    return presence is not None and presence.colour_weight is not None


def map_outputs(presence: PresenceHead | None, maps: bool, parts: PartMaps | None) -> list[str]:
    """The graph's patch-map outputs, in order: identity and grasp, the part map (and its placements), the colour
    map."""
    if not maps:
        return []
    part_maps = [] if parts is None else [PATCH_PARTS] + [PATCH_PART_GRASP] * (parts.place_weight is not None)
    return [PATCH_IDENTITY, PATCH_GRASP] + part_maps + [PATCH_COLOUR] * has_colour(presence)


def vision_embedder(model, presence: PresenceHead | None = None, maps: bool = False, parts: PartMaps | None = None):
    """A torch module: pixel_values → image embeddings exactly as the LLaVA model computes them (and, with
    ``presence``, the expected patches per category; with ``maps`` too, the per-patch identity probabilities and
    grasp values, then with ``parts`` the part map, then where the heads have one the colour head's probabilities:
    ``map_outputs``)."""
    import torch

    config = model.config
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    tower.float(), projector.float()  # only these: a 7B model's language half would take 28 GB in float32
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    drop_cls = config.vision_feature_select_strategy == "default"

    if maps and presence is None:
        raise ValueError("the patch maps need the vision stage's heads")
    if parts is not None and not maps:
        raise ValueError("the part map goes with the patch maps (the target check)")

    def linear(weight: np.ndarray, bias: np.ndarray):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
        layer.weight.data = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
        layer.bias.data = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
        return layer

    identity = None if presence is None else linear(presence.weight, presence.bias)
    grasp = linear(presence.grasp_weight, presence.grasp_bias) if maps else None
    colour = linear(presence.colour_weight, presence.colour_bias) if maps and has_colour(presence) else None
    part_layers = place = None
    if parts is not None:
        part_layers = torch.nn.Sequential(linear(parts.hidden_weight, parts.hidden_bias), torch.nn.GELU())
        part_out = linear(parts.out_weight, parts.out_bias)
        if parts.place_weight is not None:
            place = linear(parts.place_weight, parts.place_bias)

    class VisionEmbedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tower, self.projector, self.identity, self.grasp = tower, projector, identity, grasp
            self.parts, self.colour = part_layers, colour
            self.part_out, self.place = (part_out, place) if part_layers is not None else (None, None)

        def forward(self, pixel_values):
            out = self.tower(pixel_values, output_hidden_states=True)
            hidden = out.hidden_states
            features = torch.cat([hidden[i] for i in layers], dim=-1)
            if drop_cls:
                features = features[:, 1:]
            embeds = self.projector(features)
            if self.identity is None:
                return embeds
            patches = out.last_hidden_state[:, 1:]  # the heads skip CLS too
            shown = self.identity(patches).softmax(-1)
            counts = shown[..., :-1].sum(dim=1)  # the table's class dropped
            if self.grasp is None:
                return embeds, counts
            g = self.grasp(patches)  # as training.stages.PatchHeads reads its grasp head
            values = torch.cat([g[..., :1], torch.sigmoid(g[..., 1:3]), torch.tanh(g[..., 3:5])], dim=-1)
            out = (embeds, counts, shown, values)
            if self.parts is not None:
                features = self.parts(patches)
                out += (torch.sigmoid(self.part_out(features)),)
                if self.place is not None:  # as training.parts.PartHead.both
                    raw = self.place(features).unflatten(-1, (-1, PART_GRASP_FIELDS))
                    out += (torch.cat([torch.sigmoid(raw[..., :2]), torch.tanh(raw[..., 2:])], dim=-1),)
            if self.colour is not None:
                out += (self.colour(patches).softmax(-1),)
            return out

    return VisionEmbedder().eval()


def export_onnx(
    model,
    out: Path,
    precision: str = "fp32",
    opset: int = OPSET,
    presence: PresenceHead | None = None,
    maps: bool = False,
    parts: PartMaps | None = None,
) -> Path:
    """Export the vision embedder (dynamic batch; with ``presence`` its second output, with ``maps`` the patch
    maps too) and convert it to ``precision``; atomic write."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if opset < 17:
        raise ValueError("opset must be >= 17")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    size = model.config.vision_config.image_size
    embedder = vision_embedder(model, presence, maps, parts)
    outputs = [OUTPUT] + ([PRESENCE] if presence is not None else []) + map_outputs(presence, maps, parts)
    example = torch.zeros(1, 3, size, size)
    fp32 = out.with_name(f".{out.stem}.fp32.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about shape checks that are constant for a fixed size
        torch.onnx.export(
            embedder,
            (example,),
            str(fp32),
            input_names=[INPUT],
            output_names=outputs,
            opset_version=opset,
            dynamic_axes={INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
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


def presence_parity(model, onnx_path: Path, presence: PresenceHead, images: int = 4, seed: int = 0) -> float:
    """Largest difference (patches) between the graph's ``object_patches`` and torch's, on random images."""
    got, (hidden, probs) = _graph_and_heads(model, onnx_path, presence, [PRESENCE], images, seed)
    return float(np.abs(got[0] - probs[..., :-1].sum(1)).max())


def _graph_and_heads(model, onnx_path: Path, heads: PresenceHead, names: list[str], images: int, seed: int):
    """The graph's outputs ``names`` on random images, and for the same images torch's tower's patch states and the
    identity head's probabilities, in float64."""
    import onnxruntime as ort
    import torch

    size = model.config.vision_config.image_size
    pixels = np.random.default_rng(seed).normal(size=(images, 3, size, size)).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(names, {INPUT: pixels})
    with torch.no_grad():
        hidden = model.model.vision_tower.float()(torch.from_numpy(pixels)).last_hidden_state[:, 1:].numpy()
    hidden = hidden.astype(np.float64)
    logits = hidden @ heads.weight.T.astype(np.float64) + heads.bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return got, (hidden, probs / probs.sum(-1, keepdims=True))


def maps_parity(model, onnx_path: Path, heads: PresenceHead, images: int = 4, seed: int = 0) -> float:
    """Largest difference between the graph's patch maps (identity probabilities, grasp values) and the heads'
    own arithmetic on torch's tower, on random images."""
    (identity, grasp), (hidden, probs) = _graph_and_heads(
        model, onnx_path, heads, [PATCH_IDENTITY, PATCH_GRASP], images, seed
    )
    g = hidden @ heads.grasp_weight.T.astype(np.float64) + heads.grasp_bias
    values = np.concatenate([g[..., :1], 1 / (1 + np.exp(-g[..., 1:3])), np.tanh(g[..., 3:5])], axis=-1)
    return float(max(np.abs(identity - probs).max(), np.abs(grasp - values).max()))


def parts_parity(model, onnx_path: Path, heads: PresenceHead, parts: PartMaps, images: int = 4, seed: int = 0):
    """Largest difference between the graph's part map (and placements) and the part head's own arithmetic on
    torch's tower."""
    from math import erf, sqrt

    placed = parts.place_weight is not None
    outputs = [PATCH_PARTS] + [PATCH_PART_GRASP] * placed
    got, (hidden, _) = _graph_and_heads(model, onnx_path, heads, outputs, images, seed)
    h = hidden @ parts.hidden_weight.T.astype(np.float64) + parts.hidden_bias
    h = h * 0.5 * (1 + np.vectorize(erf)(h / sqrt(2)))  # GELU, exact
    logits = h @ parts.out_weight.T.astype(np.float64) + parts.out_bias
    error = float(np.abs(got[0] - 1 / (1 + np.exp(-logits))).max())
    if placed:
        raw = h @ parts.place_weight.T.astype(np.float64) + parts.place_bias
        raw = raw.reshape(*raw.shape[:-1], len(parts.classes), PART_GRASP_FIELDS)  # class-major, as the head's
        want = np.concatenate([1 / (1 + np.exp(-raw[..., :2])), np.tanh(raw[..., 2:])], axis=-1)
        error = max(error, float(np.abs(got[1] - want).max()))
    return error


def colour_parity(model, onnx_path: Path, heads: PresenceHead, images: int = 4, seed: int = 0) -> float:
    """Largest difference between the graph's colour map and the colour head's own arithmetic on torch's tower."""
    (got,), (hidden, _) = _graph_and_heads(model, onnx_path, heads, [PATCH_COLOUR], images, seed)
    logits = hidden @ heads.colour_weight.T.astype(np.float64) + heads.colour_bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return float(np.abs(got - probs / probs.sum(-1, keepdims=True)).max())


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
