"""Is the pose on the object the reasoning named? Move it there when it is plainly not.

    check = TargetCheck(manifest.target_check, manifest.presence.classes, CategoryNames(manifest.categories))
    check.moved(pose, "The one on the left is a knife, ...", identity, grasp)   # a GraspPose, or None to keep

An RT answer says which object it means before it writes the pose ("The one on the left is a knife, a long thin
blade ..."). On the tiny model the two disagree: in clutter (bench/results/n-gpu, validation) it named the category
meant for 98.9 % of attribute requests but put the pose on that object for 74.2 %; spatial 55.0 against 39.0 %;
name 88.2 against 85.7 %; for function requests the other way round, 52.4 against 64.3 %. The bundle's vision
graph carries, per patch of the model's view, the vision stage's identity head (which category the patch shows, or
the table) and its grasp heads (``export.vision``). When the pose lies on no patch of the named category, and some
patch shows that category, the pose moves to the heads' best grasp among those patches: the grasp the
instruction-blind heads would choose, told the object the reasoning chose. So the check trusts the words over the
pose: where the reasoning names the wrong object it moves a right pose onto it. Nothing else changes: a reasoning
that names no known category, or a category no patch shows, keeps the model's pose.

"On a patch of the category": the patch under the grasp centre shows it; or that patch shows the table (a centre
between the fingers often does) and a patch within ``reach`` rows and columns shows it. A pose on a patch of
another object is moved.

With the spec's ``pose: heads`` a pose on the object named is replaced as well: by the heads' best grasp on the
patches of that category joined (side by side) to the ones under the pose. The model's pose then says which
instance it means ("the red mug" of two), and the heads where to hold it. On validation clutter (458 requests)
the heads' grasp on the object named was on target for 91 % of name requests where the model's own pose was for
68 % (bench/results/n-heads-pose).

Follow-ups (``runtime.model.Session``): one that names another object is checked as a first answer is; one that
moves the grasp to another part of the held object goes through ``on_part`` (where the bundle has the part head's
map, and with its placements the part's own grasp in the patch); one that turned the grasp goes through ``turned``.

Spatial instructions ("the mug on the left", "the object nearest the robot") are where the tiny model is weakest
(validation clutter: the pose on the object meant for 29 % of them, 87–92 % for the other kinds). Which object
leads a relation is geometry the heads already see, so ``referent`` finds it: the identity head's instances (its
patches of one category joined side by side) of the category the instruction names, or of every category when it
names none, and the one whose centre lies furthest in the relation's direction. The session then makes the answer
open with the sentence the model was trained to write for it ("The one on the left is a mug.", the spec's
``leads``), the model writes how such an object is held and its pose, and the pose goes to the heads' best grasp on
that instance (``on_referent``). A request by use ("something to cut with") whose hint, narrowed to the objects the
heads see, names one object opens the answer with it ("A pair of scissors is", ``use_lead``), and the check as for
a name follows. An instruction that names nothing ("Lift the object.") where the heads see one object only opens
with it ("The image shows a spatula.", ``only_lead``). One that tells two objects of its category apart by colour
("the red mug") takes the instance the colour head gives that word (``described``); by size ("the larger box",
"the smallest cup"), the object of the largest (smallest) footprint counted in the view's own pixels, off the
table's colour (``sized``, ``footprints``). Those pixels also join a long object the head splits in two groups of
patches, for spatial requests (``objects``), and give the box of the object an answer holds (``object_box``).
numpy only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from appliance.bundle import GRASP_FIELDS, ONLY_LEAD, PART_GRASP_FIELDS, USE_LEAD, TargetCheckSpec
from appliance.grasp import GraspPose, angle_difference, wrap_angle

from .objects import DESCRIBED, CategoryNames

RELATIONS = {"left": (0, -1.0), "right": (0, 1.0), "near": (1, -1.0), "far": (1, 1.0)}
"""Per spatial relation, the patch axis (0 rows, 1 columns) and the sign along it that leads. The robot stands at
x = 0 facing +x with +y on its left, and the camera looks down with +y at the top of the image and +x to the right
(``training.reasoning.referring``): left leads upwards (fewer rows), near leads leftwards (fewer columns)."""
_SIDE = r"\b(?:(?:on|to) (?:the |my |your |its |the robot's )?{side}\b(?! of\b)(?!-)|{side}-?most\b)"
_TO_ROBOT = r"(?:the robot|me|you|us)\b"
_RELATION_WORDS = (
    ("left", re.compile(_SIDE.format(side="left"))),
    ("right", re.compile(_SIDE.format(side="right"))),
    ("near", re.compile(r"\b(?:nearest|closest|nearer|closer)(?: to)? " + _TO_ROBOT)),
    ("far", re.compile(r"\b(?:farthest|furthest|farther|further)(?: away)?(?: from)? " + _TO_ROBOT)),
)
"""Relations in the phrases a place is asked by ("to the left", "on the robot's right", "the leftmost cup",
"nearest the robot", "farthest away from me"); a bare word is none ("right now", "what is left", "closest to the
bowl", "to the left of the mug": a place relative to another object is not resolved here)."""


_DESCRIBED = re.compile(r"\b(?:" + "|".join(sorted(DESCRIBED)) + r")\b", re.IGNORECASE)
"""The words a request by use starts its description with ("something", "a thing", "a tool")."""


def relation(instruction: str) -> str | None:
    """The spatial relation an instruction asks by ("the bowl to the left": ``left``; "the cup nearest the robot":
    ``near``), None when it uses none or more than one ("left of the closest bowl" is no relation we resolve)."""
    lower = instruction.lower()
    found = [name for name, pattern in _RELATION_WORDS if pattern.search(lower)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Referent:
    """The object a first instruction asks for by a spatial relation, a colour or a size, as the heads see it."""

    relation: str | None
    """The spatial relation; None for an object asked for by ``word``."""
    category: str
    patches: np.ndarray
    """(grid, grid) bool: its patches."""
    word: str = ""
    """The colour or size word that told it from the others of its category."""
    fits: np.ndarray | None = None
    """(grid, grid) bool, for an object asked for by ``word``: the patches of every instance the word fits as well
    (``FIT``): a pose on one of them keeps its instance."""

    @property
    def why(self) -> str:
        """What resolved it, for the log: the relation or the word."""
        return self.relation or self.word


FIT = 0.5
"""An instance fits a colour word as well as the best one when the colour map gives the word at least this share of
the best instance's mean probability: two groups of one long object's patches (a pen's, a spoon's; the head splits
them) both fit, and the model's pose chooses between them."""


MIN_TURN = math.radians(60)
"""A follow-up pose turned this far from the one before is a rotation (``training.reasoning.refine.MIN_ROTATION``)."""
TURN = math.radians(75)
"""How far the heads' grasp that replaces a rotation is turned, where the held object has one that far
(``training.reasoning.refine.TURNED``); else at least ``MIN_TURN``."""
ROTATING = re.compile(r"\brotat(?:e|es|ed|ing|ion)\b", re.IGNORECASE)
"""A follow-up's reasoning that says it turns the grasp ("Rotating the gripper by 90 degrees: -0.36 to 1.21.")."""
TURN_STATED = re.compile(r"(\brotat\w*\b[^.:\[]*:\s*)(-?\d+(?:\.\d+)?)( to )(-?\d+(?:\.\d+)?)", re.IGNORECASE)
"""Where such reasoning states the change of angle: "...: -0.36 to 1.21" (``training.build_dataset``'s template)."""
PART_SHOWN = 0.5
"""A patch shows a part when the part map gives it at least this probability of holding a grasp on it."""
SIZE_WORDS = {w: 1 for w in ("larger", "largest", "bigger", "biggest", "large", "big")} | {
    w: -1 for w in ("smaller", "smallest", "small", "little")
}
"""Size words before a name ("the smaller box"): 1 asks for the instance of the largest footprint, -1 the smallest."""
SIZE_MARGIN = 1.05
"""The footprint asked for must beat the runner-up's by this ratio; else the model's pose says which instance."""
TABLE_SPREAD = 4.0
"""A view pixel is off the table when its colour lies this many robust deviations (1.4826 MAD) from the median colour
of the patches the identity head calls table, and at least ``TABLE_MIN`` RGB units from it."""
TABLE_MIN = 12.0
ON_LABEL = 0.3
"""A region of off-table pixels is an object of the category when at least this share of it lies on its patches
(less: a neighbour's pixels on patches the head calls table)."""
COVER = 0.1
"""A region keeps the category's patches it covers this share of (of a patch's sampled pixels); one smaller than
this share of a patch is a speck."""
STEP = 2
"""Footprints are measured on every ``STEP``-th pixel of the view, in each direction."""
MAX_REGIONS = 64
"""More regions of off-table pixels than this on one category's patches and the table are a texture, not objects."""


class TargetCheck:
    """The target check of a bundle's ``target_check`` section."""

    def __init__(self, spec: TargetCheckSpec, classes, names: CategoryNames):
        self.spec, self.names = spec, names
        self.index = {c: i for i, c in enumerate(classes)}
        self.patches = spec.grid * spec.grid

    def check_shapes(
        self,
        identity: tuple,
        grasp: tuple,
        parts: tuple | None = None,
        colour: tuple | None = None,
        part_grasp: tuple | None = None,
    ) -> None:
        """``ValueError`` unless the maps' shapes for one image are (patches, categories + table) and (patches, 5),
        the part map's (where the spec has one) (patches, part classes), its placements' (patches, part classes,
        4), the colour map's (patches, colours + 1)."""
        want_identity, want_grasp = (self.patches, len(self.index) + 1), (self.patches, GRASP_FIELDS)
        if tuple(identity) != want_identity or tuple(grasp) != want_grasp:
            raise ValueError(
                f"the patch maps are {tuple(identity)} and {tuple(grasp)}, the manifest's target check expects "
                f"{want_identity} and {want_grasp}"
            )
        want_parts = (self.patches, len(self.spec.part_classes))
        if self.spec.parts and tuple(parts or ()) != want_parts:
            raise ValueError(f"the part map is {parts}, the manifest's part check expects {want_parts}")
        want_place = (*want_parts, PART_GRASP_FIELDS)
        if self.spec.part_grasp and tuple(part_grasp or ()) != want_place:
            raise ValueError(f"the part placements are {part_grasp}, the manifest's part check expects {want_place}")
        want_colour = (self.patches, len(self.spec.colours) + 1)
        if self.spec.colour and tuple(colour or ()) != want_colour:
            raise ValueError(f"the colour map is {colour}, the manifest's colour words expect {want_colour}")

    def category(self, reasoning: str) -> str | None:
        """The category the reasoning names first, when the identity head knows it."""
        named = self.names.first(reasoning)
        return named if named in self.index else None

    def moved(self, pose: GraspPose, reasoning: str, identity: np.ndarray, grasp: np.ndarray) -> GraspPose | None:
        """The pose to take instead of ``pose`` (image-normalised in the model's view), or None to keep it."""
        category = self.category(reasoning)
        if category is None:
            return None
        grid = self.spec.grid
        labels = identity.argmax(-1).reshape(grid, grid)
        shown = labels == self.index[category]
        if not shown.any():
            return None  # the head sees no such object: nothing better to offer than the model's own pose
        under = self.under(pose, labels, shown)
        if not under.any():
            return best_grasp(grasp, shown.reshape(-1), grid)
        if self.spec.pose == "model":
            return None
        return best_grasp(grasp, joined(shown, under).reshape(-1), grid)

    def shown(self, objects: list[str], identity: np.ndarray) -> list[str]:
        """The ``objects`` (names: "a pair of scissors") of a category the identity head gives some patch."""
        labels = set(identity.argmax(-1).tolist())
        return [o for o in objects if (c := self.names.first(o)) in self.index and self.index[c] in labels]

    def referent(
        self,
        instruction: str,
        identity: np.ndarray,
        hint: tuple[str, ...] = (),
        colour: np.ndarray | None = None,
        view: np.ndarray | None = None,
    ) -> Referent | None:
        """The object a first instruction asks for by a spatial relation: among the objects the identity head shows
        (``objects``: its instances, or with the ``view`` its pixels' regions where they agree) of the category it
        names (every category when it names none; of the ``hint``'s objects, "a knife", when it asks by a use:
        "something to cut with on the left"), the one whose centre leads the relation; None when no patch shows
        what it names. Without a relation the spec ``leads``, the object it tells from the others of its
        category by colour or size (``described``; ``view``: the model's view, (size, size, 3) RGB)."""
        kind = relation(instruction)
        if kind is None or kind not in self.spec.leads:
            return self.described(instruction, identity, colour, view)
        requested = self.names.requested(instruction)
        grid, table = self.spec.grid, len(self.index)
        labels = identity.argmax(-1).reshape(grid, grid)
        shown = sorted({int(v) for v in np.unique(labels)} - {table})
        hinted = {self.index[c] for o in hint if (c := self.names.first(o)) in self.index}
        if requested is not None:
            if requested[1] not in self.index:
                return None
            wanted = [self.index[requested[1]]]
        else:
            wanted = [label for label in shown if label in hinted] or shown
        found = [(label, patches) for label in wanted for patches in self.objects(labels, label, view)]
        if not found:
            return None
        axis, sign = RELATIONS[kind]
        label, patches = max(found, key=lambda f: sign * float(np.nonzero(f[1])[axis].mean()))
        if requested is not None and len(found) == 1:
            # "the mug on the left" asks among two mugs or more, the head shows one: they touch, and the one
            # asked for is the part of that group on the relation's side
            along = np.nonzero(patches)[axis]
            side = np.zeros_like(patches)
            side[patches] = sign * (along - along.mean()) > 0
            patches = side if side.any() else patches
        classes = list(self.index)
        return Referent(kind, classes[label], patches)

    def objects(self, labels: np.ndarray, label: int, view: np.ndarray | None = None) -> list[np.ndarray]:
        """The objects the identity head shows as ``label`` ((grid, grid) bool each): its instances (``instances``),
        or, with the model's ``view``, the ``footprints`` there when they join some instances and miss none (no
        more of them than instances, every instance sharing a patch with one). The head splits a long object (a
        knife, a banana, a screwdriver) in groups of patches where a thin middle looks like table; the pixels
        join them. Where the pixels miss an object (its colour near the table's) or split one (a pair of
        sunglasses' lenses), the instances stand."""
        groups = instances(labels == label)
        if view is None or len(groups) < 2:
            return groups
        found = self.regions(labels, label, view)
        return groups if found is None else [f.patches for f in found]

    def regions(self, labels: np.ndarray, label: int, view: np.ndarray, split: bool = False) -> list[Footprint] | None:
        """The view's ``footprints`` of identity ``label``, when they agree with the head's instances of it: every
        instance sharing a patch with one (they miss none: an object the table's colour), and unless ``split``, no
        more of them than instances (the pixels split no object the head sees whole: a pair of sunglasses' lenses).
        None otherwise."""
        groups = instances(labels == label)
        found = footprints(view, labels, label, len(self.index))
        if not found or (len(found) > len(groups) and not split):
            return None
        if not all(any((g & f.patches).any() for f in found) for g in groups):
            return None
        return found

    def described(
        self, instruction: str, identity: np.ndarray, colour: np.ndarray | None = None, view: np.ndarray | None = None
    ) -> Referent | None:
        """The object an instruction asks for by a colour word before its name ("the blue mug"), where the identity
        head shows two instances of that category or more: the instance the colour map gives the word most (mean
        probability over its patches; ``fits``: those within ``FIT`` of it), when the word is the likeliest colour
        of one of that instance's patches at least. None otherwise (one instance: the target check as for a name; no
        colour map, or one that sees the colour nowhere on them): the model's pose says which. Without a colour
        word, a size word ("the smaller box") asks ``sized``."""
        requested = self.names.requested(instruction)
        if requested is None or requested[1] not in self.index:
            return None
        words = [w for w in self.names.attributes(instruction) if w in self.spec.colours]
        if not words:
            return self.sized(instruction, requested[1], identity, view)
        if colour is None:
            return None
        category, word, grid = requested[1], words[0], self.spec.grid
        found = instances(identity.argmax(-1).reshape(grid, grid) == self.index[category])
        if len(found) < 2:
            return None
        k = self.spec.colours.index(word)
        probability = colour[:, k].reshape(grid, grid)
        scores = np.array([float(probability[p].mean()) for p in found])
        best = int(np.argmax(scores)) if np.isfinite(scores).all() else None
        if best is None or not (colour.argmax(-1).reshape(grid, grid)[found[best]] == k).any():
            return None  # the head sees that colour on none of them (or the map is broken): nothing to go by
        fits = np.any([p for p, score in zip(found, scores) if score >= FIT * scores[best]], axis=0)
        return Referent(None, category, found[best], word, fits)

    def sized(self, instruction: str, category: str, identity: np.ndarray, view: np.ndarray | None) -> Referent | None:
        """The object an instruction asks for by a size word before its name ("the larger box", ``SIZE_WORDS``),
        among two or more of ``category`` on the table: the one of the largest (smallest) footprint in the view's
        pixels (``regions``; they may tell apart two twins that touch, which the head sees as one), when it beats
        the runner-up by ``SIZE_MARGIN``. None otherwise (no size word, no view, fewer than two such objects,
        pixels that miss one the head sees, a near tie): the model's pose says which. The identity head's patches
        alone could not tell: by patch count the object asked for in 25 of 46 size requests, as without it, since
        an 8 x 8 grid does not tell footprints 15 % apart (bench/results/n-attributes)."""
        words = [w for w in self.names.attributes(instruction) if w in SIZE_WORDS]
        if view is None or not words:
            return None
        labels = identity.argmax(-1).reshape(self.spec.grid, self.spec.grid)
        found = self.regions(labels, self.index[category], view, split=True) or []
        if len(found) < 2:
            return None
        ranked = sorted(found, key=lambda f: SIZE_WORDS[words[0]] * f.area, reverse=True)
        best, runner = ranked[0].area, ranked[1].area
        if max(best, runner) < SIZE_MARGIN * min(best, runner):
            return None
        return Referent(None, category, ranked[0].patches, words[0])

    def object_box(
        self, pose: GraspPose, category: str | None, identity: np.ndarray, view: np.ndarray
    ) -> tuple[float, float, float, float] | None:
        """The box ``(x0, y0, x1, y1)`` (image-normalised in the model's view, half-open) of the object ``pose``
        holds, an object of ``category`` (the one the request resolved to, or the answer names): of the view's
        ``footprints`` of that category that share a patch with the category's patches joined to the ones under the
        pose, the one whose box lies nearest the grasp centre (two twins the head sees as one group are two
        regions: the one under the pose), then the one sharing most patches. None when the category is unknown or
        no patch of it lies under the pose, or the pixels show no such object. The reply's box then names the same
        object as its category (a depth rule alone boxed a ball beside a knife whose 4 mm blade it cannot see)."""
        if category not in self.index:
            return None
        grid = self.spec.grid
        labels = identity.argmax(-1).reshape(grid, grid)
        shown = labels == self.index[category]
        held = joined(shown, self.under(pose, labels, shown))
        if not held.any():
            return None
        found = [
            (int((f.patches & held).sum()), f) for f in footprints(view, labels, self.index[category], len(self.index))
        ]
        found = [(n, f) for n, f in found if n]

        def away(box: tuple[float, float, float, float]) -> float:
            """How far the grasp centre lies outside ``box`` (0 inside it)."""
            return math.hypot(max(box[0] - pose.x, 0.0, pose.x - box[2]), max(box[1] - pose.y, 0.0, pose.y - box[3]))

        return min(found, key=lambda nf: (away(nf[1].box), -nf[0], -nf[1].area))[1].box if found else None

    def lead(self, referent: Referent) -> str:
        """The sentence the answer about ``referent`` opens with ("The one on the left is a mug."); none for an
        object asked for by colour or size (the model's answer names the word: "The blue one is a mug.")."""
        if referent.relation is None:
            return ""
        return self.spec.leads[referent.relation].format(a_name=self.spec.a_names[referent.category])

    def use_lead(self, instruction: str, identity: np.ndarray, hint: tuple[str, ...]) -> str:
        """The words the answer to a first instruction that asks for an object by its use opens with ("A pair of
        scissors is"), the spec's ``use`` lead with the object the hint names, when the instruction names no object,
        the hint (narrowed to what the heads see: ``GraspModel.hint_objects``) names one, and some patch shows its
        category; "" otherwise. The model then writes the use, how such an object is held and its pose, and the
        target check puts the pose on that object. Without it the tiny model named another object than the only
        one hinted in 6 of 84 validation requests by use in clutter ("A box is something to keep things in.", the
        hint a pair of scissors; bench/results/n-uses-and-turns)."""
        template = self.spec.leads.get(USE_LEAD)
        if template is None or len(hint) != 1 or self.names.requested(instruction) is not None:
            return ""
        category = self.names.first(hint[0])
        if category not in self.index or category not in self.spec.a_names:
            return ""
        # a name before the words of the use ("pass me pliers to grip", "I need scissors to cut paper") is the
        # object asked for; one after them is part of the use ("something to turn food in a pan")
        head = _DESCRIBED.split(instruction, maxsplit=1)[0]
        if (named := self.names.first(head)) is not None and named != category:
            return ""
        # one patch is enough: small objects (a toy block, a pen) show on one; in validation 7 of 81 leads were
        # on such an object, every one the object meant
        if not (identity.argmax(-1) == self.index[category]).any():
            return ""  # the heads see no such object: the model may say what it sees, or refuse
        a_name = self.spec.a_names[category]
        return template.format(A_name=a_name[:1].upper() + a_name[1:])

    def only_lead(self, instruction: str, identity: np.ndarray, hint: tuple[str, ...]) -> str:
        """The sentence the answer to a first instruction that names no object, use or place ("Lift the object.")
        opens with, where the identity head sees one object only (its patches off the table join side by side):
        the spec's ``only`` lead with that object's category (the one most of its patches show); "" otherwise. On
        single objects the tiny model named another category than the one there for half of such requests, and
        the target check could not move a pose onto a category no patch shows (bench/results/n-uses-and-turns)."""
        template = self.spec.leads.get(ONLY_LEAD)
        if template is None or hint or relation(instruction) is not None or self.names.first(instruction):
            return ""
        labels = identity.argmax(-1)
        table = len(self.index)
        groups = instances((labels != table).reshape(self.spec.grid, self.spec.grid))
        if len(groups) != 1:
            return ""
        category = list(self.index)[int(np.argmax(np.bincount(labels[groups[0].reshape(-1)], minlength=table)))]
        if category not in self.spec.a_names:
            return ""
        return template.format(a_name=self.spec.a_names[category])

    def on_referent(self, pose: GraspPose, referent: Referent, identity: np.ndarray, grasp: np.ndarray) -> GraspPose:
        """The pose for a first answer about ``referent``: the heads' best grasp on it, or with the spec's ``pose:
        model`` the model's own pose when it lies on it. One asked for by colour: a pose on an instance that ``fits``
        keeps that instance (the heads' best grasp on it, or the model's pose), as a name's check would."""
        labels = identity.argmax(-1).reshape(self.spec.grid, self.spec.grid)
        if referent.fits is not None:
            under = self.under(pose, labels, referent.fits)
            if under.any():
                held = joined(referent.fits, under)
                return pose if self.spec.pose == "model" else best_grasp(grasp, held.reshape(-1), self.spec.grid)
        elif self.spec.pose == "model" and (self.under(pose, labels, referent.patches) & referent.patches).any():
            return pose
        return best_grasp(grasp, referent.patches.reshape(-1), self.spec.grid)

    def turned(
        self,
        before: GraspPose,
        after: GraspPose,
        category: str | None,
        identity: np.ndarray,
        grasp: np.ndarray,
        said: bool = False,
    ) -> GraspPose | None:
        """For a follow-up that turns the grasp (its reasoning ``said`` so, or ``after`` lies at least ``MIN_TURN``
        from ``before``): the pose to take instead of ``after``, or None to keep it: the heads' best grasp on the
        object ``before`` held (of ``category``, the one the conversation last named, joined to the patches under
        ``before``) among those turned at least ``TURN`` from ``before``, or, where none is, at least ``MIN_TURN``.
        A rim is held further round it, a handle from its other side, not across. The model's turned pose is not
        kept even where the heads' grasp under it agrees with it: on validation follow-ups that asked for a
        rotation, keeping it there gave 64.3 / 75.2 % (clutter / single), always taking the heads' grasp 69.8 /
        77.9 % (bench/results/n-parts). Where the model said it rotates but wrote (nearly) the pose before, and where
        the object offers no grasp turned ``TURN``, the heads' grasp too: 71.8 / 79.3 % → 92.7 / 90.7 % on
        validation (bench/results/n-uses-and-turns). Where the reasoning said it rotates and the heads show no grasp
        of the object turned ``MIN_TURN``, ``before`` turned 90° in place, not the model's pose: the heads give one
        grasp a patch, and the turn asked for was a valid grasp more often than the model's (done right on validation, the
        64-instance build: clutter 8219 77.7 → 85.4 %, new objects 8217 71.0 → 77.9 %, clutter 2612 69.9 → 72.9 %,
        single objects 83.9 → 87.4 %; the turn in place already where none turned ``TURN`` lost on all four;
        bench/results/n-turn-in-place). A knife asked to turn so is turned so: what was asked, and shown."""
        if category not in self.index or not (said or angle_difference(before.theta, after.theta) >= MIN_TURN):
            return None
        grid = self.spec.grid
        labels = identity.argmax(-1).reshape(grid, grid)
        shown = labels == self.index[category]
        held = joined(shown, self.under(before, labels, shown)).reshape(-1)
        if not held.any():
            return None
        angles = np.arctan2(grasp[:, 4], grasp[:, 3]) / 2
        turn = np.array([angle_difference(float(a), before.theta) for a in angles])
        for least in (TURN, MIN_TURN):
            allowed = held & (turn >= least)
            if allowed.any():
                return best_grasp(grasp, allowed, grid)
        if said:  # the heads show no turned grasp of it: the turn asked for, in place
            return GraspPose(before.x, before.y, wrap_angle(before.theta + math.pi / 2))
        return None

    def part(self, reasoning: str, category: str | None) -> str | None:
        """The part of ``category`` a follow-up's reasoning moves the grasp to ("Moving the grasp to the handle of
        the mug."): the earliest of the category's parts (``category_parts``) it names; None when the bundle has no
        part map, the category fewer than two parts, or the reasoning names none of them."""
        if not self.spec.parts or category not in self.spec.category_parts:
            return None
        found = [(m.start(), part) for part in self.spec.category_parts[category]
                 if (m := re.search(rf"\b{re.escape(part)}\b", reasoning, re.IGNORECASE))]  # fmt: skip
        return min(found)[1] if found else None

    def on_part(
        self,
        before: GraspPose,
        after: GraspPose,
        category: str,
        part: str,
        identity: np.ndarray,
        grasp: np.ndarray,
        parts: np.ndarray,
        place: np.ndarray | None = None,
    ) -> GraspPose | None:
        """For a follow-up that moves the grasp to ``part`` of the object ``before`` held (of ``category``): the
        pose to take instead of ``after``, or None to keep it. The held object is the category's patches joined to
        the ones under ``before``; a patch of it shows ``part`` when the part map (``parts``: per patch, the part
        head's probability that it holds a grasp on each of ``part_classes``) gives it at least ``PART_SHOWN``, and
        shows only that part when it shows none of the category's other parts. ``after`` is kept when it lies on a
        patch that shows only the part; else the heads' best grasp among those patches (among all that show it,
        where none shows it alone: the grasp heads' candidate in a patch of two parts is often the other one's).
        With ``place`` (per patch and part, where in the patch the part head puts that part's grasp: offset x, y and
        cos 2θ, sin 2θ) the pose is the part's own grasp in that patch, not the grasp heads' one candidate there,
        often another part's (validation clutter, 107 part follow-ups on scene seeds 2612 and 2621–2623, the
        64-instance build: 20.6 → 29.0 % done right; bench/results/n-parts-place). None (kept) when no patch shows
        the part."""
        grid = self.spec.grid
        labels = identity.argmax(-1).reshape(grid, grid)
        shown = labels == self.index[category]
        held = joined(shown, self.under(before, labels, shown)).reshape(-1)
        classes = self.spec.part_classes
        c = classes.index(part)
        showing = held & (parts[:, c] >= PART_SHOWN)
        if not showing.any():
            return None
        others = [classes.index(p) for p in self.spec.category_parts[category] if p != part]
        alone = showing & ~(parts[:, others] >= PART_SHOWN).any(axis=1)
        if alone[cell(after.y, grid) * grid + cell(after.x, grid)]:
            return None
        allowed = alone if alone.any() else showing
        if place is not None:  # the heads' patch, the part's own grasp in it
            grasp = np.concatenate([grasp[:, :1], place[:, c]], axis=1)
        return best_grasp(grasp, allowed, grid)

    def under(self, pose: GraspPose, labels: np.ndarray, shown: np.ndarray) -> np.ndarray:
        """The patches of the category the pose lies on: the one under its centre, or, when that one shows the
        table (a centre between the fingers), those within ``reach``; none when it lies on another object."""
        grid = self.spec.grid
        row, col = cell(pose.y, grid), cell(pose.x, grid)
        under = np.zeros_like(shown)
        if shown[row, col]:
            under[row, col] = True
        elif labels[row, col] == len(self.index):
            r = self.spec.reach
            window = (slice(max(row - r, 0), row + r + 1), slice(max(col - r, 0), col + r + 1))
            under[window] = shown[window]
        return under


def joined(shown: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The ``shown`` patches connected to ``seeds`` through patches that share a side (one object's patches)."""
    region = seeds & shown
    while True:
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        grown &= shown
        if (grown == region).all():
            return region
        region = grown


def instances(shown: np.ndarray) -> list[np.ndarray]:
    """The ``shown`` patches split into the groups that share sides (one object each, as far as the grid tells)."""
    left, out = shown.copy(), []
    while left.any():
        seed = np.zeros_like(left)
        seed[np.unravel_index(int(np.argmax(left)), left.shape)] = True
        region = joined(left, seed)
        out.append(region)
        left &= ~region
    return out


class Footprint(NamedTuple):
    """One object in the model's view, as ``footprints`` finds it."""

    patches: np.ndarray
    """(grid, grid) bool: the patches of its identity label it covers ``COVER`` of."""
    area: int
    """Its footprint: its pixels, counted every ``STEP``-th."""
    box: tuple[float, float, float, float]
    """``(x0, y0, x1, y1)``, image-normalised in the view, half-open."""


def footprints(view: np.ndarray, labels: np.ndarray, label: int, table: int) -> list[Footprint]:
    """The objects of identity ``label`` in the model's ``view`` ((size, size, 3) RGB). An object is a connected
    region of pixels off the table's colour (``TABLE_SPREAD``, learnt from the patches ``labels`` calls ``table``)
    within the patches of ``label`` and the table, ``ON_LABEL`` of it at least on patches of ``label``: the pixels of
    a neighbour the head calls something else are not counted, and one object the head splits in two groups of
    patches is one. Empty when no patch shows the table."""
    grid = labels.shape[0]
    size = view.shape[0]
    if view.ndim != 3 or view.shape[1] != size or view.shape[2] < 3 or size < grid:
        return []
    at = np.arange(0, size, STEP) * grid // size
    under = labels[at[:, None], at[None, :]]  # the patch label under each sampled pixel
    pixels = np.asarray(view)[::STEP, ::STEP, :3].astype(np.float32)
    table_pixels = pixels[under == table]
    if len(table_pixels) == 0:
        return []
    median = np.median(table_pixels, axis=0)
    spread = 1.4826 * float(np.median(np.linalg.norm(table_pixels - median, axis=-1)))
    off = np.linalg.norm(pixels - median, axis=-1) > max(TABLE_SPREAD * spread, TABLE_MIN)
    off &= neighbours(off) >= 2  # lone pixels and a checkered texture: noise, not an object
    mine = under == label
    region, left, out = off & (mine | (under == table)), off & mine, []
    per_patch = (size / grid / STEP) ** 2
    for _ in range(MAX_REGIONS):
        if not left.any():
            break
        seed = np.zeros_like(left)
        seed[np.unravel_index(int(np.argmax(left)), left.shape)] = True
        found = joined(region, seed)
        left &= ~found
        area = int(found.sum())
        if (found & mine).sum() < ON_LABEL * area or area < COVER * per_patch:
            continue  # a neighbour on table patches, or a speck
        rows, cols = np.nonzero(found & mine)
        covered = np.zeros((grid, grid))
        np.add.at(covered, (at[rows], at[cols]), 1)
        patches = (covered >= COVER * per_patch) & (labels == label)
        if patches.any():
            rows, cols = np.nonzero(found)
            box = (cols.min() * STEP / size, rows.min() * STEP / size, min((cols.max() + 1) * STEP / size, 1.0),
                   min((rows.max() + 1) * STEP / size, 1.0))  # fmt: skip
            out.append(Footprint(patches, area, tuple(float(b) for b in box)))
    if left.any():
        return []  # more regions than objects on a table: a texture, nothing to tell objects by
    return out


def neighbours(mask: np.ndarray) -> np.ndarray:
    """How many of each pixel's four neighbours are set."""
    count = np.zeros(mask.shape, np.int8)
    count[1:] += mask[:-1]
    count[:-1] += mask[1:]
    count[:, 1:] += mask[:, :-1]
    count[:, :-1] += mask[:, 1:]
    return count


def cell(value: float, grid: int) -> int:
    """The patch row or column of an image-normalised coordinate."""
    return min(max(int(value * grid), 0), grid - 1)


def restate_turn(reasoning: str, before: str, after: str) -> str:
    """``reasoning`` with the change of angle it states ("Rotating the gripper by 90 degrees: 0.30 to -0.30.") made
    the one the turn check took, ``before`` to ``after`` as the answer writes angles (``AnswerFormat.render_angle``);
    as it was where it states none."""
    return TURN_STATED.sub(lambda m: f"{m.group(1)}{before}{m.group(3)}{after}", reasoning, count=1)


def best_grasp(grasp: np.ndarray, allowed: np.ndarray, grid: int) -> GraspPose:
    """The grasp heads' most likely grasp among the ``allowed`` patches (as ``training.stages.predict_pose``)."""
    logits = np.where(allowed, grasp[:, 0], -np.inf)
    k = int(np.argmax(logits))
    row, col = divmod(k, grid)
    ox, oy, c, s = (float(v) for v in grasp[k, 1:5])
    return GraspPose((col + ox) / grid, (row + oy) / grid, math.atan2(s, c) / 2)
