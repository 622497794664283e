"""Token-Picker at matched quality and over contexts: the bisection rule, the paired t-interval, the
decode model's limits and the claims module (issue 25)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attnlib import token_picker as tp
from attnlib.claims import Recorder
from attnlib.token_picker import paper_claims as pc


# ----------------------------------------------------------------------------- bisection
def _step_measure(crossing: float, calls: list):
    """A measure that grows with t and crosses 1.0 at ``crossing``."""
    def m(t):
        calls.append(t)
        return math.log(t / crossing) + 1.0
    return m


@pytest.mark.parametrize("crossing", [1.3e-4, 3.7e-4, 9.1e-4])
def test_bisection_brackets_the_crossing_to_its_resolution(crossing):
    calls = []
    b = tp.bisect_threshold(_step_measure(crossing, calls), 1e-4, 1e-3, limit=1.0, steps=4)
    assert b.threshold <= crossing * (1 + 1e-9) and b.failing > crossing
    # 4 halvings of a decade leave (10) ** (1/16) up to the 3-digit rounding of the midpoints
    assert b.resolution <= 10 ** (1 / 16) * 1.01
    assert all(p == (v <= 1.0) for _, v, p in b.evaluated)
    assert len(set(calls)) == len(calls)  # no threshold measured twice


def test_bisection_finds_more_than_a_coarse_grid():
    """The rule a coarse grid (1e-4, 2e-4, 5e-4, 1e-3) would apply misses an off-grid crossing."""
    crossing = 4.4e-4
    grid = max(t for t in (1e-4, 2e-4, 5e-4, 1e-3) if math.log(t / crossing) + 1 <= 1)
    b = tp.bisect_threshold(_step_measure(crossing, []), 1e-4, 1e-3, steps=5)
    assert grid < b.threshold <= crossing


def test_bisection_expands_the_bracket_and_reuses_known_values():
    calls = []
    b = tp.bisect_threshold(_step_measure(2e-5, calls), 1e-4, 1e-3, steps=2)
    assert b.threshold <= 2e-5 < b.failing  # moved down
    calls2 = []
    b2 = tp.bisect_threshold(_step_measure(5e-3, calls2), 1e-4, 1e-3, steps=2)
    assert b2.threshold <= 5e-3 < b2.failing  # moved up
    known = {t: v for t, v, _ in b2.evaluated}
    calls3 = []
    b3 = tp.bisect_threshold(_step_measure(5e-3, calls3), 1e-4, 1e-3, steps=2, known=known)
    assert calls3 == [] and b3.threshold == b2.threshold


def test_bisection_reports_when_nothing_passes():
    b = tp.bisect_threshold(lambda t: 5.0, 1e-4, 1e-3, steps=2, max_expand=2)
    assert b.threshold is None and b.failing is not None


def test_interval_rule_is_stricter_than_the_point_rule():
    """The interval rule compares the upper end, so its threshold is never above the point rule's."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.002, 8)

    def change(t):
        ref = np.full(8, 100.0)
        new = ref + 64 * (t / 1e-3) * 0.01 + 64 * noise  # 64 tokens per window, change grows with t
        return tp.perplexity_change(ref, new, np.full(8, 64))

    bi = tp.bisect_threshold(lambda t: tp.RULES["interval"](change(t)), 1e-4, 1e-2, steps=5)
    bp = tp.bisect_threshold(lambda t: tp.RULES["point"](change(t)), 1e-4, 1e-2, steps=5, rule="point")
    assert bi.threshold <= bp.threshold
    assert change(bi.threshold).hi <= 1.0 and change(bp.threshold).value <= 1.0


def test_bisection_rejects_bad_brackets():
    for lo, hi in ((0, 1e-3), (1e-3, 1e-4), (1e-4, math.inf)):
        with pytest.raises(ValueError):
            tp.bisect_threshold(lambda t: 0.0, lo, hi)
    with pytest.raises(ValueError):
        tp.bisect_threshold(lambda t: 0.0, 1e-4, 1e-3, steps=-1)


