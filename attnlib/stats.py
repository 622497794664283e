"""95% intervals for reproduced values: vectorised, seeded resampling and closed forms, in one place.

Every claim a notebook records carries an `Interval` (see `attnlib.claims`). The helpers here turn the
per-unit data a notebook keeps (per-item correctness of a probe, per-window NLL sums, per-repetition
latencies, per-model ratios) into that interval without re-running any model: the resampling is one
numpy gather of shape (n_resamples, n_units).

- `bootstrap`                 any statistic of per-unit data (percentile interval).
- `accuracy_loss`             paired accuracy difference in points from per-item correctness (one or
                              several test sets; resampled within each set, the mean over sets reported).
- `perplexity_ratio`          ratio of perplexities over text windows (paired, per-window NLL sums).
- `latency_ratio`             ratio (or % reduction) of mean latencies over interleaved repetitions.
- `geomean`                   geometric mean of per-unit ratios (e.g. over models), resampled over units.
- `geomean_of_draws`          geometric mean of several ratios whose bootstrap draws were made elsewhere.
- `from_draws`                the percentile interval of any statistic's resampled draws.
- `binomial`                  exact (Clopper-Pearson) interval of a proportion.
- `no_interval`               a purely modelled number: method "none", lo = hi = value.
- `item_worth`                what one test item moves an accuracy, in points.
- `span`                      (min, max) of a sweep: the assumption range.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 10_000
SEED = 0

__all__ = ["Interval", "no_interval", "bootstrap", "accuracy_loss", "perplexity_ratio", "latency_ratio",
           "geomean", "geomean_of_draws", "from_draws", "binomial", "item_worth", "span", "LEVEL", "N_RESAMPLES"]


@dataclass(frozen=True)
class Interval:
    """A 95% interval [lo, hi] of a reproduced value (in the claim's unit), the method that produced it
    and ``n``, the number of resampled units (test items, windows, repetitions; 0 for "none")."""

    lo: float
    hi: float
    method: str
    n: int

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            raise ValueError(f"interval ends must be finite, got [{self.lo}, {self.hi}]")
        if self.lo > self.hi:
            raise ValueError(f"interval lo {self.lo} > hi {self.hi}")
        if not self.method:
            raise ValueError("an interval must name its method")
        if int(self.n) != self.n or self.n < 0:
            raise ValueError(f"n must be a non-negative integer, got {self.n}")

    def to_dict(self) -> dict:
        return asdict(self)


def no_interval(value: float) -> Interval:
    """The interval of a purely modelled number with no sampled input: lo = hi = value, method "none"."""
    value = float(value)
    return Interval(value, value, "none", 0)


def _finite(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def from_draws(point: float, draws, *, method: str, n: int, level: float = LEVEL) -> Interval:
    """The percentile interval of resampled ``draws`` of a statistic (any shape, flattened), widened
    to contain the ``point`` estimate; ``n`` is the number of resampled units. The one place every
    resampling helper here (and a paper module that draws its own resamples) turns draws into an
    `Interval`."""
    _check_level(level)
    a = (1 - level) / 2
    lo, hi = (float(x) for x in np.quantile(np.asarray(draws, dtype=np.float64), [a, 1 - a]))
    point = float(point)
    return Interval(min(lo, point), max(hi, point), method, int(n))


def _indices(rng, n: int, n_resamples: int) -> np.ndarray:
    if int(n_resamples) != n_resamples or n_resamples < 100:
        raise ValueError(f"n_resamples must be an integer >= 100, got {n_resamples}")
    return rng.integers(0, n, size=(int(n_resamples), n))


def bootstrap(units, statistic: Callable[[np.ndarray], np.ndarray] = None, *, method: str = "bootstrap",
              level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, Interval]:
    """(point, interval) of ``statistic`` over resampled units.

    units: array (n, ...) with one row per independent unit (test item, window, repetition).
    statistic: maps an array (n_resamples, n, ...) to (n_resamples,); default: mean over axis 1.
    The point value is the statistic on the original units; the interval is the percentile interval.
    """
    _check_level(level)
    x = _finite("units", units)
    stat = statistic or (lambda a: a.mean(axis=1))
    point = float(np.asarray(stat(x[None]))[0])
    draws = np.asarray(stat(x[_indices(np.random.default_rng(seed), len(x), n_resamples)]))
    return point, from_draws(point, draws, method=method, n=len(x), level=level)


def accuracy_loss(correct_ref, correct_new, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                  seed: int = SEED) -> tuple[float, Interval]:
    """Accuracy loss in points, 100 * (acc_ref - acc_new), with a paired bootstrap interval.

    correct_ref, correct_new: per-item correctness (bool/0-1 arrays of equal length) of the reference
    and the approximate model on the SAME test items; or lists of such arrays, one per test set: then
    the loss is the unweighted mean over sets and each set is resampled on its own (stratified).
    """
    _check_level(level)
    refs = [correct_ref] if np.ndim(correct_ref[0]) == 0 else list(correct_ref)
    news = [correct_new] if np.ndim(correct_new[0]) == 0 else list(correct_new)
    if len(refs) != len(news):
        raise ValueError(f"{len(refs)} reference sets but {len(news)} approximate sets")
    rng = np.random.default_rng(seed)
    points, draws, n = [], np.zeros(int(n_resamples)), 0
    for r, a in zip(refs, news):
        r, a = _finite("correct_ref", r), _finite("correct_new", a)
        if r.shape != a.shape or r.ndim != 1:
            raise ValueError(f"per-item correctness must be 1-D arrays of equal length, got {r.shape} and {a.shape}")
        diff = 100.0 * (r - a)
        points.append(diff.mean())
        draws += diff[_indices(rng, len(diff), n_resamples)].mean(axis=1)
        n += len(diff)
    k = len(points)
    point = float(np.mean(points))
    method = "paired bootstrap over test items" + (f" (stratified by {k} test sets)" if k > 1 else "")
    return point, from_draws(point, draws / k, method=method, n=n, level=level)


def perplexity_ratio(nll_ref, nll_new, tokens, *, level: float = LEVEL, n_resamples: int = N_RESAMPLES,
                     seed: int = SEED) -> tuple[float, Interval]:
    """ppl_new / ppl_ref = exp((sum nll_new - sum nll_ref) / sum tokens), paired bootstrap over windows.

    nll_ref, nll_new: total NLL (nats) per window; tokens: scored tokens per window (all shape (W,)).
    """
    a, b, t = _finite("nll_ref", nll_ref), _finite("nll_new", nll_new), _finite("tokens", tokens)
    if not (a.shape == b.shape == t.shape) or a.ndim != 1:
        raise ValueError("nll_ref, nll_new and tokens must be 1-D arrays of equal length (one per window)")
    if np.any(t <= 0):
        raise ValueError("every window must score at least one token")
    units = np.stack([b - a, t], axis=1)
    return bootstrap(units, lambda u: np.exp(u[..., 0].sum(-1) / u[..., 1].sum(-1)),
                     method="paired bootstrap over text windows", level=level, n_resamples=n_resamples, seed=seed)


def latency_ratio(t_base, t_new, *, as_percent_reduction: bool = False, level: float = LEVEL,
                  n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, Interval]:
    """mean(t_base) / mean(t_new) (a speedup), or 100 * (1 - mean(t_new) / mean(t_base)) (a % reduction),
    with a paired bootstrap over interleaved repetitions (pair i = base and new timed back to back).

    t_base, t_new: seconds per repetition, shape (R,) or (R, k) (k inputs per repetition, averaged)."""
    b, n = _finite("t_base", t_base), _finite("t_new", t_new)
    if b.shape != n.shape:
        raise ValueError(f"t_base and t_new must have the same shape, got {b.shape} and {n.shape}")
    if np.any(b <= 0) or np.any(n <= 0):
        raise ValueError("latencies must be positive seconds")
    units = np.stack([b.reshape(len(b), -1).mean(1), n.reshape(len(n), -1).mean(1)], axis=1)
    if as_percent_reduction:
        stat = lambda u: 100.0 * (1.0 - u[..., 1].mean(-1) / u[..., 0].mean(-1))  # noqa: E731
    else:
        stat = lambda u: u[..., 0].mean(-1) / u[..., 1].mean(-1)  # noqa: E731
    return bootstrap(units, stat, method="paired bootstrap over interleaved repetitions", level=level,
                     n_resamples=n_resamples, seed=seed)


def geomean(ratios, *, method: str = "bootstrap over units of the geometric mean", level: float = LEVEL,
            n_resamples: int = N_RESAMPLES, seed: int = SEED) -> tuple[float, Interval]:
    """Geometric mean of positive per-unit ratios, with a bootstrap interval over the units."""
    r = _finite("ratios", ratios)
    if np.any(r <= 0):
        raise ValueError("ratios must be positive for a geometric mean")
    point, iv = bootstrap(np.log(r), method=method, level=level, n_resamples=n_resamples, seed=seed)
    return float(np.exp(point)), Interval(float(np.exp(iv.lo)), float(np.exp(iv.hi)), iv.method, iv.n)


def geomean_of_draws(points, draws, *, method: str, n: int, level: float = LEVEL) -> tuple[float, Interval]:
    """Geometric mean of per-point ratios ``points`` (P,) with the percentile interval of the geometric
    mean of their bootstrap draws ``draws`` (P, B) (draw b of every point from the same resample
    round; points that share measured units share their draws)."""
    p = np.asarray(points, dtype=np.float64)
    d = np.asarray(draws, dtype=np.float64)
    if p.ndim != 1 or d.ndim != 2 or d.shape[0] != p.shape[0]:
        raise ValueError(f"points (P,) and draws (P, B) expected, got {p.shape} and {d.shape}")
    if np.any(p <= 0) or np.any(d <= 0) or not np.all(np.isfinite(d)):
        raise ValueError("ratios must be positive and finite")
    point = float(np.exp(np.log(p).mean()))
    return point, from_draws(point, np.exp(np.log(d).mean(0)), method=method, n=n, level=level)


def binomial(k: int, n: int, *, level: float = LEVEL) -> Interval:
    """Exact (Clopper-Pearson) interval of a proportion k / n, in [0, 1]."""
    from scipy.stats import beta

    _check_level(level)
    if int(n) != n or n < 1 or int(k) != k or not 0 <= k <= n:
        raise ValueError(f"need integers 0 <= k <= n, n >= 1; got k={k}, n={n}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return Interval(lo, hi, "exact binomial (Clopper-Pearson)", int(n))


def item_worth(n_items: int) -> float:
    """Points of accuracy one test item moves on a test set of ``n_items``: 100 / n."""
    if int(n_items) != n_items or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items}")
    return 100.0 / n_items


def span(values: Sequence[float]) -> tuple[float, float]:
    """(min, max) of finite values: the assumption range of a sweep."""
    v = _finite("values", values)
    return float(v.min()), float(v.max())
