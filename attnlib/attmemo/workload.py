"""Workloads with real repetition, and the timing protocol of the memoised encoder.

* `shingles`, `nearest_jaccard`: word 5-gram shingle sets of the first words of each text and, for every
  query, the most similar database text by Jaccard similarity (an inverted index over shingles: exact,
  no hashing tricks). In the SpamAssassin sample, spam campaigns and mailing-list templates repeat:
  this is how often a query has a near-duplicate among earlier e-mails, measured, not assumed.
* `time_variants`: interleaved timing of several forward variants on the same inputs (warm-up on every
  input, repetitions alternating the order of the variants), via `perlayer.interleaved_latency`.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from .perlayer import interleaved_latency

__all__ = ["shingles", "nearest_jaccard", "time_variants"]

_WORD = re.compile(r"\w+")


def shingles(text: str, k: int = 5, max_words: int = 120) -> set:
    """Set of word k-grams (lower-cased) of the first ``max_words`` words; short texts give one shingle."""
    if k < 1 or max_words < 1:
        raise ValueError(f"k and max_words must be >= 1, got {k}, {max_words}")
    w = _WORD.findall(text.lower())[:max_words]
    if not w:
        return set()
    return {" ".join(w[i:i + k]) for i in range(max(1, len(w) - k + 1))}


def nearest_jaccard(query_sets: list[set], db_sets: list[set], *, max_df: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """For every query, (best Jaccard similarity to a database set, its index; -1 when none shares a
    shingle). Shingles held by more than ``max_df`` database texts (boilerplate) are not used to find
    candidates, but every candidate's similarity is exact."""
    inv = defaultdict(list)
    for j, s in enumerate(db_sets):
        for h in s:
            inv[h].append(j)
    best, arg = np.zeros(len(query_sets)), np.full(len(query_sets), -1, np.int64)
    for i, q in enumerate(query_sets):
        cand = set()
        for h in q:
            lst = inv.get(h)
            if lst is not None and len(lst) <= max_df:
                cand.update(lst)
        for j in cand:
            inter = len(q & db_sets[j])
            jac = inter / (len(q) + len(db_sets[j]) - inter)
            if jac > best[i]:
                best[i], arg[i] = jac, j
    return best, arg


def time_variants(fns: dict, inputs: list, reps: int) -> dict:
    """{variant: (reps, n_inputs) wall seconds} (+ ``variant@cpu``): every variant is run once on every
    input first (warm-up per input), then ``reps`` interleaved repetitions."""
    if reps < 1 or not inputs:
        raise ValueError("need reps >= 1 and at least one input")
    return interleaved_latency(fns, inputs, reps, warmup=len(inputs))
