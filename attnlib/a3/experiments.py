"""A3 experiment helpers: the orchestration the notebook needs and a test can cover.

- `smallest_setting`            the smallest setting whose metric reaches a target (the recall rule).
- `matched_setting`             the setting whose accuracy loss best matches a paper band (matched quality).
- `probe_correct_cached`        per-item probe correctness with A3 attention in every encoder layer,
                                cached under .cache/a3 by model, texts, max_length, M, T and code version.
- `speedups`                    throughput and latency speedup of approximate over base A3 on a stream of
                                real queries, with a bootstrap interval over the queries.
- `speedup_assumption_range`    the span of those speedups over the labelled hardware assumptions.
- `per_question_units`          per-query cycle counts summed per test item (the unit a bootstrap resamples).
- `matched_bootstrap`           matched quality with its uncertainty: one bootstrap over the test items
                                re-chooses the matched M in every draw and takes the speed there, so the
                                speed interval carries the uncertainty of the operating point itself.
- `energy_efficiency`           A3 vs CPU queries per joule with an interval (CPU repetitions x A3 queries)
                                and the span over the CPU power range (the assumption range).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import replace

import numpy as np

from .. import stats
from ..cache import cached
from .algorithm import ALGORITHM_VERSION, a3_attn_fn
from .hardware import A3Hardware, stream_arrays

__all__ = ["smallest_setting", "matched_setting", "probe_correct_cached", "speedups", "speedup_assumption_range",
           "energy_efficiency", "HW_SWEEP", "sweep_counts", "KV_SCALE", "split_sentences", "perturb",
           "kv_retrieval_task", "kv_retrieval_run", "kv_task_width", "per_question_units", "matched_bootstrap"]

#: The labelled hardware assumptions swept for the speedups' assumption range (defaults included).
#: (Where the key sort's cycles go is a scenario axis, not an assumption: `paper_claims`.)
HW_SWEEP = dict(pipeline_fill=(4, 8, 16), select_iter_per_cycle=(0.5, 1.0), exp_overlap=(0.0, 0.5, 1.0))


def smallest_setting(settings, metric, target: float):
    """Smallest setting whose metric >= target (the conservative rule); None if none reaches it."""
    for s, val in sorted(zip(settings, metric)):
        if val >= target:
            return s
    return None


def _matched_index(losses: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """The matched-quality rule on losses (..., S) of settings in ascending order: index of the setting
    nearest ``band`` (distance 0 inside it; then nearest its middle; ties -> the smaller, i.e. faster,
    setting), per leading index."""
    lo, hi = band
    if not lo <= hi:
        raise ValueError(f"band must be (low, high) with low <= high, got {band}")
    outside = np.maximum(lo - losses, 0) + np.maximum(losses - hi, 0)
    mid = np.abs(losses - (lo + hi) / 2)
    nearest = outside == outside.min(axis=-1, keepdims=True)
    return np.argmin(np.where(nearest, mid, np.inf), axis=-1)  # argmin takes the first: the smaller setting


def matched_setting(settings, losses, band: tuple[float, float]):
    """Matched quality: the setting whose accuracy loss (points) is nearest to the paper's band
    (distance 0 inside it; among settings inside the band, the one nearest its middle; ties -> the
    smaller, i.e. faster, setting). Returns (setting, loss)."""
    settings, losses = list(settings), np.asarray(losses, dtype=float)
    if len(settings) != len(losses) or not len(settings):
        raise ValueError("settings and losses must be non-empty and of equal length")
    order = np.argsort(settings, kind="stable")
    i = order[int(_matched_index(losses[order], band))]
    return settings[i], float(losses[i])


def probe_correct_cached(rm, probe, *, m_frac: float, T: float, score_floor: float = 0.0) -> np.ndarray:
    """Per-item correctness (bool (n_test,)) of ``probe`` with A3 attention (m_frac, T logit margin) in
    every layer of the encoder ``rm``, cached by its inputs (model, test texts, labels, max_length, the
    probe's coefficients, M, T, the algorithm version)."""
    from ..evaluate import probe_correct

    h = hashlib.sha256(json.dumps([probe.test_texts, np.asarray(probe.test_labels).tolist()]).encode()).hexdigest()
    coef = hashlib.sha256(np.ascontiguousarray(probe.clf.coef_, dtype=np.float64).tobytes()).hexdigest()[:16]
    key = dict(model=rm.name, texts=h, max_length=probe.max_length, coef=coef, m_frac=float(m_frac),
               T=float(T), score_floor=float(score_floor), version=ALGORITHM_VERSION)
    return np.asarray(cached("a3", "probe_correct", key, lambda: probe_correct(
        rm, probe, attn_fn=a3_attn_fn(m_frac=m_frac, T=T, score_floor=score_floor), progress=False)), dtype=bool)


def sweep_counts(sw: dict, i: int, T: float) -> dict:
    """The per-query counts of setting index ``i`` of a `candidate_sweep` result, survivors at logit margin ``T``
    (the dict `speedups` and `speedup_assumption_range` take)."""
    return dict(n_allowed=sw["n_allowed"], m=sw["m"][i], candidates=sw["n_candidates"][i],
                survivors=sw[f"n_survivors@{T:g}"][i], max_picks=sw["max_picks"][i], min_picks=sw["min_picks"][i])


def speedups(counts: dict, *, d: int, hw: A3Hardware | None = None, seed: int = stats.SEED,
             n_resamples: int = stats.N_RESAMPLES) -> dict:
    """Throughput speedup (sum of base intervals / sum of approximate intervals) and latency speedup
    (mean base latency / mean approximate latency) of a stream of real queries (``counts``: n_allowed,
    m, candidates, survivors, max_picks, min_picks arrays), each as (point, Interval) with a bootstrap
    over the queries."""
    a = stream_arrays(counts["n_allowed"], counts["m"], counts["candidates"], counts["survivors"], d=d, hw=hw,
                      max_picks=counts.get("max_picks"), min_picks=counts.get("min_picks"))
    ratio = lambda u: u[..., 0].sum(-1) / u[..., 1].sum(-1)  # noqa: E731
    out = {}
    for name, key in (("throughput", "interval"), ("latency", "latency")):
        units = np.stack([a[f"base_{key}"], a[f"approx_{key}"]], axis=1)
        out[name] = stats.bootstrap(units, ratio, method="bootstrap over sampled queries", seed=seed,
                                    n_resamples=n_resamples)
    out["arrays"] = a
    return out


def speedup_assumption_range(counts: dict, *, d: int, hw: A3Hardware | None = None, sweep: dict | None = None) -> dict:
    """{"throughput": {lo, hi, swept}, "latency": {...}}: the span of the two speedups over every
    combination of the labelled assumptions in ``sweep`` (default `HW_SWEEP`), the defaults included."""
    hw = hw or A3Hardware()
    sweep = dict(HW_SWEEP if sweep is None else sweep)
    vals = {"throughput": [], "latency": []}
    for combo in itertools.product(*sweep.values()):
        h = replace(hw, **dict(zip(sweep, combo)))
        a = stream_arrays(counts["n_allowed"], counts["m"], counts["candidates"], counts["survivors"], d=d, hw=h,
                          max_picks=counts.get("max_picks"), min_picks=counts.get("min_picks"))
        vals["throughput"].append(a["base_interval"].sum() / a["approx_interval"].sum())
        vals["latency"].append(a["base_latency"].sum() / a["approx_latency"].sum())
    swept = {k: list(v) for k, v in sweep.items()}
    return {name: dict(lo=float(min(v)), hi=float(max(v)), swept=swept) for name, v in vals.items()}


def _cpu_draws(cpu_reps, rng, n_resamples: int):
    """(point median, bootstrap draws of the median) of per-repetition CPU times: an array (repetitions of
    one process) or a list of arrays, one per process (hierarchical: processes resampled, then repetitions
    within each, the median of the pooled draw)."""
    groups = [np.asarray(g, dtype=float).reshape(-1) for g in (cpu_reps if isinstance(cpu_reps, (list, tuple)) else [cpu_reps])]
    if sum(g.size for g in groups) < 2 or not all(g.size and np.all(g > 0) for g in groups):
        raise ValueError("need >= 2 positive CPU repetitions (in every process)")
    point = float(np.median(np.concatenate(groups)))
    if len(groups) == 1:
        t = groups[0]
        return point, np.median(t[rng.integers(0, t.size, size=(n_resamples, t.size))], axis=1), "CPU repetitions (median)"
    P, R = len(groups), min(g.size for g in groups)
    G = np.stack([g[:R] for g in groups])                                     # (P, R)
    pick = rng.integers(0, P, size=(n_resamples, P))
    within = rng.integers(0, R, size=(n_resamples, P, R))
    draws = np.median(G[pick[..., None], within].reshape(n_resamples, -1), axis=1)
    return point, draws, f"CPU processes ({P}) and repetitions within each (median)"


def energy_efficiency(cpu_reps, a3_energy_pj, *, power_w: float, power_sweep, seed: int = stats.SEED,
                      n_resamples: int = stats.N_RESAMPLES, level: float = stats.LEVEL) -> dict:
    """Energy efficiency of A3 over the CPU, (queries/J of A3) / (queries/J of the CPU)
    = power_w * t_cpu / E_a3, with t_cpu the median of the CPU's per-repetition seconds per query and
    E_a3 the mean modelled energy (pJ) over the sampled queries. ``cpu_reps``: the repetitions of one
    process, or a list of arrays, one per separate process (then the bootstrap resamples processes too).

    Returns point, interval (independent bootstraps over the CPU timings and the A3 queries, percentile
    interval of the ratio), and assumption_range {lo, hi, swept: {"cpu_power_w": sweep}}."""
    e = np.asarray(a3_energy_pj, dtype=float).reshape(-1)
    if e.size < 1 or not np.all(e > 0):
        raise ValueError("need positive A3 energies per query")
    if not power_w > 0 or not all(p > 0 for p in power_sweep):
        raise ValueError("CPU powers must be positive watts")
    rng = np.random.default_rng(seed)
    t_point, t_draw, what = _cpu_draws(cpu_reps, rng, n_resamples)
    e_draw = e[rng.integers(0, e.size, size=(n_resamples, e.size))].mean(axis=1)
    ratio = lambda p, tt, ee: p * tt / (ee * 1e-12)  # noqa: E731
    point = float(ratio(power_w, t_point, e.mean()))
    n = len(cpu_reps) if isinstance(cpu_reps, (list, tuple)) else np.asarray(cpu_reps).size
    iv = stats.from_draws(point, ratio(power_w, t_draw, e_draw), level=level, n=n,
                          method=f"bootstrap over {what} x sampled A3 queries (mean)")
    sweep = sorted(set(float(p) for p in power_sweep) | {float(power_w)})
    span = [ratio(p, t_point, e.mean()) for p in sweep]
    return dict(point=point, interval=iv, assumption_range=dict(lo=float(min(span)), hi=float(max(span)),
                                                                swept={"cpu_power_w": sweep}))


# ============================================================================ key-value retrieval at the chip's size
#: Softmax scale of the retrieval task: cosine similarity x 20, the default scale of sentence-transformers'
#: MultipleNegativesRankingLoss (temperature 0.05), the usual convention for sentence-embedding retrieval.
KV_SCALE = 20.0


def split_sentences(docs, *, min_words: int = 8, max_words: int = 40) -> list[str]:
    """Sentences of running text (split at . ! ? followed by white space), whitespace-normalised, with
    ``min_words``..``max_words`` words, duplicates removed (first occurrence kept), in document order."""
    import re

    if min_words < 1 or max_words < min_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    out, seen = [], set()
    for doc in docs:
        for s in re.split(r"(?<=[.!?])\s+", " ".join(str(doc).split())):
            if min_words <= len(s.split()) <= max_words and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def perturb(sentence: str, rng, *, drop: float) -> str:
    """The sentence with each word dropped independently with probability ``drop`` (at least 3 words
    kept, in order): a query that paraphrases its key only partially."""
    words = sentence.split()
    keep = rng.random(len(words)) >= drop
    if keep.sum() < 3:
        keep[rng.choice(len(words), size=min(3, len(words)), replace=False)] = True
    return " ".join(w for w, k in zip(words, keep) if k)


def kv_retrieval_task(rm, sentences, *, n_keys: int = 320, d: int = 64, memories: int = 4, queries_per_memory: int = 250,
                      drop: float = 0.3, seed: int = 0, max_length: int = 64, progress: bool = False) -> dict:
    """A key-value retrieval workload at the chip's size built from real text.

    ``memories`` key sets of ``n_keys`` distinct sentences each; keys = MiniLM embeddings (exact
    attention, mean-pooled) projected to ``d`` dimensions by PCA fitted on all keys, then unit-normalised;
    queries = embeddings of ``queries_per_memory`` of a memory's sentences with words dropped
    (`perturb`), projected and normalised the same way; values = the key's index (one-hot), so the
    attention output's argmax is the retrieved key. Returns K (memories, n_keys, d), Q (memories,
    queries, d), target (memories, queries) float32 / int64 arrays, and the texts."""
    from ..evaluate import embed

    need = memories * n_keys
    if len(sentences) < need:
        raise ValueError(f"need {need} distinct sentences for {memories} memories of {n_keys} keys, got {len(sentences)}")
    if not 0 <= drop < 1 or queries_per_memory < 1 or queries_per_memory > n_keys:
        raise ValueError("need 0 <= drop < 1 and 1 <= queries_per_memory <= n_keys")
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(sentences))[:need]
    keys = [sentences[i] for i in pick]
    target = np.stack([rng.choice(n_keys, size=queries_per_memory, replace=False) for _ in range(memories)])
    queries = [perturb(keys[m * n_keys + t], rng, drop=drop) for m in range(memories) for t in target[m]]
    ek = embed(rm, keys, max_length, progress=progress)
    eq = embed(rm, queries, max_length, progress=progress)
    mu = ek.mean(0)
    _, _, vt = np.linalg.svd(ek - mu, full_matrices=False)
    W = vt[:d].T
    if W.shape[1] < d:
        raise ValueError(f"embedding width {ek.shape[1]} < d = {d}")
    proj = lambda x: (x - mu) @ W  # noqa: E731
    K, Q = proj(ek), proj(eq)
    K /= np.linalg.norm(K, axis=1, keepdims=True)
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    return dict(K=K.reshape(memories, n_keys, d).astype(np.float32), Q=Q.reshape(memories, queries_per_memory, d).astype(np.float32),
                target=target.astype(np.int64), keys=keys, queries=queries)


