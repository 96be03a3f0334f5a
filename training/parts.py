"""The part head: which part of its object each grasp patch holds, read from the vision stage's tower.

A follow-up such as "grasp it by the handle instead" names a part. The language model states the change
("Moving the grasp to the handle of the mug.") but its pose lands on the part asked for only about a quarter of
the time (bench/results/n-follow-ups). The identity head knows which object a patch shows, not which part. This
head adds that: per patch, whether it holds a grasp on each of the parts grasps are labelled on (``part_classes``; a sigmoid
each, as a patch may hold two), trained on the patches that hold a labelled grasp centre. The runtime's part check (``appliance.runtime.target``) takes
the grasp among the held object's patches that show the part named.

Knowing the patch is not enough: a patch is a 28-pixel square, and where a mug's handle shares one with the rim the
grasp heads' one candidate there is often the rim's (bench/results/n-parts-place). So the head also places each part's
grasp in its patch (``PartHead.place``: the offset of its centre in the patch and its angle, as the grasp heads write
theirs), fitted, like the grasp heads, to the nearest of the part's labelled grasps there.

The tower stays frozen: the head reads the vision stage's last hidden state, so the stage can run after the
vision stage of a finished build without changing anything the later stages trained on.

    python -m training.parts --model runs/demo-model/vision/checkpoint-004000 --data runs/demo-model/data \\
        --out runs/demo-model/parts --steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

PARTS_FILE = "parts.safetensors"
PARTS_META = "parts.json"
WIDTH = 256
"""The head's hidden width: a linear probe of the tower's tokens mixes up parts of the same object."""


def part_classes() -> list[str]:
    """The parts grasps are labelled on (every template category's ``grasp_at``), sorted: the head's classes."""
    from .reasoning import load_templates

    return sorted({part for category in load_templates().categories.values() for part in category.grasp_at})


def category_parts() -> dict[str, list[str]]:
    """Per template category, the parts its grasps are labelled on (``grasp_at``, in the templates' order)."""
    from .reasoning import load_templates

    return {name: list(category.grasp_at) for name, category in sorted(load_templates().categories.items())}


PLACE_FIELDS = 4
"""Per patch and part, where in the patch the part's grasp is: offset x, y (sigmoid, patch units) and cos 2θ, sin 2θ
(tanh), the grasp heads' convention (``training.stages.grasp_targets``)."""
CANDIDATES = 4
"""Labelled grasps of one part a patch keeps as placement targets (in label order), as the grasp heads'."""


class PartHead(nn.Module):
    """Per patch token (CLS dropped), one logit per part: does the patch hold a grasp on it; and (``place``) where in
    the patch that part's grasp is."""

    def __init__(self, hidden: int, classes: int, width: int = WIDTH):
        super().__init__()
        self.hidden, self.width, self.classes = nn.Linear(hidden, width), width, classes
        self.out = nn.Linear(width, classes)
        self.place = nn.Linear(width, classes * PLACE_FIELDS)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.both(tokens)[0]

    def both(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (batch, patches, classes) and the placements (batch, patches, classes, ``PLACE_FIELDS``)."""
        features = nn.functional.gelu(self.hidden(tokens[:, 1:]))
        raw = self.place(features).unflatten(-1, (self.classes, PLACE_FIELDS))
        return self.out(features), torch.cat([torch.sigmoid(raw[..., :2]), torch.tanh(raw[..., 2:])], dim=-1)


def part_targets(view, grid: int, index: dict[str, int]) -> torch.Tensor:
    """(grid², classes): per patch, 1 for each part (of ``index``) some labelled grasp centre in it is on, else 0.
    A patch without such a centre is all zeros: no target (``labelled``).

    Several parts, not the most frequent one: a mug's handle shares its patches with the rim, and on the validation
    views the majority label left the handle 3 patches, a pair of sunglasses' bridge none."""
    width, _ = view.image_size
    cell = width / grid
    target = torch.zeros((grid * grid, len(index)), dtype=torch.float32)
    for rect, part in zip(view.positives, view.labels.parts or ()):
        if part not in index:
            continue
        x, y = np.asarray(rect.points, dtype=np.float64).mean(axis=0)
        target[min(int(y / cell), grid - 1) * grid + min(int(x / cell), grid - 1), index[part]] = 1.0
    return target


def place_targets(view, grid: int, index: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch and part (of ``index``), up to ``CANDIDATES`` of the part's labelled grasps centred in the patch:
    (grid², classes, CANDIDATES, ``PLACE_FIELDS``) their offsets in the patch and doubled-angle vectors, and
    (grid², classes, CANDIDATES) which slots hold one."""
    width, _ = view.image_size
    cell = width / grid
    places = torch.zeros((grid * grid, len(index), CANDIDATES, PLACE_FIELDS), dtype=torch.float32)
    slots = torch.zeros((grid * grid, len(index), CANDIDATES), dtype=torch.float32)
    for rect, part in zip(view.positives, view.labels.parts or ()):
        if part not in index:
            continue
        points = np.asarray(rect.points, dtype=np.float64)
        x, y = points.mean(axis=0)
        col, row = min(int(x / cell), grid - 1), min(int(y / cell), grid - 1)
        k, c = row * grid + col, index[part]
        j = int(slots[k, c].sum())
        if j == CANDIDATES:
            continue
        closing = points[1] - points[0]
        theta = math.atan2(-closing[1], closing[0])  # as training.stages.grasp_targets
        places[k, c, j] = torch.tensor([x / cell - col, y / cell - row, math.cos(2 * theta), math.sin(2 * theta)])
        slots[k, c, j] = 1.0
    return places, slots


def place_loss(placed: torch.Tensor, places: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Squared error of each placement against the nearest of its part's grasps in the patch (a winner-takes-all
    fit, as the grasp heads': the mean of two grasps may lie on neither), over the (patch, part) pairs with one."""
    error = ((placed.unsqueeze(-2) - places) ** 2).sum(-1)  # (batch, patches, classes, candidates)
    error = error.masked_fill(slots == 0, 1e4)
    nearest = error.detach().argmin(dim=-1, keepdim=True)
    has = slots.sum(-1) > 0
    return error.gather(-1, nearest).squeeze(-1)[has].mean() if bool(has.any()) else placed.sum() * 0.0


def labelled(target: torch.Tensor) -> torch.Tensor:
    """The patches ``part_targets`` gives a target (some part's grasp centre lies in them)."""
    return target.sum(-1) > 0


def part_loss(logits: torch.Tensor, target: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
    """Each part's presence (binary cross-entropy) on the labelled patches; the others are not judged. With ``own``
    (per patch, the parts of its object's category: ``own_parts``) only those: the runtime asks which of the held
    object's parts a patch holds, never whether a mug's patch holds a knife's handle."""
    mask = labelled(target)[..., None].expand_as(target)
    if own is not None:
        mask = mask & own
    return nn.functional.binary_cross_entropy_with_logits(logits[mask], target[mask])


class PartBatches:
    """Augmented views (the vision stage's augmentation) and their part targets; batch ``k`` from its own seed."""

    def __init__(self, dataset, ids: list[str], processor, size: int, crop: int | None, seed: int):
        from .datasets.augment import Augmentation

        if not ids:
            raise ValueError("no images to train the part head on")
        self.dataset, self.ids, self.processor = dataset, ids, processor
        self.index = {part: i for i, part in enumerate(part_classes())}
        self.augment = Augmentation(out_size=(size, size), crop=crop)
        self.seed, self.samples = seed, {}

    def sample(self, image_id: str):
        """The image with each grasp's object (``labels.owners``), and its scene (None without one)."""
        if image_id not in self.samples:
            scene = self.dataset.scene(image_id)
            self.samples[image_id] = (_with_owners(self.dataset.load(image_id, with_depth=False), scene), scene)
        return self.samples[image_id]

    def draw(self, k: int, batch_size: int, grid: int, ids: list[str] | None = None):
        """Batch ``k``: pixels, part targets, each patch's own parts (``own_parts``; all parts without scenes) and the
        placement targets (``place_targets``: places, slots)."""
        rng = random.Random(f"{self.seed}:parts:{k}")
        # a generator: each image is chosen just before its view is drawn, from the one generator
        return self.views((rng.choice(ids or self.ids) for _ in range(batch_size)), rng, grid)

    def views(self, ids, rng: random.Random, grid: int):
        """One augmented view of each of ``ids`` (drawn with ``rng``): pixels, part targets, own parts, placements."""
        from .reasoning import load_templates

        categories = load_templates().categories
        images, targets, owns, places, slots = [], [], [], [], []
        for image_id in ids:
            sample, scene = self.sample(image_id)
            view = self.augment(sample, rng)
            images.append(view.image)
            targets.append(part_targets(view, grid, self.index))
            owns.append(own_parts(view, scene, grid, self.index, categories))
            place, slot = place_targets(view, grid, self.index)
            places.append(place)
            slots.append(slot)
        pixels = self.processor.image_processor(images=np.stack(images), return_tensors="pt")["pixel_values"]
        return pixels, torch.stack(targets), torch.stack(owns), (torch.stack(places), torch.stack(slots))


def train(
    model_dir: Path,
    data: Path,
    out: Path,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    crop: int | None = 320,
    held_out: float = 0.1,
    log=print,
) -> dict:
    """Train the part head on ``model_dir``'s frozen vision tower; write it and its figures to ``out``."""
    from safetensors.torch import save_file

    from .datasets import open_dataset
    from .model import load_llava
    from .progress import progress_bar

    torch.manual_seed(seed)
    model, processor = load_llava(model_dir, dtype=torch.float32)
    vit = model.model.vision_tower.eval()
    for p in vit.parameters():
        p.requires_grad = False
    grid = vit.config.image_size // vit.config.patch_size
    dataset = open_dataset(str(data))
    ids = sorted(dataset.ids)
    random.Random(f"{seed}:parts:split").shuffle(ids)
    n_held = max(1, int(len(ids) * held_out)) if len(ids) > 1 else 0
    held, fit = ids[:n_held], ids[n_held:] or ids
    classes = part_classes()
    batches = PartBatches(dataset, fit, processor, vit.config.image_size, crop, seed)
    head = PartHead(vit.config.hidden_size, len(classes))
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    started, losses = time.perf_counter(), []
    for step in progress_bar(range(steps), desc="part head", unit="step"):
        pixels, target, own, (places, slots) = batches.draw(step, batch_size, grid)
        with torch.no_grad():
            tokens = vit(pixel_values=pixels).last_hidden_state
        logits, placed = head.both(tokens)
        if not bool(labelled(target).any()):
            continue
        loss = part_loss(logits, target, own) + place_loss(placed, places, slots)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
    figures = held_out_accuracy(vit, head, batches, held, grid) if held else {}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out / PARTS_FILE))
    from appliance.bundle import sha256_file

    meta = {
        "classes": classes,
        "hidden": vit.config.hidden_size,
        "width": head.width,
        "model": str(model_dir),
        "vision_sha256": sha256_file(Path(model_dir) / "model.safetensors"),
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "activation": "sigmoid",
        "place": PLACE_FIELDS,
        "seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        **figures,
    }
    (out / PARTS_META).write_text(json.dumps(meta, indent=1) + "\n")
    log(f"part head: {json.dumps({k: v for k, v in meta.items() if k != 'classes'})}")
    return meta


def held_out_accuracy(vit, head: PartHead, batches: PartBatches, held: list[str], grid: int, views: int = 4) -> dict:
    """On views of the held-out images, over the patches that hold a labelled grasp and each part of their object's
    category (``grasp_at``): how often the head's presence call (probability 0.5) is right (``accuracy``), and over
    the parts that are there, how often it calls them (``recall``). Only objects of two or more parts count: the
    runtime's question is which of the held object's parts a patch shows. Over every (patch, part) with a labelled
    grasp: how far the placement lies from the nearest of them (``place_offset``: median, in patches) and how far it
    is turned from that one (``place_angle_deg``: median)."""
    right = total = found = present = 0
    offsets, angles = [], []
    head.eval()
    for k in range(views):
        for start in range(0, len(held), 32):
            rng = random.Random(f"{batches.seed}:parts:held:{k}:{start}")
            pixels, targets, allowed, (places, slots) = batches.views(held[start : start + 32], rng, grid)
            with torch.no_grad():
                logits, placed = head.both(vit(pixel_values=pixels).last_hidden_state)
            called = torch.sigmoid(logits) >= 0.5
            target, allow = targets > 0, allowed
            judged = allow & (labelled(target.float()) & (allow.sum(-1) >= 2))[..., None]
            right += int((called == target)[judged].sum())
            total += int(judged.sum())
            found += int((called & target)[judged].sum())
            present += int(target[judged].sum())
            has = slots.sum(-1) > 0
            if bool(has.any()):
                shift = ((placed[..., None, :2] - places[..., :2]) ** 2).sum(-1).sqrt().masked_fill(slots == 0, 1e4)
                nearest = shift.argmin(-1, keepdim=True)
                offsets += shift.gather(-1, nearest).squeeze(-1)[has].tolist()
                want = places[..., 2:].gather(-2, nearest[..., None].expand(*nearest.shape, 2)).squeeze(-2)[has]
                got = placed[..., 2:][has]
                turn = torch.atan2(got[:, 1], got[:, 0]) - torch.atan2(want[:, 1], want[:, 0])
                angles += (torch.atan2(torch.sin(turn), torch.cos(turn)).abs() / 2).rad2deg().tolist()
    head.train()
    return {
        "held_out_images": len(held),
        "accuracy": right / total if total else None,
        "recall": found / present if present else None,
        "judged": total,
        "place_offset": float(np.median(offsets)) if offsets else None,
        "place_angle_deg": float(np.median(angles)) if angles else None,
    }


def _with_owners(sample, scene):
    from .datasets.referring import with_scene

    return with_scene(sample, scene) if scene is not None else sample


def own_parts(view, scene, grid: int, index: dict, categories) -> torch.Tensor:
    """(grid², classes): per patch, the parts of the category of the object its labelled grasps are on; every part
    where the images have no scenes (no object is known)."""
    width, _ = view.image_size
    cell = width / grid
    if scene is None:
        return torch.ones((grid * grid, len(index)), dtype=torch.bool)
    allowed = torch.zeros((grid * grid, len(index)), dtype=torch.bool)
    for rect, owner in zip(view.positives, view.labels.owners or ()):
        x, y = np.asarray(rect.points, dtype=np.float64).mean(axis=0)
        k = min(int(y / cell), grid - 1) * grid + min(int(x / cell), grid - 1)
        category = categories.get(scene.objects[owner]["category"])
        for part in category.grasp_at if category is not None else ():
            if part in index:
                allowed[k, index[part]] = True
    return allowed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.parts",
        description="Train the part head (which part of its object each grasp patch holds) on a vision-stage "
        "checkpoint's frozen tower. export.quantize --parts DIR puts it in the bundle for the part check.",
    )
    parser.add_argument("--model", type=Path, required=True, help="the vision stage's checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="the scenes it trained on (training.synth output)")
    parser.add_argument("--out", type=Path, required=True, help=f"directory for {PARTS_FILE} and {PARTS_META}")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--crop", type=int, default=320, help="as the vision stage's --crop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be at least 1")
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such directory")
    try:
        train(args.model, args.data, args.out, args.steps, args.batch_size, args.lr, args.seed, args.crop)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
