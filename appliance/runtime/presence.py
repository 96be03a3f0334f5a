"""Is the object an instruction names on the table at all? Refuse before decoding when it is not.

    gate = PresenceGate(manifest.presence, CategoryNames(manifest.categories))
    gate.unseen("pick up the hammer", patches)   # "hammer" when no patch shows one, else None

The bundle's vision graph has a second output (``export.vision``): per category, how many of the image's patches
the vision stage's identity head gives it, in expected value. An instruction that asks for a category by name
(``objects.CategoryNames.requested``: the first name or synonym of the bundle's vocabulary that a determiner
introduces, so "Can you lift the knife?" asks for a knife, not a can) is refused when fewer than
``PresenceSpec.min_patches`` patches show that category; the answer is the refusal the model was trained to write
("I see no hammer here."), and nothing moves. An instruction that names no category ("hand me something to cut
with", "the object on the left", "pick up mug") always goes to the model. One whose named category the gate sees
goes to the model without the refusal in its grammar: the gate has decided the object is there. On fresh single
objects the tiny model refused 3.9 % of requests for objects that were there ("I see no plate here."), the gate
none of them (bench/results/n-heads-pose).

Why a gate and not only the model: the tiny language model refused 28 % of absent objects in clutter on fresh
seeds (bench/results/n-gpu), the identity head misses far fewer (bench/results/presence). numpy only.
"""

from __future__ import annotations

import numpy as np

from appliance.bundle import PresenceSpec

from .objects import CategoryNames


class PresenceGate:
    """The refusal rule of a bundle's ``presence`` section."""

    def __init__(self, spec: PresenceSpec, names: CategoryNames):
        self.spec, self.names = spec, names
        self.index = {c: i for i, c in enumerate(spec.classes)}

    def named(self, instruction: str) -> tuple[str, str] | None:
        """The (word, category) the instruction names, when the head knows the category; else None."""
        found = self.names.requested(instruction)
        return found if found is not None and found[1] in self.index else None

    def unseen(self, instruction: str, patches: np.ndarray) -> str | None:
        """The word to refuse with when the instruction names a category fewer than ``min_patches`` patches show;
        None when it names none or the category is there."""
        if patches.shape != (len(self.spec.classes),):
            raise ValueError(f"presence: {patches.shape} patch counts, the manifest lists {len(self.spec.classes)}")
        named = self.named(instruction)
        if named is None:
            return None
        word, category = named
        return word if float(patches[self.index[category]]) < self.spec.min_patches else None
