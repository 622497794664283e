"""Unit tests of attnlib.a3: the A3 algorithm against its step-by-step version and exact attention,
the candidate sweep, the pipeline cost model and bad input."""
import math

import numpy as np
import pytest
import torch

from attnlib import a3
from attnlib.attention import attention
from attnlib.hw import energy_pj, mac_energy_pj


@pytest.fixture
def qkv():
    rng = np.random.default_rng(1)
    n, d = 37, 8
    return rng.standard_normal((6, d)), rng.standard_normal((n, d)), rng.standard_normal((n, 5))


# ----------------------------------------------------------------------------- algorithm
@pytest.mark.parametrize("M", [1, 4, 17, 60, 400])
@pytest.mark.parametrize("T", [0.5, 3.0, math.inf])
def test_vectorised_matches_step_by_step(qkv, M, T):
    q, k, v = qkv
    res = a3.a3_attention(q, k, v, M=M, T=T, return_sets=True)
    for i in range(q.shape[0]):
        ref = a3.a3_single_query_reference(q[i], k, v, M=M, T=T)
        assert np.array_equal(np.flatnonzero(res.candidates[i].numpy()), ref["candidates"])
        assert np.array_equal(np.flatnonzero(res.survivors[i].numpy()), ref["survivors"])
        assert int(res.max_picks[i]) == ref["max_picks"] and int(res.min_picks[i]) == ref["min_picks"]
        np.testing.assert_allclose(res.out[i].numpy(), ref["out"], rtol=1e-10, atol=1e-12)


def test_step_by_step_with_allowed_rows_matches_vectorised_causal():
    rng = np.random.default_rng(2)
    T_, d = 12, 6
    q, k, v = (rng.standard_normal((T_, d)) for _ in range(3))
    res = a3.a3_attention(q, k, v, M=5, T=2.0, causal=True, return_sets=True)
    for i in range(T_):
        allowed = np.arange(T_) <= i
        ref = a3.a3_single_query_reference(q[i], k, v, M=5, T=2.0, allowed=allowed)
        assert np.array_equal(np.flatnonzero(res.candidates[i].numpy()), ref["candidates"])
        assert ref["candidates"].max() <= i  # a query only ever searches its allowed keys
        np.testing.assert_allclose(res.out[i].numpy(), ref["out"], rtol=1e-10, atol=1e-12)


def test_greedy_picks_are_the_largest_products(qkv):
    """The max-side picks of M iterations are the M largest positive component products q_j K_ij."""
    q, k, _ = qkv
    M = 9
    ref = a3.a3_single_query_reference(q[0], k, k, M=M)
    prods = (q[0][None, :] * k)
    top = np.sort(prods[prods > 0])[::-1][:M]
    bot = np.sort(prods[prods < 0])[:M]
    # the partial scores sum exactly the picked products
    assert ref["partial"].sum() == pytest.approx(top.sum() + bot.sum(), rel=1e-12)


def test_full_search_and_no_threshold_is_exact_attention(qkv):
    """With M covering every product, every row a candidate (floor -inf) and T = inf: exact attention."""
    q, k, v = qkv
    n, d = k.shape
    res = a3.a3_attention(q, k, v, M=n * d, T=math.inf, score_floor=-math.inf)
    np.testing.assert_allclose(res.out.numpy(), attention(q, k, v), rtol=1e-12, atol=1e-12)
    assert (res.n_candidates == n).all()


def test_full_search_with_paper_floor_is_attention_over_positive_rows(qkv):
    """With the paper's rule (partial > 0) and a complete search, the partial score IS the exact dot
    product, so A3 equals exact attention restricted to keys with a positive score."""
    q, k, v = qkv
    n, d = k.shape
    res = a3.a3_attention(q, k, v, M=n * d, T=math.inf)
    positive = (q @ k.T) > 0
    np.testing.assert_allclose(res.out.numpy(), attention(q, k, v, mask=positive), rtol=1e-12, atol=1e-12)


