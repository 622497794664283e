"""Latency reduction as R(h) = h x s - (1 - h) x m, each factor measured (issue 26).

For one cell (length L, batch B, threads), from the per-repetition latencies of the four variants of
`bench` (same batches, interleaved):

* s = 1 - T_hit / T_base       the hit saving of the engine (key, search and load included);
* c = 1 - T_ceiling / T_base   the lookup-free ceiling of a hit (the maps handed over);
* m = T_miss / T_base - 1      the miss cost (a full lookup whose result is rejected);

so a stream in which a share h of the inputs hit runs at (h T_hit + (1 - h) T_miss) / T_base of the
baseline: R(h) = 100 (h s - (1 - h) m) %, and the ceiling is R_c(h) = 100 h c. The hit rate at which a
target reduction (the paper's 22%) is reached is h* = (target + m) / (s + m) (unreachable when s <= target;
the ceiling's h* = target / c). In a batch the rows hit independently; R(h) then assumes the batch's cost
is linear in its number of hits between the all-hit and all-miss batches that were timed.

Intervals (`FactorDraws`): a two-level bootstrap -- resample the separate PROCESSES (shared by every
cell: one draw of processes per resample), then the interleaved repetitions within each drawn process
(per cell) -- and, for R at a stream's hit rate, the queries behind the hit rate (binomial).
"""
from __future__ import annotations

import numpy as np

from .. import stats
from .bench import VARIANTS

__all__ = ["cell_totals", "FactorDraws", "reduction", "hit_rate_needed", "hit_rate_draws"]


def cell_totals(results: list[dict]) -> dict:
    """{cell key: dict(T=(P, R, V) per-repetition total seconds over the cell's batches, per process;
    variants (V names: base, hit, miss, ceiling, optionally sdpa, miss_sdpa); busy=(P,) busy share of
    other processes; flagged=bool, L, B, threads)} from `bench.run_processes`."""
    if not results:
        raise ValueError("no process results")
    out = {}
    for p, res in enumerate(results):
        for c in res["cells"]:
            variants = tuple(c["times"])
            if not set(VARIANTS) <= set(variants):
                raise ValueError(f"cell {c['key']}: needs the variants {VARIANTS}, got {variants}")
            per = [np.asarray(c["times"][v], float).sum(1) for v in variants]
            if len({len(x) for x in per}) != 1:
                raise ValueError(f"cell {c['key']}: every variant needs the same repetitions")
            t = np.stack(per, -1)   # (R, V)
            d = out.setdefault(c["key"], dict(T=[], busy=[], flagged=False, L=c["L"], B=c["B"], threads=c["threads"],
                                              variants=variants))
            if d["variants"] != variants:
                raise ValueError(f"cell {c['key']}: the processes timed different variants")
            d["T"].append(t)
            d["busy"].append(c["busy_other"])
            d["flagged"] |= bool(c["flagged"])
            d["retimed"] = d.get("retimed", False) or bool(c.get("retimed", False))
    for k, d in out.items():
        if len(d["T"]) != len(results) or len({t.shape for t in d["T"]}) != 1:
            raise ValueError(f"cell {k}: every process must time it with the same repetitions")
        d["T"], d["busy"] = np.stack(d["T"]), np.asarray(d["busy"], float)
        if np.any(d["T"] <= 0) or not np.all(np.isfinite(d["T"])):
            raise ValueError(f"cell {k}: latencies must be positive finite seconds")
    return out


def _factors(means: np.ndarray, variants) -> dict:
    """means (..., V) mean latency per variant -> {s, m, c} (fractions)."""
    i = {v: variants.index(v) for v in variants}
    base = means[..., i["base"]]
    out = dict(s=1 - means[..., i["hit"]] / base, m=means[..., i["miss"]] / base - 1, c=1 - means[..., i["ceiling"]] / base)
    if "sdpa" in i and "miss_sdpa" in i:   # against the fused baseline (a hit skips attention either way)
        sd = means[..., i["sdpa"]]
        out["s_sdpa"] = 1 - means[..., i["hit"]] / sd
        out["m_sdpa"] = means[..., i["miss_sdpa"]] / sd - 1
        out["c_sdpa"] = 1 - means[..., i["ceiling"]] / sd
    return out


