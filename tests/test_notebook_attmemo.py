"""Runs notebooks/05_attmemo.ipynb in the quick profile and checks what it records and draws."""
import math

import pytest

from attnlib.claims import STATUSES

CLAIMS = {"avg_latency_reduction": ("percent", 22), "max_latency_reduction": ("percent", 68),
          "accuracy_loss": ("accuracy", 0.0)}
FIGURES = {"attmemo_layer_decision", "attmemo_lookup_breakdown", "attmemo_latency_reduction", "attmemo_threshold",
           "attmemo_db_size", "attmemo_sensitivity"}


@pytest.mark.notebook
def test_attmemo_notebook(run_notebook):
    results, figures = run_notebook("05_attmemo")
    assert results is not None and results["notebook"] == "05_attmemo" and results["profile"] == "quick"
    claims = {c["claim_id"]: c for c in results["claims"]}
    assert set(CLAIMS) <= set(claims)
    for cid, (kind, paper) in CLAIMS.items():
        c = claims[cid]
        assert c["kind"] == kind and c["paper_value"] == paper
        assert c["basis"] == "measured"
        assert c["status"] in STATUSES and c["status"] != "not run yet"
        assert math.isfinite(c["reproduced"]) and c["note"]
        assert c["params"]["machine"]["torch_threads"] >= 1 and c["params"]["machine"]["cpu"]
    # a latency reduction is a percentage below 100; the max is at least the average
    assert -100 < claims["avg_latency_reduction"]["reproduced"] < 100
    assert claims["max_latency_reduction"]["reproduced"] >= claims["avg_latency_reduction"]["reproduced"] - 1e-9
    assert -100 <= claims["accuracy_loss"]["reproduced"] <= 100
    values = {v["name"]: v for v in results["values"]}
    for name in ("avg_latency_reduction_near", "avg_latency_reduction_fresh", "torch_threads"):
        assert values[name]["basis"] == "measured"
    assert all(math.isfinite(v["value"]) for v in results["values"])
    assert any(n.startswith("predicted_reduction") and v["basis"] == "modelled" for n, v in values.items())
    assert all(0 <= v["value"] <= 1 for n, v in values.items() if n.startswith("hit_rate_"))
    assert FIGURES <= set(figures)
    assert all(p.stat().st_size > 5000 for name, p in figures.items() if name in FIGURES)
