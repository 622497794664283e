"""Experiment helpers of the memoised-encoder study (issue 16): features of many texts, the attention
maps of database entries, the calibration pairs of the hit threshold, memoised embeddings for the probe,
and the per-cell timing of the forward variants. Everything the notebook orchestrates lives here so the
tests can cover it."""
from __future__ import annotations

import numpy as np
import torch

from .. import models
from ..threads import torch_threads
from .fastpath import FastEncoder, PerInputMemo, PerLayerMemo
from .lookup import pooled_raw, tv_distance
from .perlayer import ChunkEmbedder
from .workload import time_variants

__all__ = ["layer_raws", "maps_of", "calibration_pairs", "memo_embed", "time_cell", "lengths_of", "torch_threads",
           "batch_groups", "count_stalls", "VARIANTS"]

VARIANTS = ("base", "memo", "memo_layer", "sdpa", "memo_sdpa")


def batch_groups(pool, batch_size: int, n_batches: int) -> tuple[list[list], int]:
    """``n_batches`` groups of ``batch_size`` ids taken in order from ``pool``, cycling through the pool
    when it holds fewer than ``batch_size * n_batches`` ids (an id then appears in several batches, or
    twice in one batch when the pool is smaller than a batch). Returns (groups, distinct ids used)."""
    pool = list(pool)
    if batch_size < 1 or n_batches < 1:
        raise ValueError(f"batch_size and n_batches must be >= 1, got {batch_size}, {n_batches}")
    if not pool:
        raise ValueError("batch_groups needs a non-empty pool of ids")
    need = batch_size * n_batches
    flat = [pool[i % len(pool)] for i in range(need)]
    return [flat[s:s + batch_size] for s in range(0, need, batch_size)], min(len(pool), need)


def lengths_of(rm, texts: list[str], max_length: int) -> np.ndarray:
    """Valid token count of each text truncated to ``max_length`` (with [CLS]/[SEP])."""
    return np.array([len(x) for x in rm.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]])


def layer_raws(fe: FastEncoder, texts: list[str], max_length: int, *, layers=(0,), n_chunks: int = 8,
               batch_size: int = 32) -> tuple[dict, np.ndarray]:
    """Chunk-pooled inputs of ``layers`` (0 = the embedding output) for every text of the EXACT forward:
    ({layer: (N, n_chunks * D) float32}, valid lengths (N,)). Only the embedding layer runs when
    ``layers == (0,)`` (cheap); deeper layers need the encoder forward."""
    layers = sorted({int(l) for l in layers})
    emb = ChunkEmbedder(1, fe.D, n_chunks)
    lengths = lengths_of(fe.rm, texts, max_length)
    order = np.argsort(lengths, kind="stable")   # batches of similar length: little padding
    out = {l: np.zeros((len(texts), n_chunks * fe.D), np.float32) for l in layers}
    for s in range(0, len(texts), batch_size):
        idx = order[s:s + batch_size]
        batch = models.encode(fe.rm, [texts[i] for i in idx], max_length)
        ls = batch["attention_mask"].sum(1).tolist()
        hs = [fe.embeddings(batch)] if layers == [0] else fe.hidden_states(batch)
        for l in layers:
            out[l][idx] = pooled_raw(emb, hs[l], ls).numpy()
    return out, lengths


def maps_of(fe: FastEncoder, texts: list[str], max_length: int) -> list[list[np.ndarray]]:
    """Per text, its attention maps (one (H, L, L) float32 array per layer) from the exact forward
    (batch 1 each: every map has the text's own valid length)."""
    out = []
    for t in texts:
        ps = fe.probs(models.encode(fe.rm, [t], max_length))
        out.append([p[0].numpy() for p in ps])
    return out