def test_exact_for_batched_heads_with_float_mask():
    rng = np.random.default_rng(3)
    B, H, T_, d = 2, 3, 10, 4
    q, k, v = (rng.standard_normal((B, H, T_, d)) for _ in range(3))
    mask = np.zeros((B, 1, T_, T_))
    mask[1, ..., 7:] = -np.inf  # padding of the second sequence
    res = a3.a3_attention(q, k, v, M=T_ * d, T=math.inf, score_floor=-math.inf, mask=mask)
    np.testing.assert_allclose(res.out.numpy(), attention(q, k, v, mask=mask), atol=1e-12)
    assert (res.n_allowed[1] == 7).all() and (res.n_allowed[0] == T_).all()


def test_larger_m_never_loses_the_top_key_and_counts_are_consistent():
    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((2, 3, 40, 16)), rng.standard_normal((2, 3, 40, 16))
    sw = a3.candidate_sweep(q, k, Ms=[2, 8, 40, 640], ks=(1, 8), Ts=(1.0, 100.0))
    assert sw["recall@1"].shape == (4, 2 * 3 * 40)
    assert np.all(sw["n_candidates"] <= sw["m"])           # a candidate needs a max-side pick
    assert np.all(sw["n_survivors@1"] <= sw["n_survivors@100"])
    assert np.all(sw["n_survivors@100"] <= sw["n_candidates"])
    # with all products searched every positive-score row is a candidate: top-1 (score > 0) recalled
    assert sw["recall@1"][-1].mean() > 0.99
    # recall rises (weakly on average) with M
    assert np.all(np.diff(sw["recall@8"].mean(1)) >= -1e-9)


def test_candidate_sweep_matches_a3_attention_counts():
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((3, 20, 8)) for _ in range(3))
    sw = a3.candidate_sweep(q, k, m_fracs=[0.25, 1.0], Ts=(2.0,), causal=True)
    for i, f in enumerate([0.25, 1.0]):
        res = a3.a3_attention(q, k, v, m_frac=f, T=2.0, causal=True)
        assert np.array_equal(sw["n_candidates"][i], res.n_candidates.reshape(-1).numpy())
        assert np.array_equal(sw["n_survivors@2"][i], res.n_survivors.reshape(-1).numpy())
        assert np.array_equal(sw["m"][i], np.ceil(f * np.tile(np.arange(1, 21), 3)))


def test_attn_fn_signature_and_stats():
    rng = np.random.default_rng(6)
    q, k, v = (torch.tensor(rng.standard_normal((1, 2, 9, 4)), dtype=torch.float32) for _ in range(3))
    stats = a3.A3Stats()
    fn = a3.a3_attn_fn(m_frac=100.0, T=math.inf, score_floor=-math.inf, stats=stats)
    mask = torch.zeros(1, 1, 9, 9)
    out = fn(q, k, v, mask, 0.5, 0)
    ref = attention(q.double().numpy(), k.double().numpy(), v.double().numpy(), scale=0.5)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    assert stats.queries == 18 and stats.mean("candidates") == 9


