"""The primer and the scorecard notebooks, executed in the quick profile."""
import json

import pytest

from attnlib.scorecard import PAPERS


@pytest.mark.notebook
def test_primer_records_checked_decode_intensity(run_notebook):
    results, figures = run_notebook("00_primer")
    values = {v["name"]: v for v in results["values"]}
    intensity = values["decode_step_intensity"]
    n, b = intensity["params"]["context"], intensity["params"]["bytes_per_element"]
    assert intensity["value"] == pytest.approx(2 * n / (b * (n + 1)), rel=1e-3)  # recorded at 4 significant digits
    assert intensity["basis"] == "modelled"
    assert values["decode_utilisation_edge"]["value"] < 0.1  # memory-bound: far below peak
    assert {"primer_roofline", "primer_work_traffic"} <= set(figures)
    assert all(p.stat().st_size > 10_000 for p in figures.values())


@pytest.mark.notebook
def test_scorecard_shows_missing_papers_as_not_run_yet(run_notebook, tmp_path):
    # one fake paper result in the staged results folder; every other paper must be "not run yet"
    stage_results = tmp_path / "stage" / "results"
    stage_results.mkdir(parents=True)
    from attnlib import claims, stats

    rec = claims.Recorder("03_flat", "FLAT", profile="quick")
    rec.claim("edge_speedup", "edge speedup", paper_value=1.94, reproduced=1.0, unit="x", kind="ratio",
              basis="modelled", interval=stats.no_interval(1.0), assumption_range=dict(lo=0.9, hi=1.1, swept={"w": [8, 32]}),
              deviations=[], operating_point=dict(how="paper setting", rule="N = 512"), averaging="one point",
              note="fake record for the test", direction="about", no_axes="a fake record")
    (stage_results / "03_flat.json").write_text(json.dumps(rec.to_dict()))
    _, figures = run_notebook("99_scorecard")
    table = (stage_results / "scorecard.md").read_text()
    headline = table.split("## Headline claims")[1].split("##")[0]
    lines = [l for l in headline.splitlines() if l.startswith("| ") and not l.startswith("| paper")]
    by_paper = {}
    for line in lines:
        by_paper.setdefault(line.split("|")[1].strip(), []).append(line)
    assert set(by_paper) == set(PAPERS)
    assert "not reproduced" in by_paper["FLAT"][0]  # 1.00x is no gain against 1.94x (was "partially")
    for paper in set(PAPERS) - {"FLAT"}:
        assert all("not run yet" in l for l in by_paper[paper])
    assert "scorecard" in figures
