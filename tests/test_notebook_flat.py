"""Runs notebooks/03_flat.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {"edge_speedup": ("ratio", 1.94), "cloud_speedup": ("ratio", 1.76), "edge_energy_saving": ("percent", 49),
          "cloud_energy_saving": ("percent", 42), "scarce_memory_speedup": ("ratio", 1.5)}
FIGURES = {"flat_speedup_energy", "flat_traffic", "flat_tiles", "flat_scarce_memory", "flat_cpu_measured",
           "flat_sensitivity"}


@pytest.mark.notebook
def test_flat_notebook(run_notebook):
    results, figures = run_notebook("03_flat")
    check_claims(results, "03_flat", "FLAT", {cid: dict(kind=kind, paper_value=paper, basis="modelled")
                                              for cid, (kind, paper) in CLAIMS.items()})
    values = {v["name"]: v for v in results["values"]}
    assert values["cpu_measured_speedup"]["basis"] == "measured"
    assert values["cpu_predicted_speedup"]["basis"] == "modelled"
    assert values["fusemax_ideal_latency_max_rel_err"]["value"] < 1e-9
    check_figures(figures, FIGURES)
