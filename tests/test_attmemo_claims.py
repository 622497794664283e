"""Tests of the lean engine, the R(h) factors with process-level intervals, the bench runner and
AttMEMO's claims module (issue 26)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlib import attmemo
from attnlib.attmemo import bench, paper_claims, rmodel
from attnlib.attmemo.engine import CeilingMemo, LeanIndex, LeanMemo, WarmMaps, choose_backend
from attnlib.claims import Recorder


# ----------------------------------------------------------------------------- R(h) model
def test_reduction_and_hit_rate_needed_closed_forms():
    assert rmodel.reduction(0.0, 0.2, 0.05) == pytest.approx(-0.05)        # all misses: the miss cost
    assert rmodel.reduction(1.0, 0.2, 0.05) == pytest.approx(0.2)          # all hits: the hit saving
    h = rmodel.hit_rate_needed(0.1, 0.2, 0.05)
    assert rmodel.reduction(h, 0.2, 0.05) == pytest.approx(0.1)
    assert rmodel.hit_rate_needed(0.22, 0.2, 0.0) == float("inf")         # s below the target: unreachable
    assert rmodel.hit_rate_needed(0.22, 0.44) == pytest.approx(0.5)       # ceiling: target / c
    with pytest.raises(ValueError):
        rmodel.reduction(1.5, 0.2, 0.1)


def _results(P=3, R=6, spread=0.0, seed=0, cells=((128, 1, 1), (512, 1, 1), (128, 4, 1)), base=1.0,
             s=0.2, c=0.25, m=0.03, sdpa=False):
    """Synthetic process results: per process a multiplicative offset (spread) on every variant."""
    rng = np.random.default_rng(seed)
    out = []
    for p in range(P):
        off = 1 + spread * (p - (P - 1) / 2)
        rows = []
        for (L, B, T) in cells:
            noise = lambda: rng.normal(1, 0.002, (R, 2))   # noqa: E731
            t = {"base": base * noise(), "hit": base * (1 - s) * off * noise(), "miss": base * (1 + m) * noise(),
                 "ceiling": base * (1 - c) * off * noise()}
            if sdpa:
                t["sdpa"], t["miss_sdpa"] = 0.9 * base * noise(), 0.9 * base * (1 + m) * noise()
            rows.append(dict(key=bench.cell_key(L, B, T), L=L, B=B, threads=T, busy_other=0.01, flagged=False,
                             times={k: v.tolist() for k, v in t.items()}))
        out.append(dict(cells=rows))
    return out


def test_factor_draws_recover_the_factors_and_resample_processes():
    tot = rmodel.cell_totals(_results())
    fd = rmodel.FactorDraws(tot, n_resamples=400)
    for k in tot:
        assert fd.point[k]["s"] == pytest.approx(0.2, abs=0.01)
        assert fd.point[k]["c"] == pytest.approx(0.25, abs=0.01)
        assert fd.point[k]["m"] == pytest.approx(0.03, abs=0.01)
    v, iv = fd.reduction("L128_B1_T1", 0.1)
    assert v == pytest.approx(100 * (0.1 * fd.point["L128_B1_T1"]["s"] - 0.9 * fd.point["L128_B1_T1"]["m"]))
    assert iv.lo <= v <= iv.hi and "processes" in iv.method and iv.n == 3
    # processes that disagree widen the interval: it resamples processes, not only repetitions
    wide = rmodel.FactorDraws(rmodel.cell_totals(_results(spread=0.05)), n_resamples=400)
    w0 = iv.hi - iv.lo
    _, iv_w = wide.reduction("L128_B1_T1", 0.1)
    assert iv_w.hi - iv_w.lo > 3 * w0
    # the hit rate's own uncertainty widens it further
    _, iv_h = fd.reduction("L128_B1_T1", 0.1, rmodel.hit_rate_draws(10, 100, 400))
    assert iv_h.hi - iv_h.lo > w0
    m, miv = fd.mean_reduction(["L128_B1_T1", "L512_B1_T1"], [0.1, 0.3])
    assert m == pytest.approx(np.mean([fd.reduction("L128_B1_T1", 0.1)[0], fd.reduction("L512_B1_T1", 0.3)[0]]))
    assert miv.lo <= m <= miv.hi


def test_cell_totals_refuses_unequal_processes_and_missing_variants():
    res = _results(P=2)
    res[1]["cells"][0]["times"]["base"] = res[1]["cells"][0]["times"]["base"][:3]
    with pytest.raises(ValueError, match="same repetitions"):
        rmodel.cell_totals(res)
    res = _results(P=2)
    del res[0]["cells"][0]["times"]["ceiling"]
    with pytest.raises(ValueError, match="variants"):
        rmodel.cell_totals(res)


def test_busy_meter_is_a_share():
    m = bench.BusyMeter().start()
    sum(i * i for i in range(200000))   # this process's own work is not counted
    b = m.stop()
    assert 0.0 <= b <= 1.0 or np.isnan(b)


# ----------------------------------------------------------------------------- claims module
def _hits():
    return {"as arrives": {128: (70, 1000), 512: (60, 1000)}, "de-duplicated": {128: (5, 800), 512: (4, 800)},
            "campaign re-sends": {128: (65, 200), 512: (56, 200)}}


def _ctx():
    return dict(model="m", n_db=100, db_gib=0.5, lengths=[128, 512], cpu="cpu", logical_cpus=2, tau=0.1,
                hits_tau={0.05: {128: (50, 1000), 512: (40, 1000)}, 0.2: {128: (90, 1000), 512: (80, 1000)}},
                machine=dict(cpu="cpu"), max_busy=0.1, variant_note="test")


def test_latency_claims_declare_direction_axes_and_the_paper_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_PUBLISH", str(tmp_path))
    fd = rmodel.FactorDraws(rmodel.cell_totals(_results(sdpa=True, cells=((128, 1, 1), (512, 1, 1), (128, 4, 1),
                                                                           (128, 1, 2)))), n_resamples=200)
    kws = paper_claims.latency_claims(fd, _hits(), _ctx())
    rec = Recorder("t", "AttMEMO", profile="quick")
    claims = {kw["claim_id"]: rec.claim(**kw) for kw in kws}
    assert {"avg_latency_reduction", "avg_latency_reduction_ceiling", "avg_latency_reduction_vs_sdpa",
            "avg_latency_reduction_hits", "max_latency_reduction"} <= set(claims)
    for c in claims.values():
        if c.role == "headline":
            assert c.direction and (c.axes or c.no_axes)
            for a in c.axes:   # the headline scenario is at an option the paper is consistent with
                assert c.headline_scenario[a.name] in a.plausible
    head = claims["avg_latency_reduction"]
    assert head.headline_scenario["stream"] == paper_claims.HEADLINE_STREAM
    assert head.headline_scenario["length (tokens)"] == "mean 128-512"
    # R at the real stream: mean over lengths of h s - (1 - h) m
    want = np.mean([100 * rmodel.reduction(h, fd.point[k]["s"], fd.point[k]["m"])
                    for k, h in (("L128_B1_T1", 0.07), ("L512_B1_T1", 0.06))])
    assert head.reproduced == pytest.approx(want, rel=1e-3)
    # every stream x cell is a scenario; the campaign stream reduces more than the de-duplicated one
    sc = {(s["options"]["stream"], s["options"]["length (tokens)"], s["options"]["batch"],
           s["options"]["torch threads"]): s["value"] for s in head.scenarios}
    assert sc[("campaign re-sends", "128", "1", "1")] > sc[("de-duplicated", "128", "1", "1")]
    assert len(head.scenarios) == 3 * (4 + 1)
    assert claims["avg_latency_reduction_ceiling"].reproduced > head.reproduced   # the ceiling bounds the engine
    assert head.params["h_for_22"]["128"] is None   # s = 0.2 < 22%: unreachable
    assert head.params["h_for_22_ceiling"]["128"] == pytest.approx(0.22 / fd.point["L128_B1_T1"]["c"])
    assert "FLAGGED" not in head.description
    rec.save()


def test_a_busy_cell_flags_every_latency_claim():
    res = _results()
    res[1]["cells"][2]["flagged"], res[1]["cells"][2]["busy_other"] = True, 0.4
    fd = rmodel.FactorDraws(rmodel.cell_totals(res), n_resamples=100)
    kws = paper_claims.latency_claims(fd, _hits(), _ctx())
    assert all("FLAGGED" in kw["description"] and "FLAGGED" in kw["note"] for kw in kws)
    assert kws[0]["params"]["flagged_cells"] == ["L128_B4_T1"]


def test_latency_claims_refuse_missing_streams_or_headline_cells():
    fd = rmodel.FactorDraws(rmodel.cell_totals(_results(cells=((128, 1, 1), (512, 4, 1)))), n_resamples=50)
    with pytest.raises(ValueError, match="batch-1"):
        paper_claims.latency_claims(fd, _hits(), _ctx())
    fd = rmodel.FactorDraws(rmodel.cell_totals(_results()), n_resamples=50)
    with pytest.raises(ValueError, match="stream"):
        paper_claims.latency_claims(fd, {"as arrives": _hits()["as arrives"]}, _ctx())


def test_stream_hits_partition_the_queries():
    hit = np.array([1, 0, 1, 0, 0, 1], bool)
    near = np.array([1, 1, 0, 0, 0, 1], bool)
    s = paper_claims.stream_hits(hit, near)
    assert s["as arrives"] == (3, 6) and s["campaign re-sends"] == (2, 3) and s["de-duplicated"] == (1, 3)
    with pytest.raises(ValueError):
        paper_claims.stream_hits(hit, np.ones(6, bool))


def test_accuracy_claims_are_one_sided_with_a_threshold_axis(tmp_path, monkeypatch):
    from attnlib import stats
    rows = {t: dict(loss=l, iv=stats.Interval(l - 0.1, l + 0.1, "paired bootstrap", 1000), hit=0.07, n_hit=70, flipped=2)
            for t, l in ((0.05, 0.0), (0.1, 0.1), (0.2, 0.2))}
    high = dict(loss=0.7, iv=stats.Interval(-0.3, 1.8, "paired bootstrap", 1000), hit=0.5, n_hit=500, flipped=40, tau=0.3)
    rec = Recorder("t", "AttMEMO", profile="quick")
    cs = [rec.claim(**kw) for kw in paper_claims.accuracy_claims(rows, high, 0.1, dict(_ctx(), n_items=1000, params={}))]
    assert cs[0].direction == "at most" and cs[0].axes[0].name == "hit threshold tau" and cs[0].status == "reproduced"
    assert cs[1].role == "alternative" and cs[1].status == "inconclusive"


# ----------------------------------------------------------------------------- lean engine (real model)
@pytest.fixture(scope="module")
def encoder():
    models = pytest.importorskip("attnlib.models")
    try:
        return models.load_encoder()
    except models.ModelFilesMissing as exc:
        pytest.skip(str(exc))


TEXTS = ["the cat sat on the mat and looked at the birds in the garden",
         "stock markets fell sharply on monday as investors worried about rates",
         "my grandmother used to bake bread every sunday morning before church"]


def test_lean_engine_equals_the_old_engine_and_the_ceiling(encoder, tmp_path):
    from attnlib import models
    fe = attmemo.FastEncoder(encoder)
    L = 24
    raws, lengths = attmemo.layer_raws(fe, TEXTS[:2], L)
    maps = lambda part: attmemo.maps_of(fe, [TEXTS[e] for e in part], L)   # noqa: E731
    store, _ = attmemo.MapStore.build(tmp_path / "maps", dict(key=1), range(2), maps, log=lambda m: None)
    old = attmemo.InputIndex(encoder.d_model, raws[0], lengths)
    old.cos_min = 0.9999
    keys = old.embed_raw(raws[0])
    lean = LeanIndex(old.embedder, keys, lengths, cos_min=0.9999)
    batch = models.encode(encoder, TEXTS, L)                  # padded: two stored inputs + one fresh
    x0 = fe.embeddings(batch)
    ls = batch["attention_mask"].sum(1).tolist()
    np.testing.assert_allclose(lean.embed(x0, ls).numpy(), old.embed(x0, ls), atol=1e-5)
    assert lean.match(x0, ls) == old.match(old.embed(x0, ls), ls) == [0, 1, -1]
    warm = WarmMaps(store, encoder.n_layers)
    assert np.shares_memory(warm.maps(0)[0].numpy(), store.store.mapping)   # a view, not a copy
    ref = fe.forward(batch)
    old_out = fe.forward(batch, memo=attmemo.PerInputMemo(store, old, range(encoder.n_layers)))
    memo = LeanMemo(lean, warm)
    new_out = fe.forward(batch, memo=memo)
    valid = batch["attention_mask"].bool()
    torch.testing.assert_close(new_out[valid], old_out[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(new_out[valid], ref[valid], rtol=1e-4, atol=1e-4)   # exact re-sends: same output
    assert memo.hit_rate() == pytest.approx(2 / 3)
    ceil = CeilingMemo().set_rows([warm.maps(0), warm.maps(1), None])
    torch.testing.assert_close(fe.forward(batch, memo=ceil)[valid], new_out[valid], rtol=1e-6, atol=1e-6)
    miss = LeanMemo(lean, warm, reject=True)
    torch.testing.assert_close(fe.forward(batch, memo=miss), ref, rtol=1e-6, atol=1e-6)
    assert miss.n_hits == 0 and miss.n_inputs == 3
    with pytest.raises(ValueError, match="batch"):
        fe.forward(batch, memo=CeilingMemo().set_rows([None]))


def test_choose_backend_picks_the_faster_exact_search():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((300, 16)).astype(np.float32)
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    name, us = choose_backend(k, k[:5], trials=30)
    assert name in ("matmul", "faiss") and us[name] == min(us.values())
    with pytest.raises(ValueError):
        choose_backend(k, k[:5, :8])


def test_bench_runs_a_cell_in_fresh_processes(encoder, tmp_path):
    """Two fresh processes time one cell: every variant, the hit variant hits, the miss variant misses."""
    fe = attmemo.FastEncoder(encoder)
    long = [" ".join(TEXTS) * 2, " ".join(TEXTS[::-1]) * 2]
    raws, lengths = attmemo.layer_raws(fe, TEXTS, 32)
    ix = attmemo.InputIndex(encoder.d_model, raws[0], lengths)
    ix.cos_min = 0.999
    plan = [dict(L=32, B=1, threads=1, reps=2), dict(L=32, B=2, threads=1, reps=2,
                                                    variants=list(bench.VARIANTS) + ["sdpa", "miss_sdpa"])]
    info = bench.build_bench(tmp_path / "spec", fe, long, plan, {32: ix}, store_path=tmp_path / "maps",
                             log=lambda m: None, trials=10)
    assert info["n_inputs"] == {32: 2}
    res = bench.run_processes(info["spec"], 2, log=lambda m: None)
    assert len({r["pid"] for r in res}) == 2
    tot = rmodel.cell_totals(res)
    assert set(tot) == {"L32_B1_T1", "L32_B2_T1"} and tot["L32_B2_T1"]["T"].shape == (2, 2, 6)
    assert all(0 <= b <= 1 for r in res for c in r["cells"] for b in [c["busy_other"]])
