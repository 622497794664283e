"""Unit tests of attnlib.attmemo: the memory-mapped store, the embedding/index, the engine."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnlib import attmemo
from attnlib.attention import attention_torch


# ----------------------------------------------------------------------------- store
def _arrays(rng):
    return [("a", rng.standard_normal((3, 5, 5)).astype(np.float32)),
            ("b", np.arange(7, dtype=np.int64)),
            ("c", rng.standard_normal((2, 9)).astype(np.float32))]


def test_store_roundtrip_is_a_view(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _arrays(rng)
    store = attmemo.MemmapStore.write(tmp_path / "db", iter(arrays), {"key": "x"})
    store = attmemo.MemmapStore.open(tmp_path / "db", meta={"key": "x"})
    for name, arr in arrays:
        got = store[name]
        np.testing.assert_array_equal(got, arr)
        assert np.shares_memory(got, store.mapping), "a lookup must be a view of the memory map, not a copy"
        assert not got.flags.writeable
        assert got.ctypes.data % attmemo.ALIGN == 0
    header = json.loads((tmp_path / "db.json").read_text())
    assert header["format"] == attmemo.FORMAT and header["version"] == attmemo.VERSION
    assert len(header["sha256"]) == 64


def test_store_detects_corruption_mismatch_and_rebuilds(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _arrays(rng)
    path = tmp_path / "db"
    attmemo.MemmapStore.write(path, iter(arrays), {"key": "x"})
    # meta (input key) mismatch
    with pytest.raises(attmemo.StoreError, match="other inputs"):
        attmemo.MemmapStore.open(path, meta={"key": "y"})
    # flip one byte of the data: checksum mismatch
    raw = bytearray((tmp_path / "db.bin").read_bytes())
    raw[10] ^= 0xFF
    (tmp_path / "db.bin").write_bytes(bytes(raw))
    with pytest.raises(attmemo.StoreError, match="checksum"):
        attmemo.MemmapStore.open(path, meta={"key": "x"})
    # open_or_build rebuilds it, with a message
    messages = []
    store, rebuilt = attmemo.open_or_build(path, {"key": "x"}, lambda: iter(arrays), log=messages.append)
    assert rebuilt and messages and "rebuilding" in messages[0]
    np.testing.assert_array_equal(store["a"], arrays[0][1])
    store2, rebuilt2 = attmemo.open_or_build(path, {"key": "x"}, lambda: iter(arrays), log=messages.append)
    assert not rebuilt2
    # truncated file, wrong version, garbage header
    (tmp_path / "db.bin").write_bytes((tmp_path / "db.bin").read_bytes()[:-8])
    with pytest.raises(attmemo.StoreError, match="bytes"):
        attmemo.MemmapStore.open(path)
    attmemo.MemmapStore.write(path, iter(arrays), {"key": "x"})
    h = json.loads((tmp_path / "db.json").read_text())
    h["version"] = attmemo.VERSION + 1
    (tmp_path / "db.json").write_text(json.dumps(h))
    with pytest.raises(attmemo.StoreError, match="version"):
        attmemo.MemmapStore.open(path)
    (tmp_path / "db.json").write_text("not json{")
    with pytest.raises(attmemo.StoreError, match="JSON"):
        attmemo.MemmapStore.open(path)


def test_store_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="not storable"):
        attmemo.MemmapStore.write(tmp_path / "db", iter([("o", np.array([{}], dtype=object))]), {})


# ----------------------------------------------------------------------------- masks, embedding
def test_valid_lengths():
    T = 6
    lengths = [6, 3]
    m = torch.zeros(2, 1, 1, T)
    m[1, ..., 3:] = torch.finfo(torch.float32).min
    assert attmemo.valid_lengths(m, 2, T) == lengths
    assert attmemo.valid_lengths(None, 2, T) == [6, 6]
    causal = torch.triu(torch.full((T, T), -float("inf")), 1)[None, None]
    assert attmemo.valid_lengths(causal, 1, T) is None


def test_chunk_embedder_similarity_tracks_input_similarity():
    torch.manual_seed(0)
    H, T, d = 4, 40, 8
    emb = attmemo.ChunkEmbedder(H, d, n_chunks=4, dim=64, seed=0)
    pop = torch.randn(20, H, T, d)
    emb.fit(0, emb.raw(pop, [T] * 20).numpy())
    q = torch.randn(1, H, T, d)
    near = q + 0.01 * torch.randn_like(q)
    far = torch.randn(1, H, T, d)
    e = emb.embed(0, torch.cat([q, near, far]), [T] * 3)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > 0.99
    assert e[0] @ e[2] < 0.6
    # a permutation of the tokens changes the positional summary
    perm = q[:, :, torch.randperm(T)]
    assert e[0] @ emb.embed(0, perm, [T])[0] < 0.9


# ----------------------------------------------------------------------------- database + engine
def _fake_captures(qs, ks, scale, lengths):
    def gen():
        for q, k, L in zip(qs, ks, lengths):
            p = torch.softmax(q[:, :L] @ k[:, :L].transpose(-1, -2) * scale, -1)
            yield L, {0: (q, p.numpy()), 1: (q * 2, p.numpy())}
    return gen


def test_engine_hit_reuses_stored_probs_miss_is_exact(tmp_path):
    torch.manual_seed(1)
    H, T, d, N = 2, 12, 8, 6
    scale = d ** -0.5
    qs = [torch.randn(H, T, d) for _ in range(N)]
    ks = [torch.randn(H, T, d) for _ in range(N)]
    lengths = [T] * N
    meta = dict(key="fake", n_entries=N)
    db, rebuilt = attmemo.build_database(tmp_path / "db", meta, _fake_captures(qs, ks, scale, lengths),
                                         prob_layers=[0], key_layers=[0, 1], n_heads=H, d_head=d,
                                         n_chunks=3, dim=16, log=lambda m: None)
    assert rebuilt and db.n_entries == N and not db.has_probs(1)
    eng = attmemo.MemoEngine(db, memo_layers=[0, 1], threshold=0.99)
    assert eng.memo_layers == {0}  # layer 1 has no stored probabilities
    # a near-duplicate of entry 2 (same q, different k): a hit returns stored_probs @ v
    v = torch.randn(1, H, T, d)
    k_new = torch.randn(1, H, T, d)
    out = eng(qs[2][None], k_new, v, None, scale, 0)
    stored = torch.softmax(qs[2] @ ks[2].transpose(-1, -2) * scale, -1)
    torch.testing.assert_close(out[0], stored @ v[0], rtol=1e-5, atol=1e-6)
    assert eng.hits[0] == 1
    # a fresh input: a miss, exact attention
    q_new = torch.randn(1, H, T, d)
    out = eng(q_new, k_new, v, None, scale, 0)
    torch.testing.assert_close(out, attention_torch(q_new, k_new, v, scale=scale), rtol=1e-5, atol=1e-6)
    assert eng.hits[0] == 1 and eng.lookups[0] == 2
    # a non-memoised layer is always exact
    out = eng(qs[2][None], k_new, v, None, scale, 3)
    torch.testing.assert_close(out, attention_torch(qs[2][None], k_new, v, scale=scale), rtol=1e-5, atol=1e-6)


def test_engine_batch_with_padding_and_length_check(tmp_path):
    torch.manual_seed(2)
    H, T, d = 2, 10, 4
    scale = 0.5
    qs = [torch.randn(H, T, d) for _ in range(3)]
    ks = [torch.randn(H, T, d) for _ in range(3)]
    lengths = [10, 7, 7]
    db, _ = attmemo.build_database(tmp_path / "db", dict(key="pad", n_entries=3),
                                   _fake_captures(qs, ks, scale, lengths), prob_layers=[0], key_layers=[0],
                                   n_heads=H, d_head=d, n_chunks=2, dim=16, log=lambda m: None)
    eng = attmemo.MemoEngine(db, [0], threshold=0.999)
    # batch: row 0 = entry 1 (length 7, padded to 10) -> hit; row 1 = fresh full-length -> miss
    q = torch.stack([qs[1], torch.randn(H, T, d)])
    k = torch.randn(2, H, T, d)
    v = torch.randn(2, H, T, d)
    mask = torch.zeros(2, 1, 1, T)
    mask[0, ..., 7:] = torch.finfo(torch.float32).min
    out = eng(q, k, v, mask, scale, 0)
    p1 = torch.softmax(qs[1][:, :7] @ ks[1][:, :7].transpose(-1, -2) * scale, -1)
    torch.testing.assert_close(out[0, :, :7], p1 @ v[0, :, :7], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out[1], attention_torch(q[1:], k[1:], v[1:], scale=scale)[0], rtol=1e-5, atol=1e-6)
    assert eng.hits[0] == 1 and eng.lookups[0] == 2
    # same embedding but a different valid length cannot hit (the stored matrix has another shape)
    assert db.search(0, db.embedder.embed(0, qs[1][None], [7])[0], 9) == (-np.inf, -1)


def test_decide_layers_and_reduction_stats():
    costs = {0: dict(recompute=10.0, fetch=0.5, reuse_pv=1.5, lookup=1.0),
             1: dict(recompute=10.0, fetch=0.5, reuse_pv=1.5, lookup=1.0)}
    dec = attmemo.decide_layers(costs, {0: 0.5, 1: 0.1})
    assert dec[0]["memoise"] and dec[0]["expected_saving"] == pytest.approx(0.5 * 8 - 1)
    assert not dec[1]["memoise"]  # 0.1 * 8 - 1 < 0
    base = np.array([[1.0, 1.0], [2.0, 2.0]])
    memo = np.array([[0.5, 0.5], [1.5, 1.5]])
    st = attmemo.reduction_stats(base, memo)
    np.testing.assert_allclose(st["per_rep"], [50.0, 25.0])
    assert st["q1"] <= st["median"] <= st["q3"]


def test_interleaved_latency_alternates_order():
    calls = []
    fns = {"a": lambda x: calls.append(("a", x)), "b": lambda x: calls.append(("b", x))}
    out = attmemo.interleaved_latency(fns, [0, 1], reps=2, warmup=0)
    assert out["a"].shape == (2, 2) and set(out) == {"a", "b", "a@cpu", "b@cpu"}
    assert np.all(out["a"] >= 0) and np.all(out["b@cpu"] >= 0)
    assert [c[0] for c in calls] == ["a", "b", "b", "a", "b", "a", "a", "b"]


def test_edit_text_is_small():
    rng = np.random.default_rng(0)
    text = " ".join(f"w{i}" for i in range(50))
    edited = attmemo.edit_text(text, 2, rng)
    assert edited != text
    a, b = text.split(), edited.split()
    assert abs(len(a) - len(b)) <= 2
    assert sum(x != y for x, y in zip(a, b)) <= 50


def test_batched_raw_embedding_equals_per_row():
    torch.manual_seed(3)
    emb = attmemo.ChunkEmbedder(3, 4, n_chunks=5, dim=8)
    q = torch.randn(2, 3, 17, 4)
    fast = emb.raw(q, [17, 17])
    slow = torch.stack([emb.raw(q[b:b + 1], [16])[0] for b in range(2)])  # other length -> per-row path
    assert not torch.allclose(fast, slow)
    per_row = torch.cat([emb.raw(torch.cat([q[b:b + 1], q[b:b + 1, :, :16].new_zeros(1, 3, 17, 4)]), [17, 16])[:1]
                         for b in range(2)])
    torch.testing.assert_close(fast, per_row)
    # chunk means by hand for row 0
    bounds = np.linspace(0, 17, 6).round().astype(int)
    hand = torch.stack([q[0, :, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])])  # (C, H, d)
    torch.testing.assert_close(fast[0], hand.reshape(-1))


@pytest.fixture(scope="module")
def encoder():
    models = pytest.importorskip("attnlib.models")
    try:
        return models.load_encoder()
    except models.ModelFilesMissing as exc:
        pytest.skip(str(exc))


def test_engine_in_the_real_model(encoder, tmp_path):
    """Real MiniLM: stored inputs re-queried hit in every layer and reproduce the exact hidden states
    (their stored probabilities ARE the exact ones); an unrelated input misses and is exact too."""
    from attnlib import models

    rm = encoder
    stored = ["the cat sat on the mat and looked at the birds in the garden for a long time",
              "stock markets fell sharply on monday as investors worried about rising interest rates"]
    fresh = "my grandmother used to bake bread every sunday morning before church"
    db, _ = attmemo.build_database(tmp_path / "db", dict(key=attmemo.input_key(stored), n_entries=2),
                                   attmemo.capture_rows(rm, stored, 32), prob_layers=range(rm.n_layers),
                                   key_layers=range(rm.n_layers), n_heads=rm.n_heads, d_head=rm.d_head,
                                   log=lambda m: None)
    eng = attmemo.MemoEngine(db, range(rm.n_layers), threshold=0.999)
    batch = models.encode(rm, stored, 32)  # padded batch of two different lengths
    exact = models.logits(rm, batch)
    memo = models.logits(rm, batch, attn_fn=eng)
    assert eng.hit_rate() == 1.0 and sum(eng.lookups.values()) == 2 * rm.n_layers
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(memo[valid], exact[valid], rtol=1e-4, atol=1e-4)
    eng.reset()
    b2 = models.encode(rm, [fresh], 32)
    torch.testing.assert_close(models.logits(rm, b2, attn_fn=eng), models.logits(rm, b2), rtol=1e-4, atol=1e-4)
    assert eng.hit_rate() == 0.0
    # measured per-layer costs are positive and the decision follows the model
    cap = models.capture(rm, models.encode(rm, [stored[0]], 32))[0]
    c = attmemo.measure_layer_costs(db, 0, cap.q, cap.k, cap.v, cap.mask, cap.scale, reps=3)
    assert all(c[k] > 0 for k in ("recompute", "embed", "search", "reuse_pv"))
    assert attmemo.decide_layers({0: c}, {0: 0.0})[0]["memoise"] is False  # never hits: lookup is pure cost


def test_opening_a_database_keeps_torch_threads(tmp_path):
    before = torch.get_num_threads()
    qs = [torch.randn(2, 6, 4) for _ in range(2)]
    attmemo.build_database(tmp_path / "db", dict(key="t", n_entries=2), _fake_captures(qs, qs, 0.5, [6, 6]),
                           prob_layers=[0], key_layers=[0], n_heads=2, d_head=4, n_chunks=2, dim=8, log=lambda m: None)
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------- claims v2 helpers
def test_population_times_weights_the_two_populations():
    t = np.array([[1.0, 3.0, 10.0], [2.0, 4.0, 20.0]])
    near = np.array([True, True, False])
    assert np.allclose(attmemo.population_times(t, near, 1.0), [2.0, 3.0])
    assert np.allclose(attmemo.population_times(t, near, 0.0), [10.0, 20.0])
    assert np.allclose(attmemo.population_times(t, near, 0.25), [0.25 * 2 + 0.75 * 10, 0.25 * 3 + 0.75 * 20])
    with pytest.raises(ValueError, match="near_fraction"):
        attmemo.population_times(t, near, 1.5)
    with pytest.raises(ValueError, match="no fresh"):
        attmemo.population_times(t[:, :2], near[:2], 0.5)


def test_average_reduction_closed_forms():
    from attnlib import stats
    rng = np.random.default_rng(0)
    # constant latencies: the interval collapses on the closed form 100 * (1 - memo / base), averaged over cells
    cells = [(np.full(15, 2.0), np.full(15, 1.5)), (np.full(15, 4.0), np.full(15, 4.4))]
    point, iv = attmemo.average_reduction(cells)
    assert point == pytest.approx((25.0 - 10.0) / 2) and iv.lo == pytest.approx(point) and iv.hi == pytest.approx(point)
    # one cell: the same as stats.latency_ratio (same seed, same resampling)
    b, m = rng.uniform(1, 2, 20), rng.uniform(0.8, 1.6, 20)
    p1, iv1 = attmemo.average_reduction([(b, m)])
    p2, iv2 = stats.latency_ratio(b, m, as_percent_reduction=True)
    assert p1 == pytest.approx(p2) and iv1.lo == pytest.approx(iv2.lo) and iv1.hi == pytest.approx(iv2.hi)
    assert iv1.lo < p1 < iv1.hi and iv1.n == 20
    with pytest.raises(ValueError, match="same number of repetitions"):
        attmemo.average_reduction([(b, m), (b[:5], m[:5])])
    with pytest.raises(ValueError, match="positive"):
        attmemo.average_reduction([(b, -m)])


def test_load_check_reports_and_flags(capsys):
    out = attmemo.load_check(sample_s=0.2)
    assert {"busy_other", "load_avg_1m", "logical_cpus", "loaded", "waited_s"} <= set(out)
    assert 0.0 <= out["busy_other"] <= 1.0 or np.isnan(out["busy_other"])
    msgs = []
    forced = attmemo.load_check(sample_s=0.1, max_busy=1e-9, log=msgs.append)   # any activity counts as load
    if forced["loaded"]:
        assert msgs and "WARNING" in msgs[0] and "LOADED" in msgs[0]
    with pytest.raises(ValueError, match="max_busy"):
        attmemo.load_check(max_busy=2)


# ---------------------------------------------------------------- the memoised encoder (issue 16)
def test_tv_distance_closed_forms():
    p = torch.softmax(torch.randn(2, 5, 5), -1)
    assert attmemo.tv_distance(p, p) == 0.0
    a = torch.zeros(1, 2, 3); a[..., 0] = 1.0
    b = torch.zeros(1, 2, 3); b[..., 1] = 1.0
    assert attmemo.tv_distance(a, b) == pytest.approx(1.0)          # disjoint rows
    c = torch.full((1, 2, 2), 0.5); d = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    assert attmemo.tv_distance(c, d) == pytest.approx((0.5 + 0.0) / 2)   # row TVs 0.5 and 0, mean
    with pytest.raises(ValueError, match="different shapes"):
        attmemo.tv_distance(p, p[:, :4, :4])


def test_tv_calibration_is_monotone_and_gives_a_threshold():
    x = np.array([0.0, 0.001, 0.01, 0.05, 0.1, 0.3])
    y = np.array([0.0, 0.02, 0.08, 0.2, 0.4, 0.5])
    cal = attmemo.TVCalibration(x, y)
    pred = cal.predict(np.linspace(0, 0.3, 50))
    assert np.all(np.diff(pred) >= -1e-12)
    c = cal.cos_threshold(0.08)
    assert cal.predict(1 - c)[0] <= 0.08 + 1e-9 and 1 - c >= 0.01 - 1e-9 and 1 - c < 0.05
    assert cal.cos_threshold(-1.0) == float("inf")      # nothing predicts a negative TV: nothing hits
    with pytest.raises(ValueError):
        attmemo.TVCalibration([0.1], [0.2])


def test_shingles_and_nearest_jaccard_exact():
    a = "buy cheap watches now and save big on every order today only"
    db = [a, "completely unrelated text about gardening and birds in spring time", a.replace("today", "tomorrow")]
    q = [a.replace("order", "purchase"), "nothing in common with anything at all here friend"]
    best, arg = attmemo.nearest_jaccard([attmemo.shingles(t) for t in q], [attmemo.shingles(t) for t in db])
    sa, sq = attmemo.shingles(a), attmemo.shingles(q[0])
    assert arg[0] == 0 and best[0] == pytest.approx(len(sa & sq) / len(sa | sq))
    assert arg[1] == -1 and best[1] == 0.0
    assert attmemo.shingles("one two", k=5) == {"one two"}


def test_input_index_matches_same_length_only_and_respects_the_threshold():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(6, 8 * 4)).astype(np.float32)
    lengths = np.array([10, 10, 10, 12, 12, 12])
    idx = attmemo.InputIndex(4, raw, lengths)
    emb = idx.embed_raw(raw[[1, 4]])
    cos, ent = idx.search(emb, [10, 12])
    assert list(ent) == [1, 4] and np.allclose(cos, 1.0, atol=1e-5)
    assert idx.match(emb, [10, 12]) == [-1, -1]          # no threshold set: nothing hits
    idx.cos_min = 0.999
    assert idx.match(emb, [10, 12]) == [1, 4]
    assert idx.match(emb, [11, 12]) == [-1, 4]           # no entry of length 11


def _small_setup(encoder, tmp_path, texts, L=24):
    from attnlib import models
    fe = attmemo.FastEncoder(encoder)
    raws, lengths = attmemo.layer_raws(fe, texts, L, layers=range(encoder.n_layers))
    maps = lambda part: attmemo.maps_of(fe, [texts[e] for e in part], L)   # noqa: E731
    store, built = attmemo.MapStore.build(tmp_path / "maps", dict(key=attmemo.input_key(texts)), range(len(texts)),
                                          maps, log=lambda m: None)
    return fe, raws, lengths, store, models


def test_fast_encoder_equals_the_model_and_a_hit_skips_q_and_k(encoder, tmp_path):
    """The layer-by-layer forward equals the Hugging Face forward; a hit on a stored input reproduces the
    exact output from its stored maps WITHOUT calling the Q and K projections; a miss is exact."""
    texts = ["the cat sat on the mat and looked at the birds in the garden",
             "stock markets fell sharply on monday as investors worried about rates",
             "my grandmother used to bake bread every sunday morning before church"]
    fe, raws, lengths, store, models = _small_setup(encoder, tmp_path, texts[:2])
    batch = models.encode(encoder, texts, 24)               # padded batch, three lengths
    with torch.no_grad():
        ref = encoder.model(**batch).last_hidden_state
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(fe.forward(batch)[valid], ref[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fe.forward(batch, attn="sdpa")[valid], ref[valid], rtol=1e-4, atol=1e-4)
    idx = attmemo.InputIndex(encoder.d_model, raws[0], lengths)
    idx.cos_min = 0.9999
    memo = attmemo.PerInputMemo(store, idx, range(encoder.n_layers))
    calls = {"q": 0}
    wq = fe.layers[0]["wq"]
    orig = fe._scores_probs
    def counting(W, *a):
        calls["q"] += W["wq"] is wq
        return orig(W, *a)
    fe._scores_probs = counting
    try:
        b1 = models.encode(encoder, texts[:1], 24)
        out = fe.forward(b1, memo=memo)
        assert calls["q"] == 0 and memo.hit_rate() == 1.0        # Q/K of layer 0 never computed on the hit
        torch.testing.assert_close(out, ref[:1, :b1["input_ids"].shape[1]], rtol=1e-4, atol=1e-4)
        out3 = fe.forward(batch, memo=memo)                       # two hits + one miss in one padded batch
        torch.testing.assert_close(out3[valid], ref[valid], rtol=1e-4, atol=1e-4)
        assert calls["q"] == 1                                    # only the miss row computed layer-0 Q/K
    finally:
        fe._scores_probs = orig
    assert memo.matched[-3:][2] == -1 and memo.matched[-3:][:2] == [0, 1]
    # the stored maps are views of the memory map
    assert np.shares_memory(store.probs(0, 0), store.store.mapping)


def test_per_layer_memo_counts_hits_per_layer_and_map_store_fallback(encoder, tmp_path):
    texts = ["the cat sat on the mat and looked at the birds in the garden",
             "stock markets fell sharply on monday as investors worried about rates"]
    fe, raws, lengths, store, models = _small_setup(encoder, tmp_path, texts)
    li = attmemo.LayerIndex(encoder.d_model, raws, lengths)
    for l in range(encoder.n_layers):
        li.cos_min[l] = 0.9999
    memo = attmemo.PerLayerMemo(store, li, range(encoder.n_layers), timing=True)
    b = models.encode(encoder, texts[1:], 24)
    out = fe.forward(b, memo=memo)
    assert [memo.hit_rate(l) for l in range(encoder.n_layers)] == [1.0] * encoder.n_layers
    torch.testing.assert_close(out, fe.forward(b), rtol=1e-4, atol=1e-4)
    assert memo.times["embed"] > 0 and memo.times["search"] > 0
    # an entry that was not materialised comes from the fallback, once
    calls = []
    small, _ = attmemo.MapStore.build(tmp_path / "one", dict(k=1), [0], lambda part: attmemo.maps_of(fe, [texts[e] for e in part], 24),
                                      fallback=lambda part: calls.append(part) or attmemo.maps_of(fe, [texts[e] for e in part], 24),
                                      log=lambda m: None)
    np.testing.assert_allclose(small.probs(1, 2), store.probs(1, 2))
    small.probs(1, 3)
    assert calls == [[1]]
    with pytest.raises(KeyError):
        attmemo.MapStore(small.store).probs(1, 0)


def test_time_cell_returns_every_variant(encoder, tmp_path):
    texts = ["the cat sat on the mat", "stock markets fell sharply on monday"]
    fe, raws, lengths, store, models = _small_setup(encoder, tmp_path, texts, L=16)
    idx = attmemo.InputIndex(encoder.d_model, raws[0], lengths)
    memo = attmemo.PerInputMemo(store, idx, range(encoder.n_layers))
    batches = [models.encode(encoder, [t], 16) for t in texts]
    t = attmemo.time_cell(fe, batches, 2, memo_input=memo)
    assert {"base", "memo", "sdpa", "memo_sdpa"} <= set(t) and t["base"].shape == (2, 2) and np.all(t["memo"] > 0)
    # a subset of variants, timed with two threads; the count before is restored afterwards
    before = torch.get_num_threads()
    seen = []
    fe_forward = fe.forward
    fe.forward = lambda *a, **k: seen.append(torch.get_num_threads()) or fe_forward(*a, **k)
    try:
        t2 = attmemo.time_cell(fe, batches, 2, memo_input=memo, variants=("sdpa", "memo_sdpa"), threads=2)
    finally:
        fe.forward = fe_forward
    assert {k for k in t2 if "@" not in k} == {"sdpa", "memo_sdpa"} and t2["sdpa"].shape == (2, 2)
    assert set(seen) == {2} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="not available"):
        attmemo.time_cell(fe, batches, 1, variants=("memo",))
    with pytest.raises(ValueError, match="unknown"):
        attmemo.time_cell(fe, batches, 1, memo_input=memo, variants=("fast",))


def test_count_stalls_flags_only_outliers_of_the_same_input():
    rng = np.random.default_rng(0)
    # two inputs of very different cost: neither is a stall, each is compared with its own repetitions
    base = np.stack([0.01 + 1e-4 * rng.random(15), 0.05 + 1e-4 * rng.random(15)], 1)
    t = {"base": base, "memo": 0.9 * base, "base@cpu": 100 * base}
    assert attmemo.count_stalls(t) == 0
    t["memo"] = t["memo"].copy()
    t["memo"][4, 0] = 0.5                                     # one call lost the CPU for half a second
    t["base@cpu"][0, 0] = 99.0                                # CPU-time columns are not judged
    assert attmemo.count_stalls(t) == 1 and attmemo.count_stalls(t, factor=60) == 0
    with pytest.raises(ValueError):
        attmemo.count_stalls(t, factor=1.0)
    with pytest.raises(ValueError, match="reps, n_inputs"):
        attmemo.count_stalls({"base": np.ones(3)})


def test_torch_threads_restores_and_batch_groups_cycle():
    before = torch.get_num_threads()
    with attmemo.torch_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with attmemo.torch_threads(None) as n:
        assert n == before
    with pytest.raises(ValueError):
        with attmemo.torch_threads(-1):
            pass
    groups, distinct = attmemo.batch_groups([5, 6, 7], 2, 2)
    assert groups == [[5, 6], [7, 5]] and distinct == 3
    groups, distinct = attmemo.batch_groups(range(10), 4, 2)
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7]] and distinct == 8
    groups, distinct = attmemo.batch_groups([1], 3, 1)       # a pool smaller than a batch: repeated ids
    assert groups == [[1, 1, 1]] and distinct == 1
    with pytest.raises(ValueError, match="non-empty"):
        attmemo.batch_groups([], 2, 1)


def test_siamese_keys_learn_a_distance():
    """Toy data whose 'TV' is a known function of the inputs: the trained distance tracks it better than
    the untrained network, and the faiss search returns the nearest by predicted distance."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    pairs = np.array([(i, j) for i in range(60) for j in range(i + 1, 60)])[::3]
    tv = 0.2 * np.linalg.norm(x[pairs[:, 0], :2] - x[pairs[:, 1], :2], axis=1)   # depends on 2 of 6 features
    sk = attmemo.SiameseKeys(6, hidden=32, dim=4, seed=0)
    losses = sk.fit(x, pairs, tv, epochs=300, lr=1e-2)
    assert losses[-1] < 0.2 * losses[0]
    pred = sk.predict_tv(x[pairs[:, 0]], x[pairs[:, 1]])
    assert np.corrcoef(pred, tv)[0, 1] > 0.9
    search = sk.index(x, np.full(60, 8))
    d, ent = search(x[:5], np.full(5, 8))
    assert list(ent) == list(range(5)) and np.allclose(d, 0, atol=1e-3)
