"""Pipelines as tables of stages: the tiny pipeline and the demo model's build, run by one runner.

    python -m training.pipeline tiny --work runs/tiny-pipeline
    python -m training.pipeline demo-model --work runs/demo-model --set ground_steps=1000
    python -m training.pipeline tiny --work runs/t --dry-run          # the stages, without running them

A stage is a command (``python -m MODULE ARGS``) and the outputs it writes. The runner:

- skips a stage that finished in an earlier run with the same command (and the same corpus, for the base and
  language stages, which learn it) and whose outputs still exist (a crash mid-stage leaves it unfinished, so it
  runs again), and, for a stage that builds records, whose records are still what the code writes (its first
  images built again: ``build_dataset --check``); once one stage runs, every later one runs too, since its inputs
  may have changed;
- goes on with a training stage that a crash or a stop cut short from its newest checkpoint or snapshot
  (``train --resume``; ``train`` saves a snapshot every ten minutes), when nothing before it ran again; a training
  stage that starts over first clears the checkpoints an earlier run left in its folder;
- keeps each stage's whole output in ``WORK/logs/NAME.log`` (nothing filtered out);
- records each stage's command and wall time in ``WORK/stages.json``, and a line per start and end in
  ``WORK/pipeline.log`` (what ``training.model_card`` reads);
- stops at a failing stage, saying how it ended and showing the end of its log.

The sizes (``PipelineConfig``) default to the values the bundled model was built with; environment variables
of the same name in capitals (``VISION_STEPS=2000``) and ``--set name=value`` override them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.bundle import TARGET_POSES
from appliance.runtime.proc import describe_exit, tail

ROOT = Path(__file__).resolve().parents[1]
MICRO_BATCH = 32
"""The micro-batch of the stages that train on single images (the ground stage's batch is a multiple of it)."""
DEMO_MODEL = ROOT / "models" / "rtgrasp-tiny"


class PipelineError(RuntimeError):
    """A stage failed; the message says how and where its log is."""


@dataclass(frozen=True)
class Stage:
    """One step: ``python -m module *args``, done when it finished once and every output exists."""

    name: str
    module: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    """Paths (relative to the work folder, or absolute) the stage writes."""
    in_process: bool = False
    """Call ``module.main(args)`` in this process (no interpreter start-up): for many short stages, as Table I's."""
    speed: tuple[str, ...] = ()
    """Arguments that change how fast the stage runs, never what it writes (``--workers``): passed after ``args``
    but left out of ``command``, so changing them reruns no finished stage."""
    reads: tuple[str, ...] = ()
    """What the stage reads beyond its arguments, by name (``FINGERPRINTS``: the base and language stages read the
    corpus, which our code writes): a finished stage whose recorded fingerprint differs runs again, and every
    stage after it. Computed only when a run checks or records the stage (a dry run computes none)."""
    check: tuple[str, ...] = ()
    """Arguments that turn the command into a check of a finished stage's outputs (exit 0: still up to date, 1: not):
    ``build_dataset --check`` (are the records still what the code writes?), ``training.datasets --check`` (is a
    dataset root of one's own as it was?). A stage that fails it runs again, and every stage after it, though its
    command is the same. Asked only before a finished stage is skipped."""
    resumes: str = ""
    """A training stage's checkpoint folder (relative to the work folder). When a run cut this stage short and the
    next run reaches it with the same command, nothing before it having run again, the stage goes on from the
    newest checkpoint or snapshot there (``train --resume``); otherwise the checkpoints an earlier run left there
    are removed before it starts, so that none of them is taken for this run's."""

    @property
    def command(self) -> str:
        return " ".join(["python", "-m", self.module, *self.args])


def machine() -> str:
    """This machine in a few words: its cores and, where ``nvidia-smi`` answers, its GPUs."""
    words = f"{os.cpu_count()} CPU cores"
    if shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return words  # a hung or broken driver tool: the GPUs go unnamed
        gpus = [line.split(": ", 1)[1].split(" (UUID")[0] for line in listed.splitlines() if ": " in line]
        if gpus:
            words += ", " + ", ".join(gpus)
    return words


class Runner:
    """Runs stages in order in one work folder (see the module's docstring)."""

    def __init__(self, work: Path, python: str = sys.executable, echo: Callable[[str], None] = print):
        self.work, self.python, self.echo = Path(work), python, echo
        self.record_path = self.work / "stages.json"
        self.started_path = self.work / "started.json"  # the resumable stages begun and not finished

    def run(self, stages: list[Stage]) -> list[dict]:
        """Run (or skip) every stage; one row each: name, command, seconds, skipped."""
        rows, fresh = [], False
        self.note(f"== machine: {machine()}")  # a build split over machines says which ran what (model card)
        for stage in stages:
            rows.append(self.run_stage(stage, may_skip=not fresh))
            fresh = fresh or not rows[-1]["skipped"]
        return rows

    def run_stage(self, stage: Stage, may_skip: bool = True) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        record = self._record()
        ran = record.get(stage.name, {})
        done = ran.get("command") == stage.command and self._outputs_exist(stage)
        done = done and ran.get("reads", "") == self.fingerprint(stage)
        done = done and (not may_skip or self._still_current(stage))  # a stage that runs anyway is not checked
        if may_skip and done:
            self._log(f"== {stage.name}: finished in an earlier run, skipped")
            return {**record[stage.name], "skipped": True}
        record.pop(stage.name, None)  # not finished (or its outputs are gone): it runs again
        self._save(record)
        log_path = self.work / "logs" / f"{stage.name}.log"
        log_path.parent.mkdir(exist_ok=True)
        resume = self._resume(stage, may_skip)
        self._log(
            f"== {stage.name}: {stage.command}" + ("  (going on from where a run cut it short)" if resume else "")
        )
        start = time.monotonic()
        code = self._execute(stage, log_path, resume)
        seconds = time.monotonic() - start
        if code != 0:
            self._log(f"== {stage.name} failed after {seconds:.0f} s ({describe_exit(code)}); its log: {log_path}")
            raise PipelineError(
                f"stage {stage.name} failed ({describe_exit(code)}); the end of {log_path}:\n{tail(log_path).rstrip()}"
            )
        missing = [o for o in stage.outputs if not self._path(o).exists()]
        if missing:
            raise PipelineError(f"stage {stage.name} ended without writing {', '.join(missing)}; see {log_path}")
        self._log(f"== {stage.name} took {seconds:.0f} s")
        row = {"name": stage.name, "command": stage.command, "seconds": round(seconds, 1), "log": str(log_path)}
        row["ended"] = time.time()  # two runs of a stage never leave the same row (``_resume`` compares them)
        row |= {"reads": self.fingerprint(stage)} if stage.reads else {}
        self._save({**self._record(), stage.name: row})
        if stage.resumes:  # finished: nothing to go on from
            self._save({k: v for k, v in self._record(self.started_path).items() if k != stage.name}, self.started_path)
        return {**row, "skipped": False}

    def _still_current(self, stage: Stage) -> bool:
        """Whether a finished stage's outputs are what its command would write now (``Stage.check``)."""
        if not stage.check:
            return True
        argv = [self.python, "-m", stage.module, *stage.args, *stage.check]
        done = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1")
        )
        said = ((done.stdout + done.stderr).strip().splitlines() or [""])[-1]
        if done.returncode == 0:
            return True
        if done.returncode == 1:
            self._log(f"== {stage.name}: finished in an earlier run, but out of date ({said})")
            return False
        raise PipelineError(
            f"stage {stage.name}: its check ({' '.join(stage.check)}) failed ({describe_exit(done.returncode)}): {said}"
        )

    def _resume(self, stage: Stage, may_skip: bool) -> bool:
        """Whether ``stage`` goes on from a run cut short (``Stage.resumes``); if not, its folder's checkpoints are
        cleared. Either way the stage is marked started (``started.json``): its command, what it reads, and the
        digest of the other stages' records, which any stage that ran since (in this run or another, ``--until``
        and ``--from`` included) or a record merged in (``scripts/device_build finish``) changes."""
        if not stage.resumes:
            return False
        others = hashlib.md5(json.dumps(self._record(), sort_keys=True).encode()).hexdigest()
        started = {"command": stage.command, "reads": self.fingerprint(stage), "after": f"md5 {others}"}
        resume = may_skip and self._record(self.started_path).get(stage.name) == started
        if not resume:
            folder = self._path(stage.resumes)
            for pattern in ("checkpoint-*", ".tmp-checkpoint-*", ".old-checkpoint-*"):
                for old in folder.glob(pattern):
                    shutil.rmtree(old)
        self._save({**self._record(self.started_path), stage.name: started}, self.started_path)
        return resume

    def _execute(self, stage: Stage, log_path: Path, resume: bool = False) -> int:
        more = (*stage.speed, *(("--resume",) if resume else ()))
        with open(log_path, "a" if resume else "w") as log:
            log.write(f"$ {stage.command}{'  (resumed)' if resume else ''}\n")
            log.flush()
            if not stage.in_process:
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                argv = [self.python, "-m", stage.module, *stage.args, *more]
                return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode
            main = importlib.import_module(stage.module).main
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    return main([*stage.args, *more]) or 0
                except SystemExit as exc:  # argparse errors
                    return exc.code if isinstance(exc.code, int) else 2

    @staticmethod
    def fingerprint(stage: Stage) -> str:
        """What ``stage.reads`` stands for now, as its record keeps it ("corpus md5 …"; "" when it reads nothing)."""
        return "; ".join(f"{name} {FINGERPRINTS[name]()}" for name in stage.reads)

    def _path(self, output: str) -> Path:
        return Path(output) if Path(output).is_absolute() else self.work / output

    def _outputs_exist(self, stage: Stage) -> bool:
        return all(self._path(o).exists() for o in stage.outputs)

    def _record(self, path: Path | None = None) -> dict:
        path = path or self.record_path
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save(self, record: dict, path: Path | None = None) -> None:
        path = path or self.record_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)  # a crash never leaves half a record

    def note(self, line: str) -> None:
        """A line in the console and in ``pipeline.log``."""
        self.work.mkdir(parents=True, exist_ok=True)
        self._log(line)

    def _log(self, line: str) -> None:
        self.echo(line)
        with open(self.work / "pipeline.log", "a") as f:
            f.write(line + "\n")


