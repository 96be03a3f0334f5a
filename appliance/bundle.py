"""The bundle manifest: what export writes and the appliance trusts.

A bundle is a directory (DESIGN.md, "Bundle")::

    manifest.yaml      this schema
    llm-q4_k_m.gguf    the text model for llama.cpp, tokenizer inside
    vision.onnx        vision tower + projector: pixels -> image embeddings

The manifest's schema is the nested dataclasses below, read through the one
config loader (``appliance.config.from_dict``), so an unknown key, a missing
one or a wrong type is an error naming the key. ``verify_files`` checks every
listed file's size and SHA-256 before anything is loaded from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .answer import AnswerFormat
from .config import ConfigError, from_dict, load_yaml

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.yaml"
QUANT_TYPES = ("F32", "F16", "Q8_0", "Q5_K_M", "Q4_K_M")
VISION_PRECISIONS = ("fp32", "fp16", "int8")
RESAMPLE = ("bicubic", "bilinear")


class BundleError(ValueError):
    """A bundle that must not be loaded: bad manifest, missing file, wrong hash."""


@dataclass(frozen=True)
class ImageSpec:
    """How the camera image becomes the vision tower's input (the training processor's steps).

    ``crop`` (source pixels, square, centred) is the workspace crop applied first;
    then the shortest edge is resized to ``resize`` (``resample``), centre-cropped
    to ``size``, scaled by ``rescale`` and normalised with ``mean``/``std``."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float = 1 / 255
    resample: str = "bicubic"
    crop: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1 or self.resize < self.size:
            raise ValueError(f"image size {self.size} / resize {self.resize}: need 1 <= size <= resize")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}, got {self.resample!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError("image std must be positive")
        if self.crop is not None and self.crop < 1:
            raise ValueError("crop must be a positive number of pixels")


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle with its size and SHA-256."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class AnswerSpec:
    """The answer contract the model was trained with (appliance.answer)."""

    variant: str
    decimals: int
    refusals: bool = False
    """The model was trained to refuse an instruction about an absent object ("I see no ... here.")."""

    def __post_init__(self) -> None:
        AnswerFormat(self.variant, self.decimals, self.refusals)  # validates them

    @property
    def format(self) -> AnswerFormat:
        return AnswerFormat(self.variant, self.decimals, self.refusals)


@dataclass(frozen=True)
class PresenceSpec:
    """Whether the object an instruction names is on the table at all: the vision graph's second output gives, per
    category, how many image patches show it (the vision stage's identity head, in expected value). An instruction
    whose named category reaches fewer than ``min_patches`` is refused without decoding (``runtime.presence``)."""

    classes: tuple[str, ...]
    """The categories of the output, in order."""
    min_patches: float = 0.5
    """Below this a named category counts as absent (export.quantize's ``--min-patches``)."""
    output: str = "object_patches"
    source: str = ""
    """The vision-stage checkpoint the head came from."""

    def __post_init__(self) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError("presence.classes: a list of distinct category names")
        if any(not c.strip() or c != c.lower() for c in self.classes):
            raise ValueError("presence.classes: category names are lower case")
        if not self.min_patches >= 0:
            raise ValueError(f"presence.min_patches must be >= 0, got {self.min_patches}")


PATCH_IDENTITY, PATCH_GRASP, PATCH_PARTS, PATCH_COLOUR = "patch_identity", "patch_grasp", "patch_parts", "patch_colour"
PATCH_PART_GRASP = "patch_part_grasp"
"""The vision graph's patch maps for the target check (``export.vision`` writes them, ``runtime.target`` reads them)."""
PART_GRASP_FIELDS = 4
"""Per patch and part, where in the patch that part's grasp is: offset x, y in the patch (0..1) and cos 2θ, sin 2θ."""
GRASP_FIELDS = 5
"""Per patch: centre logit, offset x and y within the patch (0..1), cos 2θ, sin 2θ (``training.stages.PatchHeads``)."""
SPATIAL_RELATIONS = ("left", "right", "near", "far")
"""The relations a spatial instruction may ask by (``training.reasoning.referring.RELATIONS``)."""
USE_LEAD = "use"
"""The ``leads`` key of the words an answer to a request by use opens with ("A pair of scissors is")."""
ONLY_LEAD = "only"
"""The ``leads`` key of the sentence an answer opens with where the instruction names nothing and the heads see one
object ("The image shows a spatula.")."""
TARGET_POSES = ("model", "heads")
"""Whose pose the target check gives on the object the reasoning named (``TargetCheckSpec.pose``)."""


@dataclass(frozen=True)
class TargetCheckSpec:
    """Whether the pose lies on the object the reasoning named: the vision graph also gives, per patch, the
    identity head's probabilities (the presence section's categories, then the table) and the grasp heads' output
    (centre logit, offset x and y in the patch, cos 2θ, sin 2θ). A first answer whose pose lies on no patch of the
    category its reasoning names, where some patch shows that category, is moved to the heads' best grasp on it;
    with ``pose: heads`` a pose on that object is replaced by the heads' best grasp on it too (``runtime.target``)."""

    grid: int
    """Patches per side of the model's view (the tower's image size over its patch size)."""
    reach: int = 1
    """A pose on a patch the head gives the table still counts as on the category when one of the patches this
    many steps away (rows or columns) shows it: a grasp centre between the fingers lies on the table. 1 was chosen
    on validation scenes with labelled poses (bench/results/n-words): it moved 4.2 % of right poses against 17.0 %
    at 0, and 85.5 % of poses on other objects against 82.4 % at 2."""
    identity: str = PATCH_IDENTITY
    """The graph's output of per-patch identity probabilities (patches, categories + table)."""
    grasp: str = PATCH_GRASP
    """The graph's output of per-patch grasp values (patches, ``GRASP_FIELDS``)."""
    source: str = ""
    """The vision-stage checkpoint the heads came from."""
    pose: str = "model"
    """Whose pose the robot gets when the first pose lies on the object named. ``model``: the model's own.
    ``heads``: the heads' best grasp on the object under the model's pose (the patches of that category joined to
    it), so the reasoning picks the category, the model's pose the instance, the heads the grasp. Chosen on
    validation clutter for the demo build (bench/results/n-heads-pose)."""
    leads: dict[str, str] = field(default_factory=dict)
    """Per spatial relation (``SPATIAL_RELATIONS``), the sentence an RT answer opens with when a first instruction
    asks for the object leading it, with an ``{a_name}`` field: "The one on the left is {a_name}." The runtime finds
    that object among the identity head's instances and makes the answer open so (``runtime.target.referent``).
    Under ``USE_LEAD``, the words an answer to a request by use opens with, with an ``{A_name}`` field ("{A_name}
    is": the training data's "A pair of scissors is something to cut with."), taken when the hint names one object
    and the identity head shows it (``runtime.target.TargetCheck.use_lead``). Under ``ONLY_LEAD``, the sentence
    (with ``{a_name}``) an answer opens with where the instruction names no object, use or place and the identity
    head sees one object only ("The image shows {a_name}.", ``TargetCheck.only_lead``).
    Empty (bundles exported before it): spatial instructions are the model's alone; no ``use``: nor uses."""
    a_names: dict[str, str] = field(default_factory=dict)
    """Every presence category with its article, as the training data writes it ("an apple", "scissors")."""
    parts: str = ""
    """The graph's output, per patch, of the probability that it holds a grasp on each part (patches,
    ``part_classes``; several may be high where parts meet): the part head
    (``training.parts``). A follow-up whose reasoning moves the grasp to a part of the held object ("Moving the grasp
    to the handle of the mug.") gets the heads' best grasp among that object's patches showing the part. Empty
    (bundles exported before it, or without ``export.quantize --parts``): part follow-ups are the model's alone."""
    part_classes: tuple[str, ...] = ()
    """The part head's classes, in its order."""
    category_parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per category, the parts its grasps may be on: the part check chooses among these for the held object."""
    part_grasp: str = ""
    """The graph's output, per patch and part of ``part_classes``, of where in the patch that part's grasp is
    (patches, part classes, ``PART_GRASP_FIELDS``: offset x, y, cos 2θ, sin 2θ; the part head's placement). The part
    check then puts the pose on the part named, not on the grasp heads' one candidate in the patch (often another
    part's where two meet). Empty (bundles exported before it): the grasp heads' candidate."""
    colour: str = ""
    """The graph's output, per patch, of the vision stage's colour head: the probability of each of ``colours`` and
    last of no colour word (patches, colours + 1). A first instruction that tells two objects of its category apart
    by colour ("the blue mug") gets the heads' grasp on the instance of that colour
    (``runtime.target.TargetCheck.described``). Empty (bundles exported before it): the colour is the model's alone."""
    colours: tuple[str, ...] = ()
    """The colour head's words, in its order."""

    def __post_init__(self) -> None:
        known = (*SPATIAL_RELATIONS, USE_LEAD, ONLY_LEAD)
        unknown = set(self.leads) - set(known)
        if unknown:
            raise ValueError(f"target_check.leads: unknown lead {sorted(unknown)[0]!r} (known: {', '.join(known)})")
        for name, lead in self.leads.items():
            field_name = "A_name" if name == USE_LEAD else "a_name"
            try:
                filled = lead.format(**{field_name: "a mug"})
            except (ValueError, IndexError, KeyError):
                filled = None
            if lead.count(f"{{{field_name}}}") != 1 or filled is None or "[" in lead or not lead.isprintable():
                raise ValueError(
                    f"target_check.leads.{name}: one sentence with a single {{{field_name}}} field and no '[', "
                    f"got {lead!r}"
                )
        for category, a_name in self.a_names.items():
            if not a_name.strip() or "[" in a_name or "{" in a_name or not a_name.isprintable():
                raise ValueError(f"target_check.a_names.{category}: a name with its article, got {a_name!r}")
        if self.leads and not self.a_names:
            raise ValueError("target_check.leads need a_names (each category with its article)")
        if self.grid < 1:
            raise ValueError(f"target_check.grid must be >= 1, got {self.grid}")
        if not 0 <= self.reach < self.grid:
            raise ValueError(f"target_check.reach must be in 0..{self.grid - 1}, got {self.reach}")
        if self.pose not in TARGET_POSES:
            raise ValueError(f"target_check.pose must be one of {', '.join(TARGET_POSES)}, got {self.pose!r}")
        if self.parts:
            if not self.part_classes or len(set(self.part_classes)) != len(self.part_classes):
                raise ValueError("target_check.part_classes: the part head's distinct classes, needed with parts")
            for category, parts in self.category_parts.items():
                unknown = [p for p in parts if p not in self.part_classes]
                if unknown:
                    raise ValueError(f"target_check.category_parts.{category}: {unknown[0]!r} is not in part_classes")
        elif self.part_classes or self.category_parts or self.part_grasp:
            raise ValueError(
                "target_check.part_classes, category_parts and part_grasp need parts (the graph's part output)"
            )
        words = [c for c in self.colours if isinstance(c, str) and c.strip() and c == c.lower()]
        if bool(self.colour) != bool(self.colours) or len(set(words)) != len(self.colours):
            raise ValueError(
                "target_check.colours: the colour head's distinct lower-case words, with colour and only then"
            )


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to know about a bundle, and where it came from."""

    schema: int
    model: str
    source: str
    """The merged checkpoint the bundle was exported from."""
    quant: str
    llm: str
    """File name of the GGUF."""
    vision: str
    """File name of the ONNX vision tower."""
    vision_precision: str
    image: ImageSpec
    n_image_tokens: int
    embedding_width: int
    prompt_template: str
    """Single-turn prompt with ``{instruction}``; ``image_token`` marks where the embeddings go."""
    image_token: str
    followup_template: str
    """A refinement turn appended after an answer (with ``{instruction}``)."""
    answer: AnswerSpec
    files: dict[str, FileEntry]
    tokenizer: str = "spm"
    speech: str | None = None
    """File name of the speech vocabulary (appliance.daemon.speech), when the bundle has one."""
    drafts: str | None = None
    """File name of the reasoning corpus speculative decoding drafts from (appliance.runtime.draft)."""
    categories: dict[str, str] | None = None
    """The object vocabulary the model was trained with: every category name and synonym → its category name
    (appliance.runtime.objects reads the category a reasoning names). Optional: bundles exported before it have
    none, and their replies name no category."""
    knowledge: str | None = None
    """File name of the hints' knowledge (appliance.hints): the model was trained with every first instruction
    carrying its hint, and the runtime appends it the same way. Bundles without it have no hints."""
    presence: PresenceSpec | None = None
    """The gate that refuses an instruction naming what is not on the table; bundles without it have none."""
    target_check: TargetCheckSpec | None = None
    """The check that keeps a first pose on the object its reasoning named; it needs ``presence`` (its categories)
    and ``categories`` (to read the name). Bundles without it keep every pose as the model wrote it."""
    created: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    """Figures measured at export time (parity errors, accuracy when a dataset was given)."""

    def __post_init__(self) -> None:
        if self.schema != SCHEMA_VERSION:
            raise ValueError(f"schema {self.schema} is not supported (this runtime reads {SCHEMA_VERSION})")
        if self.quant not in QUANT_TYPES:
            raise ValueError(f"quant must be one of {QUANT_TYPES}, got {self.quant!r}")
        if self.vision_precision not in VISION_PRECISIONS:
            raise ValueError(f"vision_precision must be one of {VISION_PRECISIONS}, got {self.vision_precision!r}")
        for name in (self.llm, self.vision, self.speech, self.drafts, self.knowledge):
            if name is not None and name not in self.files:
                raise ValueError(f"{name!r} is not listed under files")
        if self.prompt_template.count(self.image_token) != 1 or "{instruction}" not in self.prompt_template:
            raise ValueError("prompt_template needs exactly one image token and an {instruction} field")
        if "{instruction}" not in self.followup_template:
            raise ValueError("followup_template needs an {instruction} field")
        if self.n_image_tokens < 1 or self.embedding_width < 1:
            raise ValueError("n_image_tokens and embedding_width must be positive")
        if self.target_check is not None and (self.presence is None or not self.categories):
            raise ValueError("target_check needs a presence section (its categories) and the categories vocabulary")
        if self.target_check is not None and self.target_check.leads:
            lacking = [c for c in self.presence.classes if c not in self.target_check.a_names]
            if lacking:
                raise ValueError(f"target_check.a_names lacks {', '.join(lacking)}")
        for word, name in (self.categories or {}).items():
            if not word.strip() or word != word.lower() or self.categories.get(name) != name:
                raise ValueError(
                    f"categories: {word!r} -> {name!r}: words are lower case and map to a category that maps to itself"
                )


def manifest_from_dict(data: dict, where: str = MANIFEST_FILE) -> Manifest:
    """Validate a manifest mapping; ``BundleError`` names the bad key."""
    try:
        return from_dict(Manifest, data, where)
    except ConfigError as exc:
        raise BundleError(str(exc)) from exc


def manifest_to_yaml(manifest: Manifest) -> str:
    """The manifest as YAML text (keys in schema order)."""
    data = dataclasses.asdict(manifest)
    data["image"]["mean"] = list(manifest.image.mean)
    data["image"]["std"] = list(manifest.image.std)
    if manifest.presence is not None:
        data["presence"]["classes"] = list(manifest.presence.classes)
    if manifest.target_check is not None:
        spec = manifest.target_check
        data["target_check"]["part_classes"] = list(spec.part_classes)
        data["target_check"]["category_parts"] = {c: list(p) for c, p in spec.category_parts.items()}
        data["target_check"]["colours"] = list(spec.colours)
        if not spec.part_grasp:  # a bundle without placements reads as before, in runtimes from before them too
            del data["target_check"]["part_grasp"]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> FileEntry:
    """The manifest entry for one file."""
    return FileEntry(sha256=sha256_file(path), bytes=Path(path).stat().st_size)


def verify_files(directory: Path, manifest: Manifest) -> None:
    """Every listed file exists with its size and hash; ``BundleError`` otherwise."""
    for name, entry in manifest.files.items():
        path = Path(directory) / name
        if Path(name).name != name:
            raise BundleError(f"{MANIFEST_FILE}: file name {name!r} must not contain a path")
        if not path.is_file():
            raise BundleError(f"{path} is missing")
        if path.stat().st_size != entry.bytes:
            raise BundleError(f"{path}: {path.stat().st_size} bytes, the manifest says {entry.bytes}")
        if sha256_file(path) != entry.sha256:
            raise BundleError(f"{path}: SHA-256 does not match the manifest (file changed or corrupt)")


def read_bundle(directory: Path, verify: bool = True) -> Manifest:
    """Read and validate ``directory/manifest.yaml`` and (by default) verify every file."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{directory} is not a bundle (no {MANIFEST_FILE})")
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise BundleError(str(exc)) from exc
    manifest = manifest_from_dict(data, str(path))
    if verify:
        verify_files(directory, manifest)
    return manifest