# ----------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    q, k, v = np.ones((2, 4)), np.ones((5, 3)), np.ones((5, 3))
    with pytest.raises(ValueError, match="width"):
        a3.a3_attention(q, k, v, M=3)
    with pytest.raises(ValueError, match="width"):
        a3.a3_single_query_reference(np.ones(4), k, v, M=3)
    k = np.ones((5, 4))
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="M"):
            a3.a3_attention(q, k, np.ones((5, 4)), M=bad)
    with pytest.raises(ValueError, match="m_frac"):
        a3.a3_attention(q, k, np.ones((5, 4)), m_frac=0.0)
    with pytest.raises(ValueError, match="exactly one"):
        a3.a3_attention(q, k, np.ones((5, 4)))
    qn = q.copy()
    qn[0, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        a3.a3_attention(qn, k, np.ones((5, 4)), M=3)
    with pytest.raises(ValueError, match="NaN"):
        a3.a3_single_query_reference(qn[0], k, np.ones((5, 4)), M=3)
    with pytest.raises(ValueError, match="T"):
        a3.a3_attention(q, k, np.ones((5, 4)), M=3, T=-1.0)
    with pytest.raises(ValueError):
        a3.a3_attn_fn(M=3, m_frac=0.5)
    with pytest.raises(ValueError):
        a3.approx_pipeline(320, 0, 10, 5)
    with pytest.raises(ValueError):
        a3.approx_pipeline(320, 10, 5, 10)  # more survivors than candidates
    with pytest.raises(ValueError):
        a3.measure_cpu(n=8, d=4, n_queries=2, repeats=1, q=np.ones((2, 5)))


# ----------------------------------------------------------------------------- pipeline model
def test_base_pipeline_closed_form():
    hw = a3.A3Hardware()
    n, d = 320, 64
    p = a3.base_pipeline(n, d, hw)
    assert p.interval_cycles == n and p.throughput_qps == pytest.approx(1e9 / n)
    assert p.latency_cycles == 3 * n + 3 * hw.pipeline_fill
    e = hw.e()
    dot = n * (d * mac_energy_pj(8, 40) + d * 8 * e["sram_kv_bit"] + energy_pj("int32_add", 40))
    assert p.modules[0].energy_pj == pytest.approx(dot)
    assert mac_energy_pj(8, 40) == pytest.approx(0.3 * 40 / 45)  # table scaled from 45 nm to 40 nm


def test_approx_pipeline_speedup_follows_counts():
    hw = a3.A3Hardware(sort="off the critical path")
    base = a3.base_pipeline(320, 64, hw)
    ap = a3.approx_pipeline(320, M=80, candidates=50, survivors=20, d=64, hw=hw)
    assert ap.interval_cycles == 80  # the selection module is the slowest stage
    assert base.throughput_qps and ap.throughput_qps / base.throughput_qps == pytest.approx(4.0)
    assert ap.latency_cycles == 80 + 50 + 50 + 20 + 4 * hw.pipeline_fill
    assert ap.energy_pj < base.energy_pj
    # energy grows with the work: more candidates cost more
    assert a3.approx_pipeline(320, 80, 70, 20, 64, hw).energy_pj > ap.energy_pj
    # a pipeline that keeps everything and searches n iterations is no faster than base
    full = a3.approx_pipeline(320, 320, 320, 320, 64, hw)
    assert full.interval_cycles == base.interval_cycles and full.energy_pj > base.energy_pj


def test_static_power_adds_energy_per_interval():
    p0 = a3.base_pipeline(320, 64, a3.A3Hardware())
    p1 = a3.base_pipeline(320, 64, a3.A3Hardware(static_w=0.1))
    assert p1.energy_pj - p0.energy_pj == pytest.approx(0.1 * 320e-9 * 1e12)


def test_cpu_kernels_are_exact_attention():
    rng = np.random.default_rng(7)
    q, k, v = rng.standard_normal((4, 8)), rng.standard_normal((10, 8)), rng.standard_normal((10, 8))
    s = 1 / math.sqrt(8)
    np.testing.assert_allclose(a3.cpu_exact_batched(q, k, v, s), attention(q, k, v), atol=1e-12)
    np.testing.assert_allclose(a3.cpu_exact_single(q[1], k, v, s), attention(q, k, v)[1], atol=1e-12)
    t = a3.measure_cpu(n=16, d=8, n_queries=4, repeats=2)
    assert t.single_s > 0 and t.batched_s > 0


# ----------------------------------------------------------------------------- ties, threshold, helpers
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("M", [1, 3, 7, 15, 40])
def test_vectorised_matches_step_by_step_on_quantised_ties(seed, M):
    """Quantised (integer) keys and queries make many equal products; the vectorised search must take
    the same tied products as the comparator tree (lower column first, then the pointer's order)."""
    rng = np.random.default_rng(100 + seed)
    n, d = 23, 6
    q = rng.integers(-2, 3, size=(5, d)).astype(float)
    k = rng.integers(-2, 3, size=(n, d)).astype(float)
    v = rng.standard_normal((n, 3))
    res = a3.a3_attention(q, k, v, M=M, T=1.0, scale=1.0, return_sets=True)
    split_ties = 0
    for i in range(q.shape[0]):
        ref = a3.a3_single_query_reference(q[i], k, v, M=M, T=1.0, scale=1.0)
        assert np.array_equal(np.flatnonzero(res.candidates[i].numpy()), ref["candidates"]), (i, M)
        assert np.array_equal(np.flatnonzero(res.survivors[i].numpy()), ref["survivors"])
        assert int(res.max_picks[i]) == ref["max_picks"] and int(res.min_picks[i]) == ref["min_picks"]
        np.testing.assert_allclose(res.out[i].numpy(), ref["out"], rtol=1e-12, atol=1e-12)
        prods = np.sort((q[i] * k)[(q[i] * k) > 0])[::-1]
        if M < prods.size and prods[M - 1] == prods[M]:
            split_ties += 1
    if M in (3, 7, 15):
        assert split_ties > 0  # the case under test really occurs


def test_tie_order_decides_partial_scores():
    """Two rows with equal products in one column and M = 1: the comparator tree walks a column with
    q_j > 0 from the stably sorted end, i.e. the HIGHER row among equal keys first."""
    k = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    q = np.array([1.0, 0.0])
    ref = a3.a3_single_query_reference(q, k, np.eye(3), M=1, scale=1.0)
    res = a3.a3_attention(q[None], k, np.eye(3), M=1, scale=1.0, return_sets=True)
    assert list(ref["candidates"]) == [1]
    assert list(np.flatnonzero(res.candidates[0].numpy())) == [1]
    # with a negative query component the same column is walked from the other end: row 0 first
    ref_neg = a3.a3_single_query_reference(-q, -k, np.eye(3), M=1, scale=1.0)
    res_neg = a3.a3_attention(-q[None], -k, np.eye(3), M=1, scale=1.0, return_sets=True)
    assert list(ref_neg["candidates"]) == list(np.flatnonzero(res_neg.candidates[0].numpy()))


def test_candidate_sweep_matches_a3_attention_on_ties():
    rng = np.random.default_rng(9)
    q, k = (rng.integers(-2, 3, size=(2, 15, 4)).astype(float) for _ in range(2))
    sw = a3.candidate_sweep(q, k, Ms=[2, 5, 9], Ts=(1.0,), scale=1.0)
    for i, M in enumerate([2, 5, 9]):
        res = a3.a3_attention(q, k, k, M=M, T=1.0, scale=1.0)
        assert np.array_equal(sw["n_candidates"][i], res.n_candidates.reshape(-1).numpy())
        assert np.array_equal(sw["n_survivors@1"][i], res.n_survivors.reshape(-1).numpy())


def test_weight_threshold_conversion():
    assert a3.margin_from_weight(1.0) == 0.0
    assert a3.margin_from_weight(0.001) == pytest.approx(math.log(1000))
    assert a3.margin_from_weight(0.0) == math.inf
    assert a3.weight_from_margin(a3.margin_from_weight(0.05)) == pytest.approx(0.05)
    # lower weight threshold = more conservative = more survivors
    rng = np.random.default_rng(10)
    q, k, v = rng.standard_normal((8, 8)), rng.standard_normal((40, 8)), rng.standard_normal((40, 2))
    cons = a3.a3_attention(q, k, v, M=200, T=a3.margin_from_weight(0.001))
    aggr = a3.a3_attention(q, k, v, M=200, T=a3.margin_from_weight(0.2))
    assert (cons.n_survivors >= aggr.n_survivors).all() and (cons.n_survivors > aggr.n_survivors).any()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="weight threshold"):
            a3.margin_from_weight(bad)


