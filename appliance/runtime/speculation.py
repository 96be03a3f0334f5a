"""Whether drafting pays on this model and this machine, measured rather than assumed.

Speculative decoding checks k drafted tokens in one batch. It pays when the batch
costs less than the tokens it yields: on a bandwidth-bound device (a 7B model on
a Jetson) a batch of 8 costs little more than one token; on a small CPU, or with
kernels that are slow in batches (llama.cpp's K-quants here), it costs nearly k.

``measure`` times batches of k tokens against one token on the loaded model (the
verify-cost curve t(k)/t(1)) and records how far batched logits stray from
single-token ones (the margin the exactness guard needs). ``plan`` combines the
curve with the acceptance the drafts get (per drafted token) into the draft
length with the best expected speed-up, or none when nothing beats plain
decoding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

KS = (1, 2, 4, 8, 16)
"""Batch sizes measured at load (t(1) is the reference)."""
MIN_GAIN = 1.05
"""Draft only when the expected speed-up clears this: the curve is measured in a few milliseconds."""
ACCEPTANCE_PRIOR = 0.45
"""Share of drafted reasoning tokens greedy decoding kept, before a model has drafted enough of its own:
43–48 % on the demo bundles' answers (docs/export.md)."""
MIN_DRAFTED = 200
"""Drafted tokens after which the model's own acceptance replaces the prior."""


@dataclass(frozen=True)
class VerifyCost:
    """The verify-cost curve of one loaded model and the batched-vs-single logit difference."""

    single_ms: float
    ratio: dict[int, float]
    """k → t(k)/t(1): the time to evaluate k tokens in one batch over the time for one."""
    logit_error: float
    """Largest |logit| difference between a batch and the same tokens one at a time."""

    def as_dict(self) -> dict:
        return {"single_ms": self.single_ms, "ratio": self.ratio, "logit_error": self.logit_error}


@dataclass(frozen=True)
class Plan:
    """Draft up to ``k`` tokens (0: decode plainly); ``gain`` is the expected decode speed-up."""

    k: int
    gain: float
    acceptance: float


def measure(llm, tokens: list[int], ks=KS, repeats: int = 3, prefix: np.ndarray | None = None) -> VerifyCost:
    """Time ``tokens`` evaluated k at a time, after ``prefix`` embeddings (an image: decoding always happens that
    deep in the context, where the attention's batched and single-token paths differ most), on an empty
    sequence, which it leaves empty.

    Needs ``max(ks) + 1`` tokens; each k takes the best of ``repeats`` runs."""
    k_max = max(ks)
    if len(tokens) < k_max + 1:
        raise ValueError(f"measuring batches of up to {k_max} tokens needs {k_max + 1} tokens, got {len(tokens)}")
    if k_max > llm.n_batch:
        ks = tuple(k for k in ks if k <= llm.n_batch)
        k_max = max(ks)
    llm.truncate(0)
    llm.eval_tokens(tokens[:1])
    if prefix is not None:
        llm.eval_embeddings(prefix)
    base = llm.n_past
    llm.eval_tokens(tokens[1:2])  # warm-up: the first decode allocates
    llm.truncate(base)
    single = []
    for token in tokens[1 : k_max + 1]:
        llm.eval_tokens([token])
        single.append(llm.logits())
    best, error = {}, 0.0
    for k in ks:
        times = []
        for _ in range(repeats):
            llm.truncate(base)
            start = time.perf_counter()
            llm.eval_tokens(tokens[1 : k + 1], all_logits=True)
            times.append(time.perf_counter() - start)
        best[k] = min(times)
        if k > 1:
            error = max(error, max(float(np.abs(llm.logits(i) - single[i]).max()) for i in range(k)))
    llm.truncate(0)
    return VerifyCost(1000 * best[ks[0]], {k: best[k] / best[ks[0]] for k in ks}, error)


def expected_tokens(acceptance: float, k: int) -> float:
    """Tokens one check of a k-token draft yields: the accepted prefix (each drafted token kept with probability
    ``acceptance`` given the ones before it were) plus the token the check itself chooses."""
    return 1.0 + sum(acceptance**i for i in range(1, k + 1))


def plan(cost: VerifyCost, acceptance: float) -> Plan:
    """The draft length with the best expected speed-up over plain decoding (k = 0 when none clears ``MIN_GAIN``;
    its ``gain`` is then the best a draft would have given).

    A check of a k-token draft evaluates k + 1 positions (the pending token and the draft)."""
    candidates = [
        Plan(positions - 1, expected_tokens(acceptance, positions - 1) / ratio, acceptance)
        for positions, ratio in cost.ratio.items()
        if positions > 1
    ]
    best = max(candidates, key=lambda p: p.gain, default=Plan(0, 1.0, acceptance))
    return best if best.gain >= MIN_GAIN else Plan(0, best.gain, acceptance)
