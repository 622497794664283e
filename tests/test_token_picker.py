"""Token-Picker: the bound is an upper bound, pruned tokens are provably below the threshold (on random,
adversarial and real captured tensors), the readable and vectorised versions agree, and the traffic
and hardware models obey their closed forms."""
from __future__ import annotations

import math

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
    tp.PickerConfig(threshold=1e-3, estimator="sequential"),
    tp.PickerConfig(threshold=1e-2, k_bits=10, chunk_bits=4, v_bits=8, estimator="sequential"),
    tp.PickerConfig(threshold=3e-2, chunk_bits=6, order="chronological", estimator="sequential"),
    tp.PickerConfig(threshold=5e-3, chunk_bits=2, order="recent", n_sink=0, estimator="sequential"),
    tp.PickerConfig(threshold=1e-3),
    tp.PickerConfig(threshold=1e-2, k_bits=10, chunk_bits=4, v_bits=8),
    tp.PickerConfig(threshold=3e-2, chunk_bits=6),
    tp.PickerConfig(threshold=5e-3, chunk_bits=2),
    tp.PickerConfig(threshold=0.2, chunk_bits=3),  # above 1/n for long rows: the keep-one fallback
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


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_multi_threshold_pass_equals_single_runs(estimator):
    q, k, v = _rand(H=3, T=32, seed=5)
    cfg = tp.PickerConfig(estimator=estimator)
    multi = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3, thresholds=[1e-3, 1e-2])
    for t, r in zip([1e-3, 1e-2], multi):
        one = tp.token_pick(q, k, v, tp.PickerConfig(threshold=t, estimator=estimator), causal=True, kv_groups=3)
        for f in ("n_kept", "key_chunks", "n_full", "n_oracle", "kv_key_chunks", "kv_n_values", "out"):
            assert torch.allclose(getattr(r, f), getattr(one, f), rtol=1e-12, atol=1e-12), f


