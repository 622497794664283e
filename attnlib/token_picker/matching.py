"""Token-Picker at matched quality: windows from two corpora, one exact pass per window, pruned decode
steps as the last rows of one forward pass, a paired interval over windows, and the threshold found by
bisection under an interval rule (with the point rule beside it).

* `corpus_windows`: windows of running text from Austen (consecutive chapters of one novel) or Brown
  (the five samples of one genre joined in id order: running text within a sample, a blank line and a
  new sample of the same genre between them), one novel / genre per window in turn.
* `WindowPass`: ONE exact forward pass over a window (fused causal kernel) gives its KV cache for every
  prefix (a causal model's prefix cache does not depend on later tokens) and, on the side, the
  statistics counts of `make_stats_fn` (many thresholds, both estimators) at chosen rows. The counts
  are cached on disk by their inputs; the KV cache lives in memory only, and the pass runs only when a
  quality result or the counts are missing from the cache (a warm run never runs the model).
* `QualityBench.run(threshold, context)`: for every window, the decode steps with contexts
  ``context - rows .. context - 1`` under teacher forcing. A pruned decode step with teacher forcing is
  one causal row pruned against its own prefix, so the steps are the last ``rows`` rows of one forward
  pass over the prefix cache: Token-Picker in every layer on those rows, not a token-by-token loop.
  Returns per-window NLL sums and the Token-Picker counts; each (window, context, threshold) is cached.
* `perplexity_change`: the perplexity change vs exact attention in %, with a paired t-interval over
  windows (the mean per-token NLL difference of each window is one unit; Student t with W - 1 degrees
  of freedom: the small-sample correction that a percentile bootstrap over 8 windows lacks).
* `bisect_threshold`: the largest threshold that passes a rule, by bisection in log(threshold), with
  every evaluation kept; `RULES` holds the interval rule (upper end of the change within the limit) and
  the point rule (the value alone).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .estimator import PickerConfig
from .experiment import StatsCollector, book_windows, cached, make_attn_fn, make_stats_fn

__all__ = ["corpus_windows", "WindowPass", "pass_counts", "QualityBench", "perplexity_change", "PplChange", "RULES",
           "Bisection", "bisect_threshold", "t_quantile"]

CORPORA = ("austen", "brown")


def corpus_windows(rm, corpus: str, window: int, n_windows: int) -> tuple[list[list[int]], list[str]]:
    """``n_windows`` windows of ``window`` tokens of running text from ``corpus`` (austen or brown) and
    the novel / genre of each (`book_windows`: one source per window in turn)."""
    from .. import data

    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; known: {', '.join(CORPORA)}")
    records = data.load_records(corpus)
    if corpus == "brown":  # a genre plays the novel, its samples (in id order) the chapters
        records = [dict(book=r["genre"], chapter=r["id"], text=r["text"]) for r in records]
    return book_windows(rm, records, window, n_windows)


# ----------------------------------------------------------------------------- statistics
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (scipy when present; else the Cornish-Fisher expansion, within 1e-3 for
    df >= 3)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    try:
        from scipy import stats as st

        return float(st.t.ppf(p, df))
    except ImportError:  # pragma: no cover
        from statistics import NormalDist

        z = NormalDist().inv_cdf(p)
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


@dataclass(frozen=True)
class PplChange:
    """Perplexity change vs the reference in %: value and the paired t-interval over windows."""

    value: float
    lo: float
    hi: float
    n: int
    method: str = "paired t-interval over text windows (Student t, W - 1 df)"

    def interval(self):
        from ..stats import Interval

        return Interval(min(self.lo, self.value), max(self.hi, self.value), self.method, self.n)


def perplexity_change(nll_ref, nll_new, tokens, level: float = 0.95) -> PplChange:
    """100 * (ppl_new / ppl_ref - 1) with a paired t-interval over windows.

    nll_ref, nll_new: total NLL (nats) per window; tokens: scored tokens per window. The unit is a
    window's mean per-token NLL difference d_w; the value is exp(sum of differences / sum of tokens) - 1
    (the pooled change), the interval exp(mean(d) +- t_{W-1} sd(d) / sqrt(W)) - 1 (equal-weight
    windows; with equal token counts the centre is the pooled value)."""
    a, b, t = (np.asarray(x, dtype=np.float64) for x in (nll_ref, nll_new, tokens))
    if not (a.shape == b.shape == t.shape) or a.ndim != 1 or len(a) < 2:
        raise ValueError("nll_ref, nll_new and tokens must be 1-D arrays of one length >= 2 (one per window)")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or np.any(t <= 0):
        raise ValueError("NLL sums must be finite and every window must score at least one token")
    d = (b - a) / t
    W = len(d)
    half = t_quantile(0.5 + level / 2, W - 1) * d.std(ddof=1) / math.sqrt(W)
    pooled = (b - a).sum() / t.sum()
    pct = lambda x: 100.0 * math.expm1(x)  # noqa: E731
    return PplChange(pct(pooled), pct(d.mean() - half), pct(d.mean() + half), W)


#: Quality rules: name -> the number compared with the limit (the interval's upper end, or the value).
RULES = {"interval": lambda c: c.hi, "point": lambda c: c.value}


@dataclass
class Bisection:
    """Result of `bisect_threshold`: the largest passing threshold found (None: none passed), the
    smallest failing one above it (None: the top of the range passed), every evaluation in order."""

    rule: str
    limit: float
    threshold: float | None
    failing: float | None
    evaluated: list = field(default_factory=list)  # (threshold, measured number, passes)

    @property
    def resolution(self) -> float | None:
        """failing / threshold: how far the true crossing can be above the threshold found."""
        return None if self.threshold is None or self.failing is None else self.failing / self.threshold


def _round(x: float, digits: int = 3) -> float:
    return float(f"{x:.{digits - 1}e}")


def bisect_threshold(measure, lo: float, hi: float, *, limit: float = 1.0, steps: int = 4,
                     known: dict | None = None, max_expand: int = 4, rule: str = "interval") -> Bisection:
    """The largest threshold t in a bracket whose ``measure(t)`` is at most ``limit``, by bisection in
    log(t). ``measure`` is assumed to grow with t (a larger threshold prunes more); midpoints are
    rounded to 3 significant digits (stable cache keys). If ``lo`` fails, the bracket moves down by
    factors of hi/lo (at most ``max_expand`` times); if ``hi`` passes, it moves up likewise (the result
    then says how far). ``known`` {t: measured} reuses evaluations already made (no new run).
    ``steps`` halvings of log(hi/lo) leave a resolution of (hi/lo) ** (1 / 2 ** steps)."""
    if not (0 < lo < hi) or not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"need 0 < lo < hi, got lo={lo}, hi={hi}")
    if steps < 0 or int(steps) != steps:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    seen = dict(known or {})
    log = []

    def value(t):
        if t not in seen:
            seen[t] = float(measure(t))
        v = seen[t]
        log.append((t, v, v <= limit))
        return v

    width = hi / lo
    for _ in range(max_expand):  # bracket: lo passes, hi fails
        if value(lo) <= limit:
            break
        lo, hi = _round(lo / width), lo
    else:
        if value(lo) > limit:
            return Bisection(rule, limit, None, lo, log)
    for _ in range(max_expand):
        if value(hi) > limit:
            break
        lo, hi = hi, _round(hi * width)
    else:
        if value(hi) <= limit:
            return Bisection(rule, limit, hi, None, log)
    for _ in range(int(steps)):
        mid = _round(math.sqrt(lo * hi))
        if not lo < mid < hi:
            break
        if value(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return Bisection(rule, limit, lo, hi, log)


# ----------------------------------------------------------------------------- model passes
class WindowPass:
    """One window: one exact forward pass (lazy, at most once) gives the KV cache of every prefix and
    the statistics counts at ``stat_rows`` for every spec (dict cfg, thresholds, rows=None)."""

    def __init__(self, rm, window, stat_rows=(), specs=()):
        self.rm, self.window = rm, [int(t) for t in window]
        self.stat_rows = np.asarray(stat_rows, dtype=np.int64)
        self.specs = [dict(s) for s in specs]
        self._past = None
        self._stats = None
        self.seconds = 0.0  # compute time of the forward pass, when it ran here

    def _stats_key(self) -> dict:
        return dict(model=self.rm.name, window=self.window, rows=[int(r) for r in self.stat_rows],
                    specs=[dict(cfg=repr(s["cfg"]), thresholds=[float(t) for t in s["thresholds"]],
                                rows=None if s.get("rows") is None else [int(r) for r in s["rows"]])
                           for s in self.specs])

    def _forward(self, with_stats: bool = True) -> dict:
        from ..models import replaced_attention

        t0 = time.perf_counter()
        rm, G = self.rm, self.rm.n_heads // self.rm.n_kv_heads
        ids = torch.tensor([self.window], dtype=torch.long, device=rm.device)
        cols = [StatsCollector() for _ in self.specs]
        if self.specs and with_stats:
            fn = make_stats_fn([dict(s, collector=c) for s, c in zip(self.specs, cols)], self.stat_rows,
                               kv_groups=G, causal=True)
        else:
            def fn(q, k, v, mask, scale, layer):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        with torch.no_grad(), replaced_attention(rm, fn):
            past = rm.model.model(input_ids=ids, use_cache=True).past_key_values
        self._past = [(layer.keys, layer.values) for layer in past.layers]
        res = [{layer: {f: a[:, :, 0] for f, a in arrs.items()} for layer, arrs in c.arrays().items()} for c in cols]
        self.seconds += time.perf_counter() - t0
        return dict(res=res, seconds=time.perf_counter() - t0)

    def stats(self) -> tuple[list, float]:
        """The counts per spec ({layer: {field: (1, n_thresholds, heads, rows)}}) and the seconds the
        forward pass took when they were computed."""
        if not self.specs:
            raise ValueError("this window pass has no statistics specs")
        if self._stats is None:
            self._stats = cached("stats2", self._stats_key(), self._forward)
        return self._stats["res"], float(self._stats["seconds"])

    def past(self, n: int):
        """A DynamicCache holding the exact KV cache of the first ``n`` tokens (views, never modified)."""
        from transformers import DynamicCache

        if not 1 <= n <= len(self.window):
            raise ValueError(f"prefix length must be in [1, {len(self.window)}], got {n}")
        if self._past is None:
            with_stats = bool(self.specs) and self._stats is None
            out = self._forward(with_stats)
            if with_stats:  # store the counts the pass computed anyway
                self._stats = cached("stats2", self._stats_key(), lambda: out)
        cache = DynamicCache()
        for li, (k, v) in enumerate(self._past):
            cache.update(k[:, :, :n], v[:, :, :n], li)
        return cache

    def release(self) -> None:
        """Drop the in-memory KV cache (the counts stay cached)."""
        self._past = None


class QualityBench:
    """Teacher-forced decode quality of Token-Picker on several windows at several contexts.

    passes: `WindowPass` per window; rows: decode steps per window and context; cfg: the estimator
    configuration (its threshold is replaced per run). ``run(t, context)``: per window the NLL sum of
    the tokens predicted by the decode steps with contexts ``context - rows .. context - 1``, and the
    Token-Picker counts of those steps ({layer: {field: (heads, rows)}}, None for t None or 0).
    t None = exact fp32 attention; t 0.0 = dense attention with the quantised K/V."""

    def __init__(self, rm, passes, rows: int, cfg: PickerConfig):
        if int(rows) != rows or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows}")
        self.rm, self.passes, self.rows, self.cfg = rm, list(passes), int(rows), cfg
        self._filled = {}  # (window index, context, threshold) -> compute seconds recorded in its cache entry

    def _one(self, wp: WindowPass, t, context: int) -> dict:
        from ..models import replaced_attention

        R = self.rows
        if context > len(wp.window) or context - R - 1 < 1:
            raise ValueError(f"context {context} needs 1 < context - rows - 1 and a window of at least context tokens "
                             f"(window {len(wp.window)}, rows {R})")
        c = None if t is None else PickerConfig(**{**self.cfg.__dict__, "threshold": float(t)})
        key = dict(model=self.rm.name, window=wp.window[:context], rows=R, cfg=None if c is None else repr(c))

        def compute():
            t0 = time.perf_counter()
            start = context - R - 1  # first decode row (position); the prefix before it is cached
            ids = torch.tensor([wp.window[start:context]], dtype=torch.long, device=self.rm.device)
            past = wp.past(start)
            col = StatsCollector()
            G = self.rm.n_heads // self.rm.n_kv_heads
            with torch.no_grad():
                if c is None:
                    out = self.rm.model(input_ids=ids[:, :-1], past_key_values=past, use_cache=True)
                else:
                    fn = make_attn_fn(c, kv_groups=G, decode_from=0, collector=col if c.threshold > 0 else None)
                    with replaced_attention(self.rm, fn):
                        out = self.rm.model(input_ids=ids[:, :-1], past_key_values=past, use_cache=True)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
            nll = (-logp.gather(-1, ids[0, 1:, None]).squeeze(-1)).double().numpy()
            st = None if c is None or c.threshold == 0 else {
                layer: {f: a[0, 0, 0] for f, a in arrs.items()} for layer, arrs in col.arrays().items()}
            return dict(nll=nll, stats=st, seconds=time.perf_counter() - t0)

        entry = cached("quality2", key, compute)
        self._filled[id(wp), context, t] = float(entry["seconds"])
        return entry

    @property
    def fill_seconds(self) -> float:
        """The compute time every run used so far took when its cache entry was filled (s, summed)."""
        return float(sum(self._filled.values()))

    def _which(self, which):
        idx = range(len(self.passes)) if which is None else list(which)
        if not idx:
            raise ValueError("no windows selected")
        return [self.passes[i] for i in idx]

    def run(self, t, context: int, which=None) -> dict:
        """{nll: (W, rows), stats: [per window] or None, seconds: compute time when filled (summed)};
        ``which``: indices of the windows (default all)."""
        entries = [self._one(wp, t, context) for wp in self._which(which)]
        return dict(nll=np.stack([e["nll"] for e in entries]),
                    stats=None if entries[0]["stats"] is None else [e["stats"] for e in entries],
                    seconds=float(sum(float(e["seconds"]) for e in entries)))

    def change(self, t, context: int, ref=None, which=None) -> PplChange:
        """Perplexity change of threshold t vs exact attention (or ``ref``) at ``context``, paired over windows."""
        base = self.run(ref, context, which)["nll"]
        new = self.run(t, context, which)["nll"]
        return perplexity_change(base.sum(1), new.sum(1), np.full(len(base), base.shape[1]))

    def counts(self, t, context: int, which=None) -> dict:
        """{field: (windows, layers, heads, rows)} of the pruned run at threshold t."""
        st = self.run(t, context, which)["stats"]
        if st is None:
            raise ValueError("no Token-Picker counts for exact or dense runs")
        layers = sorted(st[0])
        return {f: np.stack([np.stack([w[layer][f] for layer in layers]) for w in st])
                for f in st[0][layers[0]]}


def pass_counts(passes, spec: int, ti: int, rows) -> tuple[dict, list[int]]:
    """The statistics counts of spec ``spec`` at threshold index ``ti`` for the decode rows ``rows``
    (positions), over the window passes whose spec holds all of them: ({field: (W, layers, heads,
    len(rows))}, indices of those passes)."""
    rows = [int(r) for r in rows]
    out, which = [], []
    for i, wp in enumerate(passes):
        spec_rows = wp.specs[spec].get("rows")
        have = [int(r) for r in (wp.stat_rows if spec_rows is None else spec_rows)]
        if not set(rows) <= set(have):
            continue
        idx = [have.index(r) for r in rows]
        st = wp.stats()[0][spec]
        layers = sorted(st)
        out.append({f: np.stack([st[layer][f][0, ti][..., idx] for layer in layers]) for f in st[layers[0]]})
        which.append(i)
    if not out:
        raise ValueError(f"no window holds the rows {rows[:3]}... for spec {spec}")
    return {f: np.stack([o[f] for o in out]) for f in out[0]}, which
