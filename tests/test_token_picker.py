"""Token-Picker: the bound is an upper bound, pruned tokens are provably below the threshold (on random,
adversarial and real captured tensors), the readable and vectorised versions agree, and the traffic
and hardware models obey their closed forms."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from attnlib import token_picker as tp
from attnlib.attention import attention


def _rand(B=1, H=3, T=40, d=16, seed=0, q_scale=2.0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(B, H, T, d)) * q_scale
    k = rng.normal(size=(B, H, T, d))
    k[..., 0, :] *= 3  # a sink-like first token
    v = rng.normal(size=(B, H, T, d))
    return q, k, v


def _assert_guarantee(q, k, kept, cfg, *, scale=None, causal=True):
    """Every pruned allowed token's exact probability (quantised keys, reference attention) < threshold."""
    p = tp.quantised_probs(q, k, cfg, scale=scale, causal=causal)
    Tq, Tk = p.shape[-2:]
    allowed = np.broadcast_to(np.arange(Tk)[None, :] <= np.arange(Tq)[:, None] + (Tk - Tq), p.shape) if causal \
        else np.ones(p.shape, bool)
    pruned = allowed & ~np.asarray(kept)
    if pruned.any():
        assert p[pruned].max() < cfg.threshold, (p[pruned].max(), cfg.threshold)
    return int(pruned.sum())


# ----------------------------------------------------------------------------- configuration
def test_config_validation_and_chunks():
    assert tp.PickerConfig(k_bits=12, chunk_bits=4).chunk_widths == (4, 4, 4)
    assert tp.PickerConfig(k_bits=10, chunk_bits=4).chunk_widths == (4, 4, 2)
    assert tp.PickerConfig(k_bits=10, chunk_bits=4).missing_bits == (6, 2, 0)
    for bad in (dict(threshold=1.0), dict(threshold=-0.1), dict(chunk_bits=13), dict(order="random"),
                dict(k_bits=1), dict(n_sink=-1)):
        with pytest.raises(ValueError):
            tp.PickerConfig(**bad)


def test_processing_order():
    cfg = tp.PickerConfig(n_sink=2)
    assert tp.processing_order(6, cfg).tolist() == [0, 1, 5, 4, 3, 2]
    assert tp.processing_order(1, cfg).tolist() == [0]
    assert tp.processing_order(4, tp.PickerConfig(order="recent")).tolist() == [3, 2, 1, 0]
    assert tp.processing_order(4, tp.PickerConfig(order="chronological")).tolist() == [0, 1, 2, 3]


def test_quantize_roundtrip_error_and_range():
    x = np.random.default_rng(1).normal(size=(50, 16))
    ints, step = tp.quantize(x, 8)
    assert np.abs(ints).max() <= 127 and np.all(ints == np.round(ints))
    assert np.abs(ints * step - x).max() <= step.max() / 2 + 1e-12
    zi, zs = tp.quantize(np.zeros((2, 4)), 8)
    assert np.all(zi == 0) and np.all(zs == 1)


# ----------------------------------------------------------------------------- the bound
@pytest.mark.parametrize("k_bits,chunk", [(12, 4), (10, 4), (8, 3), (12, 1)])
def test_chunk_bounds_are_upper_bounds_and_tighten(k_bits, chunk):
    cfg = tp.PickerConfig(k_bits=k_bits, chunk_bits=chunk)
    q, k, _ = _rand(T=30, seed=k_bits + chunk)
    k_int, k_step = tp.quantize(torch.as_tensor(k), cfg.k_bits)
    uppers, exact = tp.chunk_upper_scores(torch.as_tensor(q), k_int, k_step, 0.25, cfg)
    assert len(uppers) == cfg.n_chunks - 1
    tol = 1e-12 * (1 + exact.abs())
    prev = None
    for u in uppers:
        assert bool((u >= exact - tol).all())
        if prev is not None:
            assert bool((u <= prev + tol).all())  # more bits never loosen the bound
        prev = u
    ref = 0.25 * torch.as_tensor(q) @ (k_int * k_step).transpose(-1, -2)
    assert torch.allclose(exact, ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- reference == vectorised
@pytest.mark.parametrize("cfg", [
    tp.PickerConfig(threshold=1e-3),
    tp.PickerConfig(threshold=1e-2, k_bits=10, chunk_bits=4, v_bits=8),
    tp.PickerConfig(threshold=3e-2, chunk_bits=6, order="chronological"),
    tp.PickerConfig(threshold=5e-3, chunk_bits=2, order="recent", n_sink=0),
])
def test_reference_and_vectorised_agree(cfg):
    q, k, v = _rand(H=3, T=48, seed=3)
    res = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3, return_masks=True)
    for h in range(3):
        for i in (0, 1, 7, 30, 47):
            ref = tp.pick_reference(q[0, h, i], k[0, h, :i + 1], v[0, h, :i + 1], cfg)
            np.testing.assert_array_equal(ref.kept, res.kept[0, h, i, :i + 1].numpy())
            np.testing.assert_array_equal(ref.chunks, res.chunks[0, h, i, :i + 1].numpy())
            np.testing.assert_allclose(ref.out, res.out[0, h, i].numpy(), rtol=1e-10, atol=1e-12)
    # the per-row counts are the sums of the masks
    assert torch.equal(res.n_kept, res.kept.sum(-1).double())
    assert torch.equal(res.key_chunks, res.chunks.sum(-1).double())


