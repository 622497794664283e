"""A3's claims module (attnlib.a3.paper_claims), the key-sort scenarios of the cycle model, the CPU
baseline's kernels, the idle check and process-level intervals."""
import math
import shutil

import numpy as np
import pytest

import attnlib.a3 as a3
from attnlib.a3 import paper_claims as PC
from attnlib.claims import Recorder


# ----------------------------------------------------------------------------- axes and headline rules
def test_every_headline_axis_set_is_at_the_paper_option():
    for axes in (PC.SPEED_AXES, PC.ACCURACY_AXES, PC.ENERGY_AXES):
        PC.check_headline(axes)
        head = PC.headline_of(axes)
        assert set(head) == {a.name for a in axes}
        for a in axes:
            assert head[a.name] in a.plausible and a.why.strip()
    # the paper's reading of the sort (off the critical path) is the headline; the others are scenarios
    assert PC.SORT_AXIS.plausible == ("off the critical path",)
    assert set(PC.SORT_AXIS.options) == set(a3.SORT_OPTIONS)
    # the CPU's power is not stated by the paper: every option plausible
    assert PC.CPU_POWER_AXIS.paper == "unknown" and PC.CPU_POWER_AXIS.plausible == PC.CPU_POWER_AXIS.options
    # batched numpy is a stronger baseline than the paper's per-query reading, not a plausible paper option
    assert "batched (numpy)" not in PC.CPU_BASELINE_AXIS.plausible
    for key in ("throughput", "latency", "accuracy", "energy"):
        assert PC.DIRECTION[key] in ("about", "at least", "at most", "within")
    assert set(PC.HEADLINE_RULES) == {"speed", "accuracy", "energy"}


def test_headline_claims_record_with_the_machinery():
    rec = Recorder("t", "A3")
    pts = [({"key sort": o, "MemN2N width d": "64", "memory size n": "bAbI story (10-50)"}, v)
           for o, v in (("log2 n per query", 1.0), ("full sort per query", 0.2))]
    c = rec.claim("tp", "throughput", paper_value=PC.PAPER["throughput"], reproduced=1.2, unit="x", kind="ratio", basis="modelled",
                  interval=dict(lo=1.1, hi=1.2, method="bootstrap", n=10), assumption_range=dict(lo=1.2, hi=1.2, swept={}),
                  deviations=[PC.CYCLE_MODEL], operating_point=dict(how="matched quality", rule="r"), averaging="a",
                  direction=PC.DIRECTION["throughput"], axes=PC.SPEED_AXES, scenarios=pts,
                  headline_scenario=PC.headline_of(PC.SPEED_AXES), headline_rule=PC.HEADLINE_RULES["speed"],
                  variation=dict(unit="u", covers=[], not_covered=[]))
    assert c.status == "not reproduced" and "memory size n" in c.unswept


# ----------------------------------------------------------------------------- operating-point rules
def test_matched_speed_is_the_most_accurate_setting_reaching_the_speed_or_unreachable():
    settings = [0.1, 0.2, 0.5, 1.0]
    tp = [5.0, 3.0, 1.5, 1.0]
    assert PC.matched_speed_setting(settings, tp, 2.6) == 0.2
    assert PC.matched_speed_setting(settings, tp, 5.0) == 0.1
    assert PC.matched_speed_setting(settings, tp, 7.0) is None
    with pytest.raises(ValueError):
        PC.matched_speed_setting(settings, tp[:2], 2.0)


def _workload(n=30.0, q=200, d=64, seed=0):
    rng = np.random.default_rng(seed)
    settings = [0.1, 0.3, 1.0]
    loss, counts = {}, {}
    for setting in ("conservative", "aggressive"):
        for m in settings:
            mm = np.ceil(m * n) * np.ones(q)
            cand = np.minimum(n, mm + rng.integers(0, 3, q))
            counts[(setting, m)] = dict(n_allowed=np.full(q, n), m=mm, candidates=cand, survivors=np.minimum(cand, 3.0))
            loss[(setting, m)] = {0.1: 9.0, 0.3: 1.2, 1.0: 0.0}[m]
    return dict(d=d, settings=settings, loss=loss, counts=counts, sort_queries=1)


def test_speed_points_orders_the_sort_options_and_rederives_matched_speed():
    rows = PC.speed_points({("64", "bAbI story (10-50)"): _workload()})
    assert len(rows) == 2 * len(a3.SORT_OPTIONS)
    by = {(r["setting"], r["key sort"]): r for r in rows}
    for setting in ("conservative", "aggressive"):
        off, share, full = (by[(setting, s)] for s in a3.SORT_OPTIONS)
        # matched quality depends on the loss curve only: one M for every sort option
        assert off["m_quality"] == share["m_quality"] == full["m_quality"]
        assert off["throughput"] > share["throughput"] > full["throughput"]
        # a full sort per query (n log2 n cycles) is slower than base A3 (n cycles)
        assert full["throughput"] < 1
    assert by[("conservative", "off the critical path")]["m_quality"] == 0.3
    assert by[("aggressive", "off the critical path")]["m_quality"] == 0.1
    # with the full sort per query no M reaches 2.6x: the paper's speed is unreachable there
    assert by[("conservative", "full sort per query")]["m_speed"] is None
    assert all(r["loss_at_speed"] is None for r in PC.unreachable(rows, "conservative"))
    sc = PC.scenarios_of(rows, PC.SPEED_AXES, "throughput", "conservative")
    assert all(o != PC.headline_of(PC.SPEED_AXES) for o, _ in sc)


