"""Supervised attention: teach a few decoder heads to look at the object each answer grasps.

A tiny decoder trained on pose answers learns slowly, if at all, to find the object an instruction means
among the image tokens and to copy its pose (bench/results/n-order: the vision tokens carry the pose, the
decoder does not read it). This loss shows it where to look. Every answer token's query position, in one
head of each chosen layer, should put its attention on the image patches around the answer's grasp
centre; the loss is ``-log`` of the attention mass there, averaged over those positions and heads, and
is added to the language loss with a weight (``train --attend``). Answers without a pose (a refusal, a
description) teach nothing here. The heads stay ordinary heads: nothing changes at inference or export.

    patches = answer_patches(turns, fmt, grid)          # per answer turn: the patch under its grasp centre
    with AttentionTap(model, layers) as tap:
        out = model(**batch)
        loss = out.loss + weight * tap.loss(batch["input_ids"], targets, image_token_id, grid)

``SupervisedAttention`` is that term as ``train`` uses it.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from appliance.answer import AnswerFormat, AnswerParseError

NO_TARGET = -1
RADIUS = 1
"""Patches within this many rows and columns of the grasp centre's patch count as the object's (3 × 3)."""


def grid_side(image_tokens: int) -> int:
    """The side of the square patch grid behind ``image_tokens`` tokens."""
    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise ValueError(f"supervised attention needs a square patch grid; {image_tokens} image tokens is not one")
    return side


def patch_of(x: float, y: float, grid: int) -> int:
    """The row-major index of the patch holding the normalized image point (x right, y down)."""
    col = min(max(int(x * grid), 0), grid - 1)
    row = min(max(int(y * grid), 0), grid - 1)
    return row * grid + col


def answer_patches(turns: list[dict], fmt: AnswerFormat, grid: int) -> list[int]:
    """One entry per assistant turn: the patch under its pose's centre, or ``NO_TARGET`` when it has no pose."""
    patches = []
    for turn in turns:
        if turn["from"] == "human":
            continue
        try:
            pose = fmt.parse(turn["value"]).pose
        except AnswerParseError:
            patches.append(NO_TARGET)
            continue
        patches.append(patch_of(pose.x, pose.y, grid))
    return patches


def neighbourhoods(grid: int, radius: int = RADIUS) -> torch.Tensor:
    """(grid², grid²) 0/1: row p marks the patches within ``radius`` rows and columns of patch p."""
    rows = torch.arange(grid * grid) // grid
    cols = torch.arange(grid * grid) % grid
    near = ((rows[:, None] - rows[None, :]).abs() <= radius) & ((cols[:, None] - cols[None, :]).abs() <= radius)
    return near.float()


