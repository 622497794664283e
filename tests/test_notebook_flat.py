"""Runs notebooks/03_flat.ipynb in the quick profile and checks what it records and draws."""
import pytest
from notebook_checks import check_claims, check_figures

# headline claims (FLAT's convention) with the paper's values, as the card quotes them
CLAIMS = {"edge_speedup": ("ratio", 1.94), "cloud_speedup": ("ratio", 1.76), "edge_energy_saving": ("percent", 49),
          "cloud_energy_saving": ("percent", 42), "v7_edge_speedup": ("ratio", 1.75), "v7_cloud_speedup": ("ratio", 1.65),
          "v7_edge_energy_saving": ("percent", 44), "v7_cloud_energy_saving": ("percent", 55),
          "edge_speedup_64k": ("ratio", 2.8), "cloud_speedup_64k": ("ratio", 3.07), "t4_200k_attention": ("ratio", 1.7),
          "t4_200k_e2e": ("ratio", 1.1), "t4_20m": ("ratio", 1.02), "t4_2g": ("ratio", 1.02),
          "t4_vs_naive_20k": ("ratio", [1.5, 3.3]), "t4_vs_naive_200k": ("ratio", [1.5, 3.3]),
          "t4_vs_naive_20m": ("ratio", [1.5, 3.3]), "t4_vs_naive_2g": ("ratio", [1.5, 3.3]),
          "scarce_memory_speedup": ("ratio", 1.5),
          "share_512": ("percent", 12), "share_4096": ("percent", 49), "share_16384": ("percent", 79),
          "share_65536": ("percent", 94)}
FIGURES = {"flat_speedup_energy", "flat_speedup_vs_n", "flat_granularity", "flat_traffic", "flat_table4", "flat_scarce_memory", "flat_share",
           "flat_cpu_measured", "flat_sensitivity"}


@pytest.mark.notebook
def test_flat_notebook(run_notebook):
    results, figures = run_notebook("03_flat")
    expected = {cid: dict(kind=kind, paper_value=paper, basis="modelled", role="headline")
                for cid, (kind, paper) in CLAIMS.items()}
    for suffix in ("_full", "_full_search"):
        expected.update({f"{cid}{suffix}": dict(kind=kind, paper_value=paper, basis="modelled", role="alternative", of=cid)
                         for cid, (kind, paper) in CLAIMS.items()})
    claims = check_claims(results, "03_flat", "FLAT", expected)
    for cid in CLAIMS:
        c = claims[cid]
        assert c["params"]["convention"] == "flat" and claims[f"{cid}_full"]["params"]["convention"] == "full"
        assert c["params"]["map_space"] == "replica" and claims[f"{cid}_full_search"]["params"]["map_space"] == "full"
        swept = claims[f"{cid}_full"]["assumption_range"]["swept"]
        assert set(swept) == {"DRAM energy scale", "SRAM energy scale", "MAC energy scale", "1D-array width scale", "overlap"}
        # every headline: direction, swept axes (the map space among them), a rule, the paper's setting first
        assert c["direction"] in ("about", "within") and c["headline_rule"] and c["variation"]["not_covered"]
        names = {a["name"] for a in c["axes"]}
        assert "FLAT-Opt map space" in names and c["headline_scenario"]["FLAT-Opt map space"] == "evaluated FLAT"
        assert c["unswept"] == [] and c["scenario_range"]["n"] == len(c["scenarios"])
    # Table 4's 20 MiB row: the platform (unknown on the card) is among what decides it
    assert "platform" in claims["t4_20m"]["decided_by"]
    # FLAT-Opt contains FLEX-Opt's mapping, so it is never slower
    assert all(claims[c]["reproduced"] >= 1 for c in CLAIMS if claims[c]["unit"] == "x")
    values = {v["name"]: v for v in results["values"]}
    assert values["fusemax_same_regime_max_rel_err"]["value"] < 0.01
    assert values["replica_space_cloud_max_rel_err"]["value"] < 0.01
    assert values["cpu_measured_speedup"]["basis"] == "measured"
    check_figures(figures, FIGURES)
