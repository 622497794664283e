"""Runs notebooks/05_attmemo.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {"avg_latency_reduction": ("percent", 22), "max_latency_reduction": ("percent", 68),
          "accuracy_loss": ("accuracy", 0.0)}
FIGURES = {"attmemo_layer_decision", "attmemo_lookup_breakdown", "attmemo_latency_reduction", "attmemo_threshold",
           "attmemo_db_size", "attmemo_sensitivity"}


@pytest.mark.notebook
def test_attmemo_notebook(run_notebook):
    results, figures = run_notebook("05_attmemo")
    # check_claims also bounds every percentage strictly within +-100
    claims = check_claims(results, "05_attmemo", "AttMEMO", {cid: dict(kind=kind, paper_value=paper, basis="measured")
                                                              for cid, (kind, paper) in CLAIMS.items()})
    for c in claims.values():
        assert c["params"]["machine"]["torch_threads"] >= 1 and c["params"]["machine"]["cpu"]
    # the max is at least the average
    assert claims["max_latency_reduction"]["reproduced"] >= claims["avg_latency_reduction"]["reproduced"] - 1e-9
    values = {v["name"]: v for v in results["values"]}
    for name in ("avg_latency_reduction_near", "avg_latency_reduction_fresh", "torch_threads"):
        assert values[name]["basis"] == "measured"
    assert any(n.startswith("predicted_reduction") and v["basis"] == "modelled" for n, v in values.items())
    assert all(0 <= v["value"] <= 1 for n, v in values.items() if n.startswith("hit_rate_"))
    check_figures(figures, FIGURES)