GROUND_TASKS = ("grasp", "locate")


@dataclass(frozen=True)
class PipelineConfig:
    """The sizes of a build (the defaults built the bundled demo model: ``demo-model``'s column in PRESETS)."""

    images: int = 2000
    vision_steps: int = 1500
    language_steps: int = 300
    align_steps: int = 150
    ground_steps: int = 0
    """0 leaves the ground stage (pose-only answers, projector + decoder) out."""
    ground_lr: float = 1e-3
    ground_batch: int = 32
    """The ground stage's effective batch (in micro-batches of ``MICRO_BATCH``). The stage learns to follow the
    instruction only after many samples: 1,600 steps of 32 left the clutter target rate at 15 %, 3,200 more of 64
    on a lent GPU took it to 60 % (bench/results/n-gpu)."""
    workers: int = 0
    """Loader processes for each stage that trains on conversations (``train --workers``): a few on a GPU machine,
    none on a small CPU. The stages that render or build images use this many processes too (0: every core)."""
    ground_task: str = "grasp"
    """What the ground stage answers: ``grasp`` (NR-A's pose-only answers) or ``locate`` (where each part of the
    instruction's object lies: a base that favours none of Table I's answer variants; scenes only)."""
    lora_steps: int = 1000
    augment: int = 8
    strategy: str = "lora"
    """Reasoning tuning: ``lora`` (the paper's) or ``decoder`` (projector + whole decoder)."""
    lr: float | None = None
    """None: the strategy's default."""
    crop: int | None = 320
    targets: str = "one"
    test_images: int = 200
    """demo-model: images in each fresh test set."""
    objects: str = "1-1"
    """Objects per training scene (``training.synth --objects``); above one, every answer stage trains on the
    scenes' referring instructions (the reasoning resolves the instruction to its object)."""
    instances: int = 8
    """Objects per category in the training library (``training.synth --instances``); the fresh test sets of the
    training objects draw from the same library. With 8 the bundled build's heads, told the category meant, put
    82.0 % of poses on the object meant among its own objects in new scenes and 54.1 % among new ones; the bundle
    88.0 and 71.0 % (its card's clutter and new-objects sets; bench/results/n-instances)."""
    refine_fraction: float = 0.1
    """Share of RT records that carry follow-ups (``build_dataset --refine-fraction``)."""
    refine_rounds: int = 1
    ground_refine_fraction: float = 0.0
    """The same for the ground stage's pose-only answers (0: none)."""
    presence: bool = False
    """Build the bundle with the presence check (``export.quantize --heads`` with the vision stage): it refuses a
    named object no image patch shows. Off by default: on object instances the vision stage never saw it refused
    16-21 % of objects that were there (bench/results/presence/README.md)."""
    target_check: bool = False
    """Build the bundle with the target check (``export.quantize --heads --target-check`` with the vision stage): a
    first pose off the object its reasoning named moves to the heads' best grasp on it (``appliance.runtime.target``).
    It carries the heads' identity map, and with it the presence section; without ``presence`` that section's gate
    never refuses (``--min-patches 0``). The bundle format needs a model trained to refuse (``absent_fraction``)."""
    target_pose: str = "model"
    """With ``target_check``: on the object named, the model's own pose (``model``) or the heads' best grasp on it
    (``heads``; ``export.quantize --target-pose``)."""
    part_check: bool = False
    """With ``target_check``: train the part head on the vision stage's frozen tower (``training.parts``, a stage
    before the bundle) and build the bundle with it (``export.quantize --parts``): a follow-up asking for another part
    of the held object gets the heads' best grasp on that part."""
    part_steps: int = 300
    """The part head's training steps (batches of 32)."""
    absent_fraction: float = 0.0
    """Share of training views that also ask for an object not on the table, answered with a refusal."""
    test_seed: int = 1
    """demo-model: the seed of the fresh test sets, one more for each (``TEST_SETS``): their scenes' seed where they
    show the training objects, their library's and scenes' where they show new ones."""
    seed: int = 0
    """The build's own randomness: the base model's initial weights and tokenizer text, every record-building
    stage's draws and every training stage's (``--seed``). The training scenes stay those of ``training.synth
    --seed 0``: a second build with ``--set seed=1`` on the same data gives the model card its seed spread."""
    eval_limit: int = 0
    """The held-out fold's evaluation: only its first N images (0: all of them)."""
    attend: float = 0.0
    """Weight of the supervised-attention loss (``train --attend``, ``training/attend.py``) in the ground and tune
    stages: decoder heads taught to look at the object each answer grasps. 0: off."""
    attend_from: str = "answer"
    """Where (``train --attend-from``): the answer positions, or ``turn``: the question's words after the image too."""
    length_split: int = 4
    """The ground and tune stages run each micro-batch as this many passes of like length (``train --length-split``):
    the same gradient but for rounding (and LoRA's dropout draws), less padding computed. A ground step of 32 with
    follow-ups took 1.98 s on 2 cores, 3.38 s in one pass (docs/training.md). Like ``workers`` it is not part of a
    stage's command: it changes how fast a stage runs, not what it learns. 1: one pass (the GPU build: a tiny
    model's step there is bound by kernel launches)."""
    knowledge: float = 0.0
    """Share of each ground and tune step's rows that are the language stage's knowledge lines, read as plain text
    (``train --knowledge``): those stages never show the facts and forget them otherwise (bench/results/
    knowledge-probe). 0: none."""
    hints: bool = False
    """The ground and tune stages' records carry hints on their first instructions (``build_dataset --hints``:
    "… whip cream? Hint: a whisk."), and the bundle the knowledge they came from (appliance/hints.py)."""
    hint_masking: float = 0.0
    """With ``hints``: the share of those records' function instructions whose use phrase becomes random words
    (``build_dataset --hint-masking``), so the model learns to read the hint."""
    prompt_order: str = "image"
    """Where every stage's records put the image token: before the instruction or after it
    (``training.view.PROMPT_ORDERS``); the bundle's prompt template follows."""
    data: str = ""
    """A dataset root of one's own (Cornell's format, Jacquard, OCID-VLG: docs/datasets.md) that every stage reads
    in place of the synthetic scenes (``images`` and ``objects`` then mean nothing). The data stage checks it
    (``python -m training.datasets ROOT --record WORK/data.json``) and records its files: a root changed since
    (images added, replaced, relabelled) makes the stages that read it run again. ``tiny`` only: ``demo-model``
    judges its build on fresh synthetic scenes of its training objects."""

    def cpu_workers(self) -> tuple[str, ...]:
        """``--workers`` of the stages that render or build images: ``workers``, or every core when it is 0."""
        return ("--workers", str(self.workers or os.cpu_count() or 1))

    def __post_init__(self) -> None:
        from .view import check_prompt_order

        if self.ground_batch < MICRO_BATCH or self.ground_batch % MICRO_BATCH:
            raise ValueError(
                f"ground_batch must be a positive multiple of {MICRO_BATCH} (its micro-batch), got {self.ground_batch}"
            )
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.length_split < 1:
            raise ValueError(f"length_split must be >= 1, got {self.length_split}")
        if self.hint_masking > 0 and not self.hints:
            raise ValueError("hint_masking needs hints=yes")
        if not 0.0 <= self.hint_masking <= 1.0:
            raise ValueError(f"hint_masking must be in [0, 1], got {self.hint_masking}")
        if not 0.0 <= self.knowledge <= 0.5:
            raise ValueError(f"knowledge is a share of each step's rows, 0 <= share <= 0.5; got {self.knowledge}")
        if self.ground_task not in GROUND_TASKS:
            raise ValueError(f"ground_task must be one of {GROUND_TASKS}, got {self.ground_task!r}")
        check_prompt_order(self.prompt_order)
        if self.data:
            if not Path(self.data).is_dir():
                raise ValueError(f"data: {self.data} is not a folder (a dataset root: docs/datasets.md)")
            # as every stage reads it (they run in the repository): the same root is the same command
            object.__setattr__(self, "data", str(Path(self.data).resolve()))
        if self.target_check and not self.absent_fraction > 0:
            raise ValueError(
                "target_check needs a model trained to refuse (absent_fraction > 0): the bundle carries the heads in its "
                "presence section, which export.quantize --heads writes only for such a model"
            )
        if self.target_pose not in TARGET_POSES:
            raise ValueError(f"target_pose must be one of {', '.join(TARGET_POSES)}, got {self.target_pose!r}")
        if self.target_pose != "model" and not self.target_check:
            raise ValueError("target_pose needs target_check=1")
        if self.part_check and not self.target_check:
            raise ValueError("part_check needs target_check=1 (the part map is part of the target check)")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.data and self.instances != type(self).instances:
            raise ValueError("instances sets the synthetic training library: it means nothing with data")
        if self.part_steps < 1:
            raise ValueError(f"part_steps must be >= 1, got {self.part_steps}")
        from .options import check_attend

        check_attend(self.attend, self.attend_from)


