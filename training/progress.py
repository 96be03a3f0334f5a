"""Progress bars that read well in a log: a live bar on a terminal, a few whole lines elsewhere.

    for image_id in progress_bar(ids, desc="evaluating", unit="img"):
        ...

Run without a terminal (CI, systemd, ``| tee``, a log file) tqdm would write a carriage-return update
for every step, which a log keeps as one long line or hundreds; here it writes a plain line at most
every ``LOG_EVERY_S`` seconds, and the last one when the work ends.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_EVERY_S = 30.0


class _Lines:
    """A stream for tqdm that turns each redraw into one whole line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable=None, *, disable: bool = False, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, drawn live only when stderr is a terminal."""
    stream = kwargs.pop("file", None) or sys.stderr
    if disable or stream.isatty():
        return tqdm(iterable, disable=disable, file=stream, **kwargs)
    return tqdm(
        iterable,
        file=_Lines(stream),
        mininterval=LOG_EVERY_S,
        maxinterval=LOG_EVERY_S,
        ascii=True,
        dynamic_ncols=False,
        ncols=100,
        **kwargs,
    )