def test_multi_threshold_pass_equals_single_runs():
    q, k, v = _rand(H=3, T=32, seed=5)
    cfg = tp.PickerConfig()
    multi = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3, thresholds=[1e-3, 1e-2])
    for t, r in zip([1e-3, 1e-2], multi):
        one = tp.token_pick(q, k, v, tp.PickerConfig(threshold=t), causal=True, kv_groups=3)
        for f in ("n_kept", "key_chunks", "n_full", "kv_key_chunks", "kv_n_values", "out"):
            assert torch.allclose(getattr(r, f), getattr(one, f), rtol=1e-12, atol=1e-12), f


# ----------------------------------------------------------------------------- the guarantee
@pytest.mark.parametrize("thr", [1e-4, 1e-3, 1e-2, 0.1])
@pytest.mark.parametrize("tile", [1, 4])
def test_pruned_tokens_are_below_threshold_random(thr, tile):
    q, k, v = _rand(H=3, T=64, seed=int(thr * 1e4) + tile)
    cfg = tp.PickerConfig(threshold=thr)
    res = tp.token_pick(q, k, v, cfg, causal=True, tile=tile, return_masks=True)
    n = _assert_guarantee(q, k, res.kept.numpy(), cfg)
    assert n > 0  # the test must exercise pruning
    # dropped exact mass equals the pruned tokens' probabilities, and is below n_pruned * threshold
    p = tp.quantised_probs(q, k, cfg, causal=True)
    allowed = np.tril(np.ones((64, 64), bool))
    mass = np.where(allowed & ~res.kept.numpy(), p, 0).sum(-1)
    np.testing.assert_allclose(res.pruned_mass.numpy(), mass, atol=1e-10)
    n_pruned = (allowed & ~res.kept.numpy()).sum(-1)
    assert np.all(mass <= n_pruned * thr + 1e-12)


