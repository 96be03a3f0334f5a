"""The grasp model at run time: a bundle → reasoning text and a grasp pose, with no torch.

    model = GraspModel.load(Path("models/rtgrasp-tiny"))
    session = model.session()
    first = session.ask("pick up the mug", image)        # reasoning + pose + timings
    second = session.ask("grasp it by the handle instead")  # same image, the conversation goes on

Per turn: the camera image is cropped to the workspace and preprocessed
(``appliance.runtime.preprocess``), the ONNX vision tower turns it into image
embeddings, the prompt is tokenized by llama.cpp and the embeddings are
decoded in place of the ``<image>`` token, then tokens are decoded greedily
under the answer grammar until the pose is complete. A session's history stays
in the KV cache between turns; when another session used the model in
between, its history is replayed first.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from appliance.answer import AnswerFormat, AnswerParseError, AnswerRefused, AnswerVariant
from appliance.bundle import Manifest, read_bundle
from appliance.grasp import GraspPose
from appliance.hints import Knowledge, hint_text, load_knowledge

from .draft import NgramDrafter
from .llm import ContextFull, Grammar, LlamaError, LlamaSettings, TextModel, TooLong, greedy
from .objects import CategoryNames
from .preprocess import CropBox, prepare
from .presence import PresenceGate
from .speculation import ACCEPTANCE_PRIOR, KS, MIN_DRAFTED, Plan, VerifyCost, measure, plan
from .target import ROTATING, TargetCheck, restate_turn
from .vision import PROVIDERS, VisionEncoder

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 160
SPECULATIVE_MARGINS = {"Q8_0": 0.0, "F32": 0.01, "F16": 0.01}
"""Logit gap below which a token chosen after a batched check is re-checked the plain way, by weight type: the
floor of the margin. llama.cpp's batched and single-token kernels differed on the tiny model by at most 0
(Q8_0), 0.0027 (F16) and 0.068 (Q4_K_M) (docs/export.md). Deep in a long context they differ more (the
attention's paths): at the 7B width, 587 positions in, Q8_0 batches differed by up to 0.16. So a bundle loaded
for speculative decoding measures the difference behind an image, and the margin is at least twice that."""
DEFAULT_SPECULATIVE_MARGIN = 0.15
"""For the K-quants (Q4_K_M, Q5_K_M) and anything not measured. When a bundle is loaded for speculative decoding
the difference is measured on it too (``speculation.measure``), and the margin is at least twice that: a
7B-width Q4_K_M differed by 0.157 in batches of 16, more than the tiny model's 0.068."""
SPECULATIVE_POLICIES = ("off", "on", "auto")
"""off: plain greedy decoding; on: draft whenever the bundle has drafts; auto: draft only where ``speculation.plan``
expects it to be faster on this machine (the verify cost is measured when the bundle is loaded)."""


@dataclass(frozen=True)
class Timings:
    """Where the time of one turn went (milliseconds) and the decode rate."""

    preprocess_ms: float = 0.0
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    prefill_tokens: int = 0
    decode_ms: float = 0.0
    decode_tokens: int = 0

    @property
    def decode_tokens_per_s(self) -> float:
        return 1000.0 * self.decode_tokens / self.decode_ms if self.decode_ms > 0 else 0.0

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.vision_ms + self.prefill_ms + self.decode_ms

    def as_dict(self) -> dict:
        fields = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}
        return {
            **fields,
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 1),
            "total_ms": round(self.total_ms, 3),
        }


@dataclass(frozen=True)
class Prediction:
    """One answer: the text, the parsed pose (None when it did not parse) and why not."""

    text: str
    pose: GraspPose | None
    reasoning: str
    error: str | None
    timings: Timings
    crop: CropBox
    view: np.ndarray = field(repr=False)
    """The image the model saw (the workspace crop at the model's input size)."""
    tokens: tuple[int, ...] = field(default=(), repr=False)
    refusal: str | None = None
    """What the model said it does not see (a refusal answer); the pose is None then."""
    gated: bool = False
    """The refusal came from the bundle's presence gate (``runtime.presence``): nothing was decoded."""
    hint: tuple[str, ...] = ()
    """The objects the bundle's knowledge named for a first turn's instruction, appended to it as " Hint: a
    whisk." (``appliance.hints``); empty on follow-ups, where it names none, and for bundles without one."""
    written: GraspPose | None = None
    """The pose the model wrote, when the bundle's target check moved it onto the object its reasoning named
    (``runtime.target``); ``pose`` and ``text`` then hold the moved one. None when the pose is the model's."""
    box: tuple[float, float, float, float] | None = None
    """``(x0, y0, x1, y1)``, image-normalised in ``view``: the object the pose holds, of the category ``resolved``
    (``TargetCheck.object_box``, from the view's pixels). None without a target check, a category or such an
    object."""
    resolved: str | None = None
    """With a target check, the category the pose was put on: the one a spatial, colour or size request resolved to
    (the model's reasoning may name another: "The larger one is a cup." for the larger mug), else the first the
    reasoning names, else on a follow-up the one the conversation last named. None without a target check."""

    @property
    def ok(self) -> bool:
        return self.pose is not None