def test_matched_setting_picks_the_band():
    ms = [0.05, 0.1, 0.2, 0.5]
    assert a3.matched_setting(ms, [12.0, 8.6, 3.0, 0.2], (8.0, 9.0)) == (0.1, 8.6)
    # nothing inside: the nearest to the band
    assert a3.matched_setting(ms, [12.0, 5.0, 2.0, 0.2], (1.0, 1.6)) == (0.2, 2.0)
    # two inside: the one nearest the middle
    assert a3.matched_setting(ms, [9.0, 1.5, 1.25, 0.2], (1.0, 1.6))[0] == 0.2
    with pytest.raises(ValueError):
        a3.matched_setting(ms, [1.0], (1.0, 1.6))


def test_stream_arrays_equal_per_query_pipelines():
    hw = a3.A3Hardware(exp_overlap=0.5, select_iter_per_cycle=0.5)
    n, m, c, s = np.array([320, 200, 64]), np.array([40, 30, 8]), np.array([20, 50, 10]), np.array([5, 9, 10])
    arr = a3.stream_arrays(n, m, c, s, d=64, hw=hw)
    for i in range(3):
        b, p = a3.base_pipeline(n[i], 64, hw), a3.approx_pipeline(n[i], m[i], c[i], s[i], 64, hw)
        assert arr["base_interval"][i] == pytest.approx(b.interval_cycles)
        assert arr["approx_latency"][i] == pytest.approx(p.latency_cycles)
        assert arr["approx_energy"][i] == pytest.approx(p.energy_pj)
    sc = a3.stream_costs(n, m, c, s, d=64, hw=hw)
    assert sc["throughput_speedup"] == pytest.approx(arr["base_interval"].sum() / arr["approx_interval"].sum())


