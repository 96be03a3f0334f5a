"""Helpers shared by the training tests."""

import torch


def changed_parts(before, after) -> set[str]:
    """Which top-level parts of a LLaVA (vision_tower, multi_modal_projector, language_model, lm_head) differ."""
    return {
        name.split(".")[1] if name.startswith("model.") else name.split(".")[0]
        for (name, a), (_, b) in zip(before.named_parameters(), after.named_parameters())
        if not torch.equal(a, b)
    }