PRESETS = {
    "tiny": {},
    "demo-model": {
        # 1,500 vision steps left the patch identity right for 60 % of the objects in 2-5-object scenes, 4,000 for
        # 90 %; the heads told the category meant then reach 84 % target rate there, not 67 % (bench/results/n-order)
        "vision_steps": 4000,
        # cluttered scenes: the pilot's pose-only loss sat flat for 500 steps before the decoder began to point
        # (bench/results/n-pilot); 1,200 steps were the single-object pipeline's
        "ground_steps": 1600,
        "lora_steps": 600,
        "lr": 1e-3,
        "objects": "1-5",
        "refine_fraction": 0.7,
        "refine_rounds": 3,
        "ground_refine_fraction": 0.5,
        "absent_fraction": 0.15,
        # without the knowledge lines 100 ground steps left none of the 133 facts the language stage taught; with a
        # quarter of each step's rows they kept 86 and 92 after 200 (bench/results/knowledge-probe)
        "knowledge": 0.25,
        # function instructions in new wordings: the hints name the object, and half the training instructions'
        # use phrases masked teach the model to read them; in the text-only probe, validation 28-33 % → 64-68 %
        # right on two seeds (bench/results/knowledge-probe, session 21)
        "hints": True,
        "hint_masking": 0.5,
        "eval_limit": 100,  # the fresh test sets are what the card reports; the fold is a check of the build
    },
}