# ----------------------------------------------------------------------------- paired t-interval
def test_perplexity_change_t_interval():
    ref = np.array([300.0, 310.0, 290.0, 305.0])
    d = np.array([0.5, 1.5, 1.0, 0.8])
    c = tp.perplexity_change(ref, ref + d, np.full(4, 100))
    assert c.value == pytest.approx(100 * math.expm1(d.sum() / 400))
    half = tp.t_quantile(0.975, 3) * (d / 100).std(ddof=1) / 2
    assert c.lo == pytest.approx(100 * math.expm1((d / 100).mean() - half))
    assert c.hi == pytest.approx(100 * math.expm1((d / 100).mean() + half))
    assert tp.t_quantile(0.975, 3) == pytest.approx(3.182, abs=1e-3)  # wider than the normal 1.96
    iv = c.interval()
    assert iv.n == 4 and "t-interval" in iv.method
    same = tp.perplexity_change(ref, ref, np.full(4, 100))
    assert same.value == 0 and same.lo == same.hi == 0


def test_perplexity_change_rejects_bad_input():
    with pytest.raises(ValueError):
        tp.perplexity_change([1.0], [1.0], [1])  # one window: no interval
    with pytest.raises(ValueError):
        tp.perplexity_change([1.0, 2.0], [1.0, np.nan], [1, 1])
    with pytest.raises(ValueError):
        tp.perplexity_change([1.0, 2.0], [1.0, 2.0], [1, 0])


# ----------------------------------------------------------------------------- decode model
def _counts(seed=0, W=2, L=3, H=9, R=4, n=2048, keep=0.08):
    rng = np.random.default_rng(seed)
    ctx = np.full((W, L, H, R), float(n))
    kept = np.round(ctx * rng.uniform(keep / 2, keep * 2, ctx.shape))
    chunks = ctx + kept * 2 + np.round(ctx * 0.1)  # survivors of chunk 1 read more chunks
    kvh = H // 3
    kv_chunks = chunks.reshape(W, L, kvh, 3, R).max(3)
    kv_vals = kept.reshape(W, L, kvh, 3, R).max(3)
    return dict(n_context=ctx, n_kept=kept, key_chunks=chunks, kv_key_chunks=kv_chunks, kv_n_values=kv_vals,
                kv_n_full=kv_vals)


@pytest.mark.parametrize("shared_kv", [False, True])
def test_decode_model_without_overhead_is_the_traffic_ratio(shared_kv):
    cfg = tp.PickerConfig(threshold=1e-3, k_bits=12, chunk_bits=4, v_bits=12)
    cnt = _counts()
    m = tp.decode_model(cnt, cfg, 64, tp.NO_OVERHEAD, shared_kv=shared_kv)
    t = tp.traffic_bytes(cnt, cfg, 64, shared_kv=shared_kv, granularity=1)
    traffic = t["dense_total"].sum() / t["total"].sum()
    assert m["dense"]["time_s"].sum() / m["topick"]["time_s"].sum() == pytest.approx(traffic, rel=1e-12)
    assert m["dense"]["energy_j"].sum() / m["topick"]["energy_j"].sum() == pytest.approx(traffic, rel=1e-12)
    assert m["dense"]["bytes"].sum() == pytest.approx(t["dense_total"].sum())


