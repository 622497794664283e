"""A3's memory-network workload: generated bAbI-style stories, the MemN2N, the sorted-column search
path and the matched-quality bootstrap."""
import math

import numpy as np
import pytest
import torch

import attnlib.a3 as a3
from attnlib.a3 import babi, memn2n


def _replay(sents, question):
    """Answer a generated question by replaying the story's sentences (independent of the generator)."""
    where, holder, at = {}, {}, {}
    for s in sents:
        w = s.split()
        p, obj = w[0], w[-1]
        if obj in babi.PLACES:
            where[p] = obj
        elif any(s.startswith(f"{p} {v}") for v in babi.GET):
            holder[obj], at[obj] = p, None
        else:
            holder[obj], at[obj] = None, where[p]
    target = question.split()[-1]
    if target in babi.PEOPLE:
        return where[target]
    return at[target] if holder.get(target) is None else where[holder[target]]


def test_generated_answers_follow_from_the_story():
    s = babi.generate(40, seed=3, n_min=5, n_max=25)
    assert s["story"].shape[:2] == (80, 25) and set(s["task"]) == {1, 2}
    for (sents, q, a), n in zip(s["text"], s["n_mem"]):
        assert len(sents) == n and 5 <= n <= 25
        assert _replay(sents, q) == a
    # word ids decode back to the text; padding is id 0
    v = s["vocab"]
    sents, q, a = s["text"][0]
    assert " ".join(v[i] for i in s["story"][0, 0] if i) == sents[0]
    assert v[s["answer"][0]] == a and (s["story"][0, len(sents):] == 0).all()


def test_generate_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_min"):
        babi.generate(5, n_min=10, n_max=5)
    with pytest.raises(ValueError, match="tasks"):
        babi.generate(5, tasks=(3,))


def test_position_encoding_closed_form():
    pe = memn2n.position_encoding(4, 8)
    j, k = 2, 5  # 1-based
    assert pe[j - 1, k - 1] == pytest.approx((1 - j / 4) - (k / 8) * (1 - 2 * j / 4))


def _small_model():
    data = babi.generate(6, seed=0, n_min=4, n_max=9)
    torch.manual_seed(0)
    model = memn2n.MemN2N(len(data["vocab"]), data["story"].shape[1], data["story"].shape[2], d=16, hops=2).eval()
    return model, data


def test_exact_attention_hook_reproduces_the_softmax_path():
    model, data = _small_model()
    st, nm, q = (torch.from_numpy(data[k]) for k in ("story", "n_mem", "question"))

    def softmax_attn(u, m, c, allowed, hop):
        s = (u @ m.transpose(-1, -2)).masked_fill(~allowed, -math.inf)
        return torch.softmax(s, -1) @ c

    with torch.no_grad():
        ref = model(st, nm, q)
        hooked = model(st, nm, q, attn=softmax_attn)
    assert torch.allclose(ref, hooked, atol=1e-5)
    # the bag of words with position encoding equals its definition
    with torch.no_grad():
        direct = (model.emb[1](st) * model.pe).sum(-2)
        assert torch.allclose(model._bag(1, st), direct, atol=1e-5)


def test_a3_evaluate_counts_and_full_search_limit():
    model, data = _small_model()
    exact = memn2n.evaluate(model, data)
    r = memn2n.evaluate(model, data, m_frac=0.3, T=2.0, use_cache=False, chunk=5)
    hops, N = model.hops, len(data["answer"])
    for k in ("n_allowed", "m", "candidates", "survivors", "max_picks", "min_picks"):
        assert r[k].shape == (N * hops,)
    assert np.array_equal(r["n_allowed"], np.repeat(data["n_mem"], hops))
    assert np.array_equal(r["m"], np.ceil(0.3 * r["n_allowed"]))
    assert np.all(r["survivors"] <= r["candidates"]) and np.all(r["candidates"] <= r["n_allowed"])
    # full search, no threshold: A3 keeps every row with a positive score; the answers are those of
    # exact attention restricted to positive-score rows, which we check hop by hop via the hook
    full = memn2n.evaluate(model, data, M=data["n_mem"].max() * model.d, T=math.inf, use_cache=False)
    st, nm, q = (torch.from_numpy(data[k]) for k in ("story", "n_mem", "question"))

    def positive_rows(u, m, c, allowed, hop):
        s = u @ m.transpose(-1, -2)
        keep = allowed & (s > 0)
        keep = torch.where(keep.any(-1, keepdim=True), keep, allowed & (s == s.masked_fill(~allowed, -math.inf).amax(-1, keepdim=True)))
        return torch.softmax(s.masked_fill(~keep, -math.inf), -1) @ c

    with torch.no_grad():
        ref = model(st, nm, q, attn=positive_rows).argmax(-1).numpy() == data["answer"]
    assert np.array_equal(full["correct"], ref)
    assert exact["correct"].shape == (N,)