def test_latency_overlap_and_selection_rate_closed_form():
    hw = a3.A3Hardware(sort="off the critical path", exp_overlap=1.0, select_iter_per_cycle=0.5)
    p = a3.approx_pipeline(320, 40, 30, 12, 64, hw)
    assert p.interval_cycles == 80                       # 40 iterations at half an iteration per cycle
    assert p.latency_cycles == 80 + 30 + 30 + 12 - 12 + 4 * hw.pipeline_fill
    b = a3.base_pipeline(320, 64, hw)
    assert b.latency_cycles == 3 * 320 - 320 + 3 * hw.pipeline_fill
    with pytest.raises(ValueError):
        a3.A3Hardware(exp_overlap=1.5)


def test_selection_energy_is_a_tree_update_per_pick():
    hw = a3.A3Hardware()
    e = hw.e()
    p1 = a3.approx_pipeline(320, 10, 5, 5, 64, hw).modules[0].energy_pj
    p2 = a3.approx_pipeline(320, 11, 5, 5, 64, hw).modules[0].energy_pj
    per_pick = (e["mult"] + 6 * e["cmp"] + e["add"] + 2 * hw.score_bits * e["rf_bit"]
                + (hw.bits + e["idx_bits"]) * e["sram_sorted_bit"])
    assert p2 - p1 == pytest.approx(2 * per_pick)          # one max and one min pick per iteration
    # exp priced at its precision: 16-bit fixed point below the fp32 table entry
    assert a3.A3Hardware(exp_bits=16).e()["exp"] < a3.A3Hardware(exp_bits=32).e()["exp"] == energy_pj("fp32_exp", 40)


def test_speedups_interval_and_assumption_range():
    counts = dict(n_allowed=np.full(50, 320.0), m=np.full(50, 40.0), candidates=np.full(50, 30.0),
                  survivors=np.full(50, 10.0))
    sp = a3.speedups(counts, d=64, n_resamples=200)
    pt, iv = sp["throughput"]
    assert pt == pytest.approx(320 / 40)           # the default: the key sort off the critical path
    assert iv.lo == pytest.approx(pt) and iv.hi == pytest.approx(pt)   # identical queries: no spread
    ar = a3.speedup_assumption_range(counts, d=64)
    assert ar["throughput"]["lo"] <= pt <= ar["throughput"]["hi"]
    # slowest: half-rate selection (the sort is a scenario axis, not in the assumption sweep)
    assert ar["throughput"]["lo"] == pytest.approx(320 / 80)
    hw = a3.A3Hardware(sort="log2 n per query")
    assert a3.speedups(counts, d=64, hw=hw, n_resamples=200)["throughput"][0] == pytest.approx(320 / (40 + math.log2(320)))
    # varied queries give a real interval around the point
    rng = np.random.default_rng(0)
    counts["m"] = rng.integers(10, 200, 50).astype(float)
    pt, iv = a3.speedups(counts, d=64, n_resamples=500)["throughput"]
    assert iv.lo < pt < iv.hi


