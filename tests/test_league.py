"""The league: the template reproduces the dense baseline in closed form, each technique's counted work
equals its paper module's own count on a small real capture, n/a rows carry a reason, the matched knob
follows the budget rule on the interval's upper end."""
import math

import numpy as np
import pytest

from attnlib import attention, models
from attnlib.league import experiment, table, techniques
from attnlib.league.template import Work, cost, template
from attnlib.league.workloads import BYTES, Workload, dense_counts, other_work, spills, workloads


def test_bad_template_and_work_raise_naming_the_problem():
    with pytest.raises(ValueError, match="unknown platform"):
        template("phone")
    with pytest.raises(ValueError, match="unknown main memory"):
        template("edge", "SRAM")
    with pytest.raises(ValueError, match="macs must be a finite count"):
        Work(macs=-1)
    with pytest.raises(ValueError, match="need ReRAM"):
        cost(Work(in_memory_macs=1), template("edge"))
    with pytest.raises(ValueError, match="unknown phase"):
        Workload("x", "x", "minilm-l6", "train", 128, "accuracy", "t")
    with pytest.raises(ValueError, match="unknown technique"):
        techniques.not_applicable("magic", workloads()["enc-128"], template("edge"))


@pytest.mark.parametrize("key", ["enc-128", "enc-512", "dec-prefill-2K", "dec-decode-2K", "dec-decode-8K"])
@pytest.mark.parametrize("platform", ["edge", "cloud"])
def test_everything_off_reproduces_the_dense_baseline_in_closed_form(key, platform):
    """With every technique off, the template's work is attention.attention_cost's for the shape."""
    w, tpl = workloads()[key], template(platform)
    s = w.shape
    ref = attention.attention_cost(1, s.heads, w.rows, w.context, s.d_head, bytes_per_element=BYTES,
                                   causal=w.causal, kv_heads=s.n_kv_heads)
    work = techniques.technique_work("dense", {}, dense_counts(w), w, tpl)
    assert work.macs == pytest.approx(s.layers * ref.flops / 2)
    assert work.vector_ops == pytest.approx(s.layers * ref.softmax_ops)
    spill = s.layers * ref.bytes_scores / 2 if spills(dense_counts(w), tpl) else 0.0
    assert work.read_bytes + work.write_bytes == pytest.approx(s.layers * ref.bytes_qkvo + 2 * spill)
    # FLAT removes exactly the spill and nothing else
    flat = techniques.technique_work("FLAT", {}, dense_counts(w), w, tpl)
    assert flat.macs == work.macs and work.read_bytes - flat.read_bytes == pytest.approx(spill / 1)
    t_dense, t_flat = cost(work, tpl)["seconds"], cost(flat, tpl)["seconds"]
    assert t_flat <= t_dense and (t_flat == t_dense) == (spill == 0)


def test_cost_is_a_roofline_with_stated_parts():
    tpl = template("cloud")
    a = tpl.acc
    c = cost(Work(macs=a.compute.pes * a.compute.clock_hz, read_bytes=a.dram.bandwidth / 2), tpl)
    assert c["seconds"] == pytest.approx(1.0) and c["bound"] == "array"
    assert cost(Work(macs=a.compute.pes * a.compute.clock_hz, read_bytes=a.dram.bandwidth / 2), tpl,
                overlap="sum")["seconds"] == pytest.approx(1.5)
    assert c["energy"]["memory"] == pytest.approx(a.dram.bandwidth / 2 * 8 * 3.9e-12)
    rr = template("cloud", "ReRAM")
    assert cost(Work(write_bytes=1, in_memory_macs=10), rr)["joules"] == pytest.approx(8 * 24.4e-12 + 10 * 0.1e-12)


def test_other_work_counts_every_weight_once():
    w = workloads()["dec-decode-2K"]
    s = w.shape
    o = other_work(w)
    per_layer = s.d_model * (s.heads * s.d_head + 2 * s.n_kv_heads * s.d_head) + s.heads * s.d_head * s.d_model \
        + 3 * s.d_model * s.ffn
    assert o.read_bytes == BYTES * (s.layers * per_layer + 49152 * s.d_model)   # ~135M parameters
    assert 120e6 < o.read_bytes / BYTES < 150e6 and o.macs == o.read_bytes / BYTES