SET_ONLY = ("data", "seed")
"""Sizes taken from ``--set`` alone: ``DATA`` and ``SEED`` are too common shell variables to pick a build's dataset
or its draws."""


RECIPE_FILE = "recipe.json"
"""``WORK/recipe.json``: the pipeline and the ``--set`` values a run's config came from (``recipe_sets``); the model
card says to rebuild with them."""
SPEED_ONLY = ("workers", "length_split")
"""Fields that change how fast stages run, not what they make: left out of a recipe."""


def recipe_sets(pipeline: str, config: PipelineConfig) -> list[str]:
    """The ``name=value`` overrides that give ``config`` from the preset, whether they came from ``--set`` or the
    environment: ``config_for(pipeline, recipe_sets(pipeline, config), environ={})`` is ``config`` again, but for
    ``SPEED_ONLY`` fields."""
    preset = PipelineConfig(**PRESETS[pipeline])
    sets = []
    for f in dataclasses.fields(PipelineConfig):
        value = getattr(config, f.name)
        if f.name in SPEED_ONLY or value == getattr(preset, f.name):
            continue
        text = ("1" if value else "0") if isinstance(value, bool) else ("none" if value is None else str(value))
        sets.append(f"{f.name}={text}")
    return sets


def config_for(pipeline: str, overrides: list[str] = (), environ=os.environ) -> PipelineConfig:
    """The preset's config with environment variables (``VISION_STEPS``) and then ``name=value`` overrides."""
    values = dict(PRESETS[pipeline])
    fields = {f.name: f for f in dataclasses.fields(PipelineConfig)}
    # (name, value, where it was given: the error names it as the user wrote it)
    pairs = [
        (name, environ[name.upper()], name.upper())
        for name in fields
        if name.upper() in environ and name not in SET_ONLY
    ]
    for item in overrides:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected name=value with a name of {', '.join(fields)}")
        pairs.append((name, value, f"--set {name}"))
    for name, text, given in pairs:
        default = getattr(PipelineConfig, name)
        kind = type(default) if default is not None else (float if name == "lr" else int)
        if kind is bool:
            if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"{given}={text}: expected 1/0, true/false, yes/no or on/off")
            values[name] = text.lower() in ("1", "true", "yes", "on")
            continue
        try:
            values[name] = None if text in ("", "none") else kind(text)
        except ValueError:
            raise ValueError(f"{given}={text}: expected {'a whole number' if kind is int else kind.__name__}") from None
    return PipelineConfig(**values)


