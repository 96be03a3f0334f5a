"""A learning-free grasp baseline: segment the object, grasp across its principal axis.

The object is every pixel whose colour is far from the image border's median
colour; the grasp is centred on its centroid with the closing axis along the
minor principal axis (across the object). It needs no training and gives the
metric and the demo something honest to score before a model exists.

    python -m training.baseline --root runs/toy --out runs/toy-baseline.jsonl --vis runs/toy-vis
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.grasp import GraspPose
from training.progress import progress_bar

from .datasets import GraspDataset, GraspSample, open_dataset
from .datasets.referring import Instruction
from .visualize import GREEN, RED, draw_grasps

COLOUR_THRESHOLD = 40.0  # RGB distance from the background colour
BORDER = 4  # pixels of border used to estimate the background
DEPTH_STEP = 0.01
"""Metres above the table that count as an object. Chosen on a validation set (synth --seed 31415, 100 images,
every instruction; never a test set): 3 mm 55.6 / 48.4 %, 5 mm 63.3 / 56.1 %, 7.5 mm and 1 cm 68.4 / 62.8 %,
1.5 cm 68.4 / 56.9 % (rectangle / part metric). Of the tied two, the higher threshold: a real depth camera's
noise is millimetres. A knife's 4 mm blade then falls below it: the rule sees the handle."""
MIN_BLOB = 30  # pixels: smaller blobs are noise


def predict(image: np.ndarray) -> GraspPose:
    """Grasp pose across the principal axis of the image's colour foreground (the ``colour`` baseline)."""
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    border = np.concatenate(
        [
            pixels[:BORDER].reshape(-1, 3),
            pixels[-BORDER:].reshape(-1, 3),
            pixels[:, :BORDER].reshape(-1, 3),
            pixels[:, -BORDER:].reshape(-1, 3),
        ]
    )
    distance = np.linalg.norm(pixels - np.median(border, axis=0), axis=2)
    ys, xs = np.nonzero(distance > COLOUR_THRESHOLD)
    return principal_grasp(xs, ys, (w, h))


def predict_depth(depth: np.ndarray, step: float = DEPTH_STEP) -> GraspPose:
    """The ``floor``: grasp across the principal axis of the largest blob standing above the table."""
    h, w = depth.shape
    border = np.concatenate([depth[:BORDER].ravel(), depth[-BORDER:].ravel(), depth[:, :BORDER].ravel()])
    border = np.concatenate([border, depth[:, -BORDER:].ravel()])
    table = np.nanmedian(border)
    if not np.isfinite(table):
        raise ValueError("the depth image's border has no reading: no table plane to stand on")
    with np.errstate(invalid="ignore"):
        mask = depth < table - step
    blobs = [b for b in label_blobs(mask) if len(b[0]) >= MIN_BLOB]
    if not blobs:
        return GraspPose(0.5, 0.5, 0.0)  # nothing found: the centre, as a guess
    ys, xs = max(blobs, key=lambda b: len(b[0]))
    return principal_grasp(xs, ys, (w, h))