def test_not_applicable_rows_carry_a_reason():
    wls = workloads()
    assert "decode step" in techniques.not_applicable("Token-Picker", wls["enc-128"], template("edge"))
    assert "stream" in techniques.not_applicable("AttMEMO", wls["dec-decode-2K"], template("cloud"))
    assert "ReRAM" in techniques.not_applicable("SPRINT", wls["enc-128"], template("cloud"))
    assert techniques.not_applicable("SPRINT", wls["enc-128"], template("cloud", "ReRAM")) is None
    rows = table.league_rows({}, {"enc-128": wls["enc-128"]}, "cloud", attmemo=None)
    na = {r["technique"]: r["na"] for r in rows if r.get("na")}
    assert set(na) >= {"Token-Picker", "FLAT+Token-Picker", "AttMEMO", "SPRINT", "A3"}
    assert all(reason.strip() for reason in na.values())
    flat = next(r for r in rows if r["technique"] == "FLAT")
    assert flat["speedup"] == pytest.approx(1.0) and flat["loss"] == 0.0  # 128-token logits fit on chip


def _fake_run(losses):
    """A decoder run whose knobs give perplexity ratios exp(loss%) on 4 identical windows."""
    exact = dict(nll=np.full(4, 100.0), tokens=np.full(4, 100.0))
    run = {"exact": exact, "SPRINT": {}}
    for knob, pct in losses.items():
        run["SPRINT"][str(knob)] = dict(nll=exact["nll"] + 100 * math.log1p(pct / 100), tokens=exact["tokens"],
                                        sums={})
    return run


def test_matched_knob_is_the_most_aggressive_within_budget_on_the_upper_end():
    best, rows = experiment.matched_knob(_fake_run({0.99: 0.2, 0.95: 0.9, 0.9: 1.5}), "SPRINT", "perplexity")
    assert best == "0.95" and [r["within"] for r in rows] == [True, True, False]
    best, _ = experiment.matched_knob(_fake_run({0.99: 1.2}), "SPRINT", "perplexity")
    assert best is None


def test_sweep_walks_the_grid_until_the_first_knob_over_the_budget():
    losses = {0.99: 0.2, 0.95: 1.5, 0.9: 0.5}          # 0.9 would pass by chance: never measured
    exact = _fake_run({})["exact"]
    measured = []

    def measure(knob):
        measured.append(knob)
        return _fake_run({knob: losses[knob]})["SPRINT"][str(knob)]

    out = experiment.sweep({"exact": exact}, "SPRINT", list(losses), measure, "perplexity")
    assert measured == [0.99, 0.95] and list(out) == ["0.99", "0.95"]
    best, _ = experiment.matched_knob({"exact": exact, "SPRINT": out}, "SPRINT", "perplexity")
    assert best == "0.99"


def test_a_technique_over_the_budget_at_every_knob_is_not_carried():
    skipped = experiment.carried_knobs(_fake_run({0.995: 1.2, 0.98: 3.0}), ("SPRINT",), "perplexity", "dec-decode-2K")
    assert skipped[0] == {} and "not run" in skipped[1]["SPRINT"] and "dec-decode-2K" in skipped[1]["SPRINT"]
    carried = experiment.carried_knobs(_fake_run({0.995: 0.5, 0.98: 2.0}), ("SPRINT",), "perplexity", "x")
    assert carried == ({"SPRINT": (0.995,)}, {})
    rows = table.league_rows({"dec-decode-8K": {"exact": None, "skipped": skipped[1]}},
                             {"dec-decode-8K": workloads()["dec-decode-8K"]}, "cloud")
    row = next(r for r in rows if r["technique"] == "SPRINT")
    assert row["not_run"] and row["na"] == skipped[1]["SPRINT"] and "not run" in table.markdown([row])


@pytest.fixture(scope="module")
def encoder_capture():
    rm = models.load_encoder()
    batch = models.encode(rm, ["A short real e-mail about a meeting on Monday.",
                               "Win a free cruise now, click the link below to claim your prize today!"], 32)
    return rm, models.capture(rm, batch, layers=[1])[0]


def test_counted_work_equals_the_paper_modules_count(encoder_capture):
    from attnlib.a3.algorithm import a3_attention
    from attnlib.sprint.algorithm import AnalogConfig, Calibrator
    from attnlib.token_picker.estimator import PickerConfig, token_pick

    rm, cap = encoder_capture
    q, k, v, mask, scale = cap.q, cap.k, cap.v, cap.mask, cap.scale
    # A3
    c = techniques.Counts()
    techniques.a3_fn(0.5, c)(q, k, v, mask, scale, 0)
    ref = a3_attention(q, k, v, m_frac=0.5, scale=scale, mask=mask.float())
    live = ref.n_allowed > 0
    assert c.arrays()["candidates"].sum() == ref.n_candidates[live].sum()
    assert c.arrays()["iterations"].sum() == ref.m[live].sum()
    # SPRINT: the same keep masks as its own attention function (same calibration, same noise seed)
    cal = Calibrator([cap])
    c = techniques.Counts()
    techniques.sprint_fn(cal, 0.95, c, z=1.0, cfg=AnalogConfig(), kv_groups=1, decode=False)(q, k, v, mask, scale, 0)
    sa = cal.attention_fn(0.95, 1.0, AnalogConfig(), record=True)
    sa(q, k, v, mask, scale, 0)
    st = sa.stats[0][0]
    assert c.arrays()["kept"].sum() == st.kept.sum() and c.arrays()["allowed"].sum() == st.allowed.sum()
    assert c.arrays()["rows"].sum() == st.union.sum()
    # Token-Picker
    c = techniques.Counts()
    techniques.token_picker_fn(1e-3, c, kv_groups=1)(q, k, v, mask, scale, 0)
    res = token_pick(q, k, v, PickerConfig(threshold=1e-3, **techniques.TP_CFG), mask=mask, scale=scale)
    assert c.arrays()["kept"].sum() == res.n_kept.sum() and c.arrays()["kv_chunks"].sum() == res.kv_key_chunks.sum()


