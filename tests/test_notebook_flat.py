"""Runs notebooks/03_flat.ipynb in the quick profile and checks what it records and draws."""
import math

import pytest

from attnlib.claims import STATUSES

CLAIMS = {"edge_speedup": ("ratio", 1.94), "cloud_speedup": ("ratio", 1.76), "edge_energy_saving": ("percent", 49),
          "cloud_energy_saving": ("percent", 42), "scarce_memory_speedup": ("ratio", 1.5)}
FIGURES = {"flat_speedup_energy", "flat_traffic", "flat_tiles", "flat_scarce_memory", "flat_cpu_measured",
           "flat_sensitivity"}


@pytest.mark.notebook
def test_flat_notebook(run_notebook):
    results, figures = run_notebook("03_flat")
    assert results is not None and results["notebook"] == "03_flat" and results["profile"] == "quick"
    claims = {c["claim_id"]: c for c in results["claims"]}
    assert set(CLAIMS) <= set(claims)
    for cid, (kind, paper) in CLAIMS.items():
        c = claims[cid]
        assert c["kind"] == kind and c["paper_value"] == paper
        assert c["basis"] == "modelled"
        assert c["status"] in STATUSES and c["status"] != "not run yet"
        assert math.isfinite(c["reproduced"]) and c["note"]
        if kind == "ratio":
            assert c["reproduced"] > 0
        else:
            assert -100 < c["reproduced"] < 100
    values = {v["name"]: v for v in results["values"]}
    assert values["cpu_measured_speedup"]["basis"] == "measured"
    assert values["cpu_predicted_speedup"]["basis"] == "modelled"
    assert values["fusemax_ideal_latency_max_rel_err"]["value"] < 1e-9
    assert all(math.isfinite(v["value"]) for v in results["values"])
    assert FIGURES <= set(figures)
    assert all(p.stat().st_size > 5000 for name, p in figures.items() if name in FIGURES)
