"""Run notebooks/01_a3.ipynb in the quick profile and check what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

import attnlib.a3 as a3

CLAIMS = {
    "a3_throughput_speedup_conservative": ("ratio", "modelled"),
    "a3_throughput_speedup_aggressive": ("ratio", "modelled"),
    "a3_latency_speedup_conservative": ("ratio", "modelled"),
    "a3_latency_speedup_aggressive": ("ratio", "modelled"),
    "a3_energy_efficiency_vs_cpu": ("ratio", "modelled"),
    "a3_energy_efficiency_vs_cpu_batched": ("ratio", "modelled"),
    "a3_energy_efficiency_vs_cpu_minilm": ("ratio", "modelled"),
    "a3_energy_efficiency_vs_cpu_recall_rule": ("ratio", "modelled"),
    "a3_throughput_speedup_conservative_minilm": ("ratio", "modelled"),
    "a3_latency_speedup_aggressive_minilm": ("ratio", "modelled"),
    "a3_throughput_speedup_conservative_recall_rule": ("ratio", "modelled"),
    "a3_throughput_speedup_aggressive_recall_rule": ("ratio", "modelled"),
    "a3_latency_speedup_conservative_recall_rule": ("ratio", "modelled"),
    "a3_latency_speedup_aggressive_recall_rule": ("ratio", "modelled"),
    "a3_throughput_speedup_conservative_kv": ("ratio", "modelled"),
    "a3_latency_speedup_aggressive_kv": ("ratio", "modelled"),
    "a3_accuracy_loss_conservative_kv": ("accuracy", "algorithmic"),
    "a3_accuracy_loss_aggressive_kv": ("accuracy", "algorithmic"),
    "a3_accuracy_loss_conservative": ("accuracy", "algorithmic"),
    "a3_accuracy_loss_aggressive": ("accuracy", "algorithmic"),
    "a3_accuracy_loss_conservative_minilm": ("accuracy", "algorithmic"),
    "a3_accuracy_loss_aggressive_minilm": ("accuracy", "algorithmic"),
}
FIGURES = ("a3_memn2n", "a3_matched_summary", "a3_tradeoff", "a3_kv_retrieval", "a3_candidates_recall", "a3_throughput_latency", "a3_energy_efficiency", "a3_modules", "a3_accuracy",
           "a3_sensitivity")


@pytest.mark.notebook
def test_a3_notebook_quick(run_notebook):
    results, figures = run_notebook("01_a3")
    claims = check_claims(results, "01_a3", "A3", {cid: dict(kind=kind, basis=basis)
                                                   for cid, (kind, basis) in CLAIMS.items()})
    assert claims["a3_energy_efficiency_vs_cpu"]["paper_value"] == [10000, None]
    assert claims["a3_accuracy_loss_conservative"]["paper_value"] == [1.0, 1.6]
    assert claims["a3_accuracy_loss_aggressive"]["paper_value"] == [8.0, 9.0]
    # speedups and efficiency are positive; under the recall rule (aggressive M = a fraction of the
    # conservative M, higher T) the aggressive setting is at least as fast as the conservative one
    assert claims["a3_throughput_speedup_conservative"]["reproduced"] > 0
    assert (claims["a3_throughput_speedup_aggressive_recall_rule"]["reproduced"]
            >= claims["a3_throughput_speedup_conservative_recall_rule"]["reproduced"] - 1e-9)
    # headlines: the memory network at matched quality; MiniLM and recall-rule rows are alternatives of them
    for setting in ("conservative", "aggressive"):
        for what in ("throughput", "latency"):
            c = claims[f"a3_{what}_speedup_{setting}"]
            assert c["role"] == "headline" and c["operating_point"]["how"] == "matched quality" and "MemN2N" in c["params"]["model"]
            # the interval comes from the bootstrap that re-chooses the matched M over the test questions
            assert c["interval"]["method"].startswith("bootstrap over test items, matched setting re-chosen")
            assert c["interval"]["lo"] <= c["reproduced"] <= c["interval"]["hi"]
            alt = claims[f"a3_{what}_speedup_{setting}_recall_rule"]
            assert alt["role"] == "alternative" and alt["of"] == c["claim_id"] and alt["operating_point"]["how"] == "sensitivity"
        # accuracy at the paper's speed: matched speed where some M reaches it, else the fastest M, labelled as such
        acc = claims[f"a3_accuracy_loss_{setting}"]
        reached = acc["params"]["speed_reached"]
        assert acc["operating_point"]["how"] == ("matched speed" if reached else "sensitivity")
        assert ("unreachable" in acc["description"]) == (not reached)
        if reached:
            assert acc["params"]["throughput_speedup"] >= {"conservative": 2.6, "aggressive": 7.0}[setting]
        # the matched point is one of the accuracy-vs-M curve's points: its loss is recorded there too
        m = claims[f"a3_throughput_speedup_{setting}"]["params"]["m_frac"]
        curve = {v["name"]: v["value"] for v in results["values"] if v["name"].startswith(f"memn2n_loss_{setting}_T_m")}
        assert claims[f"a3_throughput_speedup_{setting}"]["params"]["loss_pts"] == pytest.approx(curve[f"memn2n_loss_{setting}_T_m{m:.4g}"], abs=1e-3)
        # the spam-probe alternative runs at the headline's setting
        assert claims[f"a3_accuracy_loss_{setting}_minilm"]["params"]["m_frac"] == m
    assert claims["a3_energy_efficiency_vs_cpu"]["reproduced"] > 1
    # the CPU power is a stated range: the efficiency's assumption range spans it (linear in the power)
    ar = claims["a3_energy_efficiency_vs_cpu"]["assumption_range"]
    powers = ar["swept"]["cpu_power_w"]
    assert ar["hi"] / ar["lo"] == pytest.approx(max(powers) / min(powers), rel=1e-3)
    # batched CPU is the stronger baseline: A3's advantage over it is smaller
    assert claims["a3_energy_efficiency_vs_cpu_batched"]["reproduced"] < claims["a3_energy_efficiency_vs_cpu"]["reproduced"]
    assert claims["a3_energy_efficiency_vs_cpu_batched"]["role"] == "alternative"
    # accuracy claims carry a paired interval over the test items, speedups a bootstrap over queries
    for cid in ("a3_accuracy_loss_conservative", "a3_accuracy_loss_aggressive"):
        assert claims[cid]["interval"]["method"].startswith("paired bootstrap")
    for cid in ("a3_throughput_speedup_conservative_minilm", "a3_latency_speedup_aggressive_minilm"):
        assert claims[cid]["interval"]["method"] == "bootstrap over sampled queries" and claims[cid]["interval"]["n"] > 100
    for cid in ("a3_throughput_speedup_conservative", "a3_latency_speedup_aggressive"):
        assert claims[cid]["assumption_range"]["swept"]
    # every headline declares its direction and axes, its headline scenario at the paper's option (rule 1)
    from attnlib.a3 import paper_claims as PC
    for c in claims.values():
        if c["role"] != "headline":
            continue
        assert c["direction"] in ("within", "at least") and c["axes"] and c["headline_rule"]
        for a in c["axes"]:
            plausible = a["options"] if a["paper"] == "unknown" else (a["paper"] if isinstance(a["paper"], list) else [a["paper"]])
            assert c["headline_scenario"][a["name"]] in plausible
        assert c["headline_scenario"] == {a["name"]: PC.HEADLINE[a["name"]] for a in c["axes"]}
    # the energy headline: power tied to the threads timed, CPU timed in separate processes, every axis swept
    e = claims["a3_energy_efficiency_vs_cpu"]
    assert e["params"]["cpu_power_w"] == pytest.approx(PC.CPU_POWER["per_core_w"] * e["params"]["cpu_threads"])
    assert e["interval"]["method"].startswith("bootstrap over CPU processes")
    assert "separate CPU timing processes" in e["variation"]["covers"] and not e["unswept"]
    # the idle check: a failed check flags the claim (note and why)
    busy = [v["value"] for v in results["values"] if v["name"].startswith("cpu_others_busy_memn2n")]
    assert busy and all(b >= 0 for b in busy)
    if max(busy) > 100 * a3.IDLE_LIMIT:
        assert e["note"].startswith("FLAGGED") and e["why"].startswith("FLAGGED")
    # context rows from later papers: shown, never judged
    for cid in ("a3_energy_efficiency_vs_cpu_spatten", "a3_energy_efficiency_vs_cpu_energon"):
        assert claims[cid]["role"] == "context" and claims[cid]["status"] == "context"
    # speed headlines: the key-sort scenarios order as the cycle model says (off the path fastest)
    for setting in ("conservative", "aggressive"):
        c = claims[f"a3_throughput_speedup_{setting}"]
        by = {(s["options"]["key sort"], s["options"]["MemN2N width d"], s["options"]["memory size n"]): s["value"] for s in c["scenarios"]}
        for (sort, w, m), v in by.items():
            if sort == "full sort per query" and ("off the critical path", w, m) in by:
                assert v < by[("off the critical path", w, m)]
    values = {v["name"]: v for v in results["values"]}
    assert values["cpu_single_query_us"]["basis"] == "measured" and values["cpu_single_query_us"]["value"] > 0
    assert values["cpu_batched_query_us"]["basis"] == "measured"
    assert values["smollm2_perplexity_exact"]["value"] > 1
    check_figures(figures, FIGURES, min_bytes=1000)