def test_threshold_zero_is_dense_quantised_attention():
    q, k, v = _rand(H=2, T=24, seed=9)
    cfg = tp.PickerConfig(threshold=0.0, v_bits=8)
    res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
    assert bool(res.kept[:, :, torch.tril(torch.ones(24, 24, dtype=torch.bool))].all())
    ki, ks = tp.quantize(k, cfg.k_bits)
    vi, vs = tp.quantize(v, cfg.v_bits)
    ref = attention(q, ki * ks, vi * vs, causal=True)
    np.testing.assert_allclose(res.out.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert float(res.pruned_mass.max()) == 0.0


def test_adversarial_ties_and_all_equal_scores():
    # all-equal scores (zero query): after n kept tokens the bound of the next is 1/(n+1)
    T, d = 40, 8
    q = np.zeros((1, 1, 1, d))
    k = np.random.default_rng(2).normal(size=(1, 1, T, d))
    v = np.random.default_rng(3).normal(size=(1, 1, T, d))
    cfg = tp.PickerConfig(threshold=0.1)
    res = tp.token_pick(q, k, v, cfg, return_masks=True)
    # keeps tokens while 1/(n+1) >= 0.1 (exact tie at n = 9 is kept: never prune on a tie), i.e. 10 tokens
    assert int(res.n_kept.sum()) == 10
    _assert_guarantee(q, k, res.kept.numpy(), cfg, causal=False)
    ref = tp.pick_reference(q[0, 0, 0], k[0, 0], v[0, 0], cfg)
    np.testing.assert_array_equal(ref.kept, res.kept[0, 0, 0].numpy())
    # identical keys (exact ties in score): same behaviour
    k_same = np.repeat(k[:, :, :1], T, axis=2)
    q1 = np.random.default_rng(4).normal(size=(1, 1, 1, d))
    res2 = tp.token_pick(q1, k_same, v, cfg, return_masks=True)
    assert int(res2.n_kept.sum()) == 10
    _assert_guarantee(q1, k_same, res2.kept.numpy(), cfg, causal=False)


def test_adversarial_huge_scores():
    q, k, v = _rand(H=2, T=32, seed=11)
    q, k = q * 1e3, k * 1e3  # scores ~1e6: softmax is one-hot
    cfg = tp.PickerConfig(threshold=1e-3)
    res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
    _assert_guarantee(q, k, res.kept.numpy(), cfg)
    assert float(res.pruning_ratio) > 3
    assert np.all(np.isfinite(res.out.numpy()))


def test_single_token_and_empty_cache():
    cfg = tp.PickerConfig(threshold=0.5)
    q = np.ones((1, 1, 1, 4)); k = np.ones((1, 1, 1, 4)); v = np.arange(4.0).reshape(1, 1, 1, 4)
    res = tp.token_pick(q, k, v, cfg, return_masks=True)
    assert bool(res.kept.all())  # a single token has probability 1: never pruned
    np.testing.assert_allclose(res.out.numpy()[0, 0, 0], tp.dequantize(*tp.quantize(v[0, 0], cfg.v_bits))[0], atol=1e-12)
    with pytest.raises(ValueError, match="empty KV cache"):
        tp.token_pick(q, np.zeros((1, 1, 0, 4)), np.zeros((1, 1, 0, 4)), cfg)
    with pytest.raises(ValueError, match="empty KV cache"):
        tp.pick_reference(q[0, 0, 0], np.zeros((0, 4)), np.zeros((0, 4)), cfg)
    with pytest.raises(ValueError, match="NaN or inf"):
        tp.token_pick(q * np.nan, k, v, cfg)


def test_additive_mask_and_padding():
    q, k, v = _rand(H=2, T=20, seed=13)
    cfg = tp.PickerConfig(threshold=1e-2)
    mask = np.where(np.tril(np.ones((20, 20), bool)), 0.0, np.finfo(np.float32).min)[None, None]
    a = tp.token_pick(q, k, v, cfg, mask=torch.as_tensor(mask))
    b = tp.token_pick(q, k, v, cfg, causal=True)
    assert torch.allclose(a.out, b.out) and torch.equal(a.n_kept, b.n_kept)
    # a non-prefix mask (a hole in the middle) goes through the general ordering path
    hole = np.tril(np.ones((20, 20), bool)); hole[:, 5:8] = False; hole[np.arange(20), np.arange(20)] = True
    r = tp.token_pick(q, k, v, cfg, mask=torch.as_tensor(hole), return_masks=True)
    assert not bool(r.kept[:, :, torch.as_tensor(~hole)].any())
    p = tp.quantised_probs(q, k, cfg, mask=hole)
    pruned = hole & ~r.kept.numpy()
    assert p[pruned].max() < cfg.threshold


def test_gqa_union_counts():
    q, k, v = _rand(H=6, T=30, seed=17)
    k = np.repeat(k[:, ::3], 3, axis=1); v = np.repeat(v[:, ::3], 3, axis=1)  # 2 KV heads x 3 query heads
    res = tp.token_pick(q, k, v, tp.PickerConfig(threshold=1e-2), causal=True, kv_groups=3, return_masks=True)
    kept = res.kept.numpy().reshape(1, 2, 3, 30, 30)
    chunks = res.chunks.numpy().reshape(1, 2, 3, 30, 30)
    np.testing.assert_array_equal(res.kv_n_values.numpy(), kept.any(2).sum(-1))
    np.testing.assert_array_equal(res.kv_key_chunks.numpy(), chunks.max(2).sum(-1))
    assert np.all(res.kv_n_values.numpy() >= res.n_kept.numpy().reshape(1, 2, 3, 30).max(2))


# ----------------------------------------------------------------------------- traffic and hardware
def test_traffic_threshold_zero_equals_dense_and_bounds():
    q, k, v = _rand(H=3, T=40, d=64, seed=19)
    cfg = tp.PickerConfig(threshold=0.0)
    res = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3)
    counts = {f: getattr(res, f).numpy() for f in tp.StatsCollector.FIELDS}
    t = tp.traffic_bytes(counts, cfg, 64, granularity=32)
    np.testing.assert_allclose(t["total"], t["dense_total"])  # nothing pruned: 3 x 32 B chunks == 96 B key
    ctx = counts["n_context"][0, ::3]
    np.testing.assert_allclose(t["dense_total"][0], ctx * (96 + 96 + 4))
    cfg2 = tp.PickerConfig(threshold=1e-2)
    res2 = tp.token_pick(q, k, v, cfg2, causal=True, kv_groups=3)
    t2 = tp.traffic_bytes({f: getattr(res2, f).numpy() for f in tp.StatsCollector.FIELDS}, cfg2, 64)
    assert np.all(t2["total"] <= t2["dense_total"])
    assert np.all(t2["total"] >= t2["chunk1"])  # the first chunk of every token is always fetched
    assert tp.fetch_bytes(12, 64, 32) == 96 and tp.fetch_bytes(4, 64, 64) == 64 and tp.fetch_bytes(12, 10, 1) == 15