# ----------------------------------------------------------------------------- the guarantee
@pytest.mark.parametrize("thr", [1e-4, 1e-3, 1e-2, 0.1])
@pytest.mark.parametrize("variant", ["paper", ("sequential", 1), ("sequential", 4)])
def test_pruned_tokens_are_below_threshold_random(thr, variant):
    estimator, tile = (variant, 1) if variant == "paper" else variant
    q, k, v = _rand(H=3, T=64, seed=int(thr * 1e4) + tile)
    cfg = tp.PickerConfig(threshold=thr, estimator=estimator)
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
    # the oracle: tokens at or above the threshold, all of them kept (the guarantee's contrapositive)
    oracle = (allowed & (p >= thr)).sum(-1)
    np.testing.assert_array_equal(res.n_oracle.numpy(), oracle)
    assert np.all(res.n_kept.numpy() >= oracle)


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_threshold_zero_is_dense_quantised_attention(estimator):
    q, k, v = _rand(H=2, T=24, seed=9)
    cfg = tp.PickerConfig(threshold=0.0, v_bits=8, estimator=estimator)
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
    cfg = tp.PickerConfig(threshold=0.1, estimator="sequential")
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
    # the paper's estimator: every bound is exactly 1/40 < 0.1, so all are pruned and the fallback keeps
    # one token (the output stays defined); with a threshold of exactly 1/40 nothing is pruned (tie)
    paper = tp.PickerConfig(threshold=0.1)
    res3 = tp.token_pick(q, k, v, paper, return_masks=True)
    assert int(res3.n_kept.sum()) == 1 and int(res3.n_oracle.sum()) == 0
    np.testing.assert_array_equal(tp.pick_reference(q[0, 0, 0], k[0, 0], v[0, 0], paper).kept, res3.kept[0, 0, 0].numpy())
    res4 = tp.token_pick(q, k, v, tp.PickerConfig(threshold=1 / T, margin=1e-9), return_masks=True)
    assert int(res4.n_kept.sum()) == T


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_adversarial_huge_scores(estimator):
    q, k, v = _rand(H=2, T=32, seed=11)
    q, k = q * 1e3, k * 1e3  # scores ~1e6: softmax is one-hot
    cfg = tp.PickerConfig(threshold=1e-3, estimator=estimator)
    res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
    _assert_guarantee(q, k, res.kept.numpy(), cfg)
    assert float(res.pruning_ratio) > 3
    assert np.all(np.isfinite(res.out.numpy()))
    # the readable references never overflow (bounds differ by ~1e6 nats) and agree with the fast one
    for i in (0, 5, 31):
        ref = tp.pick_reference(q[0, 1, i], k[0, 1, :i + 1], v[0, 1, :i + 1], cfg)
        assert np.all(np.isfinite(ref.out)) and np.all(np.isfinite(ref.bounds))
        np.testing.assert_array_equal(ref.kept, res.kept[0, 1, i, :i + 1].numpy())


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_adversarial_decoys_and_sign_patterns(estimator):
    """Keys built to make the first chunk misleading: large low bits (the first chunk says 'small'),
    alternating signs (q.hi cancels), many near-threshold tokens, one dominant token far back."""
    rng = np.random.default_rng(29)
    T, d = 96, 16
    q = rng.normal(size=(1, 2, T, d)) * 3
    k = rng.normal(size=(1, 2, T, d))
    k[..., ::7, :] = np.sign(q[..., ::7, :]) * 0.9         # aligned with some queries
    k[..., 1::5, :] = -k[..., 1::5, :] * 1e-3               # tiny keys: all information in the low bits
    k[..., 40, :] = 4 * np.sign(rng.normal(size=d))        # a dominant far-back token
    k[..., 2::2, ::2] *= -1                                # alternating sign patterns
    v = rng.normal(size=(1, 2, T, d))
    for thr in (1 / 96, 2e-3, 5e-2):
        cfg = tp.PickerConfig(threshold=thr, chunk_bits=3, estimator=estimator)
        res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
        assert _assert_guarantee(q, k, res.kept.numpy(), cfg) > 0


@pytest.mark.parametrize("thr", [1e-3, 2e-2, 0.3])  # 0.3: the keep-one fallback on most rows
def test_paper_counts_without_masks_equal_counts_from_masks(thr):
    q, k, v = _rand(H=6, T=40, seed=59)
    k = np.repeat(k[:, ::3], 3, axis=1)
    cfg = tp.PickerConfig(threshold=thr, chunk_bits=3)
    fast = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3)
    full = tp.token_pick(q, k, v, cfg, causal=True, kv_groups=3, return_masks=True)
    for f in tp.StatsCollector.FIELDS:
        assert torch.equal(getattr(fast, f), getattr(full, f)), f
    ch = full.chunks.numpy().reshape(1, 2, 3, 40, 40).max(2)
    np.testing.assert_array_equal(full.kv_key_chunks.numpy(), ch.sum(-1))
    np.testing.assert_array_equal(full.kv_n_full.numpy(), (ch == cfg.n_chunks).sum(-1))
    np.testing.assert_array_equal(full.n_full.numpy(), (full.chunks.numpy() == cfg.n_chunks).sum(-1))


def test_one_chunk_paper_estimator_is_the_oracle():
    """With chunk_bits == k_bits (one chunk) every bound is the exact score, so the paper's Eq. 5 bound
    is the exact probability: the kept set is exactly the oracle set (p >= threshold)."""
    q, k, v = _rand(H=3, T=50, seed=31)
    for thr in (1e-3, 1e-2, 5e-2):
        cfg = tp.PickerConfig(threshold=thr, k_bits=12, chunk_bits=12, margin=0.0)
        res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
        p = tp.quantised_probs(q, k, cfg, causal=True)
        allowed = np.tril(np.ones((50, 50), bool))
        np.testing.assert_array_equal(res.kept.numpy(), allowed & (p >= thr))
        np.testing.assert_array_equal(res.n_kept.numpy(), res.n_oracle.numpy())