def kv_task_width(task: dict, d: int) -> dict:
    """The retrieval task at a narrower key width ``d``: the first d principal components of its keys and
    queries, unit-normalised (exactly the task `kv_retrieval_task` builds with that d, since its vectors are
    the PCA projections scaled by a positive number per vector)."""
    D = task["K"].shape[-1]
    if not 1 <= d <= D:
        raise ValueError(f"need 1 <= d <= {D}, got {d}")
    out = dict(task)
    for x in ("K", "Q"):
        a = np.asarray(task[x], dtype=np.float32)[..., :d]
        out[x] = (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
    return out


def kv_retrieval_run(task: dict, *, M: int | None = None, m_frac: float | None = None, T: float = float("inf"),
                     scale: float = KV_SCALE, use_cache: bool = True) -> dict:
    """Exact or A3 retrieval on a `kv_retrieval_task`: with neither M nor m_frac, exact attention.
    Returns correct (bool, memories*queries), and for A3 the per-query counts (n_allowed, m,
    candidates, survivors, max_picks, min_picks) that `speedups` takes. A3 runs are cached by their
    inputs (the arrays' bytes, M, T, scale, the algorithm version) unless ``use_cache=False``."""
    if use_cache and not (M is None and m_frac is None):
        h = hashlib.sha256()
        for x in ("K", "Q", "target"):
            h.update(np.ascontiguousarray(task[x]).tobytes())
        key = dict(arrays=h.hexdigest(), M=M, m_frac=m_frac, T=float(T), scale=float(scale), version=ALGORITHM_VERSION)
        return cached("a3", "kv_run", key, lambda: kv_retrieval_run(task, M=M, m_frac=m_frac, T=T, scale=scale, use_cache=False))
    import torch

    from .algorithm import a3_attention

    K, Q, tgt = (torch.from_numpy(np.asarray(task[x])) for x in ("K", "Q", "target"))
    n = K.shape[1]
    V = torch.eye(n).expand(K.shape[0], n, n)
    if M is None and m_frac is None:
        w = torch.softmax(scale * Q @ K.transpose(-1, -2), dim=-1)
        return dict(correct=(w.argmax(-1) == tgt).reshape(-1).numpy())
    res = a3_attention(Q, K, V, M=M, m_frac=m_frac, T=T, scale=scale)
    out = dict(correct=(res.out.argmax(-1) == tgt).reshape(-1).numpy())
    for name, attr in (("n_allowed", "n_allowed"), ("m", "m"), ("candidates", "n_candidates"), ("survivors", "n_survivors"),
                       ("max_picks", "max_picks"), ("min_picks", "min_picks")):
        out[name] = getattr(res, attr).reshape(-1).numpy().astype(float)
    return out


# ============================================================================ matched quality with an interval
def per_question_units(counts: dict, *, d: int, queries_per_item: int, hw: A3Hardware | None = None) -> dict:
    """Per-test-item sums of the per-query cycle counts (``counts`` as `speedups` takes, question-major:
    item i owns queries i*q .. i*q+q-1 with q = ``queries_per_item``, e.g. MemN2N's hops). Returns
    base_interval, approx_interval, base_latency, approx_latency, base_energy, approx_energy, each (items,)."""
    a = stream_arrays(counts["n_allowed"], counts["m"], counts["candidates"], counts["survivors"], d=d, hw=hw,
                      max_picks=counts.get("max_picks"), min_picks=counts.get("min_picks"))
    n = a["base_interval"].size
    if queries_per_item < 1 or n % queries_per_item:
        raise ValueError(f"{n} queries do not split into items of {queries_per_item}")
    keys = ("base_interval", "approx_interval", "base_latency", "approx_latency", "base_energy", "approx_energy")
    return {k: a[k].reshape(-1, queries_per_item).sum(1) for k in keys}


def matched_bootstrap(ref, correct: dict, units: dict, band: tuple[float, float], *, seed: int = stats.SEED,
                      n_resamples: int = stats.N_RESAMPLES, level: float = stats.LEVEL, chunk: int = 500) -> dict:
    """Matched quality as a statistic: the setting whose accuracy loss is nearest ``band`` (`matched_setting`)
    and the throughput / latency speedups over base A3 there, with ONE bootstrap over the test items:
    every draw resamples the items (the same draw for every setting: paired), recomputes each setting's
    loss, re-chooses the matched setting, and takes the speedups of that setting on the same items.

    ref (N,) bool exact correctness; correct {setting: (N,) bool}; units {setting: `per_question_units`}.
    Returns setting, loss (points), throughput, latency (points), their Intervals, and "setting_draws"
    (how often each setting was chosen), so that the interval shows how firmly the data fix the point."""
    settings = sorted(correct)
    ref = np.asarray(ref, dtype=float)
    C = np.stack([np.asarray(correct[s], dtype=float) for s in settings])          # (S, N)
    if C.shape[1] != ref.size or set(units) < set(settings):
        raise ValueError("correct and units must hold every setting, each over the same items as ref")
    U = {k: np.stack([np.asarray(units[s][k], dtype=float) for s in settings])
         for k in ("base_interval", "approx_interval", "base_latency", "approx_latency")}
    if any(u.shape != C.shape for u in U.values()):
        raise ValueError("units must give one value per item for every setting")

    def stat(idx):  # idx (R, N) item indices -> (choice, loss, tp, lat) per draw
        w = np.zeros((idx.shape[0], ref.size))
        np.add.at(w, (np.arange(idx.shape[0])[:, None], idx), 1.0)                   # item weights per draw
        loss = 100 * ((w @ ref)[:, None] - w @ C.T) / ref.size                       # (R, S)
        ch = _matched_index(loss, band)
        r = np.arange(idx.shape[0])
        tp = (w @ U["base_interval"].T)[r, ch] / (w @ U["approx_interval"].T)[r, ch]
        lat = (w @ U["base_latency"].T)[r, ch] / (w @ U["approx_latency"].T)[r, ch]
        return ch, loss[r, ch], tp, lat

    ch0, loss0, tp0, lat0 = stat(np.arange(ref.size)[None, :])
    rng = np.random.default_rng(seed)
    draws = [stat(rng.integers(0, ref.size, size=(min(chunk, n_resamples - s), ref.size)))
             for s in range(0, n_resamples, chunk)]
    ch, loss, tp, lat = (np.concatenate([d[i] for d in draws]) for i in range(4))
    method = "bootstrap over test items, matched setting re-chosen in every draw"
    out = dict(setting=settings[int(ch0[0])], loss=float(loss0[0]), throughput=float(tp0[0]), latency=float(lat0[0]),
               setting_draws={float(settings[i]): float(np.mean(ch == i)) for i in np.unique(ch)})
    for name, pt, dr in (("loss", loss0[0], loss), ("throughput", tp0[0], tp), ("latency", lat0[0], lat)):
        out[f"{name}_interval"] = stats.from_draws(float(pt), dr, level=level, n=ref.size, method=method)
    return out