def test_energy_efficiency_closed_form_and_power_range():
    ee = a3.energy_efficiency([2e-5, 2e-5, 2e-5], [1e3, 1e3], power_w=15.0, power_sweep=(5.0, 125.0), n_resamples=200)
    assert ee["point"] == pytest.approx(15 * 2e-5 / 1e-9)
    assert ee["interval"].lo == pytest.approx(ee["point"]) and ee["interval"].hi == pytest.approx(ee["point"])
    assert ee["assumption_range"]["lo"] == pytest.approx(5 * 2e-5 / 1e-9)
    assert ee["assumption_range"]["hi"] == pytest.approx(125 * 2e-5 / 1e-9)
    assert ee["assumption_range"]["swept"]["cpu_power_w"] == [5.0, 15.0, 125.0]
    with pytest.raises(ValueError):
        a3.energy_efficiency([1e-5], [1e3], power_w=15.0, power_sweep=(5.0,))


def test_measure_cpu_keeps_repetitions_threads_and_load():
    t = a3.measure_cpu(n=16, d=8, n_queries=4, repeats=3)
    assert set(t.runs) and all(len(r["single"]) == 3 and len(r["batched"]) == 3 for r in t.runs.values())
    assert t.single_s == pytest.approx(np.median(t.reps("single")))
    assert t.single_threads in t.runs and t.batched_threads in t.runs
    assert t.load_before["cpus"] >= 1 and np.isfinite(t.load_after["load1"])


# ----------------------------------------------------------------------------- key-value retrieval workload
def test_split_sentences_and_perturb():
    docs = ["One two three four five six seven eight. Short one. Nine ten eleven twelve thirteen fourteen fifteen sixteen!",
            "One two three four five six seven eight."]
    s = a3.split_sentences(docs, min_words=8)
    assert s == ["One two three four five six seven eight.", "Nine ten eleven twelve thirteen fourteen fifteen sixteen!"]
    rng = np.random.default_rng(0)
    p = a3.perturb(s[0], rng, drop=0.5)
    words = p.split()
    assert 3 <= len(words) <= 8 and all(w in s[0].split() for w in words)
    assert a3.perturb(s[0], rng, drop=0.0) == s[0]
    with pytest.raises(ValueError):
        a3.split_sentences(docs, min_words=0)


def test_kv_retrieval_run_exact_and_full_search():
    rng = np.random.default_rng(11)
    K = rng.standard_normal((2, 40, 16)).astype(np.float32)
    K /= np.linalg.norm(K, axis=-1, keepdims=True)
    target = np.stack([rng.choice(40, 10, replace=False) for _ in range(2)])
    Q = np.take_along_axis(K, target[..., None], axis=1) + 0.05 * rng.standard_normal((2, 10, 16)).astype(np.float32)
    task = dict(K=K, Q=Q, target=target)
    assert a3.kv_retrieval_run(task)["correct"].all()
    full = a3.kv_retrieval_run(task, M=40 * 16, T=a3.margin_from_weight(0.001), use_cache=False)
    again = a3.kv_retrieval_run(task, M=40 * 16, T=a3.margin_from_weight(0.001))   # through the cache, twice
    assert np.array_equal(a3.kv_retrieval_run(task, M=40 * 16, T=a3.margin_from_weight(0.001))["correct"], again["correct"])
    assert np.array_equal(again["candidates"], full["candidates"])
    assert full["correct"].all() and full["correct"].shape == (20,)
    assert (full["candidates"] >= 1).all() and (full["survivors"] <= full["candidates"]).all()
    one = a3.kv_retrieval_run(task, M=1)
    assert one["correct"].mean() <= full["correct"].mean()