def test_paper_estimator_fetches_at_least_the_first_chunk_and_bounds_tighten():
    q, k, v = _rand(H=3, T=64, seed=37)
    cfg = tp.PickerConfig(threshold=1e-2)
    res = tp.token_pick(q, k, v, cfg, causal=True, return_masks=True)
    allowed = torch.tril(torch.ones(64, 64, dtype=torch.bool))
    ch = res.chunks[:, :, allowed]
    assert bool((ch >= 1).all()) and bool((ch <= cfg.n_chunks).all())
    assert bool((res.chunks[:, :, ~allowed] == 0).all())
    assert bool((ch[res.kept[:, :, allowed]] == cfg.n_chunks).all())  # kept tokens: whole key read
    k_int, k_step = tp.quantize(torch.as_tensor(k), cfg.k_bits)
    lowers, uppers = tp.chunk_score_bounds(torch.as_tensor(q), k_int, k_step, 0.25, cfg)
    exact = lowers[-1]
    assert torch.equal(lowers[-1], uppers[-1])
    tol = 1e-12 * (1 + exact.abs())
    for m in range(cfg.n_chunks - 1):
        assert bool((lowers[m] <= exact + tol).all()) and bool((uppers[m] >= exact - tol).all())
        assert bool((lowers[m + 1] >= lowers[m] - tol).all()) and bool((uppers[m + 1] <= uppers[m] + tol).all())


def test_paper_prunes_more_than_sequential_on_a_long_row():
    """The lower-bound denominator over all tokens is large from the start; the sequential running sum
    starts at zero. On long rows with a few large scores the paper's estimator keeps fewer tokens."""
    q, k, v = _rand(H=3, T=256, seed=41)
    kw = dict(causal=True)
    paper = tp.token_pick(q, k, v, tp.PickerConfig(threshold=1e-3), **kw)
    seq = tp.token_pick(q, k, v, tp.PickerConfig(threshold=1e-3, estimator="sequential"), **kw)
    assert paper.n_kept.sum() < seq.n_kept.sum()


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


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_bad_input_gets_a_clear_error(estimator):
    q, k, v = _rand(H=2, T=8, seed=43)
    cfg = tp.PickerConfig(estimator=estimator)
    for scale in (float("nan"), float("inf"), 0.0, -0.5, "big"):
        with pytest.raises(ValueError, match="scale must be a finite positive number"):
            tp.token_pick(q, k, v, cfg, scale=scale)
        with pytest.raises(ValueError, match="scale must be a finite positive number"):
            tp.pick_reference(q[0, 0, 0], k[0, 0], v[0, 0], cfg, scale=scale)
    for g in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="kv_groups must be an integer >= 1"):
            tp.token_pick(q, k, v, cfg, kv_groups=g)
    with pytest.raises(ValueError, match="must divide"):
        tp.token_pick(q, k, v, cfg, kv_groups=3)
    nan_mask = np.zeros((1, 1, 8, 8)); nan_mask[0, 0, 3, 2] = np.nan
    with pytest.raises(ValueError, match="float mask contains NaN"):
        tp.token_pick(q, k, v, cfg, mask=torch.as_tensor(nan_mask))
    for shape in ((1, 1, 8, 7), (1, 3, 8, 8), (2, 1, 8, 8), (8, 9), (1, 1, 1, 8, 8)):
        with pytest.raises(ValueError, match="mask"):
            tp.token_pick(q, k, v, cfg, mask=torch.zeros(shape))
    # broadcastable masks are accepted
    tp.token_pick(q, k, v, cfg, mask=torch.zeros((8, 8)))
    tp.token_pick(q, k, v, cfg, mask=torch.zeros((1, 2, 1, 8)))
    with pytest.raises(ValueError, match="unknown estimator"):
        tp.PickerConfig(estimator="magic")


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_additive_mask_and_padding(estimator):
    q, k, v = _rand(H=2, T=20, seed=13)
    cfg = tp.PickerConfig(threshold=1e-2, estimator=estimator)
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


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_gqa_union_counts(estimator):
    q, k, v = _rand(H=6, T=30, seed=17)
    k = np.repeat(k[:, ::3], 3, axis=1); v = np.repeat(v[:, ::3], 3, axis=1)  # 2 KV heads x 3 query heads
    res = tp.token_pick(q, k, v, tp.PickerConfig(threshold=1e-2, estimator=estimator), causal=True, kv_groups=3,
                        return_masks=True)
    kept = res.kept.numpy().reshape(1, 2, 3, 30, 30)
    chunks = res.chunks.numpy().reshape(1, 2, 3, 30, 30)
    np.testing.assert_array_equal(res.kv_n_values.numpy(), kept.any(2).sum(-1))
    np.testing.assert_array_equal(res.kv_key_chunks.numpy(), chunks.max(2).sum(-1))
    assert np.all(res.kv_n_values.numpy() >= res.n_kept.numpy().reshape(1, 2, 3, 30).max(2))