def test_decode_model_each_overhead_lowers_the_speedup_or_energy_gain():
    cfg = tp.PickerConfig(threshold=1e-3, k_bits=12, chunk_bits=4, v_bits=12)
    cnt = _counts()
    ratio = lambda ov, key: (lambda m: m["dense"][key].sum() / m["topick"][key].sum())(tp.decode_model(cnt, cfg, 64, ov))  # noqa: E731
    base = tp.DEFAULT_OVERHEADS.with_(**tp.OVERHEAD_SWEEPS["no overhead (traffic only)"])
    s0 = ratio(base, "time_s")
    assert ratio(base.with_(t_rrd_ns=8.0), "time_s") <= s0  # activation limit of scattered reads
    assert ratio(base.with_(burst_B=64), "time_s") <= s0 * (1 + 1e-12)
    assert ratio(base.with_(addr_lanes=1), "time_s") < s0  # one address lane: gather-bound
    assert ratio(base.with_(pes=16), "time_s") < s0  # compute-bound
    e0 = ratio(base, "energy_j")
    assert ratio(base.with_(act_nj=1.0), "energy_j") < e0
    assert ratio(base.with_(index_B=8), "energy_j") < e0
    # static energy pulls the energy ratio towards the speedup
    sp = ratio(base, "time_s")
    e_static = ratio(base.with_(static_w=1e3), "energy_j")
    assert abs(e_static - sp) < abs(e0 - sp)


def test_rows_touched_limits():
    from attnlib.token_picker.decode import _rows_touched

    assert _rows_touched(0, 1024, 32, 1024) == 0
    assert _rows_touched(1024, 1024, 32, 1024) == pytest.approx(32)  # every row, each once
    assert _rows_touched(1, 1024, 32, 1024) == pytest.approx(1)
    few = _rows_touched(8, 1024, 32, 1024)
    assert 1 <= few <= 8


def test_overheads_reject_bad_values():
    with pytest.raises(ValueError):
        tp.Overheads(burst_B=0)
    with pytest.raises(ValueError):
        tp.Overheads(static_w=-1)
    with pytest.raises(ValueError):
        tp.DEFAULT_OVERHEADS.with_(nonsense=1)


# ----------------------------------------------------------------------------- claims module
def test_every_headline_declares_direction_axes_and_a_paper_setting():
    for cid in pc.HEADLINES:
        p = pc.PAPER[cid]
        assert p["direction"] in ("about", "at least", "at most", "within") and p["source"].startswith("paper")
        axes = pc.axes_for(cid)
        assert axes and axes[0].name == "context length" and axes[0].paper == "unknown"
        head = pc.headline_scenario(cid)
        for a in axes:
            assert head[a.name] in a.plausible  # the headline is at the paper's option
        assert head["context length"] == "2K"
    assert pc.headline_scenario("speedup")["head accounting"] == "MHA-equivalent"


def test_claim_kwargs_record_and_context_decides():
    from attnlib.stats import Interval

    rec = Recorder("04_token_picker", "Token-Picker", profile="full")
    ratios = {1024: 5.7, 2048: 10.6, 4096: 21.0, 8192: 40.0}
    scen = [(pc.scenario_key("pruning_ratio", c, corp), v * f) for c, v in ratios.items()
            for corp, f in zip(pc.CORPUS_OPTIONS, (1.0, 0.9, 1.1))]
    kw = pc.claim_kwargs("pruning_ratio", reproduced=10.6, interval=Interval(10.2, 11.0, "bootstrap", 8),
                         assumption_range=dict(lo=9.0, hi=12.0, swept={"quality_rule_pct": [1.0, 0.5, 2.0]}),
                         scenarios=scen, deviations=[], operating_point=dict(how="matched quality", rule="bisection"),
                         averaging="ratio of sums", variation=pc.variation(8), params={}, note="test")
    c = rec.claim(kw.pop("claim_id"), **kw)
    assert c.status == "inconclusive" and "context length" in c.decided_by
    assert c.robustness == "scenario-dependent"


def test_context_labels():
    assert [pc.context_label(c) for c in pc.CONTEXTS] == ["1K", "2K", "4K", "8K"]
    assert pc.context_label(256) == "256"
    with pytest.raises(ValueError):
        pc.context_label(0)
    with pytest.raises(ValueError):
        pc.headline_scenario("pruning_ratio", contexts=(1024,), headline_context=2048)
