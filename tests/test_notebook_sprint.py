"""Runs notebooks/02_sprint.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {  # claim_id: (kind, paper value, basis, role, of)
    "speedup": ("ratio", 7.5, "modelled", "headline", None),
    "energy_reduction": ("ratio", 19.6, "modelled", "headline", None),
    "accuracy_degradation": ("accuracy", 0.36, "algorithmic", "headline", None),
    "accuracy_degradation_small_sets": ("accuracy", 0.36, "algorithmic", "alternative", "accuracy_degradation"),
    "accuracy_degradation_frozen_probe": ("accuracy", 0.36, "algorithmic", "alternative", "accuracy_degradation"),
    "pruning_rate": ("ratio", 0.75, "algorithmic", "context", None),
    "newly_fetched": ("ratio", 0.021, "algorithmic", "headline", None),
    "speedup_vs_resident_rows": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_vs_resident_rows": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
    "speedup_sprint_tiled_vs_tiled_baseline": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_sprint_tiled_vs_tiled_baseline": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
    "speedup_decoder_frozen_calibration": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_decoder_frozen_calibration": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
    "speedup_frozen_calibration": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_frozen_calibration": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
    "speedup_M": ("ratio", 7.4, "modelled", "headline", None),
    "speedup_L": ("ratio", 7.1, "modelled", "headline", None),
    "speedup_vs_runtime_pruning": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_vs_runtime_pruning": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
    "speedup_vs_tiled_baseline": ("ratio", 7.5, "modelled", "alternative", "speedup"),
    "energy_reduction_vs_tiled_baseline": ("ratio", 19.6, "modelled", "alternative", "energy_reduction"),
}
FIGURES = {"sprint_method_scores", "sprint_configurations", "sprint_pruning_per_layer", "sprint_accuracy_sweeps", "sprint_speedup_energy",
           "sprint_buffer_and_reuse", "sprint_energy_breakdown", "sprint_sensitivity", "sprint_learned_tradeoff",
           "sprint_pruning_learned_vs_frozen", "sprint_scenarios", "sprint_config_trend"}


@pytest.mark.notebook
def test_sprint_notebook(run_notebook):
    results, figures = run_notebook("02_sprint")
    claims = check_claims(results, "02_sprint", "SPRINT", {
        cid: dict(kind=kind, paper_value=paper, basis=basis, role=role, of=of)
        for cid, (kind, paper, basis, role, of) in CLAIMS.items()})
    for cid in ("speedup", "energy_reduction", "speedup_M", "speedup_L"):
        c = claims[cid]
        assert c["interval"]["method"].startswith("bootstrap") and c["interval"]["n"] > 0, cid
        # the labelled assumptions were swept: memory energy, crossbar timing, analog noise
        assert {"memory read pJ/bit", "crossbar ns per query", "noise scale"} <= set(c["assumption_range"]["swept"]), cid
        assert c["assumption_range"]["lo"] <= c["reproduced"] <= c["assumption_range"]["hi"]
        assert c["deviations"] and c["averaging"]
    # S/M/L use their own on-chip memory sizes (paper: 16/32/64 KB with 1/2/4 CORELETs)
    assert [claims[c]["params"]["buffer_kib"] for c in ("speedup", "speedup_M", "speedup_L")] == [16, 32, 64]
    assert [claims[c]["params"]["corelets"] for c in ("speedup", "speedup_M", "speedup_L")] == [1, 2, 4]
    for cid in ("speedup", "energy_reduction", "speedup_M", "speedup_L"):
        c = claims[cid]
        # the headline is the paper's description of its baseline (no residency), judged over the scenario grid
        assert c["headline_scenario"]["baseline residency"] == "none" and c["direction"] == "about"
        names = {a["name"] for a in c["axes"]}
        assert {"baseline residency", "fixed main-memory traffic", "sequence length", "model shape"} <= names
        assert c["scenario_range"]["n"] == len(c["scenarios"]) > 1
        assert c["scenario_range"]["lo"] <= c["reproduced"] <= c["scenario_range"]["hi"]
    assert "baseline memory" in {a["name"] for a in claims["energy_reduction"]["axes"]}
    acc = claims["accuracy_degradation"]
    assert acc["direction"] == "at most"
    assert acc["interval"]["method"].startswith("two-level bootstrap") and acc["interval"]["n"] == acc["params"]["n_test"]
    assert len(acc["params"]["seeds"]) >= 2 and set(acc["variation"]) == {"unit", "covers", "not_covered"}
    assert acc["params"]["n_val"] > 0 and "first" in acc["params"]["dedup"]
    assert any(k.startswith("noise scale") for k in acc["assumption_range"]["swept"])
    # the headline accuracy is the learned operating point: fine-tuned with a swept regulariser, matched to the paper's loss
    assert acc["params"]["reg"] in acc["params"]["regs"] and len(acc["params"]["regs"]) >= 2
    assert acc["operating_point"]["how"] in ("matched quality", "sensitivity")
    assert len(acc["params"]["thresholds"]) == 6 and all(isinstance(t, float) for t in acc["params"]["thresholds"])
    assert claims["accuracy_degradation_frozen_probe"]["operating_point"]["how"] == "sensitivity"
    assert len(claims["pruning_rate"]["params"]["per_layer"]) == 6
    values = {v["name"]: v for v in results["values"]}
    pruning = [v for n, v in values.items() if n.startswith("pruning_ratio_")]
    reuse = [v for n, v in values.items() if n.startswith("adjacent_reuse_")]
    assert pruning and reuse
    assert all(v["basis"] == "algorithmic" and 0 <= v["value"] <= 1 for v in pruning + reuse)
    # SPRINT really pruned something on the real models, and the analog front end did not prune everything
    assert any(v["value"] > 0.01 for v in pruning) and all(v["value"] < 0.99 for v in pruning)
    assert values["runtime_s"]["basis"] == "measured"
    check_figures(figures, FIGURES)