# ----------------------------------------------------------------------------- the fast path (issue 25)
def _paper_per_head(q, k, cfg, scale, mask, thresholds):
    """The paper estimator as `token_pick` computed it before the GQA-shared fast path (issue 25): every
    query head against its own copy of the keys through the public `chunk_score_bounds`, the additive
    float mask (<= -1e4 forbids) as bias / -inf, one threshold at a time. Returns per threshold the
    (kept, chunks) masks (B, H, Tq, Tk)."""
    k_int, k_step = tp.quantize(torch.as_tensor(k), cfg.k_bits)
    lowers, uppers = tp.chunk_score_bounds(torch.as_tensor(q).double(), k_int, k_step, scale, cfg)
    mask = torch.as_tensor(mask, dtype=torch.float64).expand(lowers[0].shape)
    allowed = mask > -1e4
    add = torch.where(allowed, mask, -math.inf)
    lowers = [x + add for x in lowers]
    uppers = [x + add for x in uppers[:-1]] + [lowers[-1]]
    top = lowers[-1].amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    e_low = [torch.exp(x - top) for x in lowers]
    res = []
    for t in thresholds:
        lam = math.log(t * (1 - cfg.margin))
        alive, cur = allowed.clone(), e_low[0]
        chunks = torch.zeros(alive.shape, dtype=torch.int8)
        for m in range(cfg.n_chunks):
            if m > 0:
                cur = torch.where(alive, e_low[m], cur)
            chunks += alive                      # chunk m + 1 read by the survivors
            alive &= uppers[m] >= top + torch.log(cur.sum(-1, keepdim=True)) + lam
        pick = torch.zeros_like(alive).scatter_(-1, cur.argmax(-1, keepdim=True), True)
        pick &= (allowed.any(-1) & ~alive.any(-1))[..., None]
        res.append((alive | pick, torch.where(pick, torch.full_like(chunks, cfg.n_chunks), chunks)))
    return res


