"""Runs notebooks/05_attmemo.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

CLAIMS = {"avg_latency_reduction": ("percent", 22), "avg_latency_reduction_vs_sdpa": ("percent", 22),
          "avg_latency_reduction_per_layer": ("percent", 22), "avg_latency_reduction_mix": ("percent", 22),
          "avg_latency_reduction_hits": ("percent", 22), "avg_latency_reduction_2threads": ("percent", 22),
          "max_latency_reduction": ("percent", 68),
          "accuracy_loss": ("accuracy", 0.0), "accuracy_loss_high_reuse": ("accuracy", 0.0)}
FIGURES = {"attmemo_calibration", "attmemo_tv_and_db_size", "attmemo_latency_reduction", "attmemo_lookup_breakdown",
           "attmemo_batch_threads"}


@pytest.mark.notebook
def test_attmemo_notebook(run_notebook):
    results, figures = run_notebook("05_attmemo")
    # check_claims also checks the schema-2 fields and bounds every percentage strictly within +-100
    claims = check_claims(results, "05_attmemo", "AttMEMO", {cid: dict(kind=kind, paper_value=paper, basis="measured")
                                                              for cid, (kind, paper) in CLAIMS.items()})
    for c in claims.values():
        assert c["params"]["machine"]["torch_threads"] >= 1 and c["params"]["machine"]["cpu"]
        assert c["deviations"] and c["averaging"]
    head = claims["avg_latency_reduction"]
    # every timed cell went through the load check, and its verdict is recorded
    assert head["params"]["load"] and all(set(x) >= {"busy_other", "loaded"} for x in head["params"]["load"])
    assert head["role"] == "headline" and head["operating_point"]["how"] == "paper setting"
    assert "repetitions" in head["interval"]["method"]
    for cid in CLAIMS:
        if cid.startswith("avg_latency_reduction_"):
            assert claims[cid]["role"] == "alternative" and claims[cid]["of"] == "avg_latency_reduction", cid
    assert claims["accuracy_loss_high_reuse"]["of"] == "accuracy_loss"
    high = claims["accuracy_loss_high_reuse"]["params"]   # high reuse: far above the natural hit rate, on every test item
    assert high["n_hit"] >= 0.4 * high["n_items"] and claims["accuracy_loss_high_reuse"]["interval"]["n"] == high["n_items"]
    # the accuracy claim is paired over every test e-mail; the FastEncoder equals the model's forward
    assert "paired" in claims["accuracy_loss"]["interval"]["method"]
    assert claims["accuracy_loss"]["interval"]["n"] == claims["accuracy_loss"]["params"]["n_items"] >= 100
    assert head["params"]["fast_encoder_max_abs_diff"] < 1e-4
    # a hit saves time: the hit-only average lies above the stream average (which is mostly misses)
    assert claims["avg_latency_reduction_hits"]["reproduced"] > head["reproduced"]
    values = {v["name"]: v for v in results["values"]}
    assert 0 <= values["stream_hit_rate_128"]["value"] <= 1 and "interval" in values["stream_hit_rate_128"]
    assert values["hit_rate_extrapolated_1TB"]["basis"] == "modelled"
    assert all(values[f"lookup_{k}_ms_per-input"]["value"] >= 0 for k in ("embed", "search", "load"))
    # every timing is stored with its thread count: one and two threads, batch sizes beyond 1
    assert set(head["params"]["threads_timed"]) >= {1, 2} and claims["avg_latency_reduction_2threads"]["params"]["threads"] == 2
    red = {n: v for n, v in values.items() if n.startswith("reduction_")}
    assert all(v["params"]["threads"] in (1, 2) and "interval" in v for v in red.values())
    assert any("_b1_t2" in n for n in red) and any(n.endswith("_sdpa") for n in red)
    assert max(int(n.split("_b")[1].split("_")[0]) for n in red) == max(head["params"]["batch_sizes"]) > 1
    check_figures(figures, FIGURES)
