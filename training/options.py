"""Checks of training options that both ``train`` and the pipeline's config make, free of torch.

The pipeline checks its sizes before it plans a stage; a plan (``--dry-run``, ``scripts/device_build``'s checks)
should start in a fraction of a second, not wait 2 s for torch to import.
"""

from __future__ import annotations

ATTEND_FROM = ("answer", "turn")
"""Where the supervised heads are taught (``training.attend``): at the positions that predict an answer's tokens,
or also at every word of the question it answers that comes after the image (where the instruction's words can look
at the picture)."""


def check_attend(weight: float, start: str) -> None:
    """Raise ``ValueError`` unless ``weight`` >= 0 and ``start`` is one of ``ATTEND_FROM`` (train's and the
    pipeline's configs)."""
    if weight < 0:
        raise ValueError(f"attend must be >= 0, got {weight}")
    if start not in ATTEND_FROM:
        raise ValueError(f"attend_from must be one of {ATTEND_FROM}, got {start!r}")