def _checkpoint(stage_dir: str, steps: int) -> str:
    return f"{stage_dir}/checkpoint-{steps:06d}"


@functools.cache
def corpus_fingerprint() -> str:
    """``corpus.fingerprint()``, once a process (about a second): the base stage's tokenizer and the language stage
    learn that text, so a change to it (``referring.yaml``, the templates) reruns them."""
    from .reasoning.corpus import fingerprint

    return f"md5 {fingerprint()}"


FINGERPRINTS: dict[str, Callable[[], str]] = {"corpus": corpus_fingerprint}
"""``Stage.reads``'s names: what each stands for, as a fingerprint."""


def tiny_stages(c: PipelineConfig, work: Path) -> tuple[list[Stage], str]:
    """Synthetic data → vision → language → align → (ground) → RT tuning → merge → evaluation on iw fold 0; the
    stages and the path of the final checkpoint."""
    w = str(work)
    root = c.data or f"{w}/data"  # the synthetic scenes, or a dataset of one's own
    crop = ("--crop", str(c.crop)) if c.crop else ()
    lr = ("--lr", str(c.lr)) if c.lr else ()
    seed = ("--seed", str(c.seed)) if c.seed else ()  # none for seed 0: the commands of builds before it stand
    library = library_option(c)
    vision, language, align = (
        _checkpoint("vision", c.vision_steps),
        _checkpoint("language", c.language_steps),
        _checkpoint("align", c.align_steps),
    )

    def train(
        name: str,
        strategy: str,
        model: str,
        data: str,
        steps: int,
        micro: int,
        *extra: str,
        batch: int = 32,
        split: bool = False,
    ) -> Stage:
        args = ("--strategy", strategy, "--model", model, "--data", data, "--out", f"{w}/{name}", "--steps", str(steps))
        args += ("--batch-size", str(batch), "--micro-batch", str(micro), "--save-every", str(steps), *extra, *seed)
        # the language stage draws its batches in process; the vision and conversation stages take loaders
        speed = ("--workers", str(c.workers)) if c.workers and strategy != "language" else ()
        speed += ("--length-split", str(c.length_split)) if split and c.length_split > 1 else ()
        return Stage(name, "training.train", args, (_checkpoint(name, steps),), speed=speed, resumes=name)

    def build(name: str, *args: str) -> Stage:
        common = ("--root", root, "--split", "iw", "--fold", "0", "--out", f"{w}/{name}", "--size", "224")
        order = ("--prompt-order", c.prompt_order) if c.prompt_order != "image" else ()
        return Stage(name, "training.build_dataset", (*common, *crop, *order, *args, *seed), (f"{name}/train.json",),
                     speed=c.cpu_workers(), check=("--check",))  # fmt: skip

    stages = [
        Stage("data", "training.datasets", (root, "--record", f"{w}/data.json"), ("data.json",), check=("--check",))
        if c.data else
        Stage("data", "training.synth", ("--out", root, "--images", str(c.images), "--seed", "0", *library,
              *(("--objects", c.objects) if c.objects != "1-1" else ())), ("data",), speed=c.cpu_workers()),
        Stage("base", "training.model", ("--out", f"{w}/base", "--tokenizer", "spm", *seed), ("base",), reads=("corpus",)),
        train("vision", "vision", f"{w}/base", root, c.vision_steps, MICRO_BATCH, "--split", "iw", "--fold", "0", *crop),
        dataclasses.replace(train("language", "language", f"{w}/{vision}", "none", c.language_steps, MICRO_BATCH), reads=("corpus",)),
        build("describe", "--task", "describe"),
        train("align", "align", f"{w}/{language}", f"{w}/describe", c.align_steps, 16),
    ]  # fmt: skip
    base = align
    absent = ("--absent-fraction", str(c.absent_fraction)) if c.absent_fraction > 0 else ()
    attend = ("--attend", str(c.attend), "--attend-from", c.attend_from) if c.attend > 0 else ()
    ground_attend = attend if c.ground_task == "grasp" else ()  # locate answers are points: nothing to look at
    knowledge = ("--knowledge", str(c.knowledge)) if c.knowledge > 0 else ()
    hints = (*(("--hint-masking", str(c.hint_masking)) if c.hint_masking > 0 else ()), "--hints") if c.hints else ()

    def refine(fraction: float) -> tuple[str, ...]:
        rounds = ("--refine-rounds", str(c.refine_rounds)) if c.refine_rounds > 1 else ()
        return ("--refine-fraction", str(fraction), *rounds) if fraction > 0 else ()

    if c.ground_steps > 0:
        # the description turns ride along, so the decoder keeps its language while it learns pose-only answers
        if c.ground_task == "locate":  # no pose to validate: the answers are points
            task, evaluation = ("--task", "locate", *absent), ()
        else:
            task = ("--targets", c.targets, *refine(c.ground_refine_fraction), *absent)
            evaluation = ("--eval-every", "200", "--eval-images", "20")
        stages += [
            build("ground-data", "--variant", "nr-a", "--decimals", "2", "--augment", str(c.augment), *task, *hints),
            train("ground", "decoder", f"{w}/{align}", f"{w}/ground-data", c.ground_steps, MICRO_BATCH, "--mix", f"{w}/describe",
                  "--lr", str(c.ground_lr), *evaluation, *ground_attend, *knowledge, batch=c.ground_batch, split=True),
        ]  # fmt: skip
        base = _checkpoint("ground", c.ground_steps)
    stages += [
        build("rt-data", "--variant", "rt", "--decimals", "2", "--augment", str(c.augment), *refine(c.refine_fraction),
              "--targets", c.targets, *absent, *hints),
        train("tune", c.strategy, f"{w}/{base}", f"{w}/rt-data", c.lora_steps, 16, *lr, "--eval-every", "200",
              "--eval-images", "10", *attend, *knowledge, split=True),
    ]  # fmt: skip
    merged = _checkpoint("tune", c.lora_steps)  # decoder tuning: the checkpoint is a plain LLaVA already
    if c.strategy == "lora":
        stages.append(
            Stage("merge", "training.merge", ("--adapter", f"{w}/{merged}", "--out", f"{w}/merged"), ("merged",))
        )
        merged = "merged"
    stages.append(
        Stage("evaluate", "training.evaluate", ("--model", f"{w}/{merged}", "--root", root, "--split", "iw",
              "--fold", "0", *(("--limit", str(c.eval_limit)) if c.eval_limit else ()), "--json", f"{w}/eval.json",
              "--vis", f"{w}/vis"), ("eval.json",))
    )  # fmt: skip
    return stages, merged