class Embedded(NamedTuple):
    """One image through preprocessing and the vision graph."""

    view: np.ndarray
    embeddings: np.ndarray
    box: CropBox
    preprocess_ms: float
    vision_ms: float
    patches: np.ndarray | None = None
    """Expected patches per category of the bundle's presence section (None without one)."""
    identity: np.ndarray | None = None
    """Per patch, the identity head's probabilities (the target check's; None without one)."""
    grasp: np.ndarray | None = None
    """Per patch, the grasp heads' values (the target check's; None without one)."""
    parts: np.ndarray | None = None
    """Per patch, the part head's probabilities (the target check's part map; None without one)."""
    colour: np.ndarray | None = None
    """Per patch, the colour head's probabilities (the target check's colour map; None without one)."""
    check_view: np.ndarray | None = None
    """The view whose pixels the target check measures (``runtime.target.footprints``): ``view``, with what lies
    outside the camera image (the crop's black padding, where the image is smaller than the crop) painted the
    image's median colour, so that it reads as table and joins no objects (None without a target check)."""
    part_grasp: np.ndarray | None = None
    """Per patch and part, where in the patch that part's grasp is (the part check's placements; None without)."""


def padding_painted(view: np.ndarray, box: CropBox, size: tuple[int, int]) -> np.ndarray:
    """``view`` (the crop ``box`` of an image of ``size`` (width, height)) with its pixels whose centres lie outside
    the image painted the median colour of the rest; ``view`` itself when none do."""
    side = view.shape[0]
    centres = (np.arange(side) + 0.5) * box.side / side
    cols, rows = box.left + centres, box.top + centres
    inside = ((rows >= 0) & (rows < size[1]))[:, None] & ((cols >= 0) & (cols < size[0]))[None, :]
    if inside.all() or not inside.any():
        return view
    painted = view.copy()
    painted[~inside] = np.median(view[inside], axis=0).astype(view.dtype)
    return painted


def image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or an (H, W, 3) array."""
    return image.size if isinstance(image, Image.Image) else (np.asarray(image).shape[1], np.asarray(image).shape[0])


def near_tie(logits: np.ndarray, token: int, grammar: Grammar | None, margin: float) -> bool:
    """Whether another token the grammar allows scores within ``margin`` of ``token``."""
    best = float(logits[token])
    if token == int(np.argmax(logits)) and best - float(np.partition(logits, -2)[-2]) >= margin:
        return False  # even the runner-up of all tokens is far enough below
    others = (grammar.mask(logits) if grammar is not None else logits.copy()).astype(np.float64)
    others[token] = -np.inf
    return best - float(others.max()) < margin


@dataclass
class AnswerInProgress:
    """One answer being decoded, and the rules both decoders follow: greedy under the grammar, the pose forced in
    time when an RT answer's reasoning has used its share of the budget, the end at a complete answer."""

    model: GraspModel
    budget: int
    grammar: Grammar | None
    force_pose: bool
    """The reasoning may not use the tokens the longest pose needs (RT answers under the grammar)."""
    tokens: list[int] = field(default_factory=list)
    data: bytes = b""
    not_first: frozenset[int] = frozenset()
    """Tokens the answer may not open with, nor follow a first space with (``GraspModel.refusal_openers`` where the
    refusal is ruled out)."""

    @property
    def in_reasoning(self) -> bool:
        return b"[" not in self.data

    def apply_budget(self) -> None:
        """Switch to the pose grammar once the reasoning has used its share, so every answer ends in a pose."""
        model = self.model
        if self.force_pose and self.in_reasoning and self.budget - len(self.tokens) <= model._pose_reserve:
            self.grammar = model.llm.grammar(model.format.pose_grammar(space_first=not self.data.endswith(b" ")))
            self.force_pose = False
            model.forced_poses += 1

    def pick(self, logits: np.ndarray) -> int:
        """The greedy token the grammar allows (and, before any text, ``not_first`` does not rule out)."""
        if self.not_first and not self.data.strip():
            logits = logits.copy()
            logits[list(self.not_first)] = -np.inf
        return greedy(logits, self.grammar)

    def add(self, token: int) -> bool:
        """Append a chosen token (not EOS); whether the answer is now complete."""
        if self.grammar is not None:
            self.grammar.accept(token)
        self.tokens.append(token)
        self.data += self.model.llm.piece(token)
        text = self.data.decode(errors="replace")
        return bool(self.model._complete.search(text)) and self.model._is_answer(text)