def label_blobs(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected foreground blobs of a boolean mask, each as (rows, columns)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    blobs = []
    for start in np.flatnonzero(mask):
        if seen.flat[start]:
            continue
        seen.flat[start] = True
        stack, members = [int(start)], []
        while stack:
            i = stack.pop()
            members.append(i)
            r, c = divmod(i, w)
            for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= nr < h and 0 <= nc < w and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    stack.append(nr * w + nc)
        rows, cols = np.divmod(np.array(members), w)
        blobs.append((rows, cols))
    return blobs


def principal_grasp(xs: np.ndarray, ys: np.ndarray, size: tuple[int, int]) -> GraspPose:
    """Centroid of the pixels, closing along their minor principal axis (across the object)."""
    w, h = size
    if len(xs) < 3:
        return GraspPose(0.5, 0.5, 0.0)  # nothing found: the centre, as a guess
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    minor = eigenvectors[:, 0]  # smallest spread: across the object
    theta = math.atan2(-minor[1], minor[0])
    return GraspPose(float((cx + 0.5) / w), float((cy + 0.5) / h), theta)


Predictor = Callable[[GraspSample, Instruction | None], GraspPose | None]


def floor_predictor(step: float = DEPTH_STEP) -> Predictor:
    def floor(sample: GraspSample, instruction) -> GraspPose:
        if sample.depth is None:
            raise ValueError(f"{sample.image_id} has no depth image: the floor reads depth (try --kind colour)")
        return predict_depth(sample.depth, step)

    return floor


def colour_predictor() -> Predictor:
    return lambda sample, instruction: predict(sample.image)


def oracle_predictor(dataset: GraspDataset) -> Predictor:
    def oracle(sample: GraspSample, instruction) -> GraspPose | None:
        if instruction is not None and instruction.kind == "absent":
            return None
        labels = dataset.instruction_labels(instruction) if instruction is not None else sample.labels
        if not labels.positives:
            raise ValueError(f"{sample.image_id}: no labelled grasp of the target")
        return GraspPose.from_rectangle(labels.positives[len(labels.positives) // 2], labels.image_size)

    return oracle


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is a bundle (its manifest), not a vision-stage checkpoint."""
    from appliance.bundle import MANIFEST_FILE

    return (Path(path) / MANIFEST_FILE).is_file()


def heads_source(source: Path, size: int = 224, crop: int | None = 320):
    """The vision stage's heads on one camera sample: (sample → their outputs, a batch of one as
    ``stages.heads_outputs`` gives them; the patch grid; the identity head's classes; the model's view). ``source``
    is a vision-stage checkpoint (torch), or a bundle whose graph carries the heads' maps (``export.quantize
    --target-check``: onnxruntime, no torch checkpoint needed, ``size`` and ``crop`` the manifest's): the same
    heads, exported (``target_check_max_error`` in its manifest)."""
    from .view import ModelView

    if is_bundle(source):
        return _bundle_heads(Path(source).resolve())
    from .datasets.augment import center_crop
    from .model import load_llava
    from .stages import heads_outputs, identity_classes

    model, processor = load_llava(source)
    outputs = heads_outputs(source, model, processor)
    vit = model.model.vision_tower
    view = ModelView(size=size, crop=crop)

    def run(sample: GraspSample) -> dict:
        return outputs(center_crop(sample, view.crop, (view.size, view.size)).image)

    return run, vit.config.image_size // vit.config.patch_size, identity_classes(), view


@functools.cache
def _bundle_heads(bundle: Path):
    """``heads_source`` of a bundle: one read of the bundle and one graph session for every baseline of a run."""
    import torch

    from appliance.bundle import read_bundle
    from appliance.runtime.preprocess import prepare
    from appliance.runtime.vision import VisionEncoder

    from .stages import PATCH_ANGLE, PATCH_CENTER, PATCH_IDENTITY, PATCH_OFFSET
    from .view import ModelView

    manifest = read_bundle(bundle)
    spec = manifest.target_check
    if spec is None:
        raise ValueError(f"{bundle}: the bundle has no target check, so its graph gives no heads' maps (a cnn baseline "
                         "needs them, or a vision-stage checkpoint)")  # fmt: skip
    encoder = VisionEncoder(bundle / manifest.vision, providers=("CPUExecutionProvider",))

    def run(sample: GraspSample) -> dict:  # each predictor keeps the maps of the image it is on
        _, extra = encoder.encode(prepare(sample.image, manifest.image)[1])
        grasp = torch.from_numpy(np.asarray(extra[spec.grasp], np.float32))[None]
        identity = torch.from_numpy(np.asarray(extra[spec.identity], np.float32))[None]
        return {
            PATCH_CENTER: grasp[..., 0],
            PATCH_OFFSET: grasp[..., 1:3],
            PATCH_ANGLE: grasp[..., 3:5],
            PATCH_IDENTITY: identity,  # probabilities, not logits: the same argmax
        }

    view = ModelView(size=manifest.image.size, crop=manifest.image.crop)
    return run, spec.grid, list(manifest.presence.classes), view


def cnn_predictor(source: Path, size: int = 224, crop: int | None = 320) -> Predictor:
    """The vision stage's grasp heads (``heads_source``: a checkpoint or a bundle) on the model's view, mapped back
    onto the camera image."""
    from .judging import to_camera
    from .stages import predict_pose

    outputs, grid, _, view = heads_source(source, size, crop)
    cache: dict[str, GraspPose] = {}

    def cnn(sample: GraspSample, instruction) -> GraspPose:
        if sample.image_id not in cache:  # instruction-blind: one pose per image
            cache[sample.image_id] = to_camera(predict_pose(outputs(sample), grid), view, sample.image_size)
        return cache[sample.image_id]

    return cnn


def cnn_told_predictor(dataset: GraspDataset, source: Path, size: int = 224, crop: int | None = 320) -> Predictor:
    """The vision stage's heads told the category of the object meant (``stages.told_pose``): an upper bound on
    what a decoder reading these vision tokens can find, not a baseline (it is given the answer's object).
    Unreferred images fall back to the plain heads."""
    from .judging import to_camera
    from .stages import predict_pose, told_pose

    outputs, grid, classes, view = heads_source(source, size, crop)
    cache: dict[str, dict] = {}

    def cnn_told(sample: GraspSample, instruction) -> GraspPose | None:
        if instruction is not None and instruction.target is None:
            return None  # absent: told there is nothing, it refuses
        scene = dataset.scene(sample.image_id)
        category = scene.objects[instruction.target]["category"] if instruction and scene else None
        if category is not None and category not in classes:
            raise ValueError(f"unknown category {category!r}")
        if sample.image_id not in cache:
            cache.clear()  # one image at a time: its instructions come together
            cache[sample.image_id] = outputs(sample)
        out = cache[sample.image_id]
        pose = predict_pose(out, grid) if category is None else told_pose(out, grid, classes.index(category))
        return to_camera(pose, view, sample.image_size)

    return cnn_told


def words_categories(instruction: str) -> tuple[set[str], bool]:
    """The categories an instruction's words point to, and whether it names one: the object it asks for by name
    (``CategoryNames.requested``: "the pink ball"), else the objects the hints' knowledge gives its use ("something
    to cut with": a knife, scissors), else none ("the object on the left"). The bundle's own rules, no model."""
    names, knowledge = _words()
    requested = names.requested(instruction)
    if requested is not None:
        return {requested[1]}, True
    return {c for o in knowledge.objects_for(instruction) if (c := names.first(o)) is not None}, False


@functools.cache
def _words():
    """The category names and the hints' knowledge a bundle of these templates carries."""
    from appliance.runtime.objects import CategoryNames

    from .reasoning import load_templates
    from .reasoning.referring import load_referring, use_knowledge

    return CategoryNames(load_templates().vocabulary()), use_knowledge(load_templates(), load_referring())


def cnn_words_predictor(source: Path, size: int = 224, crop: int | None = 320) -> Predictor:
    """The vision stage's heads told the categories the instruction's words point to (``words_categories``): the
    best grasp among the patches the identity head gives one of them. An instruction that names an object no
    patch shows is refused; one whose words point nowhere gets the instruction-blind heads. A rule a robot can run
    (the hints' lookup and the category names are the bundle's), so a baseline the model must beat."""
    from .judging import to_camera

    outputs, grid, classes, view = heads_source(source, size, crop)
    cache: dict[str, dict] = {}

    def cnn_words(sample: GraspSample, instruction) -> GraspPose | None:
        if sample.image_id not in cache:
            cache.clear()  # one image at a time: its instructions come together
            cache[sample.image_id] = outputs(sample)
        pose = words_pose(cache[sample.image_id], grid, classes, instruction.text if instruction else None)
        return None if pose is None else to_camera(pose, view, sample.image_size)

    return cnn_words


def words_pose(out: dict, grid: int, classes: list[str], instruction: str | None) -> GraspPose | None:
    """``cnn-words`` on the heads' outputs of one image (the model's view): the best grasp among the patches the
    identity head gives a category the instruction's words point to; None (a refusal) when it names an object no
    patch shows; the blind heads' grasp when its words point nowhere or only to objects no patch shows."""
    from .stages import PATCH_IDENTITY, predict_pose, told_pose

    wanted, named = words_categories(instruction) if instruction is not None else (set(), False)
    indices = {classes.index(c) for c in wanted if c in classes}
    if indices & set(out[PATCH_IDENTITY][0].argmax(-1).tolist()):
        return told_pose(out, grid, indices)
    return None if named else predict_pose(out, grid)


@dataclass(frozen=True)
class BaselineOptions:
    """What some baselines need: the cnn's checkpoint and crop, the floor's height above the table."""

    checkpoint: Path | None = None
    crop: int | None = 320
    depth_step: float = DEPTH_STEP


# name -> builder(dataset, options); only cnn reads a checkpoint (and imports torch)
BASELINES: dict[str, Callable[[GraspDataset, BaselineOptions], Predictor]] = {
    "floor": lambda dataset, options: floor_predictor(options.depth_step),
    "colour": lambda dataset, options: colour_predictor(),
    "cnn": lambda dataset, options: cnn_predictor(_needs(options.checkpoint), crop=options.crop),
    "cnn-told": lambda dataset, options: cnn_told_predictor(dataset, _needs(options.checkpoint), crop=options.crop),
    "cnn-words": lambda dataset, options: cnn_words_predictor(_needs(options.checkpoint), crop=options.crop),
    "oracle": lambda dataset, options: oracle_predictor(dataset),
}
KINDS = tuple(BASELINES)


def _needs(checkpoint: Path | None) -> Path:
    if checkpoint is None:
        raise ValueError(
            "the cnn baseline needs --checkpoint: a vision-stage checkpoint with vision_heads.safetensors, or a bundle "
            "exported with the target check"
        )
    return checkpoint


def make_predictor(kind: str, dataset: GraspDataset, options: BaselineOptions = BaselineOptions()) -> Predictor:
    """The predictor of a baseline kind (``cnn`` needs a vision-stage checkpoint)."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; known: {', '.join(KINDS)}")
    if options.depth_step <= 0:
        raise ValueError(f"the floor's depth step must be positive, got {options.depth_step}")
    return BASELINES[kind](dataset, options)


def run_baseline(predictor: Predictor, dataset: GraspDataset, items, progress: bool = False, desc: str = "baseline"):
    """Predict every (image, instruction) item: a list of (image, instruction, pose or None for a refusal)."""
    out, sample = [], None
    for image_id, instruction in progress_bar(items, desc=desc, unit="req", disable=not progress):
        if sample is None or sample.image_id != image_id:
            sample = dataset.load(image_id)
        out.append((image_id, instruction, predictor(sample, instruction)))
    return out


def baseline_summary(dataset: GraspDataset, predictions) -> dict:
    """Both metrics and the target rate of a baseline's predictions (``training.metric.grade``)."""
    from .metric import grade

    grades = [grade(dataset, image_id, pose, instruction) for image_id, instruction, pose in predictions]

    def share(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {
        "accuracy": share(g.rectangle for g in grades) or 0.0,
        "part_accuracy": share(g.part for g in grades),
        "target_rate": share(g.on_target for g in grades),
        "n": len(grades),
    }


def items_of(dataset: GraspDataset, limit: int | None = None) -> list:
    """(image, instruction) pairs: every instruction of the first ``limit`` images, or every image."""
    ids = dataset.ids[:limit] if limit else dataset.ids
    if not dataset.instructions:
        return [(i, None) for i in ids]
    chosen = set(ids)
    return [(i.image, i) for i in dataset.instructions if i.image in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.baseline",
        description="Predict grasps with a baseline (floor: depth blob; colour: colour blob; cnn: the vision "
        "stage's instruction-blind heads; cnn-words: those heads told the categories the instruction's words name "
        "(a name, or the hints' objects for a use), a rule a robot can run; cnn-told: those heads told the target's "
        "category, an upper bound on what the vision tokens carry, not a baseline; oracle: a labelled grasp of the target); writes the JSONL that "
        "python -m training.metric scores, one line per instruction when the root has instructions.jsonl.",
        epilog="examples:\n  python -m training.baseline --root data/clutter --kind floor --out runs/floor.jsonl\n"
        "  python -m training.baseline --root data/clutter --kind cnn --checkpoint runs/dm3/vision/checkpoint-001500 "
        "--out runs/cnn.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    parser.add_argument("--kind", choices=KINDS, default="floor", help="which baseline (default floor)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        help="with --kind cnn, cnn-words or cnn-told: a vision-stage checkpoint, or a bundle exported with the target "
        "check (its graph carries the same heads; no torch checkpoint needed)",
    )
    parser.add_argument(
        "--crop",
        type=int,
        default=320,
        help="with --kind cnn and a checkpoint: the square crop it was trained on (a bundle's manifest says its own)",
    )
    parser.add_argument(
        "--depth-step",
        type=float,
        default=DEPTH_STEP,
        help=f"with --kind floor: metres above the table that count as an object (default {DEPTH_STEP})",
    )
    parser.add_argument("--vis", type=Path, help="write PNGs: prediction red, ground truth green")
    parser.add_argument("--limit", type=int, help="only the first N images")
    args = parser.parse_args(argv)
    try:
        ds = open_dataset(args.root)
        predictor = make_predictor(args.kind, ds, BaselineOptions(args.checkpoint, args.crop, args.depth_step))
        predictions = run_baseline(predictor, ds, items_of(ds, args.limit), progress=True, desc=args.kind)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.vis:
        args.vis.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for image_id, instruction, pose in predictions:
            row = {"image": image_id} | ({"instruction": instruction.id} if instruction else {})
            row |= {"refused": True} if pose is None else {"x": pose.x, "y": pose.y, "theta": pose.theta}
            out.write(json.dumps(row) + "\n")
            if args.vis and pose is not None:
                _draw(args.vis, ds, image_id, instruction, pose)
    print(f"wrote {len(predictions)} {args.kind} predictions to {args.out}")
    return 0


def _draw(vis: Path, ds: GraspDataset, image_id: str, instruction, pose: GraspPose) -> None:
    sample = ds.load(image_id, with_depth=False)
    truths = ds.instruction_labels(instruction).positives if instruction else sample.positives
    truth = truths[0] if truths else None
    size = (truth.length, truth.width) if truth else (40.0, 15.0)
    canvas = draw_grasps(sample.image, truths, GREEN)
    name = instruction.id if instruction else image_id
    draw_grasps(canvas, [pose.to_rectangle(sample.image_size, *size)], RED).save(vis / f"{name}.png")


if __name__ == "__main__":
    sys.exit(main())