class FactorDraws:
    """Point factors and bootstrap draws of every cell (see the module docstring).

    ``point[key]`` = {s, m, c}; ``draws[key]`` = {s, m, c: (n_resamples,)}. ``n_procs``, ``reps``."""

    def __init__(self, totals: dict, *, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED):
        rng = np.random.default_rng(seed)
        P = {d["T"].shape[0] for d in totals.values()}
        if len(P) != 1:
            raise ValueError("every cell needs the same processes")
        self.n_procs = P.pop()
        self.n_resamples = n_resamples
        procs = rng.integers(0, self.n_procs, size=(n_resamples, self.n_procs))   # shared by every cell
        self.point, self.draws, self.reps = {}, {}, {}
        for k, d in totals.items():
            T = d["T"]                                   # (P, R, V)
            R = T.shape[1]
            self.reps[k] = R
            self.point[k] = {n: float(v) for n, v in _factors(T.mean((0, 1)), d["variants"]).items()}
            reps = rng.integers(0, R, size=(n_resamples, self.n_procs, R))
            draw = T[procs[:, :, None], reps]            # (n, P, R, V)
            self.draws[k] = _factors(draw.mean((1, 2)), d["variants"])
        self.totals = totals

    def interval(self, key: str, name: str, scale: float = 100.0) -> tuple[float, stats.Interval]:
        v = scale * self.point[key][name]
        return v, stats.from_draws(v, scale * self.draws[key][name], method=self.method, n=self.n_procs)

    @property
    def method(self) -> str:
        R = sorted(set(self.reps.values()))
        return (f"two-level bootstrap: {self.n_procs} separate processes (resampled, shared by every cell), then the "
                f"interleaved repetitions within each ({'/'.join(map(str, R))} per process)")

    def reduction(self, key: str, h: float, h_draws=None, *, which: str = "engine") -> tuple[float, stats.Interval]:
        """R (%) of a cell at hit rate ``h`` (engine: h s - (1-h) m; ceiling: h c; sdpa: against SDPA),
        with the bootstrap over processes and repetitions, and over ``h_draws`` (the queries) if given."""
        s, m = _names(which)
        p, d = self.point[key], self.draws[key]
        point = 100 * reduction(h, p[s], 0.0 if m is None else p[m])
        hd = h if h_draws is None else np.asarray(h_draws, float)[: self.n_resamples]
        draws = 100 * reduction(hd, d[s], 0.0 if m is None else d[m])
        method = self.method + ("; the queries behind the hit rate (binomial)" if h_draws is not None else "")
        return point, stats.from_draws(point, draws, method=method, n=self.n_procs)

    def mean_reduction(self, keys: list, hs: list, h_draws: list | None = None, *, which: str = "engine"):
        """Unweighted mean over cells (lengths) of R at each cell's own hit rate, bootstrapped jointly."""
        if not keys or len(keys) != len(hs):
            raise ValueError("one hit rate per cell")
        s, m = _names(which)
        pts = [100 * reduction(h, self.point[k][s], 0.0 if m is None else self.point[k][m]) for k, h in zip(keys, hs)]
        dr = [100 * reduction(h if h_draws is None else np.asarray(h_draws[i], float)[: self.n_resamples],
                              self.draws[k][s], 0.0 if m is None else self.draws[k][m])
              for i, (k, h) in enumerate(zip(keys, hs))]
        point = float(np.mean(pts))
        method = self.method + (f"; mean over {len(keys)} cells" + ("; the queries behind each hit rate (binomial)"
                                                                      if h_draws is not None else ""))
        return point, stats.from_draws(point, np.mean(dr, 0), method=method, n=self.n_procs)

    def busy(self, key: str) -> float:
        return float(np.nanmax(self.totals[key]["busy"]))

    def flagged(self, keys=None) -> list[str]:
        keys = self.totals if keys is None else keys
        return [k for k in keys if self.totals[k]["flagged"]]


def _names(which: str):
    if which == "engine":
        return "s", "m"
    if which == "ceiling":
        return "c", None
    if which == "sdpa":
        return "s_sdpa", "m_sdpa"
    if which == "ceiling_sdpa":
        return "c_sdpa", None
    raise ValueError(f"which must be engine, ceiling, sdpa or ceiling_sdpa, got {which!r}")


def reduction(h, s, m):
    """R(h) = h s - (1 - h) m (fractions; arrays broadcast)."""
    h = np.asarray(h, float)
    if np.any((h < 0) | (h > 1)):
        raise ValueError("hit rates lie in [0, 1]")
    return h * np.asarray(s, float) - (1 - h) * np.asarray(m, float)


def hit_rate_needed(target: float, s: float, m: float = 0.0) -> float:
    """The hit rate h* with R(h*) = target (fractions): (target + m) / (s + m); inf when s <= target
    (not reachable even if every input hits)."""
    if s <= target:
        return float("inf")
    return float((target + m) / (s + m))


def hit_rate_draws(n_hits: int, n: int, n_resamples: int = stats.N_RESAMPLES, seed: int = stats.SEED) -> np.ndarray:
    """Bootstrap draws of a hit rate measured as ``n_hits`` of ``n`` queries (binomial resampling)."""
    if n < 1 or not 0 <= n_hits <= n:
        raise ValueError(f"need 0 <= n_hits <= n and n >= 1, got {n_hits}, {n}")
    return np.random.default_rng(seed + 7).binomial(n, n_hits / n, size=n_resamples) / n