# ----------------------------------------------------------------------------- the sort in the cycle model
def test_sort_options_closed_form():
    n, d = 320, 64
    off = a3.approx_pipeline(n, 40, 30, 10, d, a3.A3Hardware(sort="off the critical path"))
    share = a3.approx_pipeline(n, 40, 30, 10, d, a3.A3Hardware(sort="log2 n per query"))
    full = a3.approx_pipeline(n, 40, 30, 10, d, a3.A3Hardware(sort="full sort per query"))
    assert off.interval_cycles == 40 and share.interval_cycles == pytest.approx(40 + math.log2(n))
    assert full.interval_cycles == pytest.approx(n * math.log2(n)) and full.modules[0].name == "key sort"
    # the sort's energy does not depend on where its cycles go, only on how many queries share it
    assert off.energy_pj == pytest.approx(share.energy_pj) == pytest.approx(full.energy_pj)
    one = a3.approx_pipeline(n, 40, 30, 10, d, a3.A3Hardware(sort_queries=1))
    e = a3.A3Hardware().e()
    per_matrix = d * n * math.log2(n) * (e["cmp"] + 2 * (8 + e["idx_bits"]) * e["sram_sorted_bit"])
    assert one.energy_pj - off.energy_pj == pytest.approx(per_matrix * (1 - 1 / n))
    with pytest.raises(ValueError):
        a3.A3Hardware(sort="sometimes")
    with pytest.raises(ValueError):
        a3.A3Hardware(sort_queries=0.5)


# ----------------------------------------------------------------------------- CPU baseline and power
def test_idle_check_arithmetic():
    before = dict(busy=1000, total=4000, self_s=1.0, wall=0.0)
    after = dict(busy=1300, total=4400, self_s=2.0, wall=2.0)    # 300 busy jiffies, 100 of them ours (1 s at 100 Hz)
    hz = 100
    import os
    if os.sysconf("SC_CLK_TCK") != hz:
        pytest.skip("clock ticks are not 100 Hz here")
    assert a3.others_busy(before, after) == pytest.approx(200 / 400)
    assert math.isnan(a3.others_busy(dict(before, busy=None), after))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_compiled_kernel_is_exact_attention_and_timed_in_processes():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((6, 20), (31, 20), (31, 20)))
    np.testing.assert_allclose(a3.cpu_exact_compiled(q, k, v, 0.3), a3.cpu_exact_batched(q, k, v, 0.3), atol=1e-5)
    t = a3.measure_cpu(q=q, k=k, v=v, repeats=3, processes=2, thread_counts=(1,))
    assert t.modes == a3.CPU_MODES and len(t.proc_reps("compiled")) == 2 and all(len(r) == 3 for r in t.proc_reps("single"))
    assert t.cores("compiled") == 1 and len(t.others_busy) == 2
    assert t.median_s("single") == pytest.approx(np.median(np.concatenate(t.proc_reps("single"))))
    ee = a3.energy_efficiency(t.proc_reps("single"), [1e3, 2e3], power_w=7.8, power_sweep=(5.0, 15.0), n_resamples=300)
    assert ee["interval"].method.startswith("bootstrap over CPU processes (2)")
    assert ee["interval"].lo <= ee["point"] <= ee["interval"].hi


def test_power_tied_to_threads_and_energy_points():
    class T:
        modes = ("single", "batched")

        def cores(self, mode):
            return 1 if mode == "single" else 2

        def median_s(self, mode):
            return 5e-6 if mode == "single" else 3e-7

    w, sweep = PC.power_for(T(), "batched")
    assert w == pytest.approx(2 * PC.CPU_POWER["per_core_w"]) and sweep == [2 * p for p in PC.CPU_POWER["per_core_sweep"]]
    pts = PC.energy_points({("64", "shared by n queries"): 1e4}, {"64": T()})
    assert len(pts) == 2 * 2                                      # no compiled timing: that baseline is left out
    val = {(o["CPU baseline"], o["CPU power charged"]): v for o, v in pts}
    assert val[("one query per call (numpy)", "per core x threads timed")] == pytest.approx(7.8 * 5e-6 / 1e-8)
    assert val[("one query per call (numpy)", "whole socket")] == pytest.approx(125 * 5e-6 / 1e-8)


def test_loss_at_speed_moves_with_the_cycle_assumptions():
    w = _workload()
    r = PC.loss_at_speed_range(w["counts"], w["loss"], w["settings"], "conservative", d=64)
    # the default assumptions reach 2.6x at M/n = 0.3 (loss 1.2); half-rate selection needs a smaller M (more loss)
    assert r["lo"] == pytest.approx(1.2) and r["hi"] >= r["lo"] and set(r["swept"]) == set(a3.HW_SWEEP)
    r7 = PC.loss_at_speed_range(w["counts"], w["loss"], w["settings"], "aggressive", d=64)
    assert r7["unreachable"] > 0 and (r7["lo"] is None or r7["lo"] <= r7["hi"])
