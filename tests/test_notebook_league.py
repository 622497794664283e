"""The league notebook, executed in the quick profile: table rows for every workload x technique (n/a with
a reason where an idea does not apply), the figure written, values recorded."""
import pytest

from notebook_checks import check_figures


@pytest.mark.notebook
def test_league_notebook_quick(run_notebook):
    results, figures = run_notebook("06_league")
    assert results["notebook"] == "06_league" and results["profile"] == "quick"
    names = {v["name"] for v in results["values"]}
    assert any(n.startswith("enc-64_FLAT_") for n in names)
    assert any(n.startswith("dec-decode-256_Token-Picker_") for n in names)
    assert not any(n.startswith("enc-64_Token-Picker_") for n in names)   # n/a on an encoder
    assert all(v["value"] > 0 for v in results["values"])
    check_figures(figures, ["league_speedup_vs_quality"])
