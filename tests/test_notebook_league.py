"""The league notebook, executed in the quick profile: table rows for every workload x technique (n/a with
a reason where an idea does not apply), the figure written, values recorded."""
import pytest

from attnlib.claims import QUICK_BANNER

from notebook_checks import check_figures


@pytest.mark.notebook
def test_league_notebook_quick(run_notebook, tmp_path):
    results, figures = run_notebook("06_league")
    executed = (tmp_path / "06_league.out.ipynb").read_text()
    assert QUICK_BANNER.capitalize() in executed          # a quick run never passes for a result
    assert results["notebook"] == "06_league" and results["profile"] == "quick"
    names = {v["name"] for v in results["values"]}
    assert any(n.startswith("enc-64_FLAT_") for n in names)
    assert any(n.startswith("dec-decode-256_Token-Picker_") for n in names)
    assert not any(n.startswith("enc-64_Token-Picker_") for n in names)   # n/a on an encoder
    assert all(v["value"] > 0 for v in results["values"])
    check_figures(figures, ["league_speedup_vs_quality"])
