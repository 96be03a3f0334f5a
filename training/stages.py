"""Base-building stages for a LLaVA built from scratch: what CLIP and LLaMA pretraining gave the real one.

- ``vision``: the ViT learns grasps directly, with per-patch heads (which patch
  holds a grasp centre, the offset inside it, cos 2θ / sin 2θ) and the object's
  category from pooled tokens, on freshly augmented views every step. Its
  position embeddings start as fixed 2D sin-cos (a tiny ViT trained from
  scratch needs them). The heads are a GR-ConvNet-style baseline of their own.
- ``language``: the decoder learns our text corpus (reasoning, instructions,
  answers) as a causal language model.

    python -m training.train --strategy vision --model runs/tiny-base --data data/synth --out runs/tiny-vision
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Collection

import numpy as np
import torch
from torch import nn

from appliance.answer import AnswerFormat, AnswerVariant
from appliance.grasp import GraspPose, wrap_angle
from appliance.sim.clutter import HUE_WORDS

from .datasets.augment import Augmentation
from .datasets.referring import with_scene

PATCH_CENTER, PATCH_OFFSET, PATCH_ANGLE, PATCH_WHERE, PATCH_DIGITS = "center", "offset", "angle", "where", "digits"
PATCH_IDENTITY, PATCH_COLOUR = "identity", "colour"
COLOURS = tuple(dict.fromkeys(word for _, _, word in HUE_WORDS))
"""The colour words scenes use (``appliance.sim.clutter``); the colour head's last class is 'no word'."""
HEADS_FILE = "vision_heads.safetensors"
"""The vision stage's heads, saved in each of its checkpoints beside the LLaVA weights."""
IDENTITY_SHARE = 0.3
"""A patch shows an object when that object covers at least this share of its pixels (else: the table)."""
IDENTITY_WEIGHT = 0.5
DIGIT_GROUPS = 10
"""x and y: units, tenths, hundredths; θ: sign, units, tenths, hundredths — each a 10-way class."""


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embeddings (grid × grid patches, plus a zero row for CLS)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    parts = [
        torch.sin(xs.reshape(-1, 1) * omega),
        torch.cos(xs.reshape(-1, 1) * omega),
        torch.sin(ys.reshape(-1, 1) * omega),
        torch.cos(ys.reshape(-1, 1) * omega),
    ]
    table = torch.cat(parts, dim=1)
    table = torch.nn.functional.pad(table, (0, dim - table.shape[1]))
    return torch.cat([torch.zeros(1, dim), table])


class PatchHeads(nn.Module):
    """Grasp, position and category heads on the ViT's patch tokens.

    ``where`` reads each patch's own place in the image from its token alone. The grasp heads do
    not need it (the patch index says where), but a language model reading these tokens does: it
    finds the grasp patch by attention, and only what that token carries — not its index — reaches
    the answer. Without this head the tokens kept little of their position (a linear probe was off
    by 1.3 patches of 8, and 2.3 after the projector)."""

    def __init__(self, hidden: int, categories: int):
        super().__init__()
        self.grasp = nn.Linear(hidden, 5)  # centre logit, offset x/y, cos 2θ, sin 2θ
        self.where = nn.Linear(hidden, 2)  # the patch's centre (x, y), image-normalised
        self.digits = nn.Linear(hidden, DIGIT_GROUPS * 10)  # the grasp's pose as the answer writes it
        self.category = nn.Linear(hidden, categories)
        self.identity = nn.Linear(hidden, categories + 1)  # which object's category the patch shows (+ table)
        self.colour = nn.Linear(hidden, len(COLOURS) + 1)  # its colour word (+ none)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        patches = tokens[:, 1:]  # drop CLS
        g = self.grasp(patches)
        return {
            PATCH_CENTER: g[..., 0],
            PATCH_OFFSET: torch.sigmoid(g[..., 1:3]),
            PATCH_ANGLE: torch.tanh(g[..., 3:5]),
            PATCH_WHERE: self.where(patches),
            PATCH_DIGITS: self.digits(patches).unflatten(-1, (DIGIT_GROUPS, 10)),
            "category": self.category(patches.mean(dim=1)),
            PATCH_IDENTITY: self.identity(patches),
            PATCH_COLOUR: self.colour(patches),
        }