def test_hardware_model_closed_form():
    acc = tp.topick_accelerator()
    cfg = tp.PickerConfig(threshold=0.0)
    T, H, Hkv = 1000, 9, 3
    counts = dict(n_context=np.full((H, 1), T, float), n_kept=np.full((H, 1), T, float),
                  key_chunks=np.full((H, 1), 3 * T, float), n_full=np.full((H, 1), T, float),
                  pruned_mass=np.zeros((H, 1)), kv_key_chunks=np.full((Hkv, 1), 3 * T, float),
                  kv_n_full=np.full((Hkv, 1), T, float), kv_n_values=np.full((Hkv, 1), T, float))
    te = tp.attention_time_energy(counts, cfg, 64, acc)
    dense_bytes = Hkv * T * (96 + 96 + 4)
    assert te["dense"]["bytes"][0] == pytest.approx(dense_bytes)
    assert te["dense"]["t_dram"][0] == pytest.approx(dense_bytes / 256e9)
    assert te["dense"]["t_mac"][0] == pytest.approx(H * T * 2 * 64 / (1024 * 1e9))
    assert te["dense"]["time_s"][0] == pytest.approx(max(te["dense"]["t_dram"][0], te["dense"]["t_mac"][0], te["dense"]["t_vec"][0]))
    assert te["dense"]["energy"]["dram"][0] == pytest.approx(dense_bytes * 8 * 3.9e-12)
    # nothing pruned: Token-Picker moves the same bytes but does extra estimation work -> never faster
    assert te["topick"]["bytes"][0] == pytest.approx(dense_bytes)
    assert te["topick"]["time_s"][0] >= te["dense"]["time_s"][0] * (1 - 1e-12)
    assert te["topick"]["energy_j"][0] > te["dense"]["energy_j"][0]
    with pytest.raises(KeyError):
        tp.topick_accelerator(dram_kind="sram_9000")


def test_make_attn_fn_prefill_rows_are_exact():
    q, k, v = (torch.as_tensor(a, dtype=torch.float32) for a in _rand(H=3, T=24, seed=23))
    mask = torch.where(torch.tril(torch.ones(24, 24, dtype=torch.bool)), 0.0, torch.finfo(torch.float32).min)[None, None]
    col = tp.StatsCollector()
    fn = tp.make_attn_fn(tp.PickerConfig(threshold=0.05), kv_groups=3, decode_from=16, collector=col)
    out = fn(q, k, v, mask, 0.25, layer=0)
    ref = attention(q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=True, scale=0.25)
    np.testing.assert_allclose(out[..., :16, :].numpy(), ref[..., :16, :], rtol=1e-5, atol=1e-6)
    arrays = col.arrays()[0]
    assert arrays["n_context"].shape == (1, 1, 1, 3, 8)  # calls, thresholds, B, H, decode rows
    np.testing.assert_array_equal(arrays["n_context"][0, 0, 0, 0], np.arange(17, 25))


# ----------------------------------------------------------------------------- real captured tensors
@pytest.mark.models
def test_guarantee_on_real_captured_tensors():
    from attnlib import data, evaluate, models

    try:
        rm = models.load_decoder("smollm2")
    except models.ModelFilesMissing as err:
        pytest.skip(str(err))
    win = evaluate.text_windows(rm, data.load_text("brown"), 64, 1, seed=3)
    caps = models.capture(rm, {"input_ids": torch.tensor(win)}, layers=[0, 14, 29])
    G = rm.n_heads // rm.n_kv_heads
    for cap in caps:
        for thr in (1e-3, 1e-2):
            cfg = tp.PickerConfig(threshold=thr)
            res = tp.token_pick(cap.q, cap.k, cap.v, cfg, mask=cap.mask, scale=cap.scale, kv_groups=G,
                                return_masks=True)
            n = _assert_guarantee(cap.q.double().numpy(), cap.k.double().numpy(), res.kept.numpy(), cfg,
                                  scale=cap.scale)
            assert n > 0
            h, i = 4, 63
            ref = tp.pick_reference(cap.q[0, h, i], cap.k[0, h], cap.v[0, h], cfg, scale=cap.scale)
            np.testing.assert_array_equal(ref.kept, res.kept[0, h, i].numpy())
        # with a tiny threshold the output is close to the model's own attention (quantisation only)
        res = tp.token_pick(cap.q, cap.k, cap.v, tp.PickerConfig(threshold=1e-6), mask=cap.mask, scale=cap.scale)
        exact = (cap.probs.double() @ cap.v.double()).numpy()
        assert np.abs(res.out.numpy() - exact).max() < 0.05 * max(1.0, np.abs(exact).max())