def calibration_pairs(fe: FastEncoder, texts_db: list[str], keys_db: np.ndarray, lengths_db, query_ids,
                      max_length: int, *, layer_keys: dict | None = None, n_keep: int = 0) -> dict:
    """Held-out calibration of the hit threshold: each query is a database entry searched against the
    OTHER entries of its length (leave one out) by cosine of ``keys_db`` (L2-normalised). For each
    (query, nearest other entry) pair: the cosine, the measured TV distance per layer and its mean;
    with ``layer_keys`` ({layer: (N, dim) normalised}) also the per-layer cosine of the same pair.
    Returns arrays: query, entry, cos (P,), tv (P, n_layers), tv_mean (P,), layer_cos (P, n_layers); with
    ``n_keep`` > 0 also ``rand_pairs`` (Q, 2) database ids and ``rand_tv`` (Q,): every pair of equal length
    among the first ``n_keep`` queries (unrelated e-mails, mostly: the far end of the TV range)."""
    keys_db = np.asarray(keys_db, np.float32)
    lengths_db = np.asarray(lengths_db)
    rows = []
    for q in query_ids:
        same = np.flatnonzero((lengths_db == lengths_db[q]) & (np.arange(len(lengths_db)) != q))
        if not len(same):
            continue
        sims = keys_db[same] @ keys_db[q]
        j = int(same[np.argmax(sims)])
        rows.append((int(q), j, float(sims.max())))
    if not rows:
        raise ValueError("no calibration query has another entry of its length")
    nl = fe.n_layers
    tv = np.zeros((len(rows), nl))
    lcos = np.full((len(rows), nl), np.nan)
    kept = {}
    for r, (q, j, _) in enumerate(rows):
        mq, mj = maps_of(fe, [texts_db[q], texts_db[j]], max_length)
        tv[r] = [tv_distance(a, b) for a, b in zip(mq, mj)]
        if r < n_keep:
            kept[q] = mq
        if layer_keys is not None:
            lcos[r] = [float(layer_keys[l][q] @ layer_keys[l][j]) if l in layer_keys else np.nan for l in range(nl)]
    out = dict(query=np.array([r[0] for r in rows]), entry=np.array([r[1] for r in rows]),
               cos=np.array([r[2] for r in rows]), tv=tv, tv_mean=tv.mean(1), layer_cos=lcos)
    if n_keep:
        ids = list(kept)
        pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1:] if lengths_db[a] == lengths_db[b]]
        out["rand_pairs"] = np.array(pairs, np.int64).reshape(-1, 2)
        out["rand_tv"] = np.array([np.mean([tv_distance(x, y) for x, y in zip(kept[a], kept[b])]) for a, b in pairs])
    return out


def memo_embed(fe: FastEncoder, texts: list[str], max_length: int, memo, *, batch_size: int = 16) -> np.ndarray:
    """Mean-pooled last hidden states (N, D) of ``texts`` through the memoised forward (the probe's input)."""
    lengths = lengths_of(fe.rm, texts, max_length)
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), fe.D), np.float32)
    for s in range(0, len(texts), batch_size):
        idx = order[s:s + batch_size]
        batch = models.encode(fe.rm, [texts[i] for i in idx], max_length)
        h = fe.forward(batch, memo=memo)
        m = batch["attention_mask"].unsqueeze(-1).float()
        out[idx] = ((h * m).sum(1) / m.sum(1)).numpy()
    return out


def count_stalls(times: dict, factor: float = 3.0) -> int:
    """Timings that look like a stall (the process lost the CPU mid-call): entries of a ``time_cell`` result
    (variants only, not ``@cpu``; each (reps, n_inputs) seconds) above ``factor`` x the median of the same
    variant on the same input over the repetitions. Returns their number (0 for an undisturbed cell)."""
    if factor <= 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    n = 0
    for name, t in times.items():
        if "@" in name:
            continue
        t = np.asarray(t, float)
        if t.ndim != 2:
            raise ValueError(f"{name}: expected (reps, n_inputs) seconds, got shape {t.shape}")
        n += int((t > factor * np.median(t, axis=0, keepdims=True)).sum())
    return n


def time_cell(fe: FastEncoder, batches: list[dict], reps: int, *, memo_input: PerInputMemo | None = None,
              memo_layer: PerLayerMemo | None = None, sdpa: bool = True, variants=None,
              threads: int | None = None) -> dict:
    """Interleaved timing of the forward variants on the same encoded batches: ``base`` (eager, no memo),
    ``memo`` (per-input lookup), optionally ``memo_layer`` (per-layer lookup), ``sdpa`` (fused attention,
    no memo) and ``memo_sdpa`` (per-input lookup, misses with fused attention). ``variants`` restricts the
    set (default: every variant the arguments allow); ``threads``: torch intra-op threads while timing
    (restored afterwards; None keeps the current count). Returns {variant: (reps, n_batches) seconds}
    (+ ``@cpu`` process CPU seconds). To record the thread count beside the times, time inside
    ``with torch_threads(n) as used:`` (``used`` is the count in effect)."""
    fns = {"base": lambda b: fe.forward(b)}
    if memo_input is not None:
        fns["memo"] = lambda b: fe.forward(b, memo=memo_input)
    if memo_layer is not None:
        fns["memo_layer"] = lambda b: fe.forward(b, memo=memo_layer)
    if sdpa:
        fns["sdpa"] = lambda b: fe.forward(b, attn="sdpa")
        if memo_input is not None:   # memoisation on top of the fused baseline: misses run SDPA too
            fns["memo_sdpa"] = lambda b: fe.forward(b, memo=memo_input, attn="sdpa")
    if variants is not None:
        unknown = [v for v in variants if v not in VARIANTS]
        missing = [v for v in variants if v in VARIANTS and v not in fns]
        if unknown or missing or not variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS} that the memo arguments allow; "
                             f"unknown {unknown}, not available {missing}")
        fns = {v: fns[v] for v in variants}
    with torch.no_grad(), torch_threads(threads):
        return time_variants(fns, batches, reps)