def test_sorted_column_path_matches_all_products_on_ties_and_padding():
    gen = torch.Generator().manual_seed(1)
    for trial in range(20):
        T, d = 6 + 3 * trial % 30, (4, 8, 32)[trial % 3]
        q = torch.randn(2, 3, T, d, generator=gen)
        k = torch.randn(2, 3, T, d, generator=gen)
        v = torch.randn(2, 3, T, d, generator=gen)
        if trial % 2 == 0:  # quantised: many equal products
            q, k = q.mul(2).round(), k.mul(2).round()
        mask = torch.zeros(2, 1, 1, T)
        mask[0, ..., T - 2:] = -math.inf  # key padding: every query of a head sees the same keys
        for kw in (dict(M=1 + trial % (T - 1)), dict(m_frac=0.25)):
            a = a3.a3_attention(q, k, v, mask=mask, T=1.5, sorted_path=True, **kw)
            b = a3.a3_attention(q, k, v, mask=mask, T=1.5, sorted_path=False, **kw)
            assert torch.allclose(a.out, b.out, atol=1e-5)
            for name in ("max_picks", "min_picks", "n_candidates", "n_survivors"):
                assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_sorted_path_matches_step_by_step_on_quantised_keys_with_padding():
    rng = np.random.default_rng(4)
    n, d = 12, 8
    k = rng.integers(-2, 3, size=(n, d)).astype(float)
    v = rng.standard_normal((n, 3))
    allowed = np.ones(n, bool)
    allowed[-3:] = False
    mask = torch.where(torch.from_numpy(allowed), 0.0, -math.inf)[None, :]
    for M in (1, 3, 7, 20):
        q = rng.integers(-2, 3, size=d).astype(float)
        ref = a3.a3_single_query_reference(q, k, v, M=M, T=1.0, allowed=allowed)
        res = a3.a3_attention(q[None], k, v, M=M, T=1.0, mask=mask, return_sets=True, sorted_path=True)
        assert res.max_picks[0] == ref["max_picks"] and res.min_picks[0] == ref["min_picks"]
        assert sorted(np.flatnonzero(res.candidates[0].numpy())) == list(ref["candidates"])
        assert np.allclose(res.out[0].numpy(), ref["out"], atol=1e-6)


def test_matched_bootstrap_agrees_with_matched_setting_and_brackets_its_point():
    rng = np.random.default_rng(0)
    N = 1500
    ref = rng.random(N) < 0.9
    settings = [0.1, 0.2, 0.4, 0.8]
    correct, units = {}, {}
    for m in settings:
        correct[m] = ref & ~(rng.random(N) < 0.12 * (1 - m))
        units[m] = dict(base_interval=np.full(N, 30.0), approx_interval=30 * m + rng.random(N),
                        base_latency=np.full(N, 90.0), approx_latency=60 * m + 10 + rng.random(N))
    losses = [100 * (ref.mean() - correct[m].mean()) for m in settings]
    for band in ((1.0, 1.6), (8.0, 9.0)):
        r = a3.matched_bootstrap(ref, correct, units, band, n_resamples=400)
        m, l_ = a3.matched_setting(settings, losses, band)
        assert r["setting"] == m and r["loss"] == pytest.approx(l_)
        assert r["throughput"] == pytest.approx(units[m]["base_interval"].sum() / units[m]["approx_interval"].sum())
        for what in ("loss", "throughput", "latency"):
            iv = r[f"{what}_interval"]
            assert iv.lo <= r[what] <= iv.hi and iv.n == N
        assert sum(r["setting_draws"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        a3.matched_bootstrap(ref[:10], correct, units, (1.0, 1.6))


def test_per_question_units_sum_the_hops():
    counts = dict(n_allowed=np.array([10.0, 10, 20, 20]), m=np.array([3.0, 3, 5, 5]), candidates=np.array([2.0, 2, 4, 4]),
                  survivors=np.array([1.0, 1, 2, 2]))
    u = a3.per_question_units(counts, d=64, queries_per_item=2)
    a = a3.stream_arrays(counts["n_allowed"], counts["m"], counts["candidates"], counts["survivors"], d=64)
    assert np.allclose(u["base_interval"], a["base_interval"].reshape(2, 2).sum(1))
    assert np.allclose(u["approx_latency"], a["approx_latency"].reshape(2, 2).sum(1))
    with pytest.raises(ValueError, match="items"):
        a3.per_question_units(counts, d=64, queries_per_item=3)