def default_layers(n_layers: int) -> tuple[int, ...]:
    """The upper half of the decoder: the lower layers first read the instruction."""
    return tuple(range(n_layers // 2, n_layers))


class AttentionTap:
    """Catch head 0's attention weights in the chosen decoder layers while the model runs (eager attention only:
    the fused kernels never form the weights). A context manager: the hooks go when it closes."""

    def __init__(self, model, layers: tuple[int, ...], head: int = 0):
        self.head, self.weights, self.hooks = head, {}, []
        self.active = True
        """Whether the hooks keep what they catch: training clears it outside its forward passes, so neither the
        recomputation of gradient checkpointing nor the validator's generation holds attention maps."""
        found = set()
        for name, module in model.named_modules():
            index = getattr(module, "layer_idx", None)
            if "language_model" in name and name.endswith("self_attn") and index in layers:
                self.hooks.append(module.register_forward_hook(self._catch(index)))
                found.add(index)
        if found != set(layers):
            raise ValueError(f"no decoder attention found for layers {sorted(set(layers) - found)}")

    def _catch(self, index: int):
        def hook(module, args, output):
            if not self.active:
                return
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError("the attention gave no weights: load the model with attn_implementation='eager'")
            self.weights[index] = weights[:, self.head].clone()  # not a view that keeps every head's map alive

        return hook

    def loss(self, input_ids: torch.Tensor, attend: torch.Tensor, image_token_id: int, grid: int) -> torch.Tensor:
        """Mean ``-log`` attention mass on the target's patches over every position with a target and every layer.

        ``attend`` is (batch, tokens): the target patch a position's query should look at, ``NO_TARGET`` elsewhere.
        """
        weights, self.weights = self.weights, {}
        rows, positions = (attend != NO_TARGET).nonzero(as_tuple=True)
        if rows.numel() == 0:
            return input_ids.new_zeros((), dtype=torch.float32)
        image = input_ids == image_token_id
        if not (image.sum(1) == grid * grid).all():
            raise ValueError(f"every row needs exactly {grid * grid} image tokens")
        columns = image.nonzero(as_tuple=True)[1].view(len(input_ids), grid * grid)  # (batch, patches)
        wanted = neighbourhoods(grid).to(input_ids.device)[attend[rows, positions]]  # (targets, patches)
        losses = []
        for w in weights.values():
            on_image = w[rows, positions].gather(1, columns[rows])  # (targets, patches)
            mass = (on_image.float() * wanted).sum(1)
            losses.append(-torch.log(mass.clamp_min(1e-6)).mean())
        return torch.stack(losses).mean()

    def __enter__(self) -> AttentionTap:
        return self

    def __exit__(self, *exc) -> None:
        for hook in self.hooks:
            hook.remove()
        self.hooks, self.weights = [], {}


class SupervisedAttention:
    """The weighted term ``train`` adds to the language loss: taps the upper half of the decoder, and keeps what it
    catches only inside ``recording()`` (train_step's forward passes)."""

    def __init__(self, model, model_config, weight: float):
        self.tap = AttentionTap(model, default_layers(model_config.text_config.num_hidden_layers))
        self.tap.active = False
        self.weight, self.image_token_id = weight, model_config.image_token_index
        self.grid = grid_side(model_config.image_seq_length)

    @contextmanager
    def recording(self):
        self.tap.active = True
        try:
            yield
        finally:
            self.tap.active = False

    def __call__(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.weight * self.tap.loss(input_ids, targets, self.image_token_id, self.grid)


def selectivity(model, processor, dataset, images: int, progress: bool = False) -> dict:
    """Does any decoder head look at the object the instruction means rather than at objects in general?

    For each pair of records on the same image whose answers grasp different places, the attention at the first
    answer position of record a, in every layer and head, is measured on the patches around a's target and around
    b's. A head that picks the object meant puts more on its own ("own > other" near 1); a head that finds objects
    but ignores the instruction puts the same on both (near 0.5). Returns, per (layer, head), the pairs' mean own
    and other masses and the share where own wins, overall and per instruction kind. ``dataset``: a
    ``ConversationDataset`` with ``attend`` set; its first ``images`` images with two or more records are used."""
    from collections import defaultdict

    from .data import collate
    from .progress import progress_bar

    grid = grid_side(model.config.image_seq_length)
    near = neighbourhoods(grid)
    records = dataset.records
    by_image = defaultdict(list)
    for i, record in enumerate(records):
        by_image[record["image"]].append(i)
    groups = [v for v in by_image.values() if len(v) > 1][:images]
    layers = tuple(range(model.config.text_config.num_hidden_layers))
    heads = model.config.text_config.num_attention_heads
    stats = defaultdict(lambda: torch.zeros(3, len(layers), heads, dtype=torch.float64))  # own, other, own wins
    pairs = defaultdict(int)
    model.eval()
    for indices in progress_bar(groups, desc="images", disable=not progress):
        items = [dataset[i] for i in indices]
        starts = [next((k for k, t in enumerate(it["attend"]) if t != NO_TARGET), None) for it in items]
        batch = collate(items, processor.tokenizer.pad_token_id)
        batch.pop("attend")
        with torch.no_grad():
            out = model(**batch, output_attentions=True)
        image = (batch["input_ids"] == model.config.image_token_index).nonzero(as_tuple=True)[1]
        columns = image.view(len(items), grid * grid)
        for a, pa in enumerate(starts):
            for b, pb in enumerate(starts):
                if a == b or pa is None or pb is None:
                    continue
                own, other = items[a]["attend"][pa], items[b]["attend"][pb]
                if near[own, other]:  # too close to tell apart
                    continue
                looks = torch.stack([w[a, :, pa].gather(-1, columns[a].expand(heads, -1)) for w in out.attentions])
                mass_own, mass_other = (looks * near[own]).sum(-1), (looks * near[other]).sum(-1)
                for key in {"all", records[indices[a]].get("kind", "all")}:
                    stats[key] += torch.stack([mass_own, mass_other, (mass_own > mass_other).double()]).double()
                    pairs[key] += 1
    return {key: (pairs[key], stats[key] / max(pairs[key], 1)) for key in stats}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m training.attend",
        description="Which decoder heads look at the object the instruction means? For pairs of instructions about "
        "different objects in one image, the attention at the first answer position on each one's target: "
        "'own > other' near 1 picks the object meant, near 0.5 ignores the instruction.",
        epilog="example: python -m training.attend --model runs/demo-model/ground/checkpoint-001600 "
        "--data runs/demo-model/ground-data --images 40",
    )
    parser.add_argument("--model", required=True, type=Path, help="a conversation checkpoint (with view.json)")
    parser.add_argument("--data", required=True, type=Path, help="a build_dataset folder whose test.json has poses")
    parser.add_argument("--images", type=int, default=40, help="how many of its images (default 40)")
    args = parser.parse_args(argv)
    try:
        from .data import ConversationDataset
        from .model import load_llava
        from .view import ModelView

        model, processor = load_llava(args.model)
        model.set_attn_implementation({"text_config": "eager"})
        attend = (ModelView.load(args.data).answer_format, grid_side(model.config.image_seq_length), "answer")
        test = args.data / "test.json"
        tokens = model.config.image_seq_length
        dataset = ConversationDataset(
            test, processor, model.config.image_token_index, tokens, tokens + 448, attend=attend
        )  # 448: train's default room for text
        result = selectivity(model, processor, dataset, args.images, progress=True)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if "all" not in result:
        print("error: no image has two instructions about different places", file=sys.stderr)
        return 2
    n, s = result["all"]
    best = divmod(int(s[2].argmax()), s.shape[2])
    print(f"{n} pairs; the most selective head: layer {best[0]} head {best[1]}")
    print(f"{'':12s} {'own':>6s} {'other':>6s} {'own>other':>9s}   (that head)")
    for key, (count, stat) in sorted(result.items()):
        own, other, wins = (float(stat[k][best]) for k in range(3))
        print(f"{key:12s} {own:6.3f} {other:6.3f} {wins:9.3f}   ({count} pairs)")
    print("per layer (rows) and head (columns), own > other over all pairs:")
    for layer, row in enumerate(s[2]):
        print(f"  layer {layer}: " + " ".join(f"{v:.2f}" for v in row.tolist()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