TEST_SETS = {"single": "1-1", "clutter": "2-5", "new-objects": "2-5"}
"""demo-model's fresh test sets, all in the test phrasings: the training objects in new scenes, one object and two to
five, and scenes of two to five objects no training image showed (``NEW_OBJECTS``)."""
NEW_OBJECTS = ("new-objects",)
"""Test sets drawn from a library of their own (``training.synth --seed``, not ``--scene-seed``): new instances of
every category, as the sim cell's Table II and a user's table put before the model."""


def library_option(c: PipelineConfig) -> tuple[str, ...]:
    """``training.synth --instances`` for the training library; none at the default (the commands of builds before
    it stand)."""
    return ("--instances", str(c.instances)) if c.instances != PipelineConfig.instances else ()


def demo_model_stages(c: PipelineConfig, work: Path) -> list[Stage]:
    """The tiny pipeline, then the Q4 bundle (with ``presence``, the vision stage's identity head: the presence check),
    fresh test sets (``TEST_SETS``: the training objects in new scenes, one object and two to five; two to five new
    objects; instructions in phrasings training never used), the bundle evaluated on each and the torch model on the
    first two, with the floor, the build's own instruction-blind CNN heads and the oracle beside them."""
    w = str(work)
    stages, merged = tiny_stages(c, work)
    vision = f"{w}/{_checkpoint('vision', c.vision_steps)}"
    if c.part_check:  # after the training stages: a build made before it keeps them, only the bundle is made again
        stages.append(
            Stage("parts", "training.parts", ("--model", vision, "--data", c.data or f"{w}/data", "--out", f"{w}/parts",
                  "--steps", str(c.part_steps), *(("--crop", str(c.crop)) if c.crop else ()),
                  *(("--seed", str(c.seed)) if c.seed else ())), ("parts/parts.json",))
        )  # fmt: skip
    stages.append(
        Stage("quantize", "export.quantize", ("--bits", "4", "--model", f"{w}/{merged}", "--out", f"{w}/bundle", "--force",
              *(("--heads", vision) if c.presence or c.target_check else ()),
              *(("--target-check",) if c.target_check else ()), *(("--min-patches", "0") if c.target_check and not c.presence else ()),
              *(("--target-pose", c.target_pose) if c.target_pose != "model" else ()),
              *(("--parts", f"{w}/parts") if c.part_check else ())),
              ("bundle/manifest.yaml",))
    )  # fmt: skip
    cnn = ("--cnn", f"{w}/{_checkpoint('vision', c.vision_steps)}")
    for k, (test_set, objects) in enumerate(TEST_SETS.items()):
        # the training library in new scenes, or a library of the set's own (8 instances a category, synth's default)
        library = (
            ("--seed", str(c.test_seed + k))
            if test_set in NEW_OBJECTS
            else ("--seed", "0", *library_option(c), "--scene-seed", str(c.test_seed + k))
        )
        stages.append(
            Stage(f"test-{test_set}", "training.synth", ("--out", f"{w}/test-{test_set}", "--images", str(c.test_images),
                  *library, "--objects", objects, "--phrasing", "test"), (f"test-{test_set}",), speed=c.cpu_workers())
        )  # fmt: skip
        common = ("--root", f"{w}/test-{test_set}", "--split", "all")
        stages.append(
            Stage(f"eval-q4-{test_set}", "training.evaluate", ("--bundle", f"{w}/bundle", *common, "--json",
                  f"{w}/eval-q4-{test_set}.json", "--refine", *cnn), (f"eval-q4-{test_set}.json",))
        )  # fmt: skip
        if test_set not in NEW_OBJECTS:  # the torch model beside the bundle on the card's goal sets
            stages.append(
                Stage(f"eval-torch-{test_set}", "training.evaluate", ("--model", f"{w}/{merged}", *common, "--json",
                      f"{w}/eval-torch-{test_set}.json"), (f"eval-torch-{test_set}.json",))
            )  # fmt: skip
    return stages


