"""Runs notebooks/05_attmemo.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {"avg_latency_reduction": ("percent", 22), "avg_latency_reduction_mix": ("percent", 22),
          "max_latency_reduction": ("percent", 68), "accuracy_loss": ("accuracy", 0.0)}
FIGURES = {"attmemo_layer_decision", "attmemo_lookup_breakdown", "attmemo_latency_reduction", "attmemo_threshold",
           "attmemo_db_size", "attmemo_sensitivity"}


@pytest.mark.notebook
def test_attmemo_notebook(run_notebook):
    results, figures = run_notebook("05_attmemo")
    # check_claims also checks the schema-2 fields and bounds every percentage strictly within +-100
    claims = check_claims(results, "05_attmemo", "AttMEMO", {cid: dict(kind=kind, paper_value=paper, basis="measured")
                                                              for cid, (kind, paper) in CLAIMS.items()})
    for c in claims.values():
        assert c["params"]["machine"]["torch_threads"] >= 1 and c["params"]["machine"]["cpu"]
        assert c["deviations"] and c["averaging"]
    # every timed cell went through the load check, and its verdict is recorded
    assert all(set(x) >= {"busy_other", "loaded"} for x in claims["avg_latency_reduction"]["params"]["load"])
    assert claims["avg_latency_reduction"]["role"] == "headline"
    assert claims["avg_latency_reduction"]["operating_point"]["how"] == "paper setting"
    assert claims["avg_latency_reduction_mix"]["role"] == "alternative"
    assert claims["avg_latency_reduction_mix"]["of"] == "avg_latency_reduction"
    # latency intervals come from resampled repetitions, the accuracy one from paired test items
    assert "repetitions" in claims["avg_latency_reduction"]["interval"]["method"]
    assert "paired" in claims["accuracy_loss"]["interval"]["method"]
    values = {v["name"]: v for v in results["values"]}
    for name in ("avg_latency_reduction_near", "avg_latency_reduction_fresh", "torch_threads"):
        assert values[name]["basis"] == "measured"
    assert any(n.startswith("predicted_reduction") and v["basis"] == "modelled" for n, v in values.items())
    assert all(0 <= v["value"] <= 1 for n, v in values.items() if n.startswith("hit_rate_"))
    check_figures(figures, FIGURES)
