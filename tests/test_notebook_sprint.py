"""Runs notebooks/02_sprint.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {  # claim_id: (kind, paper value, basis)
    "speedup": ("ratio", 7.5, "modelled"),
    "energy_reduction": ("ratio", 19.6, "modelled"),
    "accuracy_degradation": ("accuracy", 0.36, "algorithmic"),
    "speedup_vs_tiled_baseline": ("ratio", 7.5, "modelled"),
    "energy_reduction_vs_tiled_baseline": ("ratio", 19.6, "modelled"),
}
FIGURES = {"sprint_method_scores", "sprint_pruning_per_layer", "sprint_accuracy_sweeps", "sprint_speedup_energy",
           "sprint_buffer_and_reuse", "sprint_energy_breakdown", "sprint_sensitivity"}


@pytest.mark.notebook
def test_sprint_notebook(run_notebook):
    results, figures = run_notebook("02_sprint")
    check_claims(results, "02_sprint", "SPRINT", {cid: dict(kind=kind, paper_value=paper, basis=basis)
                                                  for cid, (kind, paper, basis) in CLAIMS.items()})
    values = {v["name"]: v for v in results["values"]}
    pruning = [v for n, v in values.items() if n.startswith("pruning_ratio_")]
    reuse = [v for n, v in values.items() if n.startswith("adjacent_reuse_")]
    assert pruning and reuse
    assert all(v["basis"] == "algorithmic" and 0 <= v["value"] <= 1 for v in pruning + reuse)
    # SPRINT really pruned something on the real models, and the analog front end did not prune everything
    assert any(v["value"] > 0.01 for v in pruning) and all(v["value"] < 0.99 for v in pruning)
    assert values["runtime_s"]["basis"] == "measured"
    check_figures(figures, FIGURES)