def install_demo_model(work: Path, model: Path = DEMO_MODEL) -> Path:
    """Copy the build's bundle to ``model`` with its model card (README.md, metrics.json), replacing the old one."""
    from .model_card import main as model_card

    staging = model.with_name(model.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(work / "bundle", staging)
    if model_card(["--work", str(work), "--out", str(staging)]) != 0:
        raise PipelineError(f"the model card could not be written from {work}")
    shutil.rmtree(model, ignore_errors=True)
    staging.rename(model)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.pipeline",
        description="Run a pipeline's stages (skipping those finished before), keeping every stage's log and time.",
        epilog="example: python -m training.pipeline demo-model --work runs/demo-model --set ground_steps=1200",
    )
    parser.add_argument(
        "pipeline",
        choices=sorted(PRESETS),
        help="tiny: up to the evaluation; demo-model: also the "
        "Q4 bundle, fresh test sets and their evaluations, then models/rtgrasp-tiny",
    )
    parser.add_argument("--work", type=Path, required=True, help="the work folder (resumable)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a size (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and exit")
    parser.add_argument("--no-install", action="store_true", help="demo-model: leave models/rtgrasp-tiny as it is")
    parser.add_argument(
        "--until", metavar="STAGE", help="stop after this stage (e.g. ground: a base for bench/table1_fair.py)"
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="STAGE",
        help="start at this stage, taking the earlier ones as done: the outputs it reads were made elsewhere "
        "(scripts/device_build finish goes on here after the stages a GPU machine trained)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STAGE[,STAGE]",
        help="leave these stages out, taking them as done: their outputs were made elsewhere (scripts/device_build "
        "trains the vision, language and align stages here and the rest on a GPU machine); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        config = config_for(args.pipeline, args.set)
    except ValueError as exc:
        parser.error(str(exc))
    if config.data and args.work.resolve().is_relative_to(config.data):
        parser.error(f"--work {args.work} lies inside data={config.data}: its files would change the root's record")
    if config.data and args.pipeline == "demo-model":
        parser.error(
            "data: demo-model is judged on fresh synthetic scenes of its own training objects; train on a dataset "
            "of your own with the tiny pipeline (--set data=ROOT), then python -m export.quantize --bits 4"
        )
    stages = (
        demo_model_stages(config, args.work) if args.pipeline == "demo-model" else tiny_stages(config, args.work)[0]
    )
    names = [s.name for s in stages]
    skipped = [name for item in args.skip for name in item.split(",") if name]
    for option, name in (("--until", args.until), ("--from", args.start), *(("--skip", n) for n in skipped)):
        if name is not None and name not in names:
            parser.error(f"{option} {name!r}: the {args.pipeline} stages are {', '.join(names)}")
    first = names.index(args.start) if args.start else 0
    last = names.index(args.until) + 1 if args.until else len(names)
    if first >= last:
        parser.error(f"--from {args.start} comes after --until {args.until}: no stage is left")
    earlier, stages = stages[:first], stages[first:last]
    earlier += [s for s in stages if s.name in skipped]
    stages = [s for s in stages if s.name not in skipped]
    if not stages:
        parser.error("every stage is skipped: nothing is left to run")
    if args.dry_run:
        print(f"{args.pipeline} with {config}")
        print("\n".join(f"{s.name}: {s.command}" for s in stages))
        return 0
    try:
        runner = Runner(args.work)
        if not earlier:  # a run that takes stages as done made them elsewhere: it says nothing of their recipe
            args.work.mkdir(parents=True, exist_ok=True)
            recipe = {"pipeline": args.pipeline, "set": recipe_sets(args.pipeline, config)}
            (args.work / RECIPE_FILE).write_text(json.dumps(recipe, indent=1) + "\n")
        if earlier:
            why = " and ".join([f"--from {args.start}"] * bool(args.start) + ["--skip"] * bool(skipped))
            runner.note(f"== taken as done ({why}): {', '.join(s.name for s in earlier)}")
        rows = runner.run(stages)
        if args.pipeline == "demo-model" and not args.no_install and not args.until:
            print(f"demo model installed in {install_demo_model(args.work)}")
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ran = sum(r["seconds"] for r in rows if not r["skipped"])
    print(
        f"{len(rows)} stages, {sum(r['skipped'] for r in rows)} skipped; {ran / 60:.1f} min of stage time in this run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
