"""The Token-Picker notebook runs end to end in the quick profile and records what it should."""
from __future__ import annotations

import math

import pytest

from notebook_checks import check_claims, check_figures

CLAIMS = {  # id -> (paper value, basis, role, headline it accompanies)
    "pruning_ratio": (12.1, "algorithmic", "headline", None),
    "pruning_ratio_mean_of_ratios": (12.1, "algorithmic", "alternative", "pruning_ratio"),
    "pruning_ratio_sequential": (12.1, "algorithmic", "alternative", "pruning_ratio"),
    "pruning_ratio_point_rule": (12.1, "algorithmic", "alternative", "pruning_ratio"),
    "memory_access_reduction": (2.6, "algorithmic", "headline", None),
    "memory_access_reduction_gqa": (2.6, "algorithmic", "alternative", "memory_access_reduction"),
    "speedup": (2.3, "modelled", "headline", None),
    "speedup_gqa": (2.3, "modelled", "alternative", "speedup"),
    "speedup_bytes_only": (2.3, "modelled", "alternative", "speedup"),
    "energy_efficiency": (2.4, "modelled", "headline", None),
    "energy_efficiency_gqa": (2.4, "modelled", "alternative", "energy_efficiency"),
}
FIGURES = ("token_picker_bound_demo", "token_picker_pruning_ratio", "token_picker_perplexity",
           "token_picker_context", "token_picker_traffic", "token_picker_speedup_energy")
HEADLINES = ("pruning_ratio", "memory_access_reduction", "speedup", "energy_efficiency")


@pytest.mark.notebook
@pytest.mark.models
def test_token_picker_notebook_quick(run_notebook):
    results, figures = run_notebook("04_token_picker")
    claims = check_claims(results, "04_token_picker", "Token-Picker",
                          {cid: dict(paper_value=paper, basis=basis, kind="ratio", unit="x", role=role, of=of)
                           for cid, (paper, basis, role, of) in CLAIMS.items()})
    assert set(claims) == set(CLAIMS)
    for c in claims.values():
        assert c["params"]["threshold"] > 0 and c["params"]["k_bits"] == 12
        assert c["deviations"] and c["operating_point"]["how"] in ("matched quality", "sensitivity")
        assert c["interval"]["method"].startswith("bootstrap over text windows") and c["interval"]["n"] >= 2
    # the headline uses the paper's estimator; the paper's estimator prunes at least as much as the sequential one
    assert claims["pruning_ratio"]["params"]["estimator"] == "paper"
    assert claims["pruning_ratio_sequential"]["params"]["estimator"] == "sequential"
    assert claims["pruning_ratio"]["reproduced"] >= 1.0
    # pruning can only reduce traffic, and never below what the first key chunks cost
    for cid in ("memory_access_reduction", "memory_access_reduction_gqa"):
        assert 1.0 <= claims[cid]["reproduced"] <= (12 + 12) / 4 + 1e-9
    # the GQA union never fetches less per KV head than the MHA-equivalent accounting saves
    assert claims["memory_access_reduction_gqa"]["reproduced"] <= claims["memory_access_reduction"]["reproduced"] + 1e-9
    # swept assumptions include the quality rule for every headline
    for cid in HEADLINES:
        assert "quality_rule_pct" in claims[cid]["assumption_range"]["swept"]
    # every headline is judged over the context axis (computed at every context) and the corpora
    for cid in HEADLINES:
        c = claims[cid]
        axes = {a["name"]: a for a in c["axes"]}
        assert axes["context length"]["paper"] == "unknown" and "corpus" in axes
        assert len({s["options"]["context length"] for s in c["scenarios"]}) >= 3
        assert {s["options"]["corpus"] for s in c["scenarios"]} == {"Austen+Brown", "Austen", "Brown"}
        assert c["variation"]["unit"].startswith("text windows") and c["headline_rule"]
    # the interval rule is never looser than the point rule
    values = {v["name"]: v for v in results["values"]}
    ctx = claims["pruning_ratio"]["params"]["context"]
    assert values[f"matched_threshold_interval_rule_context_{ctx}"]["value"] <= values[f"matched_threshold_point_rule_context_{ctx}"]["value"]
    assert claims["pruning_ratio"]["reproduced"] <= claims["pruning_ratio_point_rule"]["reproduced"] * (1 + 1e-3)
    # the quality checks carry paired t-intervals over windows
    checks = [v for n, v in values.items() if n.startswith("perplexity_change_at_matched_context_")]
    assert checks and all("t-interval" in v["interval"]["method"] and v["interval"]["n"] >= 2 for v in checks)
    # the decode model is separate evidence: the bytes-only row is the traffic-ratio model beside the headline
    assert claims["speedup_bytes_only"]["reproduced"] == pytest.approx(claims["memory_access_reduction"]["reproduced"], rel=0.05)
    for name in ("perplexity_exact", "perplexity_change_dense_quantised", "operating_threshold", "oracle_pruning_ratio"):
        assert name in values and math.isfinite(values[name]["value"])
    assert values["perplexity_exact"]["basis"] == "measured"
    assert "interval" in values["perplexity_change_dense_quantised"]
    # the estimator never keeps fewer tokens than the oracle: its pruning ratio is at most the oracle's
    assert claims["pruning_ratio"]["reproduced"] <= values["oracle_pruning_ratio"]["value"] * (1 + 1e-3)
    assert any(n.startswith("perplexity_change_context_") for n in values)
    assert any(n.startswith("tokens_kept_per_head_context_") for n in values)
    check_figures(figures, FIGURES)