class GraspModel:
    """A loaded bundle: the vision tower in onnxruntime, the language model in llama.cpp."""

    def __init__(
        self,
        manifest: Manifest,
        directory: Path,
        providers=PROVIDERS,
        llama: LlamaSettings = LlamaSettings(),
        speculative: str = "off",
        presence: bool = True,
        target_check: bool = True,
    ):
        """``presence=False`` leaves the bundle's presence check off: every instruction goes to the model;
        ``target_check=False`` its target check: every pose stays as the model wrote it."""
        if speculative not in SPECULATIVE_POLICIES:
            raise ValueError(f"speculative must be one of {SPECULATIVE_POLICIES}, got {speculative!r}")
        self.manifest, self.directory = manifest, Path(directory)
        self.format: AnswerFormat = manifest.answer.format
        self.vision = VisionEncoder(self.directory / manifest.vision, providers)
        self.llm = TextModel(self.directory / manifest.llm, llama)
        if self.llm.n_embd != manifest.embedding_width:
            raise LlamaError(
                f"{manifest.llm} has width {self.llm.n_embd}, the manifest says {manifest.embedding_width}"
            )
        self.image_token = self.llm.token_id(manifest.image_token)
        self.presence: PresenceGate | None = None
        if manifest.presence is not None and presence and manifest.presence.min_patches > 0:  # 0: it never refuses
            if not self.format.refusals:
                raise LlamaError("the manifest has a presence section, but its model was not trained to refuse")
            if not self.vision.has_presence:
                raise LlamaError(f"{manifest.vision} has no presence output, the manifest has a presence section")
            self.presence = PresenceGate(manifest.presence, CategoryNames(manifest.categories or {}))
        self.target: TargetCheck | None = None
        if manifest.target_check is not None and target_check:
            spec = manifest.target_check
            wanted = (
                (spec.identity, spec.grasp)
                + ((spec.parts,) if spec.parts else ())
                + ((spec.part_grasp,) if spec.part_grasp else ())
                + ((spec.colour,) if spec.colour else ())
            )
            lacking = [name for name in wanted if name not in self.vision.outputs]
            if lacking:
                raise LlamaError(
                    f"{manifest.vision} has no {', '.join(lacking)} output, the manifest's target check needs it"
                )
            self.target = TargetCheck(spec, manifest.presence.classes, CategoryNames(manifest.categories or {}))
            try:  # the graph's shapes are fixed but for the batch: a mismatch fails here, not at each request
                parts = self.vision.shapes[spec.parts] if spec.parts else None
                colour = self.vision.shapes[spec.colour] if spec.colour else None
                place = self.vision.shapes[spec.part_grasp] if spec.part_grasp else None
                self.target.check_shapes(
                    self.vision.shapes[spec.identity], self.vision.shapes[spec.grasp], parts, colour, place
                )
            except ValueError as exc:
                raise LlamaError(f"{manifest.vision}: {exc}") from None
        self.hints: Knowledge | None = None
        if manifest.knowledge is not None:
            self.hints = load_knowledge(self.directory / manifest.knowledge)
        self._grammar = self.format.grammar()
        self._grammar_seen = self.format.grammar(refusal=False)
        """For an instruction whose named object the presence gate saw: the model may not refuse it."""
        self.refusal_openers: frozenset[int] = frozenset()
        """The tokens that spell the refusal's first word ("▁I", "I"), which an answer may not open with where the
        refusal is ruled out. There the tiny clutter model still began one, and its grammar made it go on: "I see no
        cup here. The lo cup here. ... [0.31, 0.18], 1.51" (10 of the 458 answers of validation scene seed 2612).
        None of its other answers opened with them."""
        if self.format.refusals and self.format.variant is AnswerVariant.RT:
            word = self.format.render_refusal("cup").split()[0].encode()
            self.refusal_openers = frozenset(t for t in range(self.llm.n_vocab) if self.llm.piece(t).strip() == word)
        self._complete = re.compile(rf"\d\.\d{{{self.format.decimals}}}$")
        self._active: Session | None = None
        self._pose_reserve = len(self.format.longest_pose) + 2
        """Tokens kept for the pose: at most one a character, plus the space before it and the end."""
        self.forced_poses = 0
        """Answers whose reasoning ran into the budget and were made to give their pose."""
        self.speculative_margin = SPECULATIVE_MARGINS.get(manifest.quant, DEFAULT_SPECULATIVE_MARGIN)
        self.drafted = self.accepted = self.replays = 0
        """Speculative decoding counters: tokens drafted, drafted tokens greedy decoding kept, near-tie replays."""
        self.checks: deque[list[int]] = deque(maxlen=4096)
        """Per draft asked for in the reasoning: [tokens drafted, of them kept] (0 drafted: no draft was found)."""
        self.drafted_ms, self.drafted_tokens, self.plain_ms, self.plain_tokens = 0.0, 0, 0.0, 0
        """Decode time and tokens of the answers the policy decided, with drafts and without (``note_decode``)."""
        self.policy = speculative if manifest.drafts else "off"
        self.verify_cost: VerifyCost | None = None
        if self.policy != "off":
            blank = np.full((manifest.image.size, manifest.image.size, 3), 128, np.uint8)
            image = self.embed(blank)[1]  # measured behind an image, where answers are decoded
            self.verify_cost = measure(self.llm, self._calibration_tokens(), prefix=image)
            self.speculative_margin = max(self.speculative_margin, 2 * self.verify_cost.logit_error)

    def _calibration_tokens(self) -> list[int]:
        text = " ".join((self.directory / self.manifest.drafts).read_text().split()[:64])
        tokens = self.llm.tokenize(text, add_bos=True, special=False, start=True)
        return (tokens * (1 + (max(KS) + 1) // max(1, len(tokens))))[: max(KS) + 1]

    @property
    def plan(self) -> Plan:
        """How this model drafts now: ``on``, the drafter's length; ``off``, none; ``auto``, the draft length with
        the best expected speed-up given the verify cost measured at load and the acceptance so far (a prior until
        enough tokens were drafted) — then checked on real answers: the first are decoded plainly, the next with
        drafts (about 200 tokens each), and drafting goes on only if it was faster."""
        if self.policy == "off" or self.verify_cost is None:
            return Plan(0, 1.0, 0.0)
        acceptance = self.accepted / self.drafted if self.drafted >= MIN_DRAFTED else ACCEPTANCE_PRIOR
        if self.policy == "on":
            return Plan(self.drafter.k, 1.0, acceptance)
        best = plan(self.verify_cost, acceptance)
        if best.k == 0:
            return best
        # What the curve promises is checked against what answers really cost (per-token overheads, near-tie
        # replays): plain answers are measured first, then drafted ones, and the faster way is kept.
        if self.plain_tokens < MIN_DRAFTED:
            return Plan(0, best.gain, acceptance)
        if self.drafted_tokens < MIN_DRAFTED:
            return best
        gain = (self.plain_ms / self.plain_tokens) / (self.drafted_ms / self.drafted_tokens)
        return Plan(best.k, gain, acceptance) if gain >= 1.0 else Plan(0, gain, acceptance)

    def note_decode(self, drafted: bool, milliseconds: float, tokens: int) -> None:
        """Record the decode time of an answer the policy decided (``auto`` compares both ways with these)."""
        if drafted:
            self.drafted_ms += milliseconds
            self.drafted_tokens += tokens
        else:
            self.plain_ms += milliseconds
            self.plain_tokens += tokens

    @cached_property
    def drafter(self) -> NgramDrafter | None:
        """The n-gram index over the bundle's reasoning corpus, built on first use (None without one)."""
        if not self.manifest.drafts:
            return None
        lines = (self.directory / self.manifest.drafts).read_text().splitlines()
        return NgramDrafter(
            self.llm.tokenize(" " + line, add_bos=False, special=False) for line in lines if line.strip()
        )

    @classmethod
    def load(
        cls,
        directory: Path,
        providers=PROVIDERS,
        llama: LlamaSettings = LlamaSettings(),
        verify: bool = True,
        speculative: str = "off",
        presence: bool = True,
        target_check: bool = True,
    ) -> GraspModel:
        """Read the manifest, verify every file's hash, and load both halves (and measure the verify cost when
        ``speculative`` is on or auto; ``presence=False`` and ``target_check=False`` leave those checks off)."""
        manifest = read_bundle(directory, verify=verify)
        return cls(manifest, directory, providers, llama, speculative, presence, target_check)

    def session(self) -> Session:
        """A new conversation (the image comes with its first turn)."""
        return Session(self)

    def predict(self, image, instruction: str) -> Prediction:
        """One turn of a fresh session."""
        return self.session().ask(instruction, image)

    def embed(self, image) -> Embedded:
        """The image's embeddings, with the view, the crop box, the time taken and the presence output."""
        start = time.perf_counter()
        view, pixels, box = prepare(image, self.manifest.image)
        mid = time.perf_counter()
        embeddings, extra = self.vision.encode(pixels)
        end = time.perf_counter()
        if embeddings.shape != (self.manifest.n_image_tokens, self.manifest.embedding_width):
            raise LlamaError(
                f"vision tower gave {embeddings.shape}, the manifest expects "
                f"({self.manifest.n_image_tokens}, {self.manifest.embedding_width})"
            )
        patches = extra.get(self.presence.spec.output) if self.presence is not None else None
        if self.presence is not None and (patches is None or patches.shape != (len(self.presence.spec.classes),)):
            raise LlamaError(
                f"vision tower gave presence counts of shape {None if patches is None else patches.shape}, the "
                f"manifest lists {len(self.presence.spec.classes)} categories"
            )
        identity = grasp = parts = colour = place = None
        if self.target is not None:
            spec = self.target.spec
            identity, grasp = extra[spec.identity], extra[spec.grasp]
            parts = extra[spec.parts] if spec.parts else None
            place = extra[spec.part_grasp] if spec.part_grasp else None
            colour = extra[spec.colour] if spec.colour else None
        timing = (1000 * (mid - start), 1000 * (end - mid))
        check_view = None if self.target is None else padding_painted(view, box, image_size(image))
        return Embedded(view, embeddings, box, *timing, patches, identity, grasp, parts, colour, check_view, place)

    def hint_objects(self, instruction: str, identity: np.ndarray | None = None) -> list[str]:
        """The objects the bundle's knowledge says a first instruction's words are for (none without one). With
        the target check's ``identity`` map of the image, of several only those some patch shows, when any does
        (``TargetCheck.shown``): "something to cut with" on a table with scissors and no knife hints scissors."""
        objects = [] if self.hints is None else self.hints.objects_for(instruction)
        if len(objects) > 1 and identity is not None and self.target is not None:
            objects = self.target.shown(objects, identity) or objects
        return objects

    def prompt_segments(self, instruction: str, first: bool, hint: list[str] | None = None) -> list:
        """Token ids, with the image token's place marked by ``None``. A first turn carries ``hint`` (by default
        ``hint_objects(instruction)``, every object the knowledge names)."""
        if first:
            hint = self.hint_objects(instruction) if hint is None else hint
            instruction += hint_text(hint)  # as in training: the first turn's hint
            text = self.manifest.prompt_template.format(instruction=instruction)
            tokens = self.llm.tokenize(text, add_bos=True, special=True, start=True)
            if tokens.count(self.image_token) != 1:
                raise LlamaError(f"the prompt holds {tokens.count(self.image_token)} image tokens, expected 1")
            return [None if t == self.image_token else t for t in tokens]
        text = self.manifest.followup_template.format(instruction=instruction)
        tokens = self.llm.tokenize(text, add_bos=False, special=True)
        if self.image_token in tokens:
            raise ValueError("a follow-up instruction must not contain the image token")
        return tokens

    def generate(
        self,
        max_new_tokens: int = MAX_NEW_TOKENS,
        constrain: bool = True,
        speculative: bool = False,
        context: list[int] = (),
        draft_length: int | None = None,
        refusal: bool = True,
        lead: str = "",
    ) -> tuple[list[int], str, list[int]]:
        """Greedy tokens under the answer grammar until the pose is complete (or EOS, or the limit).

        An RT answer's reasoning may use the budget up to the tokens the longest pose needs; then the
        grammar switches to the pose alone, so a constrained answer always ends in a pose in time.

        Returns the tokens, the text and the tail not yet in the KV cache (the last token is only
        evaluated when a next step needs it). ``constrain=False`` decodes without the grammar
        (parity checks against torch). ``speculative`` (when the bundle has drafts) checks drafted
        reasoning tokens in one batch and keeps those greedy decoding would choose, at most ``draft_length``
        at a time (default: the drafter's own length). ``refusal=False`` leaves the refusal out of the grammar and
        its first word out of the answer's opening (``refusal_openers``; not with a lead, not unconstrained); ``lead``
        makes the answer open with that sentence (``AnswerFormat.grammar``).

        A batch and a single token round differently in llama.cpp's kernels, so after a batched
        check the logits are plain decoding's only up to a tiny error. Where that error could
        matter — the best and second-best token closer than ``speculative_margin`` — the answer
        so far is replayed one token at a time, exactly as plain decoding evaluated it, and the
        token is chosen from those logits: the output is plain greedy decoding's."""
        answer = self.answer(max_new_tokens, constrain, refusal, lead)
        drafter = self.drafter if speculative else None
        length = drafter.k if drafter is not None and draft_length is None else draft_length
        tail = (
            self._speculative(answer, drafter, list(context), length)
            if drafter is not None and length
            else self._greedy(answer)
        )
        return answer.tokens, answer.data.decode(errors="replace").strip(), tail

    def answer(self, max_new_tokens: int, constrain: bool, refusal: bool, lead: str) -> AnswerInProgress:
        """A new answer's rules (``generate``'s arguments): its grammar, its budget, the token it may not open with."""
        if lead and constrain:
            source = self.format.grammar(refusal=False, lead=lead)
        else:
            source = self._grammar if refusal else self._grammar_seen
        grammar = self.llm.grammar(source) if constrain else None
        budget = min(max_new_tokens, self.llm.n_ctx - self.llm.n_past)  # a full context ends the answer
        answer = AnswerInProgress(
            self, budget, grammar, force_pose=constrain and self.format.variant is AnswerVariant.RT
        )
        if constrain and not refusal and not lead:
            answer.not_first = self.refusal_openers  # where it may not refuse, it may not begin to
        return answer

    def _greedy(self, answer: AnswerInProgress) -> list[int]:
        """Plain greedy decoding: one token evaluated per step, and only when the next step needs its logits.
        Returns the tail not yet in the KV cache (the last token)."""
        logits, pending = self.llm.logits(), None
        while len(answer.tokens) < answer.budget:
            if pending is not None:
                self.llm.eval_tokens([pending])
                logits, pending = self.llm.logits(), None
            answer.apply_budget()
            token = answer.pick(logits)
            if token == self.llm.eos:
                break
            pending = token
            if answer.add(token):
                break
        return [] if pending is None else [pending]

    def _speculative(
        self, answer: AnswerInProgress, drafter: NgramDrafter, context: list[int], length: int
    ) -> list[int]:
        """Greedy decoding that checks drafted reasoning tokens in one batch and keeps those plain decoding chooses.

        State: ``rows`` (logits not yet used, one per checked position), ``drafted`` (draft tokens still
        unconfirmed), ``verified`` (KV positions holding the answer's chosen tokens), ``clean`` (KV positions
        computed exactly as plain decoding computes them: one token at a time on a clean prefix), ``pending`` (a
        chosen token not yet evaluated), ``exact`` (the logits in hand are plain decoding's). A near tie replays
        only the positions after ``clean``, one at a time, not the whole answer."""
        start = self.llm.n_past
        rows, drafted, verified, clean, pending, exact = [self.llm.logits()], [], start, start, None, True
        while len(answer.tokens) < answer.budget:
            if not rows:
                self.llm.truncate(verified)  # drop drafted tokens the last check refused
                # drafts for the reasoning only: the corpus knows its phrasing, not the pose's digits
                room = min(length, max(0, answer.budget - len(answer.tokens) - 1))
                draft = drafter.draft(answer.tokens, [*context, *answer.tokens])[:room] if answer.in_reasoning else []
                if answer.in_reasoning:
                    self.checks.append([len(draft), 0])
                exact = not draft and clean == verified  # one token on a clean prefix: as plain decoding does
                self.llm.eval_tokens([pending, *draft], all_logits=bool(draft))
                rows = [self.llm.logits(i) for i in range(len(draft) + 1)] if draft else [self.llm.logits()]
                drafted, verified, pending = draft, verified + 1, None
                clean = verified if exact else clean
                self.drafted += len(draft)
            answer.apply_budget()
            logits = rows.pop(0)
            token = answer.pick(logits)
            if not exact and near_tie(logits, token, answer.grammar, self.speculative_margin):
                logits = self._replay(clean, answer.tokens[clean - start :])
                token = answer.pick(logits)
                rows, drafted, exact = [], [], True
                verified = clean = start + len(answer.tokens)
                self.replays += 1
            if token == self.llm.eos:
                break
            complete = answer.add(token)
            if drafted and token == drafted[0]:  # the draft was right: this token is in the cache already
                drafted.pop(0)
                verified += 1
                self.accepted += 1
                self.checks[-1][1] += 1
            else:
                rows, drafted, pending = [], [], token
            if complete:
                break
        self.llm.truncate(verified)  # drop drafted tokens nobody chose
        return [] if pending is None else [pending]

    def _replay(self, position: int, tokens: list[int]) -> np.ndarray:
        """Re-evaluate ``tokens`` one at a time from KV ``position`` on (as plain decoding did); the next logits."""
        assert tokens, "a replay follows a batched check, which evaluated at least one answer token"
        self.llm.truncate(position)
        for token in tokens:
            self.llm.eval_tokens([token])
        return self.llm.logits()

    def _is_answer(self, text: str) -> bool:
        try:
            self.format.parse(text)
            return True
        except AnswerParseError:
            return False


def split_at_image(segments: list, embeddings: np.ndarray) -> list:
    """A turn's prompt as history segments: runs of token ids, with the image embeddings where ``None`` marks them."""
    out: list = []
    run: list[int] = []
    for token in segments:
        if token is None:
            out += [run, embeddings]
            run = []
        else:
            run.append(token)
    return out + [run]


class Session:
    """A conversation about one image: the first turn carries it, follow-ups refine the pose."""

    def __init__(self, model: GraspModel):
        self.model = model
        self.history: list = []
        """What the sequence holds, in order: token lists and the image embeddings (an array)."""
        self.turns: list[Prediction] = []
        self._image: Embedded | None = None

    def ask(
        self,
        instruction: str,
        image=None,
        max_new_tokens: int = MAX_NEW_TOKENS,
        constrain: bool = True,
        speculative: bool | None = None,
    ) -> Prediction:
        """One turn: a new image starts the conversation over; without one, a follow-up on the last.

        ``speculative``: True or False decide; None leaves it to the model's policy (``GraspModel.plan``)."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("the instruction is empty")
        model = self.model
        if image is not None:
            self.history, self.turns = [], []
            self._image = model.embed(image)
        if self._image is None:
            raise ValueError("the first turn of a session needs an image")
        view, embeddings, box, pre_ms, vision_ms, patches = self._image[:6]
        if image is None:
            pre_ms = vision_ms = 0.0
        self.check_room(instruction)
        hint = tuple(model.hint_objects(instruction, self._image.identity)) if not self.history else ()
        unseen = model.presence.unseen(instruction, patches) if model.presence is not None else None
        if unseen is not None:
            return self._refuse(instruction, unseen, Timings(pre_ms, vision_ms), box, view, hint)
        # the gate saw the object named: whether it is there is decided, the model may not refuse it
        seen = model.presence is not None and model.presence.named(instruction) is not None
        # a spatial instruction's object is found in the heads' instances, and the answer opens by naming it
        referent, lead = None, ""
        if constrain and not self.history and model.target is not None and self._image.identity is not None:
            referent = model.target.referent(
                instruction, self._image.identity, hint, self._image.colour, self._image.check_view
            )
            if model.format.variant is not AnswerVariant.RT:
                pass  # no reasoning to open: the referent moves the pose alone
            elif referent is not None:
                lead = model.target.lead(referent)
            else:  # a request by use whose hint names one object the heads see, or one that names nothing where
                # they see one object only: the answer opens with it
                identity = self._image.identity
                lead = model.target.use_lead(instruction, identity, hint) or model.target.only_lead(
                    instruction, identity, hint
                )
        start = time.perf_counter()
        before = model.llm.n_evaluated
        self._activate()
        segments = model.prompt_segments(instruction, first=not self.history, hint=list(hint))
        kept, n_past = len(self.history), model.llm.n_past
        try:
            self._extend(segments, embeddings)
        except LlamaError:  # e.g. the context is full: the conversation stays as it was
            del self.history[kept:]
            model.llm.truncate(n_past)
            model._active = None  # the cache no longer matches the history's lazy tail: replay next time
            raise
        prefill = time.perf_counter()
        prefilled = model.llm.n_evaluated - before
        context = [t for segment in self.history if not isinstance(segment, np.ndarray) for t in segment]
        draft = model.plan.k if speculative is None else None
        drafting = bool(draft) if speculative is None else speculative
        tokens, text, unevaluated = model.generate(
            max_new_tokens,
            constrain,
            drafting,
            context,
            draft,
            refusal=not seen,
            lead=lead,
        )
        end = time.perf_counter()
        if speculative is None:
            model.note_decode(drafting, 1000 * (end - prefill), len(tokens))
        # The answer's tail and the end of turn are evaluated lazily, when the conversation goes on.
        self.history += [tokens[: len(tokens) - len(unevaluated)], unevaluated + [model.llm.eos]]
        timings = Timings(pre_ms, vision_ms, 1000 * (prefill - start), prefilled, 1000 * (end - prefill), len(tokens))
        prediction = replace(self._parse(text, timings, box, view, tokens), hint=hint)
        if model.target is not None and prediction.pose is not None:
            if referent is not None:
                moved = model.target.on_referent(prediction.pose, referent, self._image.identity, self._image.grasp)
                if moved != prediction.pose:
                    why = (
                        f"{'spatial' if referent.relation else 'attribute'} check ({referent.category} {referent.why})"
                    )
                    prediction = self._replace_pose(prediction, moved, why)
            elif self._names_another_object(prediction):
                prediction = self._check_target(prediction)
            elif (part := model.target.part(prediction.reasoning, self._held_category())) is not None:
                prediction = self._check_part(prediction, part)
            else:
                prediction = self._check_turn(prediction)
            category = referent.category if referent is not None else None
            category = category or model.target.category(prediction.reasoning) or self._held_category()
            held = model.target.object_box(prediction.pose, category, self._image.identity, self._image.check_view)
            prediction = replace(prediction, box=held, resolved=category)
        self.turns.append(prediction)
        return prediction

    def _names_another_object(self, prediction: Prediction) -> bool:
        """Whether the target check looks at this answer: the first one, or a follow-up whose reasoning names
        another category than the turn before ("Switching to the bowl. ..."). A rotation, a side shift or another
        part of the same object keeps the model's pose."""
        if not self.turns:
            return True
        named = self.model.target.category(prediction.reasoning)
        return named is not None and named != self._held_category()

    def _held_category(self) -> str | None:
        """The category the conversation's last turn that named one named (a rotation's reasoning names none)."""
        for turn in reversed(self.turns):
            named = self.model.target.category(turn.reasoning)
            if named is not None:
                return named
        return None

    def _check_turn(self, prediction: Prediction) -> Prediction:
        """A follow-up that turns the grasp (its reasoning says it rotates, or its pose turned), with its pose moved
        to the heads' best turned grasp on the same object, or, where they show none and it said it rotates, to the
        pose before turned 90° in place (``TargetCheck.turned``), and the turn its reasoning states made the one
        taken; else the answer as it was."""
        model, image, last = self.model, self._image, self.turns[-1]
        if last.pose is None:
            return prediction
        said = ROTATING.search(prediction.reasoning) is not None
        category = self._held_category()
        moved = model.target.turned(last.pose, prediction.pose, category, image.identity, image.grasp, said)
        if moved is None:
            return prediction
        # the change the reasoning states is the one taken ("...: 0.30 to 1.87."), not the model's
        angle = model.format.render_angle
        stated = restate_turn(prediction.reasoning, angle(last.pose.theta), angle(moved.theta))
        return self._replace_pose(replace(prediction, reasoning=stated), moved, "turn check")

    def _check_part(self, prediction: Prediction, part: str) -> Prediction:
        """A follow-up that moved the grasp to ``part`` of the held object, with its pose on a patch of that part
        (``TargetCheck.on_part``); else the answer as it was."""
        model, image, last = self.model, self._image, self.turns[-1]
        if last.pose is None or image.parts is None:
            return prediction
        category = self._held_category()
        moved = model.target.on_part(
            last.pose, prediction.pose, category, part, image.identity, image.grasp, image.parts, image.part_grasp
        )
        return prediction if moved is None else self._replace_pose(prediction, moved, f"part check ({part})")

    def _check_target(self, prediction: Prediction) -> Prediction:
        """The first answer with its pose moved onto the object its reasoning named, where the bundle's target
        check says it lies elsewhere (``runtime.target``); else the answer as it was. A moved answer replaces the
        model's in the conversation, so a follow-up refines the pose the robot was given. The cache gives back the
        model's answer (its prompt and the image stay), and the next turn evaluates the moved one in its place.
        ``tokens`` stay the ones decoded."""
        model, image = self.model, self._image
        moved = model.target.moved(prediction.pose, prediction.reasoning, image.identity, image.grasp)
        if moved is None:
            return prediction
        return self._replace_pose(prediction, moved, f"target check ({model.target.category(prediction.reasoning)})")

    def _replace_pose(self, prediction: Prediction, moved: GraspPose, why: str) -> Prediction:
        """The answer with ``moved`` for its pose, in the conversation too (see ``_check_target``)."""
        model = self.model
        text = model.format.render(moved, prediction.reasoning)
        tokens = model.llm.tokenize(" " + text, add_bos=False, special=False)
        # ``ask`` just made this session the active one: the cache holds its history but the answer's lazy tail
        model.llm.truncate(model.llm.n_past - len(self.history[-2]))
        self.history[-2:] = [[], tokens + [model.llm.eos]]
        moved = model.format.parse(text).pose  # rounded as the answer writes it
        log.info("%s: moved %s to %s", why, prediction.pose, moved)
        return replace(prediction, text=text, pose=moved, written=prediction.pose)

    def check_room(self, instruction: str) -> None:
        """``TooLong`` / ``ContextFull`` unless this turn — what the session holds, the prompt, the image on a first
        turn, and room for a pose — fits the model's context. Nothing is evaluated. (A smaller room than the answer
        budget only shortens the reasoning: the pose is forced in time.)"""
        model = self.model
        segments = model.prompt_segments(instruction, first=not self.history)
        held = sum(len(s) for s in self.history)
        turn = sum(model.manifest.n_image_tokens if t is None else 1 for t in segments)
        if held + turn + model._pose_reserve <= model.llm.n_ctx:
            return
        if not self.history:
            raise TooLong(
                f"the instruction is too long: with the prompt and the image the turn takes {turn} positions, "
                f"which leaves no room for an answer in the model's context of {model.llm.n_ctx}"
            )
        raise ContextFull(
            f"context full: the conversation holds {held} of the model's {model.llm.n_ctx} positions and "
            f"another turn needs {turn + model._pose_reserve} more: start a new session"
        )

    def _refuse(
        self, instruction: str, word: str, timings: Timings, box: CropBox, view: np.ndarray, hint: tuple[str, ...]
    ) -> Prediction:
        """The presence gate's answer: the refusal the model was trained to write, nothing decoded. The turn joins
        the history as if the model had written it; this session's next turn evaluates the whole conversation again
        (another session's cache is left as it is)."""
        model = self.model
        text = model.format.render_refusal(word)
        tokens = model.llm.tokenize(" " + text, add_bos=False, special=False)  # the first token after "ASSISTANT:"
        segments = model.prompt_segments(instruction, first=not self.history, hint=list(hint))
        self.history += [*split_at_image(segments, self._image.embeddings), tokens + [model.llm.eos]]
        if model._active is self:
            model._active = None  # the cache lacks this turn: this session's next one evaluates its history anew
        prediction = replace(self._parse(text, timings, box, view, tokens), gated=True, hint=hint)
        self.turns.append(prediction)
        return prediction

    def _parse(self, text, timings, box, view, tokens) -> Prediction:
        try:
            parsed = self.model.format.parse(text)
            return Prediction(text, parsed.pose, parsed.reasoning, None, timings, box, view, tuple(tokens))
        except AnswerRefused as exc:
            return Prediction(text, None, "", exc.reason, timings, box, view, tuple(tokens), refusal=exc.object)
        except AnswerParseError as exc:
            log.warning("unparseable answer: %s", exc)
            return Prediction(text, None, "", exc.reason, timings, box, view, tuple(tokens))

    def _activate(self) -> None:
        """Make the KV cache hold exactly this session's history."""
        model = self.model
        if model._active is not self or not self.history:
            model.llm.truncate(0)
            model._active = self
            for segment in self.history:
                self._eval(segment)
        else:  # the pending tail of the last answer
            self._eval(self.history[-1])

    def _extend(self, segments: list, embeddings: np.ndarray) -> None:
        for segment in split_at_image(segments, embeddings):
            self._eval(segment)
            self.history.append(segment)

    def _eval(self, segment) -> None:
        if isinstance(segment, np.ndarray):
            self.model.llm.eval_embeddings(segment)
        elif segment:
            self.model.llm.eval_tokens(list(segment))