def test_pruning_lowers_the_counted_attention_work(encoder_capture):
    """Fewer kept scores -> less work on the same template (SPRINT on ReRAM, against dense on ReRAM)."""
    w = workloads()["enc-128"]
    rr = template("edge", "ReRAM")
    c = dense_counts(w)
    half = techniques.technique_work("SPRINT", dict(kept=1, allowed=2, rows=1, rows_allowed=1), c, w, rr)
    most = techniques.technique_work("SPRINT", dict(kept=9, allowed=10, rows=1, rows_allowed=1), c, w, rr)
    assert half.macs < most.macs < techniques.technique_work("dense", {}, c, w, rr).macs


def test_attmemo_row_reads_its_notebooks_record(tmp_path):
    import json

    rec = {"values": [{"name": "hit_rate_as_arrives_128", "value": 0.07}, {"name": "hit_rate_campaign_128", "value": 0.3}],
           "claims": [{"claim_id": "accuracy_loss", "reproduced": 0.1, "interval": {"lo": 0.0, "hi": 0.3}}],
           "profile": "full"}
    (tmp_path / "05_attmemo.json").write_text(json.dumps(rec))
    am = experiment.attmemo_record(tmp_path)
    assert am["hit_rates"] == {128: 0.07} and am["hi"] == 0.3
    wls = workloads()
    rows = table.league_rows({}, {k: wls[k] for k in ("enc-128", "enc-512")}, "edge", attmemo=am)
    at = {r["workload"]: r for r in rows if r["technique"] == "AttMEMO"}
    assert at["enc-128"]["knob"] == 0.07 and at["enc-128"]["within"] and at["enc-128"]["speedup"] > 0
    assert "512 tokens" in at["enc-512"]["na"]                              # no hit rate recorded there
    assert experiment.attmemo_record(tmp_path / "missing") is None


def test_prefill_bench_runs_the_function_in_every_prompt_row_and_agrees_with_decode_steps_when_exact():
    """A prefill workload's quality: every row of the prompt goes through the function under test (the
    decode bench only its scored rows), and with exact attention the prefill's NLL of tokens 2.. equals
    the teacher-forced decode steps' after a one-token prefix."""
    import torch

    from attnlib.league.quality import DecodeBench, PrefillBench

    rm = models.load_decoder("smollm2")
    window = rm.tokenizer("The quick brown fox jumps over the lazy dog near the river bank today.")["input_ids"]
    T = len(window)
    rows = []

    def counting(q, k, v, mask, scale, layer):
        if layer == 0:
            rows.append(q.shape[-2])
        return models.exact_attn_fn(q, k, v, mask, scale, layer)

    pre = PrefillBench(rm, [window])
    own, exact = pre.nll(), pre.nll(counting)
    assert rows == [T] and own["tokens"][0] == T - 1
    np.testing.assert_allclose(exact["nll"], own["nll"], rtol=1e-4)
    ids = torch.tensor([window])
    lg = models.logits(rm, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    first = float(torch.nn.functional.cross_entropy(lg[0, :1].float(), ids[0, 1:2]))   # token 1, not a decode step
    rows.clear()
    dec = DecodeBench(rm, [window], 1).nll(counting)
    assert rows == [T - 2]
    np.testing.assert_allclose(dec["nll"][0], own["nll"][0] - first, rtol=1e-3)
    # a wrong attention in every prompt row costs quality (the test can fail)
    uniform = lambda q, k, v, mask, scale, layer: torch.softmax(torch.zeros(q.shape[:-1] + (k.shape[-2],)) + (
        0 if mask is None else mask), -1) @ v
    assert pre.nll(uniform)["nll"][0] > own["nll"][0] + 1.0
    with pytest.raises(ValueError, match="one length"):
        PrefillBench(rm, [window, window[:-1]])