def _smollm2_shaped(context, rows, seed, dtype=torch.float64):
    """SmolLM2-135M-shaped decode inputs (9 query heads, 3 KV heads repeated, d_head 64): the last
    ``rows`` positions of a causal ``context``-token window, a sink-like first token."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 9, rows, 64, generator=g, dtype=torch.float64) * 2
    k = torch.randn(1, 3, context, 64, generator=g, dtype=torch.float64)
    k[:, :, 0] *= 4
    v = torch.randn(1, 3, context, 64, generator=g, dtype=torch.float64)
    k, v = (x.repeat_interleave(3, 1).to(dtype) for x in (k, v))
    pos = torch.arange(context - rows, context)
    mask = torch.where(torch.arange(context)[None, :] <= pos[:, None], 0.0, float("-inf"))[None, None]
    return q.to(dtype), k, v, mask


def _assert_equals_per_head(q, k, v, mask, scale, thresholds):
    cfg = tp.PickerConfig()
    want = _paper_per_head(q, k, cfg, scale, mask, thresholds)
    kw = dict(mask=mask, scale=scale, kv_groups=3, thresholds=thresholds)
    masks = tp.token_pick(q, k, v, cfg, return_masks=True, **kw)
    counts = tp.token_pick(q, k, v, cfg, compute_output=False, **kw)  # the mask-free counting path
    for (kept, chunks), r, c in zip(want, masks, counts):
        assert torch.equal(r.kept, kept) and torch.equal(r.chunks, chunks)
        ch_kv = chunks.view(1, 3, 3, *chunks.shape[2:]).amax(2)
        expect = dict(n_kept=kept.sum(-1), key_chunks=chunks.sum(-1, dtype=torch.int64), n_full=(chunks == cfg.n_chunks).sum(-1),
                      kv_key_chunks=ch_kv.sum(-1, dtype=torch.int64), kv_n_full=(ch_kv == cfg.n_chunks).sum(-1),
                      kv_n_values=kept.view(1, 3, 3, *kept.shape[2:]).any(2).sum(-1))
        for f, e in expect.items():
            assert torch.equal(getattr(r, f), e.double()), f
            assert torch.equal(getattr(c, f), e.double()), f
        for f in ("pruned_mass", "n_oracle", "n_context"):
            assert torch.equal(getattr(r, f), getattr(c, f)), f
    return masks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gqa_fast_path_equals_the_per_head_computation(dtype):
    """Keys repeated over a GQA group are quantised and bounded once per KV head (one batched matmul for
    the group's rows): the kept tokens, chunks read and every count are identical to the per-head
    computation, at thresholds from mild to the keep-one fallback, in float64 and float32 inputs."""
    q, k, v, mask = _smollm2_shaped(1024, 8, seed=61, dtype=dtype)
    res = _assert_equals_per_head(q, k, v, mask, 1 / 8, [1e-4, 3e-4, 1e-3, 1e-2, 0.3])
    assert 0 < float(res[1].n_kept.sum()) < float(res[1].n_context.sum())  # pruning is exercised
    assert float(res[-1].n_kept.sum()) == 72                              # one token per row (fallback)
    # outputs: the per-KV-head value matmul against the quantised-value dense softmax over the kept tokens
    out = tp.token_pick(q, k, v, tp.PickerConfig(threshold=3e-4), mask=mask, scale=1 / 8, kv_groups=3, return_masks=True)
    s = tp.quantised_scores(q, k, 1 / 8, tp.PickerConfig()).masked_fill(~out.kept, -math.inf)
    vi, vs = tp.quantize(v, 12)
    np.testing.assert_allclose(out.out.numpy(), (torch.softmax(s, -1) @ (vi * vs)).numpy(), rtol=1e-10, atol=1e-12)


def test_gqa_fast_path_with_unshared_heads_bias_and_batches():
    """Heads of a group that do NOT share keys fall back to one key head per query head; an additive
    bias and several batch items go through the same block code."""
    q, k, v, mask = _smollm2_shaped(300, 5, seed=67)
    k = k.clone(); k[:, 4] += 0.01                                        # group 1 no longer shares keys
    bias = mask + torch.linspace(-2, 0, 300)                              # a non-zero additive bias
    q2, k2, v2 = (torch.cat([x, x.flip(2)], 0) for x in (q, k, v))        # two batch items
    for qq, kk, vv in ((q, k, v), (q2, k2, v2)):
        cfg = tp.PickerConfig()
        want = _paper_per_head(qq, kk, cfg, 0.125, bias, [1e-3, 3e-2])
        for (kept, chunks), r in zip(want, tp.token_pick(qq, kk, vv, cfg, mask=bias, scale=0.125, kv_groups=3,
                                                         thresholds=[1e-3, 3e-2], return_masks=True)):
            assert torch.equal(r.kept, kept) and torch.equal(r.chunks, chunks)


def test_quantize_torch_equals_numpy_and_takes_huge_finite_values():
    x = np.random.default_rng(71).normal(size=(4, 30, 16)) * 5
    x[1, 3] = 0.0
    for bits in (4, 8, 12):
        ti, ts = tp.quantize(torch.as_tensor(x), bits)
        ni, ns = tp.quantize(x, bits)
        np.testing.assert_array_equal(ti.numpy(), ni)
        np.testing.assert_array_equal(ts.numpy(), ns)
    huge = torch.full((2, 64), 1e308, dtype=torch.float64)               # the sum overflows; still finite
    ints, step = tp.quantize(huge, 12)
    assert bool((ints == 2047).all()) and bool(torch.isfinite(step).all())
    for bad in (float("nan"), float("inf"), -float("inf")):
        x_bad = torch.zeros(3, 8); x_bad[1, 2] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            tp.quantize(x_bad, 8)


@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_non_finite_keys_and_values_are_rejected(estimator):
    """k is checked by its quantisation (also when only the unique heads of a GQA group are quantised:
    a NaN in one copy unshares the group, an inf sits in every copy), v there or, when no output is
    computed, up front."""
    q, k, v, mask = _smollm2_shaped(40, 4, seed=79)
    cfg = tp.PickerConfig(estimator=estimator)
    kw = dict(mask=mask, kv_groups=3)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for heads in ([4], [3, 4, 5]):                 # one copy of KV head 1, or all its copies
            k_bad = k.clone(); k_bad[0, heads, 17, 5] = bad
            for co in (True, False):
                with pytest.raises(ValueError, match="k contains NaN or inf"):
                    tp.token_pick(q, k_bad, v, cfg, compute_output=co, **kw)
            v_bad = v.clone(); v_bad[0, heads, 3, 0] = bad
            for co in (True, False):
                with pytest.raises(ValueError, match="v contains NaN or inf"):
                    tp.token_pick(q, k, v_bad, cfg, compute_output=co, **kw)


def test_token_pick_runs_single_threaded_and_restores_the_thread_count():
    q, k, v = _rand(H=3, T=16, seed=73)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for est in tp.ESTIMATORS:
            tp.token_pick(q, k, v, tp.PickerConfig(estimator=est), causal=True)
            assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="NaN or inf"):
            tp.token_pick(q * np.nan, k, v, tp.PickerConfig())
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


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


def test_make_attn_fn_threshold_zero_fast_path_equals_token_pick():
    q, k, v = (torch.as_tensor(a, dtype=torch.float32) for a in _rand(H=3, T=24, seed=53))
    mask = torch.where(torch.tril(torch.ones(24, 24, dtype=torch.bool)), 0.0, torch.finfo(torch.float32).min)[None, None]
    cfg = tp.PickerConfig(threshold=0.0)
    fast = tp.make_attn_fn(cfg, kv_groups=3, decode_from=8)(q, k, v, mask, 0.25, layer=0)
    slow = tp.make_attn_fn(cfg, kv_groups=3, decode_from=8, collector=tp.StatsCollector())(q, k, v, mask, 0.25, layer=0)
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- real captured tensors
# ----------------------------------------------------------------------------- experiment helpers
def test_window_ratio_conventions_closed_form():
    num = np.array([[[10.0, 30.0]], [[20.0, 20.0]]])  # (windows, 1, 2)
    den = np.array([[[1.0, 5.0]], [[2.0, 4.0]]])
    np.testing.assert_allclose(tp.window_ratio(num, den, "ratio of sums"), [40 / 6, 40 / 6])
    np.testing.assert_allclose(tp.window_ratio(num, den, "mean of ratios"), [(10 + 6) / 2, (10 + 5) / 2])
    v, iv = tp.ratio_interval(num, den, "ratio of sums")
    assert v == pytest.approx(80 / 12) and iv.n == 2
    # identical windows: the bootstrap interval collapses on the value
    v2, iv2 = tp.ratio_interval(np.repeat(num[:1], 5, 0), np.repeat(den[:1], 5, 0), "mean of ratios")
    assert iv2.lo == pytest.approx(8.0) and iv2.hi == pytest.approx(8.0) and v2 == pytest.approx(8.0)
    with pytest.raises(ValueError, match="convention"):
        tp.window_ratio(num, den, "median")


def test_interpolate_threshold_on_a_power_law():
    t = np.geomspace(1e-4, 1e-1, 7)
    ratio = 3.0 * (t / 1e-4) ** 0.5  # log-linear: interpolation is exact
    target = 3.0 * (2e-3 / 1e-4) ** 0.5
    assert tp.interpolate_threshold(t, ratio, target) == pytest.approx(2e-3, rel=1e-9)
    assert tp.interpolate_threshold(t, ratio, 1.0) is None and tp.interpolate_threshold(t, ratio, 1e6) is None


def test_book_windows_join_consecutive_chapters():
    from types import SimpleNamespace

    def tok(text, add_special_tokens=False):
        return {"input_ids": [int(w) for w in text.split()]}

    rm = SimpleNamespace(kind="decoder", max_positions=100, add_bos=True, bos_token_id=-1, tokenizer=tok)
    recs = [dict(book="A", chapter=2, text="5 6 7 8"), dict(book="A", chapter=1, text="1 2 3 4"),
            dict(book="B", chapter=1, text="11 12 13 14 15 16 17")]
    wins, books = tp.book_windows(rm, recs, 4, 3)
    # chapters joined in order (1 then 2), windows of 3 text tokens + BOS, books taken in turn
    assert wins == [[-1, 1, 2, 3], [-1, 11, 12, 13], [-1, 4, 5, 6]] and books == ["A", "B", "A"]
    with pytest.raises(ValueError, match="only"):
        tp.book_windows(rm, recs, 4, 10)


def test_make_stats_fn_exact_output_and_row_subsets():
    q, k, v = (torch.as_tensor(a, dtype=torch.float32) for a in _rand(H=3, T=24, seed=47))
    mask = torch.where(torch.tril(torch.ones(24, 24, dtype=torch.bool)), 0.0, float("-inf"))[None, None]
    a, b = tp.StatsCollector(), tp.StatsCollector()
    rows = [7, 15, 23]
    fn = tp.make_stats_fn([dict(cfg=tp.PickerConfig(), thresholds=[1e-3, 1e-2], collector=a),
                           dict(cfg=tp.PickerConfig(estimator="sequential"), thresholds=[1e-2], collector=b,
                                rows=[23])], rows, kv_groups=3)
    out = fn(q, k, v, mask, 0.25, layer=0)
    ref = attention(q.double().numpy(), k.double().numpy(), v.double().numpy(), causal=True, scale=0.25)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert a.arrays()[0]["n_context"].shape == (1, 2, 1, 3, 3)
    np.testing.assert_array_equal(a.arrays()[0]["n_context"][0, 0, 0, 0], [8, 16, 24])
    assert b.arrays()[0]["n_kept"].shape == (1, 1, 1, 3, 1)
    # the causal-kernel path (unpadded sequences) gives the same output and the same counts
    c = tp.StatsCollector()
    fn_c = tp.make_stats_fn([dict(cfg=tp.PickerConfig(), thresholds=[1e-3, 1e-2], collector=c)], rows, kv_groups=3,
                            causal=True)
    np.testing.assert_allclose(fn_c(q, k, v, None, 0.25, layer=0).numpy(), ref, rtol=1e-4, atol=1e-5)
    for f in tp.StatsCollector.FIELDS:  # counts identical; the pruned mass up to rounding (keys sliced per block)
        np.testing.assert_allclose(c.arrays()[0][f], a.arrays()[0][f], rtol=1e-10, atol=1e-14)
    with pytest.raises(ValueError, match="subset"):
        tp.make_stats_fn([dict(cfg=tp.PickerConfig(), thresholds=[1e-3], collector=a, rows=[3])], rows)


def test_row_blocks_slice_keys_to_the_causal_prefix():
    blocks = tp.experiment._row_blocks([799, 831, 1023, 1823, 2047, 4095, 8191], 0)
    assert [(b.tolist(), n) for b, n in blocks] == [([799, 831, 1023], 1024), ([1823, 2047], 2048), ([4095], 4096),
                                                    ([8191], 8192)]


def test_make_attn_fn_threshold_zero_fast_path_equals_token_pick():
    q, k, v = (torch.as_tensor(a, dtype=torch.float32) for a in _rand(H=3, T=24, seed=53))
    mask = torch.where(torch.tril(torch.ones(24, 24, dtype=torch.bool)), 0.0, torch.finfo(torch.float32).min)[None, None]
    cfg = tp.PickerConfig(threshold=0.0)
    fast = tp.make_attn_fn(cfg, kv_groups=3, decode_from=8)(q, k, v, mask, 0.25, layer=0)
    slow = tp.make_attn_fn(cfg, kv_groups=3, decode_from=8, collector=tp.StatsCollector())(q, k, v, mask, 0.25, layer=0)
    np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- real captured tensors
@pytest.mark.models
@pytest.mark.parametrize("estimator", tp.ESTIMATORS)
def test_guarantee_on_real_captured_tensors(estimator):
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
            cfg = tp.PickerConfig(threshold=thr, estimator=estimator)
            res = tp.token_pick(cap.q, cap.k, cap.v, cfg, mask=cap.mask, scale=cap.scale, kv_groups=G,
                                return_masks=True)
            n = _assert_guarantee(cap.q.double().numpy(), cap.k.double().numpy(), res.kept.numpy(), cfg,
                                  scale=cap.scale)
            assert n > 0
            assert bool((res.n_kept >= res.n_oracle).all())
            h, i = 4, 63
            ref = tp.pick_reference(cap.q[0, h, i], cap.k[0, h], cap.v[0, h], cfg, scale=cap.scale)
            np.testing.assert_array_equal(ref.kept, res.kept[0, h, i].numpy())
        # with a tiny threshold the output is close to the model's own attention (quantisation only)
        res = tp.token_pick(cap.q, cap.k, cap.v, tp.PickerConfig(threshold=1e-6, estimator=estimator),
                            mask=cap.mask, scale=cap.scale)
        exact = (cap.probs.double() @ cap.v.double()).numpy()
        assert np.abs(res.out.numpy() - exact).max() < 0.05 * max(1.0, np.abs(exact).max())


@pytest.mark.models
def test_gqa_fast_path_equals_the_per_head_computation_on_real_tensors():
    """The same pin as `test_gqa_fast_path_equals_the_per_head_computation` on one real SmolLM2 layer
    (Brown text, 512 tokens, the last 8 rows as decode steps; float32 tensors as the model hands them)."""
    from attnlib import data, evaluate, models

    try:
        rm = models.load_decoder("smollm2")
    except models.ModelFilesMissing as err:
        pytest.skip(str(err))
    win = evaluate.text_windows(rm, data.load_text("brown"), 512, 1, seed=3)
    cap = models.capture(rm, {"input_ids": torch.tensor(win)}, layers=[14])[0]
    assert rm.n_heads // rm.n_kv_heads == 3
    rows = torch.arange(504, 512)
    res = _assert_equals_per_head(cap.q[:, :, rows], cap.k, cap.v, cap.mask[:, :, rows], cap.scale, [3e-4, 1e-3, 1e-2])
    assert float(res[0].n_kept.sum()) < float(res[0].n_context.sum())
