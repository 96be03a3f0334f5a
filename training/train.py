"""Reasoning tuning of a LLaVA checkpoint: projector-only (``pretrain``) or LoRA (``lora``), and the stages that
build a base from scratch.

    python -m training.train --model runs/tiny-base --data runs/rt-iw0 --strategy lora --out runs/rt-lora

Reads top to bottom: a config, small named helpers (``trainable_model``,
``lr_at``, ``save_checkpoint``), and two visible loops: ``train`` for the
conversation strategies (pretrain, lora, align, decoder: the loss on the
answer tokens only, gradients accumulated to the configured batch, DDP,
``--resume``) and ``train_stage`` for the base-building stages whose loss is
not a conversation's (vision heads, language corpus). bf16 on a GPU, fp32 on
the CPU; a checkpoint every ``--save-every`` steps and a snapshot to resume from
every ``--snapshot-minutes``; a progress bar and ``metrics.csv`` (step, loss,
learning rate).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from .view import VIEW_FILE

STRATEGIES = {"pretrain": 2e-3, "lora": 5e-4, "vision": 1e-3, "language": 1e-3, "align": 2e-3, "decoder": 2e-4}
"""The paper's strategies (pretrain, lora) and the base-building stages for a model built from
scratch (vision, language, align), with their default learning rates. ``align`` is LLaVA's own first
stage: the projector alone on description turns (build_dataset --task describe). ``decoder`` trains the
projector and the whole language model on a frozen vision tower (a tiny model's alternative to LoRA)."""
STAGES = ("vision", "language")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
LORA_RANK, LORA_ALPHA = 64, 32


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (saved beside its checkpoints)."""

    model: str
    data: str
    out: str
    strategy: str = "lora"
    steps: int = 1000
    batch_size: int = 32
    micro_batch: int = 8
    lr: float | None = None
    warmup: int = 30
    weight_decay: float = 0.0
    save_every: int = 200
    snapshot_minutes: float = 10.0
    """Also save a snapshot of the run (a checkpoint marked ``SNAPSHOT_MARK``) once this many minutes have passed
    since the last save, for ``--resume`` after a crash or a stop: a long stage on a small machine loses at most
    that much. Only the newest snapshot is kept, and none once the run ends. 0: none."""
    seed: int = 0
    max_length: int | None = None
    """Longest record in tokens, image included (None: the model's image tokens + 448, 512 for the tiny model)."""
    eval_every: int = 0
    """Score the first ``eval_images`` records of the data's test.json every this many steps (0: never)."""
    eval_images: int = 20
    eval_on: str = "test"
    """Which of the data's record files the validation scores: ``test`` (the fold's held-out images) or ``val``
    (``build_dataset --validation``: training images set aside, for choosing a budget without the test fold)."""
    split: str = "all"
    """vision stage: train on the training images of this split (iw, ow) and ``fold``, or all."""
    fold: int = 0
    crop: int | None = None
    """vision stage: square crop (source pixels) of the augmented views; match build_dataset --crop."""
    mix: tuple[str, ...] = ()
    """More folders whose train.json records join ``data``'s (e.g. description turns that keep the
    language alive while a stage trains on pose-only answers). ``data`` alone decides view.json."""
    dtype: str = "auto"
    """The weights' dtype while training: auto (as saved: a 7B checkpoint's bfloat16, the tiny model's float32),
    float32 or bfloat16. On a GPU the forward pass runs under bfloat16 autocast whatever the weights are."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (a 7B model's
    576 image tokens would otherwise hold gigabytes of activations)."""
    attend: float = 0.0
    """Weight of the supervised-attention loss (``training.attend``): one head in each upper decoder layer learns
    to look at the patches around each answer's grasp centre. 0: off. Conversation strategies only."""
    attend_from: str = "answer"
    """Where those heads are taught (``training.options.ATTEND_FROM``): at the positions that predict answer tokens, or
    (``turn``) also at each word of the question that follows the image."""
    workers: int = 0
    """Loader processes (per process under torchrun) that prepare micro-batches (decode images, tokenize; the vision
    stage: augment and label views) ahead of the training loop, in the same order. 0: the training process prepares
    each in turn. The language stage draws its batches in process."""
    length_split: int = 1
    """Run each micro-batch as this many forward and backward passes over its records sorted by length, each
    trimmed to its own longest (``train_step``): the same records and the same gradient but for rounding (LoRA's
    dropout draws its masks per pass: the same in expectation), with less padding computed. 1: one pass.
    Conversation strategies only (the vision and language stages draw their own batches)."""
    knowledge: float = 0.0
    """Share of each step's rows that are the language stage's knowledge lines (``corpus.knowledge_lines``: what
    things are for, "People whip cream with a whisk.") read as plain text, as the language stage reads them. A
    stage that never shows the facts forgets them: 100 ground steps took the decoder from 90 of 133 facts recalled
    to none (bench/results/knowledge-probe). The step's loss is (1 - share) x the answers' (with the attention
    term) + share x the lines'. 0: none; at most 0.5 (the lines go in one pass). The decoder and LoRA strategies
    (the lines train the decoder alone), one process."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: expected one of {sorted(STRATEGIES)}")
        if self.batch_size % self.micro_batch:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of micro_batch {self.micro_batch}")
        if self.steps < 1 or self.save_every < 1:
            raise ValueError("steps and save_every must be positive")
        if self.snapshot_minutes < 0:
            raise ValueError(f"snapshot_minutes must be >= 0 (0: none), got {self.snapshot_minutes}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.length_split < 1:
            raise ValueError(f"length_split must be >= 1, got {self.length_split}")
        if self.length_split > 1 and self.strategy in STAGES:
            raise ValueError(f"length_split: the {self.strategy} stage draws its own batches; leave it 1")
        if self.workers and self.strategy == "language":
            raise ValueError("workers: the language stage draws its batches in process; leave it 0")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.knowledge <= 0.5:
            raise ValueError(f"knowledge is a share of each step's rows, 0 <= share <= 0.5; got {self.knowledge}")
        if self.knowledge and self.strategy not in ("decoder", "lora"):
            raise ValueError(
                f"knowledge: the lines train the decoder, which the {self.strategy} strategy leaves as it is; "
                "use decoder or lora, or leave it 0"
            )
        if self.eval_on not in ("test", "val"):
            raise ValueError(f"eval_on must be 'test' or 'val', got {self.eval_on!r}")
        if self.dtype not in TRAIN_DTYPES:
            raise ValueError(f"dtype must be one of {TRAIN_DTYPES}, got {self.dtype!r}")
        from .options import check_attend

        check_attend(self.attend, self.attend_from)
        if self.attend and self.strategy in STAGES:
            raise ValueError(f"attend supervises answers: the {self.strategy} stage has none")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else STRATEGIES[self.strategy]


def trainable_model(model, strategy: str):
    """Freeze what the strategy keeps fixed; LoRA wraps every linear layer of the language model."""
    for p in model.parameters():
        p.requires_grad = False
    if strategy == "lora":
        from peft import LoraConfig, get_peft_model

        targets = sorted(
            {
                name.split(".")[-1]
                for name, m in model.model.language_model.named_modules()
                if m.__class__.__name__ == "Linear"
            }
        )
        config = LoraConfig(
            r=LORA_RANK,
            lora_alpha=LORA_ALPHA,
            lora_dropout=0.05,
            target_modules=targets,
            exclude_modules=r".*(vision_tower|multi_modal_projector).*",
            modules_to_save=["multi_modal_projector"],
        )
        return get_peft_model(model, config)
    trained = [model.model.multi_modal_projector]  # pretrain and align
    if strategy == "decoder":
        trained += [model.model.language_model, model.lm_head]
    for module in trained:
        for p in module.parameters():
            p.requires_grad = True
    return model


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < config.warmup:  # warmup 0: none
        return config.learning_rate * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def micro_batch_indices(size: int, micro_batch: int, seed: int, start_epoch: int = 0, rank: int = 0, world: int = 1):
    """Endless record indices, a micro-batch at a time: each epoch's shuffle (seeded by its number) cut into whole
    micro-batches. Of the one sequence every rank would walk, rank ``rank`` of ``world`` gets every world-th
    micro-batch, counted across epochs."""
    epoch, k = start_epoch, 0
    while True:
        order = list(range(size))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        for i in range(0, size - micro_batch + 1, micro_batch):
            if k % world == rank:
                yield order[i : i + micro_batch]
            k += 1
        epoch += 1


def batches(
    dataset,
    micro_batch: int,
    pad_id: int,
    seed: int,
    start_epoch: int = 0,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
):
    """Endless shuffled micro-batches (``micro_batch_indices``: this rank's share); ``ValueError`` when the data
    holds fewer records than one micro-batch (there would be no batch at all, and the loop would wait for one
    forever). ``workers`` > 0 prepares them in that many loader processes of this process, kept for the whole run,
    ahead of the training loop and in the same order. Close the generator to end them."""
    from .data import collate

    if len(dataset) < micro_batch:
        raise ValueError(
            f"the training data holds {len(dataset)} records, fewer than one micro-batch of {micro_batch}: "
            "lower --micro-batch (and --batch-size) or add data"
        )
    chunks = micro_batch_indices(len(dataset), micro_batch, seed, start_epoch, rank, world)
    if not workers:
        for chunk in chunks:
            yield collate([dataset[j] for j in chunk], pad_id)
        return
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the fast tokenizer's threads do not survive a fork
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=chunks, collate_fn=functools.partial(collate, pad_id=pad_id), num_workers=workers
    )
    batches_ = iter(loader)
    try:
        yield from batches_
    finally:
        del batches_  # shuts the loader processes down


def save_checkpoint(
    out: Path, model, processor, optimizer, step: int, config: TrainConfig, heads=None, snapshot: bool = False
) -> Path:
    """Weights (safetensors), processor, optimizer state and step (and the vision stage's ``heads``), renamed into
    place when complete, over a checkpoint of that step an earlier run left (a stage the pipeline runs again).
    ``snapshot``: marked ``SNAPSHOT_MARK`` before the rename, so a kill never leaves it looking kept."""
    import torch
    from safetensors.torch import save_file

    from .stages import HEADS_FILE

    final = out / f"checkpoint-{step:06d}"
    tmp = out / f".tmp-checkpoint-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)  # what a save cut short left: none of it is this run's
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    view = Path(config.data) / VIEW_FILE
    if view.is_file():  # how this model sees images and writes answers travels with it
        shutil.copy(view, tmp / VIEW_FILE)
    if heads is not None:  # the GR-ConvNet-style baseline rides along
        save_file({k: v.cpu() for k, v in heads.state_dict().items()}, tmp / HEADS_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "trainer_state.pt")
    (tmp / "train_config.json").write_text(json.dumps(asdict(config), indent=1))
    if snapshot:
        (tmp / SNAPSHOT_MARK).touch()
    if final.exists():  # an earlier run's: set aside, so that a crash here leaves one of the two whole
        old = out / f".old-checkpoint-{step:06d}"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    found = sorted(out.glob("checkpoint-*"))
    return found[-1] if found else None


SNAPSHOT_MARK = "SNAPSHOT"
"""The file that marks a checkpoint as a snapshot (``TrainConfig.snapshot_minutes``): there to resume from, removed
by the next save of the run."""


class Saves:
    """When a run saves: every ``save_every`` steps and at its last step (checkpoints it keeps), and a snapshot
    once ``snapshot_minutes`` have passed since its last save. Each save removes the snapshots before it, so a
    run cut short leaves one (to resume from) and a finished run none. A run that does not resume first removes
    the snapshots an earlier run left, which ``--resume`` would otherwise take for its own."""

    def __init__(
        self, config: TrainConfig, out: Path, resumed: bool = False, clock: Callable[[], float] = time.monotonic
    ):
        self.config, self.out, self.clock = config, out, clock
        self.last = clock()
        if not resumed:
            self.prune(keep=None)

    def prune(self, keep: Path | None) -> None:
        for old in self.out.glob(f"checkpoint-*/{SNAPSHOT_MARK}"):
            if old.parent != keep:
                shutil.rmtree(old.parent)

    def due(self, step: int) -> str | None:
        """``"keep"``, ``"snapshot"`` or None (nothing to save at this step)."""
        if step % self.config.save_every == 0 or step == self.config.steps:
            return "keep"
        minutes = self.config.snapshot_minutes
        return "snapshot" if minutes and self.clock() - self.last >= 60 * minutes else None

    def saved(self, checkpoint: Path) -> None:
        """After ``save_checkpoint`` wrote ``checkpoint`` (a snapshot marked as such): the earlier snapshots go."""
        self.prune(keep=checkpoint)
        self.last = self.clock()


RESUME_FREE = (
    "out", "steps", "save_every", "snapshot_minutes", "eval_every", "eval_images", "eval_on", "workers", "length_split",
)  # fmt: skip
"""TrainConfig fields a resumed run may change: where and how often it reports, how long it goes on (a run may
be extended) and how fast (loaders, passes); the rest decide what it learns."""


def resumable(checkpoint: Path | None, config: TrainConfig) -> Path | None:
    """``checkpoint``, if the run that wrote it had ``config``'s settings (but for ``RESUME_FREE``); a ValueError
    naming the difference if not, since going on from it would mix two runs."""
    saved_file = checkpoint / "train_config.json" if checkpoint is not None else None
    if saved_file is None or not saved_file.is_file():
        return checkpoint
    saved, ours = json.loads(saved_file.read_text()), json.loads(json.dumps(asdict(config)))
    # a setting the run's code did not have yet: that run had its default (what the code did before the setting)
    defaults = json.loads(json.dumps({f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}))
    saved = {**defaults, **saved}
    differ = sorted(k for k in ours if k not in RESUME_FREE and k in saved and saved[k] != ours[k])
    if differ:
        changes = ", ".join(f"{k} {saved[k]!r} → {ours[k]!r}" for k in differ)
        raise ValueError(f"--resume: {checkpoint} was trained with other settings ({changes}); use another --out")
    return checkpoint


@dataclass(frozen=True)
class Ranks:
    """Where this process sits in a torchrun / accelerate launch (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Ranks:
    """Join the process group that torchrun set up (gloo on CPU, NCCL on GPU); alone otherwise."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks(dist.get_rank(), world)


def restore(checkpoint: Path, model, optimizer, config: TrainConfig) -> int:
    """The rest of a resumed run's state from ``checkpoint``: LoRA's adapter (the other strategies' model was
    loaded from the checkpoint itself) and the optimizer's; returns its step."""
    import torch
    from safetensors.torch import load_file

    state = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=False)
    if config.strategy == "lora":
        from peft import set_peft_model_state_dict

        loaded = set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
        if loaded.unexpected_keys:
            raise ValueError(
                f"--resume: {checkpoint}'s adapter does not fit this model ({loaded.unexpected_keys[:3]}…)"
            )
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def weights_digest(model) -> str:
    """SHA-256 of the trainable weights: replicas that agree have equal digests."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def train_stage(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """A base-building stage (``vision``: data is a grasp dataset root; ``language``: the corpus). ``resume``
    continues from the latest checkpoint in ``out``: its weights, heads, optimizer state and step."""
    import torch
    from safetensors.torch import load_file

    from training.progress import progress_bar

    from .model import load_llava
    from .stages import HEADS_FILE, language_step_fn, vision_step_fn

    torch.manual_seed(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = resumable(latest_checkpoint(out), config) if resume else None
    state = (
        torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=False)
        if checkpoint
        else {"step": 0}
    )
    step = int(state["step"])
    model, processor = load_llava(checkpoint or Path(config.model))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    if config.strategy == "vision":
        params, loss_fn, heads, close = vision_step_fn(
            model, processor, config.data, config.seed, config.split, config.fold, config.crop, step, device,
            config.workers,
        )  # fmt: skip
    else:
        params, loss_fn, heads, close = language_step_fn(model, processor, config.seed, start=step, device=device)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    if checkpoint is not None:
        if heads is not None:
            heads.load_state_dict(load_file(checkpoint / HEADS_FILE))
        optimizer.load_state_dict(state["optimizer"])
    log = MetricsLog(out / "metrics.csv", enabled=True, start=step)
    model.train()
    last, saves = checkpoint, Saves(config, out, resumed=resume)
    bar = progress_bar(range(step + 1, config.steps + 1), desc=config.strategy, unit="step", disable=not progress)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")
    try:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step - 1, config)
            with autocast:
                loss = loss_fn(config.batch_size)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log.write(step, loss.item(), lr_at(step - 1, config))
            if kind := saves.due(step):
                saved = save_checkpoint(out, model, processor, optimizer, step, config, heads, kind == "snapshot")
                saves.saved(saved)
                last = saved if kind == "keep" else last
    finally:
        close()  # the vision stage's loader processes, on an error too
    log.close()
    return last


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Run training (alone, or as one rank of a DDP job); returns the final checkpoint directory."""
    if config.strategy in STAGES:
        return train_stage(config, resume, progress)
    import torch

    from training.progress import progress_bar

    from .data import ConversationDataset
    from .model import load_llava

    ranks = init_distributed()
    torch.manual_seed(config.seed)  # every rank starts from the same weights
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    # a resumed run of a strategy that trains the model's own weights starts from its checkpoint's: loaded as a
    # checkpoint is (transformers renames the saved keys), never by hand; LoRA's adapter goes onto the base
    checkpoint = resumable(latest_checkpoint(out), config) if resume else None
    start = checkpoint if checkpoint is not None and config.strategy != "lora" else Path(config.model)
    base, processor = load_llava(start, dtype=config.dtype if config.dtype == "auto" else getattr(torch, config.dtype))
    if config.gradient_checkpointing:
        base.config.use_cache = False
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x names it so
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    attend = None
    if config.attend:
        from .attend import NO_TARGET, SupervisedAttention, grid_side
        from .view import ModelView

        # the supervised heads' weights must be formed to be taught (the vision tower keeps its fused kernel)
        base.set_attn_implementation({"text_config": "eager"})
        fmt = ModelView.load(Path(config.data)).answer_format
        attend = (fmt, grid_side(base.config.image_seq_length), config.attend_from)
    model = trainable_model(base, config.strategy)
    dataset = ConversationDataset(
        [Path(d) / "train.json" for d in (config.data, *config.mix)],
        processor,
        base.config.image_token_index,
        base.config.image_seq_length,
        config.max_length or base.config.image_seq_length + 448,
        attend=attend,
    )
    if config.batch_size % (config.micro_batch * ranks.world):
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of micro_batch × processes ({config.micro_batch} × {ranks.world})"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    step = restore(checkpoint, model, optimizer, config) if checkpoint is not None else 0
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    runner = torch.nn.parallel.DistributedDataParallel(model) if ranks.world > 1 else model
    # a resumed run draws fresh shuffles (epoch numbers from its step), never the ones already seen
    stream = batches(
        dataset,
        config.micro_batch,
        processor.tokenizer.pad_token_id,
        config.seed,
        start_epoch=step,
        workers=config.workers,
        rank=ranks.rank,
        world=ranks.world,
    )
    accumulate = config.batch_size // (config.micro_batch * ranks.world)
    log = MetricsLog(out / "metrics.csv", enabled=ranks.main, start=step)
    bar = progress_bar(
        total=config.steps, initial=step, desc=config.strategy, unit="step", disable=not (progress and ranks.main)
    )
    saves = Saves(config, out, resumed=resume)  # first: a run that does not resume removes stale snapshots
    last = latest_checkpoint(out)
    validate = validator(config, processor) if ranks.main else None
    tap = SupervisedAttention(model, base.config, config.attend) if attend else None
    if attend and not any(t != NO_TARGET for i in range(min(len(dataset), 64)) for t in dataset[i]["attend"]):
        raise ValueError(
            f"--attend: none of the first records of {config.data} has an answer with a pose to look at "
            "(a locate or describe dataset teaches nothing here)"
        )
    knowledge = None
    if config.knowledge:
        if ranks.world > 1:
            raise ValueError("knowledge: the knowledge lines are mixed in one process only; run without torchrun")
        rows = max(1, round(config.batch_size * config.knowledge / (1 - config.knowledge)))
        knowledge = (config.knowledge, knowledge_lines_loss(processor, config.seed, rows, device, start=step))
    with closing(stream):  # the loader processes end with the loop, on an error too
        while step < config.steps:
            loss, attend_loss = train_step(
                runner,
                optimizer,
                params,
                stream,
                lr_at(step, config),
                accumulate,
                ranks,
                device,
                tap,
                config.length_split,
                knowledge,
            )
            step += 1
            val = validate(model, step) if validate else None
            log.write(step, loss, lr_at(step - 1, config), val, attend_loss)
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update()
            kind = saves.due(step)
            if kind == "keep":
                if ranks.main:
                    last = save_checkpoint(out, model, processor, optimizer, step, config)
                    saves.saved(last)
                if ranks.world > 1:
                    torch.distributed.barrier()
            elif kind == "snapshot" and ranks.main:  # by the clock, which the ranks do not share: no barrier
                saves.saved(save_checkpoint(out, model, processor, optimizer, step, config, snapshot=True))
    bar.close()
    log.close()
    (out / f"weights-rank{ranks.rank}.sha256").write_text(weights_digest(model) + "\n")
    return last


def validator(config: TrainConfig, processor):
    """A function (model, step) → validation accuracy on the step it is due, else None."""
    test = Path(config.data) / f"{config.eval_on}.json"
    view = Path(config.data) / VIEW_FILE
    if config.eval_every <= 0 or not test.is_file() or not view.is_file():
        return None
    from .evaluate import record_accuracy
    from .view import ModelView

    records = json.loads(test.read_text())[: config.eval_images]
    fmt = ModelView.load(Path(config.data)).answer_format

    def validate(model, step: int) -> float | None:
        if step % config.eval_every and step != config.steps:
            return None
        model.eval()
        accuracy = record_accuracy(model, processor, fmt, records, Path(config.data))
        model.train()
        return accuracy

    return validate


def length_parts(lengths: list[int], parts: int) -> list[list[int]]:
    """The rows of a micro-batch sorted by ``lengths`` and cut into ``parts`` runs of (nearly) equal size, longest
    first (the first pass meets the most memory while the least is held)."""
    order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
    size = -(-len(order) // parts)
    return [order[i : i + size] for i in range(0, len(order), size)]


def train_step(
    runner,
    optimizer,
    params,
    stream,
    lr: float,
    accumulate: int,
    ranks: Ranks,
    device: str,
    attend=None,
    length_split: int = 1,
    knowledge=None,
) -> tuple[float, float | None]:
    """One optimizer step over ``accumulate`` micro-batches per rank; returns the mean language loss over all ranks
    and, with ``attend`` (``training.attend.SupervisedAttention``), the mean weighted attention loss beside it (else None).

    With ``length_split`` > 1 each micro-batch runs as that many passes over its records sorted by length, each
    trimmed to its own longest record (``collate`` pads on the right). A pass's mean loss is weighted by its share of
    the micro-batch's answer tokens (the attention term: of its attention targets), so the sum is the micro-batch's
    mean: the same gradient as one pass, but for rounding, at less padding.

    With ``knowledge`` (a share and a function runner → the mean loss of that step's knowledge lines, see
    ``knowledge_lines_loss``) the answers' loss (and attention term) counts (1 - share) and the lines' share, in one
    more pass; the losses returned are still the answers' alone."""
    import torch

    from .attend import NO_TARGET
    from .data import IGNORE

    for group in optimizer.param_groups:
        group["lr"] = lr
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda"))
    totals = torch.zeros(2, dtype=torch.float64)
    lines_share, lines_loss = knowledge if knowledge is not None else (0.0, None)
    if lines_loss is not None:
        with autocast:
            lines = lines_loss(runner) * lines_share
        lines.backward()
    for _ in range(accumulate):
        batch = next(stream)  # this rank's share of the one sequence (``micro_batch_indices``)
        batch = {key: value.to(device) for key, value in batch.items()}
        if length_split == 1:
            parts = [(batch, 1.0, 1.0)]
        else:
            answers = (batch["labels"][:, 1:] != IGNORE).sum()  # what the model's loss averages over
            looks = (batch["attend"] != NO_TARGET).sum() if "attend" in batch else None  # the attention term's
            parts = []
            for rows in length_parts(batch["attention_mask"].sum(1).tolist(), length_split):
                index = torch.tensor(rows, device=device)
                width = int(batch["attention_mask"][index].sum(1).max())
                part = {k: v[index] if k == "pixel_values" else v[index, :width] for k, v in batch.items()}
                share = (part["labels"][:, 1:] != IGNORE).sum() / answers.clamp_min(1)
                on = (part["attend"] != NO_TARGET).sum() / looks.clamp_min(1) if looks is not None else 1.0
                parts.append((part, share, on))
        for part, share, on in parts:
            part = dict(part)
            targets = part.pop("attend", None)
            with autocast, attend.recording() if attend is not None else nullcontext():
                mean = runner(**part).loss
            loss = mean * share / accumulate  # every record has answer tokens (its answers end in a labelled </s>)
            with autocast:
                extra = attend(part["input_ids"], targets) * on / accumulate if attend is not None else None
            ((1 - lines_share) * (loss if extra is None else loss + extra)).backward()
            totals += torch.tensor([loss.item(), 0.0 if extra is None else extra.item()], dtype=torch.float64)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ranks.world > 1:
        reduced = totals.to(device)
        torch.distributed.all_reduce(reduced)
        totals = reduced.cpu() / ranks.world
    return totals[0].item(), (totals[1].item() if attend is not None else None)


def knowledge_lines_loss(processor, seed: int, rows: int, device: str, start: int = 0):
    """A function runner → the mean language loss of ``rows`` knowledge lines drawn at random (the language stage's
    loss on them, ``stages.text_loss``; a resumed run, ``start`` its step, draws fresh ones)."""
    import random

    from .reasoning import load_templates
    from .reasoning.corpus import knowledge_lines
    from .stages import text_loss

    lines = list(knowledge_lines(list(load_templates().categories.values())))
    rng = random.Random(f"{seed}:knowledge:{start}")

    def loss(runner):
        return text_loss(runner, processor.tokenizer, [rng.choice(lines) for _ in range(rows)], device=device)

    return loss


class MetricsLog:
    """``metrics.csv``: step, loss (the language loss), learning rate, seconds, validation accuracy, and the
    weighted supervised-attention loss where ``--attend`` is on (rank 0 only)."""

    HEADER = ("step", "loss", "lr", "seconds", "val_accuracy", "attend_loss")

    def __init__(self, path: Path, enabled: bool, start: int = 0):
        """``start``: the step a resumed run goes on from (0: a fresh run, which starts the file over). The rows
        of the steps after it, which the run cut short took and the resumed run takes again, are dropped."""
        self.began = time.monotonic()
        self.file = None
        if not enabled:
            return
        kept = []
        if start and path.is_file():
            with open(path, newline="") as f:
                kept = [row for row in csv.reader(f) if row and row[0].isdigit() and int(row[0]) <= start]
        self.file = open(path, "w", newline="")
        csv.writer(self.file).writerows([self.HEADER, *kept])
        self.file.flush()

    def write(
        self, step: int, loss: float, lr: float, val_accuracy: float | None = None, attend_loss: float | None = None
    ) -> None:
        if self.file:
            val = "" if val_accuracy is None else f"{val_accuracy:.4f}"
            attend = "" if attend_loss is None else f"{attend_loss:.5f}"
            csv.writer(self.file).writerow(
                [step, f"{loss:.5f}", f"{lr:.3e}", f"{time.monotonic() - self.began:.1f}", val, attend]
            )
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Reasoning tuning of a LLaVA checkpoint on a dataset from training.build_dataset.",
        epilog="example: python -m training.train --model runs/tiny-base --data runs/rt-iw0 --strategy lora --out runs/rt-lora --steps 500",
    )
    parser.add_argument("--model", required=True, help="LLaVA checkpoint directory (tiny or a real one)")
    parser.add_argument(
        "--data",
        required=True,
        help="folder with train.json (python -m training.build_dataset); "
        "for --strategy vision a grasp dataset root; ignored by --strategy language",
    )
    parser.add_argument("--out", required=True, help="folder for checkpoints and metrics.csv")
    parser.add_argument(
        "--strategy",
        choices=sorted(STRATEGIES),
        default="lora",
        help="pretrain: projector only; lora: LoRA r=64 + projector; vision, language, align: "
        "base-building stages for a model built from scratch",
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32, help="effective batch (default 32, the paper's)")
    parser.add_argument(
        "--micro-batch", type=int, default=8, help="per forward pass; gradients accumulate to --batch-size"
    )
    parser.add_argument(
        "--max-length", type=int, help="longest record in tokens, image included (default: image tokens + 448)"
    )
    parser.add_argument("--lr", type=float, help="default 2e-3 (pretrain) or 5e-4 (lora), the paper's")
    parser.add_argument("--save-every", type=int, default=200, help="keep a checkpoint every N steps (and the last)")
    parser.add_argument(
        "--snapshot-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="also save a snapshot to --resume from once M minutes have passed since the last save (default 10; "
        "only the newest is kept, none after the run ends; 0: none)",
    )
    parser.add_argument(
        "--eval-every", type=int, default=0, help="validation accuracy every N steps (0: never; see --eval-on)"
    )
    parser.add_argument("--eval-images", type=int, default=20, help="how many test records to score")
    parser.add_argument(
        "--eval-on",
        choices=["test", "val"],
        default="test",
        help="score test.json (the fold's held-out images) or val.json (build_dataset --validation: set-aside "
        "training images, for learning curves that never see the test fold)",
    )
    parser.add_argument(
        "--warmup", type=int, default=30, help="linear warm-up steps before the cosine decay (default 30)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--split",
        choices=["iw", "ow", "cw", "all"],
        default="all",
        help="vision stage: train on this split's training images",
    )
    parser.add_argument("--fold", type=int, default=0, help="vision stage: the fold held out")
    parser.add_argument("--crop", type=int, help="vision stage: square crop in source pixels (as build_dataset --crop)")
    parser.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="DIR",
        help="another build_dataset folder whose training records join --data's (repeatable)",
    )
    parser.add_argument(
        "--dtype",
        choices=TRAIN_DTYPES,
        default="auto",
        help="weights while training: auto (as saved; a 7B checkpoint is bfloat16), float32 or bfloat16",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (for large models: memory for time)",
    )
    parser.add_argument(
        "--attend",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="weight of the supervised-attention loss: one head in each upper decoder layer learns to look at "
        "the patches around each answer's grasp centre (default 0: off; see training/attend.py)",
    )
    from .options import ATTEND_FROM

    parser.add_argument(
        "--attend-from",
        choices=ATTEND_FROM,
        default="answer",
        help="where --attend teaches them: at the positions that predict answer tokens (default), or also at each "
        "word of the question after the image",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="loader processes (per process under torchrun) preparing micro-batches ahead of the training loop, the "
        "same batches in the same order (default 0: none; a GPU machine wants a few; on a 2-core CPU they cost more "
        "than they give; not the language stage; docs/training.md)",
    )
    parser.add_argument(
        "--length-split",
        type=int,
        default=1,
        metavar="N",
        help="run each micro-batch as N passes over its records sorted by length, each trimmed to its longest: the "
        "same gradient but for rounding (and LoRA's dropout draws), with less padding computed (default 1; not the "
        "vision and language stages; a resumed run may change it)",
    )
    parser.add_argument(
        "--knowledge",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="mix the language stage's knowledge lines (what things are for) into every step as this share of its "
        "rows, read as plain text, so the facts are not forgotten (default 0: none; at most 0.5; one process; "
        "the decoder and lora strategies)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint (or snapshot) in --out"
    )
    args = parser.parse_args(argv)
    try:
        config = TrainConfig(
            args.model,
            args.data,
            args.out,
            args.strategy,
            args.steps,
            args.batch_size,
            args.micro_batch,
            args.lr,
            save_every=args.save_every,
            snapshot_minutes=args.snapshot_minutes,
            seed=args.seed,
            max_length=args.max_length,
            eval_every=args.eval_every,
            eval_images=args.eval_images,
            eval_on=args.eval_on,
            warmup=args.warmup,
            split=args.split,
            fold=args.fold,
            crop=args.crop,
            mix=tuple(args.mix),
            dtype=args.dtype,
            gradient_checkpointing=args.gradient_checkpointing,
            attend=args.attend,
            attend_from=args.attend_from,
            workers=args.workers,
            length_split=args.length_split,
            knowledge=args.knowledge,
        )
        last = train(config, resume=args.resume, progress=sys.stderr.isatty())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {config.steps} steps ({config.strategy}); last checkpoint {last}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