def patch_centres(grid: int) -> torch.Tensor:
    """(grid², 2): each patch's centre (x, y) in image-normalised coordinates, row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij"
    )
    return (torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) + 0.5) / grid


DIGITS_FORMAT = AnswerFormat(AnswerVariant.NR_A, decimals=2)
"""How the digit heads' targets are written: the answer's own rendering, two decimals."""


def answer_digits(x: float, y: float, theta: float) -> list[int]:
    """The digits of a pose as the answer writes it (``DIGIT_GROUPS`` classes: see there)."""
    x_text, y_text, theta_text = re.findall(r"-?\d\.\d\d", DIGITS_FORMAT.render(GraspPose(x, y, theta)))

    def digits(text: str) -> list[int]:
        units, fraction = text.lstrip("-").split(".")
        return [int(units), int(fraction[0]), int(fraction[1])]

    return [*digits(x_text), *digits(y_text), int(theta_text.startswith("-")), *digits(theta_text)]


CANDIDATES = 4
"""Grasp centres a patch keeps as targets, in label order; the rest are dropped (they still mark the patch
as a grasp patch). On the densely labelled synthetic images 4 in 5 grasp patches hold several centres,
1 in 4 more than four (at most 15)."""


def identity_classes() -> list[str]:
    """The category classes of the heads (``category``, ``identity``), in order: every template category, then
    ``object`` (anything else); the identity head has one more, the table."""
    from .reasoning import load_templates

    return sorted(load_templates().categories) + ["object"]


def identity_targets(mask, segments, objects, grid: int, index: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch: the category (``index``; the table is ``len(index)``) and colour word (``COLOURS``; none is
    ``len(COLOURS)``) of the object covering most of it (at least ``IDENTITY_SHARE``), -100 (ignored) where
    nothing is known."""
    table, no_colour = len(index), len(COLOURS)
    if mask is None:
        return torch.full((grid * grid,), -100), torch.full((grid * grid,), -100)
    h, w = mask.shape
    owner = np.zeros(len(segments) + 1, dtype=np.int64)  # segment value -> object + 1 (0: table)
    for value, (k, _) in enumerate(segments, start=1):
        owner[value] = k + 1
    pixels = owner[mask[: h - h % grid, : w - w % grid]].reshape(grid, h // grid, grid, w // grid)
    pixels = pixels.transpose(0, 2, 1, 3).reshape(grid * grid, -1)
    counts = np.stack([(pixels == k).mean(axis=1) for k in range(len(objects) + 1)], axis=1)
    counts[:, 0] = 0.0  # the table wins only where no object reaches the share
    best = counts.argmax(axis=1)
    shown = counts[np.arange(len(best)), best] >= IDENTITY_SHARE
    category = torch.full((grid * grid,), table)
    colour = torch.full((grid * grid,), -100)
    for patch in np.flatnonzero(shown):
        obj = objects[best[patch] - 1]
        category[patch] = index.get(obj["category"], table - 1)
        colour[patch] = COLOURS.index(obj["colour"]) if obj.get("colour") in COLOURS else no_colour
    return category, colour


def grasp_targets(sample, grid: int, category_index: int) -> dict[str, torch.Tensor]:
    """Per-patch targets of one augmented view: which patches hold a grasp centre and, for up to
    ``CANDIDATES`` of the centres in each, the offset, angle and the pose written out as the answer's
    digits. ``slots`` marks the candidates that are real; the loss fits the nearest one (see there)."""
    width, height = sample.image_size
    cell = width / grid
    patches = grid * grid
    used = np.zeros(patches, dtype=np.int64)  # candidates kept per patch, in label order
    offset = np.zeros((patches, CANDIDATES, 2), dtype=np.float32)
    angle = np.zeros((patches, CANDIDATES, 2), dtype=np.float32)
    digits = np.zeros((patches, CANDIDATES, DIGIT_GROUPS), dtype=np.int64)
    if sample.positives:
        # the rectangles' centres and closing axes at once (GraspRectangle.center and .angle, one by one, took a
        # third of the vision stage's batch time)
        corners = np.stack([rect.points for rect in sample.positives])
        centres = corners.mean(axis=1)
        closing = corners[:, 1] - corners[:, 0]
        cols = np.minimum((centres[:, 0] / cell).astype(np.int64), grid - 1)
        rows = np.minimum((centres[:, 1] / cell).astype(np.int64), grid - 1)
        for i, k in enumerate(rows * grid + cols):
            j = used[k]
            if j == CANDIDATES:
                continue
            used[k] += 1
            x, y = centres[i]
            theta = wrap_angle(math.atan2(-closing[i, 1], closing[i, 0]))
            offset[k, j] = (x / cell - cols[i], y / cell - rows[i])
            angle[k, j] = (math.cos(2 * theta), math.sin(2 * theta))
            digits[k, j] = answer_digits(x / width, y / height, theta)
    slots = (np.arange(CANDIDATES) < used[:, None]).astype(np.float32)
    return {
        PATCH_CENTER: torch.from_numpy((used > 0).astype(np.float32)),
        "slots": torch.from_numpy(slots),
        PATCH_OFFSET: torch.from_numpy(offset),
        PATCH_ANGLE: torch.from_numpy(angle),
        PATCH_DIGITS: torch.from_numpy(digits),
        "category": torch.tensor(category_index),
    }


WHERE_WEIGHT = 10.0
"""Weight of the position head's squared error (in image units, so ~0.02 at chance after the first steps)."""


def vision_loss(out: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Centre: softmax over patches against the (normalised) positive patches. Offset, angle and digits:
    in each positive patch, against the one candidate grasp the prediction is nearest to.

    A patch often holds several labelled centres: fitting any fixed one of them teaches the average of
    the candidates, which may lie between grasps and miss them all.
    Fitting the nearest (a winner-takes-all loss) lets the head commit to one real grasp; the digits
    follow the same candidate, so what the token says in digits is the grasp its offset points at."""
    center = target[PATCH_CENTER]
    distribution = center / center.sum(dim=1, keepdim=True).clamp(min=1)
    loss = -(distribution * torch.log_softmax(out[PATCH_CENTER], dim=1)).sum(dim=1).mean()
    denom = center.sum().clamp(min=1)
    error = ((out[PATCH_OFFSET].unsqueeze(2) - target[PATCH_OFFSET]) ** 2).sum(-1) + (
        (out[PATCH_ANGLE].unsqueeze(2) - target[PATCH_ANGLE]) ** 2
    ).sum(-1)  # (batch, patches, candidates)
    error = error.masked_fill(target["slots"] == 0, 1e4)  # no candidate there (finite: 0 × inf is nan)
    nearest = error.detach().argmin(dim=-1, keepdim=True)
    loss = loss + (error.gather(-1, nearest).squeeze(-1) * center).sum() / denom
    digits = target[PATCH_DIGITS].gather(2, nearest.unsqueeze(-1).expand(-1, -1, 1, DIGIT_GROUPS)).squeeze(2)
    ce = nn.functional.cross_entropy(out[PATCH_DIGITS].flatten(0, 2), digits.flatten(), reduction="none")
    loss = loss + (ce.view(center.shape + (DIGIT_GROUPS,)).mean(-1) * center).sum() / denom
    where = out[PATCH_WHERE]
    loss = loss + WHERE_WEIGHT * ((where - patch_centres(round(where.shape[1] ** 0.5)).to(where)) ** 2).sum(-1).mean()
    if bool((target["category"] >= 0).any()):  # scenes of several objects have no one category (-100)
        loss = loss + 0.5 * nn.functional.cross_entropy(out["category"], target["category"], ignore_index=-100)
    if PATCH_IDENTITY in target and bool((target[PATCH_IDENTITY] >= 0).any()):
        loss = loss + IDENTITY_WEIGHT * nn.functional.cross_entropy(
            out[PATCH_IDENTITY].flatten(0, 1), target[PATCH_IDENTITY].flatten(), ignore_index=-100
        )
    if PATCH_COLOUR in target and bool((target[PATCH_COLOUR] >= 0).any()):
        loss = loss + IDENTITY_WEIGHT * nn.functional.cross_entropy(
            out[PATCH_COLOUR].flatten(0, 1), target[PATCH_COLOUR].flatten(), ignore_index=-100
        )
    return loss


def predict_pose(out: dict[str, torch.Tensor], grid: int, index: int = 0) -> GraspPose:
    """The heads' best grasp: the most likely patch, its offset and angle (image-normalised)."""
    k = int(out[PATCH_CENTER][index].argmax())
    row, col = divmod(k, grid)
    ox, oy = out[PATCH_OFFSET][index, k].tolist()
    c, s = out[PATCH_ANGLE][index, k].tolist()
    return GraspPose((col + ox) / grid, (row + oy) / grid, math.atan2(s, c) / 2)


class VisionBatches:
    """Fresh augmented views of the training images every batch, normalised as the processor does.

    Batch ``k`` draws from a generator of its own (seed and ``k``), so a resumed run continues the very sequence,
    and loader processes (``prefetched``) make the same batches as this process would."""

    def __init__(
        self,
        dataset,
        ids: list[str],
        processor,
        categories: list[str],
        size: int,
        crop: int | None,
        seed: int,
        start: int = 0,
    ):
        self.dataset, self.ids, self.processor = dataset, ids, processor
        self.index = {name: i for i, name in enumerate(categories)}
        self.augment = Augmentation(out_size=(size, size), crop=crop)
        self.seed, self.next = seed, start
        self.samples = {}

    def category_of(self, sample) -> int:
        return self.index.get(sample.category or "", len(self.index) - 1)

    def __call__(self, batch_size: int, grid: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The next batch."""
        self.next += 1
        return self.draw(self.next - 1, batch_size, grid)

    def draw(self, k: int, batch_size: int, grid: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Batch number ``k``."""
        rng = random.Random(f"{self.seed}:batch:{k}")
        images, targets = [], []
        for _ in range(batch_size):
            image_id = rng.choice(self.ids)
            if image_id not in self.samples:  # decoded once, kept: a few thousand small images
                sample, scene = self.dataset.load(image_id, with_depth=False), self.dataset.scene(image_id)
                self.samples[image_id] = (with_scene(sample, scene) if scene is not None else sample, scene)
            sample, scene = self.samples[image_id]
            view = self.augment(sample, rng)
            images.append(view.image)
            target = grasp_targets(view, grid, self.category_of(view))
            if scene is not None and len(scene.objects) > 1:
                target["category"] = torch.tensor(-100)  # the per-patch identity says which is which
            if scene is not None:
                target[PATCH_IDENTITY], target[PATCH_COLOUR] = identity_targets(
                    view.mask, scene.segments, scene.objects, grid, self.index
                )
            else:
                target[PATCH_IDENTITY] = target[PATCH_COLOUR] = torch.full((grid * grid,), -100)
            targets.append(target)
        pixels = self.processor.image_processor(images=np.stack(images), return_tensors="pt")["pixel_values"]
        stacked = {k: torch.stack([t[k] for t in targets]) for k in targets[0]}
        return pixels, stacked


class _BatchStream(torch.utils.data.IterableDataset):
    """Loader worker ``w`` of ``n`` draws batches ``start + w``, ``start + w + n``, …; the loader takes one from
    each worker in turn, so the stream is ``start``, ``start + 1``, … as in process."""

    def __init__(self, batches: VisionBatches, batch_size: int, grid: int):
        self.batches, self.batch_size, self.grid = batches, batch_size, grid

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        k = self.batches.next + worker
        while True:
            yield self.batches.draw(k, self.batch_size, self.grid)
            k += workers


def prefetched(batches: VisionBatches, batch_size: int, grid: int, workers: int):
    """The batches ``batches`` would draw, made ahead in ``workers`` loader processes. Close it to end them."""
    loader = torch.utils.data.DataLoader(
        _BatchStream(batches, batch_size, grid), batch_size=None, num_workers=workers, prefetch_factor=4
    )
    stream = iter(loader)
    try:
        yield from stream
    finally:
        del stream  # shuts the loader processes down


def freeze_sincos_positions(vision_tower) -> None:
    """Replace the ViT's learned position embeddings by fixed 2D sin-cos ones."""
    emb = vision_tower.embeddings
    config = vision_tower.config
    grid = config.image_size // config.patch_size
    with torch.no_grad():
        emb.position_embedding.weight.copy_(sincos_2d(grid, config.hidden_size))
    emb.position_embedding.weight.requires_grad = False


def vision_step_fn(
    model,
    processor,
    dataset_root: str,
    seed: int,
    split: str = "all",
    fold: int = 0,
    crop: int | None = None,
    start: int = 0,
    device: str = "cpu",
    workers: int = 0,
):
    """The vision stage: ViT + heads, fresh views every batch (``start``: the step a resumed run continues
    from), on ``device``; ``workers`` loader processes draw the batches ahead (the same batches). Returns (params,
    loss(batch_size), heads, close) — ``close()`` ends the loader processes."""
    from .datasets import open_dataset
    from .datasets.splits import choose_fold

    vit = model.model.vision_tower
    freeze_sincos_positions(vit)
    for p in vit.parameters():
        p.requires_grad = p is not vit.embeddings.position_embedding.weight
    grid = vit.config.image_size // vit.config.patch_size
    categories = identity_classes()
    heads = PatchHeads(vit.config.hidden_size, len(categories))
    dataset = open_dataset(dataset_root)
    ids = (
        list(dataset.ids)
        if split == "all"
        else list(choose_fold(split, dataset.split_keys(split), fold, seed=seed).train)
    )
    batches = VisionBatches(dataset, ids, processor, categories, vit.config.image_size, crop, seed, start)
    heads.to(device)
    streams: dict[int, object] = {}  # batch size → its loader (one size per run)

    def loss(batch_size: int) -> torch.Tensor:
        if workers:
            if batch_size not in streams:
                streams[batch_size] = prefetched(batches, batch_size, grid, workers)
            pixels, target = next(streams[batch_size])
        else:
            pixels, target = batches(batch_size, grid)
        pixels, target = pixels.to(device), {k: v.to(device) for k, v in target.items()}
        out = heads(vit(pixel_values=pixels).last_hidden_state)  # under bf16 autocast on a GPU
        return vision_loss({k: v.float() for k, v in out.items()}, target)  # the loss in float32

    def close() -> None:
        for stream in streams.values():
            stream.close()

    params = [p for p in vit.parameters() if p.requires_grad] + list(heads.parameters())
    return params, loss, heads, close


def language_step_fn(
    model,
    processor,
    seed: int,
    max_tokens: int = 96,
    start: int = 0,
    device: str = "cpu",
    lines: list[str] | None = None,
):
    """The language stage: the decoder learns the corpus (or ``lines``) as a causal LM (vision and projector
    untouched)."""
    from .reasoning import load_templates
    from .reasoning.corpus import corpus

    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(("model.language_model", "lm_head"))
    tok = processor.tokenizer
    lines = list(corpus(load_templates(), seed=seed)) if lines is None else lines
    rng = random.Random(seed if not start else f"{seed}:{start}")

    def loss(batch_size: int) -> torch.Tensor:
        return text_loss(model, tok, [rng.choice(lines) for _ in range(batch_size)], max_tokens, device)

    return [p for p in model.parameters() if p.requires_grad], loss, None, lambda: None


def text_loss(model, tok, texts: list[str], max_tokens: int = 96, device: str = "cpu") -> torch.Tensor:
    """The mean causal-LM loss of ``texts`` read as plain text, each ended by </s> and cut to ``max_tokens``: how the
    language stage reads its corpus (and ``train --knowledge`` its facts)."""
    texts = [text + tok.eos_token for text in texts]
    # cut here, not by the tokenizer: a tokenizer call's max_length is saved with it (``model.untruncated``)
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="right")  # the slice keeps the starts
    ids, mask = enc["input_ids"][:, :max_tokens].to(device), enc["attention_mask"][:, :max_tokens].to(device)
    return model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss


def heads_outputs(checkpoint, model, processor):
    """The vision stage's heads of ``checkpoint`` on one image: image → their outputs (a batch of one)."""
    from pathlib import Path

    from safetensors.torch import load_file

    vit = model.model.vision_tower
    heads = PatchHeads(vit.config.hidden_size, len(identity_classes()))
    state = load_file(Path(checkpoint) / HEADS_FILE)
    missing, unexpected = heads.load_state_dict(state, strict=False)
    optional = {f"{head}.{p}" for head in ("where", "digits", "identity", "colour") for p in ("weight", "bias")}
    if unexpected or set(missing) - optional:  # older checkpoints lack these
        raise ValueError(f"{checkpoint}: vision heads do not match (missing {missing}, unexpected {unexpected})")
    heads.eval()

    def outputs(image) -> dict[str, torch.Tensor]:
        pixels = processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return heads(vit(pixel_values=pixels).last_hidden_state)

    return outputs


def heads_predictor(checkpoint, model, processor):
    """The vision stage's own grasp predictor (a GR-ConvNet-style baseline): image → GraspPose."""
    outputs = heads_outputs(checkpoint, model, processor)
    vit = model.model.vision_tower
    grid = vit.config.image_size // vit.config.patch_size
    return lambda image: predict_pose(outputs(image), grid)


def told_pose(out: dict[str, torch.Tensor], grid: int, category: int | Collection[int]) -> GraspPose:
    """``predict_pose`` among the patches the identity head gives class ``category`` (or any of several classes;
    all patches, where it gives none)."""
    wanted = torch.tensor([category] if isinstance(category, int) else sorted(category), dtype=torch.long)
    shown = torch.isin(out[PATCH_IDENTITY][0].argmax(-1), wanted)
    if bool(shown.any()):
        out = {**out, PATCH_CENTER: out[PATCH_CENTER].masked_fill(~shown[None], float("-inf"))}
    return predict_pose(out, grid)
