"""SPRINT experiment helpers on real models: token windows, cached SPRINT probe embeddings (per-item
correctness for paired intervals), and the aggregation of per-point ratios into a headline geometric
mean with a bootstrap interval."""
from __future__ import annotations

import hashlib
import inspect
from dataclasses import asdict, replace

import numpy as np
import torch

from ..stats import geomean_of_draws  # noqa: F401  (re-exported: attnlib.sprint.geomean_of_draws)

__all__ = ["token_windows", "sprint_probe_run", "subset_probe", "geomean_of_draws", "code_version", "sprint_model_run"]


def token_windows(rm, docs: list[str], seq_len: int, n: int, seed: int = 0) -> dict:
    """A batch of ``n`` windows of exactly ``seq_len`` tokens cut from running text (no padding).

    Decoder: `attnlib.evaluate.text_windows` (BOS + text). Encoder: [CLS] + seq_len-2 text tokens +
    [SEP], consecutive non-overlapping chunks of each document, shuffled with ``seed``.
    """
    if rm.kind == "decoder":
        from ..evaluate import text_windows

        ids = torch.tensor(text_windows(rm, docs, seq_len, n, seed=seed), dtype=torch.long)
    else:
        tok = rm.tokenizer
        body = seq_len - 2
        chunks = []
        for doc in docs:
            ids_doc = tok(doc, add_special_tokens=False, verbose=False)["input_ids"]
            chunks += [ids_doc[s:s + body] for s in range(0, len(ids_doc) - body + 1, body)]
        if len(chunks) < n:
            raise ValueError(f"only {len(chunks)} windows of {seq_len} tokens in the documents, {n} requested")
        order = np.random.default_rng(seed).permutation(len(chunks))[:n]
        ids = torch.tensor([[tok.cls_token_id] + chunks[i] + [tok.sep_token_id] for i in order], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def code_version() -> str:
    """Digest of the source that decides a SPRINT run's outcome (algorithm, models, evaluate): part of
    every cache key, so a code change never reuses a stale result."""
    from .. import evaluate, models
    from . import algorithm

    h = hashlib.sha256()
    for mod in (algorithm, models, evaluate):
        h.update(inspect.getsource(mod).encode())
    return h.hexdigest()[:16]


def _digest(texts) -> str:
    return hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:24]


def subset_probe(probe, n_items: int, seed: int = 0):
    """The probe with a seeded, stratified subset of about ``n_items`` of its test items (same classifier)."""
    labels = np.asarray(probe.test_labels)
    if n_items >= len(labels):
        return probe
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max(1, n_items // len(classes))]
                                  for c in classes]))
    return replace(probe, test_texts=[probe.test_texts[i] for i in idx], test_labels=labels[idx])


def sprint_probe_run(rm, probe, fn, *, use_cache: bool = True) -> dict:
    """Per-item correctness of ``probe`` with SPRINT attention ``fn`` (a `SprintAttention`) in every
    layer, and the fraction of allowed (query, key) pairs it pruned on the probe's test texts.

    Returns dict(correct=bool (n_test,), pruned=float). The SPRINT embeddings are cached under
    ``.cache/sprint`` by their inputs (model, test texts, max_length, thresholds, margins, analog
    config, `code_version`); the correctness is recomputed from them with the probe's classifier."""
    from ..cache import cached
    from ..evaluate import embed
    from .algorithm import SprintAttention

    if not isinstance(fn, SprintAttention):
        raise ValueError("fn must be a SprintAttention (use evaluate.probe_correct for exact attention)")
    key = dict(model=rm.name, texts=_digest(probe.test_texts), max_length=int(probe.max_length),
               thresholds=[float(x) for x in fn.thresholds], margins=[float(x) for x in fn.margins],
               cfg=asdict(fn.cfg), code=code_version())

    def compute():
        run = SprintAttention(fn.thresholds, fn.margins, fn.cfg, record=True)
        X = embed(rm, list(probe.test_texts), probe.max_length, attn_fn=run, progress=False)
        return {"X": X, "pruned": run.pruned_fraction()}

    res = cached("sprint", "probe", key, compute) if use_cache else compute()
    correct = probe.clf.predict(res["X"]) == np.asarray(probe.test_labels)
    return {"correct": correct, "pruned": float(res["pruned"])}


_STAT_FIELDS = ("kept", "overlap", "allowed", "mass", "valid", "union")


def sprint_model_run(rm, batch: dict, fn, *, perplexity: bool = False, masks: bool = False,
                     use_cache: bool = True) -> dict:
    """Run ``rm`` on ``batch`` with SPRINT attention ``fn`` in every layer, recording keep statistics.

    Returns dict(stats=[RowStats per layer], window_nll, window_tokens) -- the last two (per-window NLL
    of a decoder, `evaluate.perplexity`) only with ``perplexity=True``; ``masks=True`` keeps the
    bit-packed keep masks in the statistics (for `attnlib.sprint.buffer`). Cached under ``.cache/sprint``
    by the inputs (model, token ids, thresholds, margins, analog config, `code_version`)."""
    from ..cache import cached
    from .. import evaluate, models
    from .algorithm import RowStats, SprintAttention

    if not isinstance(fn, SprintAttention):
        raise ValueError("fn must be a SprintAttention")
    ids = batch["input_ids"]
    key = dict(model=rm.name, ids=hashlib.sha256(np.ascontiguousarray(ids.numpy()).tobytes()).hexdigest()[:24],
               shape=list(ids.shape), thresholds=[float(x) for x in fn.thresholds],
               margins=[float(x) for x in fn.margins], cfg=asdict(fn.cfg), ppl=bool(perplexity), masks=bool(masks),
               code=code_version())

    def compute():
        run = SprintAttention(fn.thresholds, fn.margins, fn.cfg, record=True, record_masks=masks)
        out = {}
        if perplexity:
            res = evaluate.perplexity(rm, ids.tolist(), attn_fn=run, progress=False)
            out.update(window_nll=res.window_nll, window_tokens=res.window_tokens)
        else:
            models.logits(rm, batch, attn_fn=run)
        out["stats"] = [{f: getattr(s, f) for f in _STAT_FIELDS} | {"layer": s.layer, "keep_bits": s.keep_bits,
                                                                    "n_keys": s.n_keys} for s in run.merged_stats()]
        return out

    res = cached("sprint", "run", key, compute) if use_cache else compute()
    res["stats"] = [RowStats(int(d["layer"]), *(np.asarray(d[f]) for f in _STAT_FIELDS),
                             None if d["keep_bits"] is None else np.asarray(d["keep_bits"]),
                             None if d["n_keys"] is None else int(d["n_keys"])) for d in res["stats"]]
    return res
