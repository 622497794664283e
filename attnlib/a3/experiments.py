"""A3 experiment helpers: the orchestration the notebook needs and a test can cover.

- `smallest_setting`            the smallest setting whose metric reaches a target (the recall rule).
- `matched_setting`             the setting whose accuracy loss best matches a paper band (matched quality).
- `probe_correct_cached`        per-item probe correctness with A3 attention in every encoder layer,
                                cached under .cache/a3 by model, texts, max_length, M, T and code version.
- `speedups`                    throughput and latency speedup of approximate over base A3 on a stream of
                                real queries, with a bootstrap interval over the queries.
- `speedup_assumption_range`    the span of those speedups over the labelled hardware assumptions.
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
           "energy_efficiency", "HW_SWEEP", "sweep_counts"]

#: The labelled hardware assumptions swept for the speedups' assumption range (defaults included).
HW_SWEEP = dict(pipeline_fill=(4, 8, 16), select_iter_per_cycle=(0.5, 1.0), exp_overlap=(0.0, 0.5, 1.0),
                sort_amortised=(True, False))


def smallest_setting(settings, metric, target: float):
    """Smallest setting whose metric >= target (the conservative rule); None if none reaches it."""
    for s, val in sorted(zip(settings, metric)):
        if val >= target:
            return s
    return None


def matched_setting(settings, losses, band: tuple[float, float]):
    """Matched quality: the setting whose accuracy loss (points) is nearest to the paper's band
    (distance 0 inside it; among settings inside the band, the one nearest its middle; ties -> the
    smaller, i.e. faster, setting). Returns (setting, loss)."""
    settings, losses = list(settings), np.asarray(losses, dtype=float)
    if len(settings) != len(losses) or not len(settings):
        raise ValueError("settings and losses must be non-empty and of equal length")
    lo, hi = band
    if not lo <= hi:
        raise ValueError(f"band must be (low, high) with low <= high, got {band}")
    outside = np.maximum(lo - losses, 0) + np.maximum(losses - hi, 0)
    mid = np.abs(losses - (lo + hi) / 2)
    order = sorted(range(len(settings)), key=lambda i: (outside[i], mid[i], settings[i]))
    return settings[order[0]], float(losses[order[0]])


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


def energy_efficiency(cpu_reps, a3_energy_pj, *, power_w: float, power_sweep, seed: int = stats.SEED,
                      n_resamples: int = stats.N_RESAMPLES, level: float = stats.LEVEL) -> dict:
    """Energy efficiency of A3 over the CPU, (queries/J of A3) / (queries/J of the CPU)
    = power_w * t_cpu / E_a3, with t_cpu the median of the CPU's per-repetition seconds per query and
    E_a3 the mean modelled energy (pJ) over the sampled queries.

    Returns point, interval (independent bootstraps over the CPU repetitions and the A3 queries,
    percentile interval of the ratio), and assumption_range {lo, hi, swept: {"cpu_power_w": sweep}}."""
    t = np.asarray(cpu_reps, dtype=float)
    e = np.asarray(a3_energy_pj, dtype=float).reshape(-1)
    if t.size < 2 or not np.all(t > 0) or e.size < 1 or not np.all(e > 0):
        raise ValueError("need >= 2 positive CPU repetitions and positive A3 energies per query")
    if not power_w > 0 or not all(p > 0 for p in power_sweep):
        raise ValueError("CPU powers must be positive watts")
    rng = np.random.default_rng(seed)
    t_draw = np.median(t[rng.integers(0, t.size, size=(n_resamples, t.size))], axis=1)
    e_draw = e[rng.integers(0, e.size, size=(n_resamples, e.size))].mean(axis=1)
    ratio = lambda p, tt, ee: p * tt / (ee * 1e-12)  # noqa: E731
    point = float(ratio(power_w, np.median(t), e.mean()))
    lo, hi = np.quantile(ratio(power_w, t_draw, e_draw), [(1 - level) / 2, (1 + level) / 2])
    iv = stats.Interval(min(float(lo), point), max(float(hi), point),
                        "bootstrap over CPU repetitions (median) x sampled A3 queries (mean)", int(t.size))
    sweep = sorted(set(float(p) for p in power_sweep) | {float(power_w)})
    span = [ratio(p, np.median(t), e.mean()) for p in sweep]
    return dict(point=point, interval=iv, assumption_range=dict(lo=float(min(span)), hi=float(max(span)),
                                                                swept={"cpu_power_w": sweep}))
