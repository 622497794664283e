"""Unit tests of attnlib.sprint (SPRINT in-memory pruning + recomputation) and attnlib.hw.reram."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnlib import sprint as sp
from attnlib.attention import attention, attention_torch, causal_mask
from attnlib.hw import KiB, preset
from attnlib.hw import reram as rr


def _qkv(B=2, H=3, T=24, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, T, d, generator=g), torch.randn(B, H, T, d, generator=g),
            torch.randn(B, H, T, d, generator=g))


def _additive(mask_bool):
    return torch.where(torch.as_tensor(mask_bool), 0.0, float("-inf"))


# ----------------------------------------------------------------------------- the property tests
@pytest.mark.parametrize("causal", [False, True])
def test_no_pruning_and_no_noise_equals_exact_attention(causal):
    q, k, v = _qkv()
    T = q.shape[-2]
    mask = _additive(causal_mask(T))[None, None] if causal else None
    cfg = sp.AnalogConfig(sigma_device=0.0, sigma_read=0.0)
    fn = sp.SprintAttention(thresholds=[-math.inf], margins=0.0, cfg=cfg)
    out = fn(q, k, v, mask, 0.25, 0)
    ref = attention(q.numpy().astype(np.float64), k.numpy().astype(np.float64), v.numpy().astype(np.float64),
                    causal=causal, scale=0.25)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_threshold_below_every_score_prunes_nothing_even_with_noise_free_front_end():
    q, k, v = _qkv(seed=1)
    cfg = sp.AnalogConfig(sigma_device=0.0, sigma_read=0.0)
    fn = sp.SprintAttention(thresholds=[-1e9], cfg=cfg)  # a finite threshold under every score
    keep, allowed = fn.keep_mask(q, k, None, 0.25, 0)
    assert keep.all()
    torch.testing.assert_close(fn(q, k, v, None, 0.25, 0), attention_torch(q, k, v, scale=0.25), rtol=1e-5, atol=1e-5)


def test_pruned_keys_and_values_never_influence_the_output():
    q, k, v = _qkv(seed=2)
    k[:, :, 0] = 0.0  # a key whose score is 0 for every query: below the 0.5 threshold everywhere
    cfg = sp.AnalogConfig(sigma_device=0.0, sigma_read=0.0)
    keep, _ = sp.SprintAttention([0.5], cfg=cfg).keep_mask(q, k, None, 0.25, 0)
    assert 0 < keep.float().mean() < 1, "the test needs some pruned and some kept keys"
    out = sp.sprint_attention(q, k, v, keep, None, 0.25)
    # key j pruned for EVERY query of a head: change its value and its key arbitrarily (keep fixed)
    never = ~keep.any(-2)  # (B, H, Tk)
    assert never.any()
    v2, k2 = v.clone(), k.clone()
    v2[never] = 1e6
    k2[never] = -3e3
    torch.testing.assert_close(sp.sprint_attention(q, k2, v2, keep, None, 0.25), out)
    # a key pruned for ONE query only: changing its value leaves that query's output unchanged
    b, h, i, j = [int(x) for x in torch.nonzero(~keep & keep.any(-2, keepdim=True))[0]]
    v3 = v.clone()
    v3[b, h, j] += 100.0
    out3 = sp.sprint_attention(q, k, v3, keep, None, 0.25)
    torch.testing.assert_close(out3[b, h, i], out[b, h, i])
    # ...while a KEPT key's value does change it (the test can fail)
    jk = int(torch.nonzero(keep[b, h, i])[0])
    v4 = v.clone()
    v4[b, h, jk] += 100.0
    assert not torch.allclose(sp.sprint_attention(q, k, v4, keep, None, 0.25)[b, h, i], out[b, h, i])


def test_survivor_softmax_matches_reference_attention_with_pruned_keys_masked():
    q, k, v = _qkv(seed=3)
    keep = torch.rand(q.shape[:-1] + (k.shape[-2],), generator=torch.Generator().manual_seed(0)) > 0.6
    keep[..., 0] = True
    out = sp.sprint_attention(q, k, v, keep, None, 0.3)
    ref = attention(q.numpy(), k.numpy(), v.numpy(), mask=keep.numpy(), scale=0.3)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_causal_mask_is_respected_by_the_keep_mask():
    q, k, v = _qkv(seed=4)
    T = q.shape[-2]
    mask = _additive(causal_mask(T))[None, None]
    fn = sp.SprintAttention([-5.0], cfg=sp.AnalogConfig(sigma_device=0.1, sigma_read=0.05))
    keep, allowed = fn.keep_mask(q, k, mask, 0.25, 0)
    assert not (keep & ~torch.as_tensor(causal_mask(T))).any()
    assert keep.any(-1).all()


def test_every_row_keeps_at_least_one_key():
    q, k, v = _qkv(seed=5)
    fn = sp.SprintAttention([1e9], cfg=sp.AnalogConfig(sigma_device=0.0, sigma_read=0.0))
    keep, _ = fn.keep_mask(q, k, None, 0.25, 0)
    assert (keep.sum(-1) == 1).all()
    # the fallback keeps the best-scoring key, which noise-free and unquantised is the exact argmax
    fn_exact = sp.SprintAttention([1e9], cfg=sp.AnalogConfig(key_bits=None, query_bits=None,
                                                             sigma_device=0.0, sigma_read=0.0))
    keep, _ = fn_exact.keep_mask(q, k, None, 0.25, 0)
    assert torch.equal(keep.float().argmax(-1), (q @ k.transpose(-1, -2)).argmax(-1))


# ----------------------------------------------------------------------------- analog front end
def test_quantisation_error_is_bounded_by_half_a_step():
    x = torch.randn(4, 32, 16)
    for bits in (2, 4, 8):
        xq = sp.quantize_symmetric(x, bits, (-2, -1))
        step = x.abs().amax(dim=(-2, -1), keepdim=True) / (2 ** (bits - 1) - 1)
        assert ((xq - x).abs() <= step / 2 + 1e-6).all()
        assert len(torch.unique(xq[0])) <= 2 ** bits - 1


def test_analog_error_grows_with_noise_and_shrinks_with_precision():
    q, k, _ = _qkv(B=1, H=4, T=64, d=32, seed=6)
    exact = (q @ k.transpose(-1, -2)) * 0.2

    def err(cfg):
        return float((sp.analog_scores(q, k, 0.2, cfg, torch.Generator().manual_seed(0)) - exact).std())

    e4 = err(sp.AnalogConfig(key_bits=4, query_bits=4, sigma_device=0, sigma_read=0))
    e8 = err(sp.AnalogConfig(key_bits=8, query_bits=8, sigma_device=0, sigma_read=0))
    assert e8 < e4 / 4
    assert err(sp.AnalogConfig(key_bits=None, query_bits=None, sigma_device=0, sigma_read=0)) < 1e-5
    noisy = [err(sp.AnalogConfig(sigma_device=s, sigma_read=s / 10)) for s in (0.0, 0.05, 0.2)]
    assert noisy[0] < noisy[1] < noisy[2]


def test_calibrated_threshold_keeps_the_target_mass_on_the_calibration_data():
    q, k, v = _qkv(B=2, H=4, T=48, d=16, seed=7)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * 0.5, -1)
    cap = type("Cap", (), dict(q=q, k=k, v=v, probs=probs, mask=None, scale=0.5))()
    for target in (0.5, 0.9, 0.99):
        thr = sp.calibrate_thresholds([cap], target)[0]
        s = (q @ k.transpose(-1, -2)) * 0.5
        kept_mass = float((probs * (s >= thr)).sum() / probs.sum())
        assert kept_mass >= target - 1e-6
        # the largest such threshold: raising it to the next score drops below the target
        above = s[s > thr].min()
        assert float((probs * (s >= above)).sum() / probs.sum()) < target
    assert sp.calibrate_thresholds([cap], 1.0)[0] <= float(((q @ k.transpose(-1, -2)) * 0.5).min())


def test_record_stats_count_survivors_and_adjacent_overlap():
    q, k, v = _qkv(B=1, H=2, T=16, d=8, seed=8)
    fn = sp.SprintAttention([0.3], cfg=sp.AnalogConfig(sigma_device=0, sigma_read=0), record=True)
    fn(q, k, v, None, 0.5, 0)
    keep, _ = sp.SprintAttention([0.3], cfg=sp.AnalogConfig(sigma_device=0, sigma_read=0)).keep_mask(q, k, None, 0.5, 0)
    st = fn.merged_stats()[0]
    assert np.array_equal(st.kept[0], keep[0].sum(-1).numpy())
    i = 5
    assert st.overlap[0, 1, i] == int((keep[0, 1, i] & keep[0, 1, i - 1]).sum())
    assert st.overlap[0, 0, 0] == 0
    assert np.array_equal(st.union[0], keep[0].any(-2).sum(-1).numpy())
    assert 0 <= st.reuse_fraction <= 1 and 0 <= st.pruning_ratio <= 1


# ----------------------------------------------------------------------------- data movement
def test_fetch_rows_limits():
    kept = np.array([[3, 4, 4, 2]])
    overlap = np.array([[0, 3, 4, 2]])
    assert sp.fetch_rows(kept, overlap, 0, reuse=True)[0] == kept.sum()
    assert sp.fetch_rows(kept, overlap, 1e9, reuse=True)[0] == 3 + 1 + 0 + 0
    assert sp.fetch_rows(kept, overlap, 1e9, reuse=False)[0] == kept.sum()
    assert sp.fetch_rows(kept, overlap, 2, reuse=True)[0] == 3 + (4 - 3 * 2 / 3) + (4 - 4 * 0.5) + (2 - 2 * 0.5)
    # a buffer that holds every key fetches each distinct survivor once; a small one at least once
    assert sp.fetch_rows(kept, overlap, 10, union=np.array([5]), n_keys=6)[0] == 5
    assert sp.fetch_rows(kept, overlap, 1e9, union=np.array([5]), n_keys=1e9)[0] == 5
    assert sp.fetch_rows(kept, overlap, 2, union=np.array([5]), n_keys=6)[0] >= 5


def _full_stats(L, H, T, causal=False):
    allowed = np.tile(np.arange(1, T + 1) if causal else np.full(T, T), (1, H, 1)).astype(np.int32)
    kept = allowed.copy()
    overlap = np.concatenate([np.zeros((1, H, 1), np.int32), kept[..., :-1]], -1)
    return [sp.RowStats(l, kept, overlap, allowed, np.ones((1, H, T), np.float32), np.ones((1, H, T), bool))
            for l in range(L)]


def test_sprint_without_pruning_does_the_baseline_compute_and_no_less_traffic():
    acc = preset("flat-edge").with_buffer(16 * KiB)
    xb = rr.CrossbarSpec().at_node(acc.node_nm)
    for causal in (False, True):
        base = sp.baseline_cost(acc, layers=2, heads=4, seq_len=128, d_head=64, causal=causal)
        spr = sp.sprint_cost(acc, _full_stats(2, 4, 128, causal), heads=4, d_head=64, xbar=xb, causal=causal,
                             reuse=False)
        assert math.isclose(spr.macs, base.macs, rel_tol=1e-9)
        assert spr.traffic_bytes >= base.traffic_bytes
        assert spr.energy["in-memory thresholding"] > 0 and base.energy["in-memory thresholding"] == 0


def test_baseline_traffic_closed_form():
    acc = preset("flat-edge").with_buffer(16 * KiB)
    d, bpe, T = 64, 2, 512
    row = 2 * d * bpe
    bq = sp.baseline_tile(16 * KiB, d, bpe)
    assert bq == (16 * 1024 - 2 * row) // (2 * d * bpe)
    # tile of bq rows, no room left for resident rows: every tile streams all T K/V rows
    c = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, query_tile=bq)
    passes = math.ceil(T / bq)
    assert c.detail["resident_rows"] == 0
    assert c.traffic_bytes == passes * T * row + T * row + 2 * T * d * bpe
    assert c.macs == 2 * T * T * d
    # query at a time: the rest of the buffer keeps K/V rows resident; each query streams the others
    c1 = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, query_tile=1)
    res = (16 * 1024 - 2 * row - 2 * d * bpe) // row
    assert c1.detail["resident_rows"] == res
    assert c1.traffic_bytes == (T + (T - 1) * (T - res)) * row + T * row + 2 * T * d * bpe
    # the default picks the least-traffic tile
    best = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d)
    assert best.traffic_bytes <= min(c.traffic_bytes, c1.traffic_bytes)
    # a bigger buffer never increases traffic
    assert sp.baseline_cost(acc.with_buffer(64 * KiB), layers=1, heads=1, seq_len=T, d_head=d).traffic_bytes <= best.traffic_bytes
    # K/V of a whole head fits: fetched once
    big = sp.baseline_cost(acc.with_buffer(1024 * KiB), layers=1, heads=1, seq_len=T, d_head=d)
    assert big.detail["streamed_rows"] == T


def test_pruning_reduces_sprint_time_energy_and_traffic():
    acc = preset("flat-edge").with_buffer(16 * KiB)
    xb = rr.CrossbarSpec().at_node(acc.node_nm)
    full = _full_stats(2, 4, 128)
    pruned = []
    for st in full:
        kept = np.minimum(st.kept, 8)
        pruned.append(sp.RowStats(st.layer, kept, np.minimum(st.overlap, 6), st.allowed, st.mass, st.valid))
    a = sp.sprint_cost(acc, full, heads=4, d_head=64, xbar=xb)
    b = sp.sprint_cost(acc, pruned, heads=4, d_head=64, xbar=xb)
    assert b.time_s < a.time_s and b.energy_j < a.energy_j and b.traffic_bytes < a.traffic_bytes
    assert b.macs == pytest.approx(a.macs * 8 / 128)
    # reuse helps
    c = sp.sprint_cost(acc, pruned, heads=4, d_head=64, xbar=xb, reuse=False)
    assert c.traffic_bytes > b.traffic_bytes


# ----------------------------------------------------------------------------- ReRAM primitives
def test_reram_constants_derive_from_isaac_table():
    spec = rr.CrossbarSpec()
    assert spec.cell_read_pj == pytest.approx(2.4e-3 / 8 * 100e-9 / 128 ** 2 * 1e12)
    assert spec.adc_pj == pytest.approx(16e-3 / 8 / 1.28e9 * 1e12)
    assert rr.adc_energy_pj(8) == pytest.approx(spec.adc_pj)
    assert spec.comparator_pj == pytest.approx(spec.adc_pj / 128)
    assert rr.adc_energy_pj(4) == pytest.approx(rr.adc_energy_pj(1) * 8)
    for row in rr.constants_rows(spec):
        assert row["source"], row


def test_crossbar_mapping_and_scoring_cost():
    spec = rr.CrossbarSpec()
    assert rr.columns_per_key(4, spec) == 2
    assert rr.arrays_per_head(512, 64, 4, spec) == 8
    assert rr.scoring_cycles(4, spec) == 4
    assert rr.scoring_cycles(4, spec.with_(input_bits_per_cycle=4)) == 1
    c = rr.scoring_cost(512, 512 * 512, 64, key_bits=4, query_bits=4, spec=spec)
    assert c.time_s == pytest.approx(512 * 4 * 100e-9)
    assert c.decision_j == pytest.approx(512 * 512 * spec.comparator_pj * 1e-12)
    adc = rr.scoring_cost(512, 512 * 512, 64, key_bits=4, query_bits=4, spec=spec, readout="adc")
    assert adc.decision_j > 100 * c.decision_j  # a comparator replaces many multi-bit conversions
    assert rr.write_energy_j(512, 64, key_bits=4, spec=spec) == pytest.approx(512 * 64 * 2 * 10e-12)
    with pytest.raises(ValueError):
        rr.CrossbarSpec(rows=0)
    with pytest.raises(ValueError):
        rr.scoring_cost(1, 1, 64, key_bits=4, query_bits=4, spec=spec, readout="bogus")


def test_node_scaling_touches_periphery_not_cells():
    spec = rr.CrossbarSpec()
    s45 = spec.at_node(45)
    assert s45.comparator_pj == pytest.approx(spec.comparator_pj * 45 / 32)
    assert s45.cell_read_pj == spec.cell_read_pj and s45.cell_write_pj == spec.cell_write_pj


def test_config_validation():
    with pytest.raises(ValueError):
        sp.AnalogConfig(key_bits=1)
    with pytest.raises(ValueError):
        sp.AnalogConfig(sigma_read=-1)
    with pytest.raises(ValueError):
        sp.SprintAttention([0.0, 1.0], margins=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        sp.calibrate_thresholds([object()], 0.0)


def test_calibrator_matches_calibrate_thresholds():
    q, k, v = _qkv(B=2, H=3, T=40, d=16, seed=9)
    probs = torch.softmax((q @ k.transpose(-1, -2)) * 0.5, -1)
    cap = type("Cap", (), dict(q=q, k=k, v=v, probs=probs, mask=None, scale=0.5))()
    cal = sp.Calibrator([cap, cap])
    for target in (0.7, 0.95):
        np.testing.assert_allclose(cal.thresholds(target), sp.calibrate_thresholds([cap, cap], target), rtol=1e-6)
    cfg = sp.AnalogConfig()
    fn = cal.attention_fn(0.95, 2.0, cfg)
    np.testing.assert_allclose(fn.margins, 2.0 * cal.error_std(cfg))
    assert (cal.error_std(cfg) > 0).all()
    assert (cal.error_std(sp.AnalogConfig(key_bits=None, query_bits=None, sigma_device=0, sigma_read=0)) < 1e-5).all()


# ----------------------------------------------------------------------------- intervals over measured units
def _varied_stats(L=2, N=2, H=3, T=64, seed=0):
    """Keep counts that differ between (sequence, head) units: unit u keeps about (u + 1) / (N H) of T."""
    rng = np.random.default_rng(seed)
    frac = (np.arange(N * H).reshape(N, H, 1) + 1) / (N * H)
    kept = np.maximum(1, np.round(frac * T * rng.uniform(0.9, 1.0, (N, H, T)))).astype(np.int32)
    overlap = np.concatenate([np.zeros((N, H, 1), np.int32), (0.8 * np.minimum(kept[..., 1:], kept[..., :-1])).astype(np.int32)], -1)
    allowed = np.full((N, H, T), T, np.int32)
    return [sp.RowStats(l, kept, overlap, allowed, np.ones((N, H, T), np.float32), np.ones((N, H, T), bool))
            for l in range(L)]


def test_cost_draws_collapse_on_identical_units_and_bracket_the_point_otherwise():
    acc = preset("flat-edge").with_buffer(16 * KiB)
    xb = rr.CrossbarSpec().at_node(acc.node_nm)
    same = _full_stats(2, 4, 64)            # every unit identical: every resample gives the point
    point = sp.sprint_cost(acc, same, heads=4, d_head=32, xbar=xb)
    t, e = sp.sprint_cost_draws(acc, same, heads=4, d_head=32, xbar=xb, n_resamples=200)
    np.testing.assert_allclose(t, point.time_s, rtol=1e-12)
    np.testing.assert_allclose(e, point.energy_j, rtol=1e-12)
    varied = _varied_stats()
    point = sp.sprint_cost(acc, varied, heads=6, d_head=32, xbar=xb)
    t, e = sp.sprint_cost_draws(acc, varied, heads=6, d_head=32, xbar=xb, n_resamples=2000)
    assert e.std() > 0 and t.min() <= point.time_s <= t.max()
    # energy is linear in the units: the mean over draws is the point (bootstrap mean of a linear statistic)
    assert abs(e.mean() - point.energy_j) < 4 * e.std() / np.sqrt(len(e))
    # same seed and unit count -> identical draws (shapes sharing masks share draws)
    t2, _ = sp.sprint_cost_draws(acc, varied, heads=6, d_head=32, xbar=xb, n_resamples=2000)
    np.testing.assert_array_equal(t, t2)
    with pytest.raises(ValueError, match="n_resamples"):
        sp.sprint_cost_draws(acc, varied, heads=6, d_head=32, xbar=xb, n_resamples=10)


def test_head_mean_cost_equals_per_head_cost_when_heads_match():
    """With as many target heads as measured ones, the mean-over-units cost equals costing each measured
    head once (the energy is the sum of single-head costs)."""
    acc = preset("flat-edge").with_buffer(16 * KiB)
    xb = rr.CrossbarSpec().at_node(acc.node_nm)
    st = _varied_stats(L=1, N=1, H=3)
    whole = sp.sprint_cost(acc, st, heads=3, d_head=32, xbar=xb)
    parts = [sp.sprint_cost(acc, [sp.RowStats(0, *(getattr(st[0], f)[:, [h]] for f in ("kept", "overlap", "allowed", "mass", "valid")))],
                            heads=1, d_head=32, xbar=xb) for h in range(3)]
    assert whole.energy_j == pytest.approx(sum(p.energy_j for p in parts), rel=1e-9)
    assert whole.traffic_bytes == pytest.approx(sum(p.traffic_bytes for p in parts), rel=1e-9)


def test_geomean_of_draws():
    p, iv = sp.geomean_of_draws([2.0, 8.0], np.array([[2.0] * 300, [8.0] * 300]), method="m", n=5)
    assert p == pytest.approx(4.0) and iv.lo == pytest.approx(4.0) and iv.hi == pytest.approx(4.0) and iv.n == 5
    rng = np.random.default_rng(0)
    d = np.exp(rng.normal(0, 0.1, (3, 4000)))
    p, iv = sp.geomean_of_draws([1.0, 1.0, 1.0], d, method="m", n=3)
    # the log of the geometric mean of 3 independent N(0, 0.1) draws has sd 0.1 / sqrt(3)
    assert np.log(iv.hi) == pytest.approx(1.96 * 0.1 / np.sqrt(3), rel=0.1)
    with pytest.raises(ValueError):
        sp.geomean_of_draws([1.0, 2.0], np.ones((3, 100)), method="m", n=1)
    with pytest.raises(ValueError):
        sp.geomean_of_draws([1.0], -np.ones((1, 100)), method="m", n=1)


def test_subset_probe_is_stratified_and_keeps_the_classifier():
    from attnlib.evaluate import Probe

    labels = np.array([0] * 30 + [1] * 10)
    probe = Probe(clf="clf", max_length=8, seed=0, train_texts=[], train_labels=np.array([]),
                  test_texts=[f"t{i}" for i in range(40)], test_labels=labels)
    sub = sp.subset_probe(probe, 10, seed=1)
    assert sub.clf == "clf" and len(sub.test_texts) == 10 and np.bincount(sub.test_labels).tolist() == [5, 5]
    assert all(lab == labels[int(t[1:])] for t, lab in zip(sub.test_texts, sub.test_labels))
    assert sp.subset_probe(probe, 100) is probe


# ----------------------------------------------------------------------------- buffer policies
def test_buffer_policies_on_a_hand_made_sequence():
    from attnlib.sprint.buffer import simulate_fetches

    # keys needed by 4 queries: {0,1}, {2}, {0,1}, {2}; a 2-row buffer
    keep = np.zeros((1, 4, 3), bool)
    keep[0, 0, [0, 1]] = keep[0, 2, [0, 1]] = True
    keep[0, 1, 2] = keep[0, 3, 2] = True
    assert simulate_fetches(keep, 2, "previous")[0] == 2 + 1 + 2 + 1    # nothing but the last query's rows stays
    assert simulate_fetches(keep, 2, "lru")[0] == 2 + 1 + 1 + 1         # key 1 survives query 1 (LRU evicts 0)
    assert simulate_fetches(keep, 2, "belady")[0] == 2 + 1 + 1 + 0      # keeps what is needed next
    assert simulate_fetches(keep, 3, "lru")[0] == simulate_fetches(keep, 3, "belady")[0] == 3  # everything fits
    assert simulate_fetches(keep, 0, "lru")[0] == keep.sum()
    with pytest.raises(ValueError, match="policy"):
        simulate_fetches(keep, 2, "fifo")


@pytest.fixture(scope="module")
def real_masks():
    """Keep masks of SPRINT on all-MiniLM-L6-v2 (real text, calibrated thresholds, analog noise)."""
    from attnlib import data, models

    enc = models.load_encoder()
    text = data.load_text("austen")
    cal = sp.Calibrator(models.capture(enc, sp.token_windows(enc, text, 96, 2, seed=0)), row_stride=2)
    fn = cal.attention_fn(0.95, 1.0, sp.AnalogConfig(), record_masks=True)
    models.logits(enc, sp.token_windows(enc, text, 96, 2, seed=1), attn_fn=fn)
    return fn.merged_stats()


def test_lru_buffer_fetches_lie_between_belady_and_keep_previous_on_real_masks(real_masks):
    from attnlib.sprint.buffer import BufferPolicy

    differs = False
    for st in real_masks[::2]:
        masks = st.keep_masks()
        assert masks.shape[-1] == 96 and np.array_equal(masks.sum(-1), st.kept)
        union = masks.any(-2).sum(-1)
        for cap in (8, 32, 64, 96):
            f = {p: BufferPolicy(p)(st, cap) for p in ("belady", "lru", "previous")}
            assert np.all(union <= f["belady"]) and np.all(f["belady"] <= f["lru"]) and np.all(f["lru"] <= f["previous"])
            assert np.all(f["previous"] <= st.kept.sum(-1))
            if cap >= 96:  # the whole head fits: each distinct survivor fetched once
                assert np.array_equal(f["lru"], union) and np.array_equal(f["belady"], union)
            differs |= bool((f["lru"] < f["previous"]).any())
        assert np.all(BufferPolicy("lru")(st, 64) <= BufferPolicy("lru")(st, 32))  # a bigger buffer never hurts LRU
    assert differs  # residency across queries matters on real masks (the test can fail)


def test_sprint_cost_with_a_buffer_policy(real_masks):
    from attnlib.sprint.buffer import BufferPolicy

    acc = preset("flat-edge").with_buffer(16 * KiB)
    xb = rr.CrossbarSpec().at_node(acc.node_nm)
    c = {p: sp.sprint_cost(acc, real_masks, heads=12, d_head=32, xbar=xb, fetched_of=BufferPolicy(p))
         for p in ("belady", "lru", "previous")}
    assert c["belady"].traffic_bytes <= c["lru"].traffic_bytes <= c["previous"].traffic_bytes
    assert c["lru"].macs == c["previous"].macs


# ----------------------------------------------------------------------------- the paper's hardware setting
def test_sprint_crossbar_uses_the_reported_mac_energy_and_threshold_time():
    x = rr.sprint_crossbar()
    assert x.node_nm == 65 and x.mac_pj == 0.10 and x.cycle_s == pytest.approx(8e-9)
    T, d = 128, 64
    sc = rr.scoring_cost(T, T * T, d, key_bits=4, query_bits=4, spec=x)
    assert sc.cells_j == pytest.approx(T * T * d * 0.10e-12) and sc.dac_j == sc.sh_j == 0.0
    assert sc.decision_j == pytest.approx(T * T * x.comparator_pj * 1e-12)
    assert sc.time_s == pytest.approx(T * 8e-9)                   # one tAxTh per query
    assert rr.sprint_crossbar(threshold_cycles=1).cycle_s == pytest.approx(1e-9)
    with pytest.raises(ValueError):
        rr.sprint_crossbar(threshold_cycles=0)
    with pytest.raises(ValueError):
        rr.CrossbarSpec(mac_pj=-1.0)


def test_sprint_hardware_configurations():
    accs = {c: sp.sprint_hardware(c)[0] for c in "SML"}
    assert [accs[c].buffer.capacity_bytes for c in "SML"] == [16 * KiB, 32 * KiB, 64 * KiB]
    assert [accs[c].compute.pes for c in "SML"] == [sp.MACS_PER_CORELET * n for n in (1, 2, 4)]
    for a in accs.values():
        assert a.node_nm == 65 and a.compute.clock_hz == 1e9
        assert a.dram.read_pj_per_bit == 3.1 and a.dram.write_pj_per_bit == 24.4
    assert sp.CONFIG_SPEEDUPS == {"S": 7.5, "M": 7.4, "L": 7.1}
    with pytest.raises(ValueError, match="configuration"):
        sp.sprint_hardware("XL")


def test_baseline_main_memory_energy_splits_reads_and_writes():
    acc, _ = sp.sprint_hardware("S")
    d, bpe, T = 64, 2, 256
    c = sp.baseline_cost(acc, layers=1, heads=1, seq_len=T, d_head=d, query_tile=1)
    writes = T * 2 * d * bpe + T * d * bpe                       # K/V written once, O written once
    reads = c.traffic_bytes - writes
    assert c.energy["DRAM"] == pytest.approx(8e-12 * (3.1 * reads + 24.4 * writes))


def test_runtime_pruning_baseline_fetches_everything_but_skips_pruned_work():
    acc, _ = sp.sprint_hardware("S")
    kw = dict(layers=2, heads=4, seq_len=256, d_head=64, query_tile=1)
    conv = sp.baseline_cost(acc, **kw)
    pr = sp.baseline_cost(acc, keep_fraction=0.25, **kw)
    assert pr.traffic_bytes == conv.traffic_bytes                # all K/V still fetched
    assert pr.macs == pytest.approx(conv.macs * (1 + 0.25) / 2)  # all q.k, a quarter of p.v
    assert pr.energy_j < conv.energy_j and pr.time_s <= conv.time_s
    assert sp.baseline_cost(acc, keep_fraction=1.0, **kw).macs == conv.macs
    with pytest.raises(ValueError, match="keep_fraction"):
        sp.baseline_cost(acc, keep_fraction=0.0, **kw)


# ----------------------------------------------------------------------------- SPRINT with query tiling
def test_tiled_fetches_bounds_and_monotonicity():
    rng = np.random.default_rng(3)
    keep = rng.random((5, 16, 16)) < 0.3
    per_query = keep.sum((1, 2)).astype(float)
    union = keep.any(1).sum(1).astype(float)
    np.testing.assert_array_equal(sp.tiled_fetches(keep, 1), per_query)        # tile 1: every survivor of every query
    np.testing.assert_array_equal(sp.tiled_fetches(keep, 16), union)           # one tile: each distinct key once
    np.testing.assert_array_equal(sp.tiled_fetches(keep, 64), union)
    f = [sp.tiled_fetches(keep, b) for b in (1, 2, 4, 8, 16)]
    assert all(np.all(a >= b) for a, b in zip(f, f[1:]))                       # merging tiles never fetches more
    # by hand: tile of 3 over 4 queries of one unit
    k = np.zeros((1, 4, 3), dtype=bool)
    k[0, 0, 0] = k[0, 1, 0] = k[0, 2, 1] = k[0, 3, 0] = k[0, 3, 2] = True
    assert sp.tiled_fetches(k, 3)[0] == 2 + 2
    with pytest.raises(ValueError, match="tile"):
        sp.tiled_fetches(keep, 0)


def test_query_tiled_fetch_picks_the_largest_power_of_two_that_fits():
    q = sp.QueryTiledFetch()
    assert q.tile_for(100) == 64 and q.tile_for(1) == 1 and q.tile_for(0) == 1
    with pytest.raises(ValueError, match="does not fit"):
        sp.QueryTiledFetch(8).tile_for(4)
