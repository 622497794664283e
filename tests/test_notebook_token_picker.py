"""The Token-Picker notebook runs end to end in the quick profile and records what it should."""
from __future__ import annotations

import math

import pytest

from notebook_checks import check_claims, check_figures

CLAIMS = {  # id -> (paper value, basis)
    "pruning_ratio": (12.1, "algorithmic"),
    "memory_access_reduction": (2.6, "algorithmic"),
    "speedup": (2.3, "modelled"),
    "energy_efficiency": (2.4, "modelled"),
}
FIGURES = ("token_picker_bound_demo", "token_picker_pruning_ratio", "token_picker_perplexity",
           "token_picker_traffic", "token_picker_speedup_energy")


@pytest.mark.notebook
@pytest.mark.models
def test_token_picker_notebook_quick(run_notebook):
    results, figures = run_notebook("04_token_picker")
    claims = check_claims(results, "04_token_picker", "Token-Picker",
                          {cid: dict(paper_value=paper, basis=basis, kind="ratio", unit="x")
                           for cid, (paper, basis) in CLAIMS.items()})
    assert set(claims) == set(CLAIMS)
    for c in claims.values():
        assert c["params"]["threshold"] > 0 and c["params"]["k_bits"] == 12
    # pruning can only reduce traffic, and never below what the first key chunks cost
    assert claims["pruning_ratio"]["reproduced"] >= 1.0
    assert 1.0 <= claims["memory_access_reduction"]["reproduced"] <= (12 + 12) / 4 + 1e-9
    values = {v["name"]: v for v in results["values"]}
    for name in ("perplexity_exact", "perplexity_dense_quantised", "operating_threshold"):
        assert name in values and math.isfinite(values[name]["value"])
    assert values["perplexity_exact"]["basis"] == "measured"
    assert any(n.startswith("perplexity_thr_") for n in values)
    check_figures(figures, FIGURES)
