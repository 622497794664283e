"""The scorecard: grouping of headline, alternative and context rows, flags for old records and mixed
profiles, labels never truncated, the generated verdict per paper, a headline figure that fits a screen."""
import json

import matplotlib.pyplot as plt
import pytest

from attnlib import claims, scorecard, stats
from attnlib.claims import Axis, Deviation

DEV = [Deviation("baseline", "FLEX-Opt", "unfused", "paper", "lowers: weaker baseline")]
OP = dict(how="paper setting", rule="N = 512")
LONG = "edge: speedup of FLAT-Opt over FLEX-Opt under FLAT's own convention, geomean over the five models " * 2
PLATFORM = Axis("platform", ("edge", "cloud"), "edge", "paper", "whether the logits fit on chip")


def _record(folder, notebook="03_flat", paper="FLAT", profile="full"):
    rec = claims.Recorder(notebook, paper, profile=profile)
    common = dict(unit="x", kind="ratio", basis="modelled", deviations=DEV, operating_point=OP,
                  averaging="geomean over 5 models", note="modelled")
    rec.claim("speedup", LONG, paper_value=1.75, reproduced=1.7, interval=stats.no_interval(1.7),
              assumption_range=dict(lo=1.2, hi=1.8, swept={"dram_pj_per_bit": [10, 20, 40]}), direction="about",
              axes=[PLATFORM], scenarios=[({"platform": "cloud"}, 1.0)], headline_scenario={"platform": "edge"},
              headline_rule="the claim names the edge platform", **common)
    rec.claim("energy", "energy", paper_value=19.6, reproduced=1.5, interval=stats.Interval(1.2, 1.9, "boot", 40),
              assumption_range=dict(lo=1.5, hi=1.5, swept={}), direction="about", no_axes="a closed form",
              variation=dict(unit="heads", covers=["heads"], not_covered=["corpus"]), **common)
    rec.claim("speedup_full", "full accounting", paper_value=1.75, reproduced=1.5, role="alternative", of="speedup",
              interval=stats.Interval(1.1, 1.6, "boot", 40), assumption_range=dict(lo=1.4, hi=1.55, swept={"w": [8, 32]}),
              **common)
    rec.claim("chip", "the later chip's number", paper_value=0.75, reproduced=0.7, role="context", of="energy",
              interval=stats.no_interval(0.7), assumption_range=dict(lo=0.7, hi=0.7, swept={}), **common)
    path = folder / f"{notebook}.json"
    path.write_text(json.dumps(rec.to_dict()))
    return path


def test_rows_grouped_flagged_and_explained(tmp_path):
    _record(tmp_path)
    old = {"notebook": "01_a3", "paper": "A3", "profile": "full", "schema": 2, "values": [], "claims": [
        {"claim_id": "x", "description": "old claim", "paper_value": 2.0, "reproduced": 1.0, "unit": "x",
         "kind": "ratio", "basis": "modelled", "params": {}, "note": "", "status": "partially reproduced"}]}
    (tmp_path / "01_a3.json").write_text(json.dumps(old))
    _record(tmp_path, "04_token_picker", "Token-Picker", profile="quick")
    rows = scorecard.collect(tmp_path, profile="full")
    flat = [r for r in rows if r.paper == "FLAT"]
    assert [r.claim_id for r in flat] == ["speedup", "speedup_full", "energy", "chip"]  # others right after their headline
    assert flat[0].status == "reproduced" and flat[0].robustness == "scenario-dependent"
    assert flat[0].decided_by == ["platform", "assumptions"] and flat[0].scenario_range == dict(lo=1.0, hi=1.7, n=2)
    assert flat[1].status == "inconclusive" and flat[2].status == "not reproduced" and flat[3].status == "context"
    assert all(r.why for r in flat[1:3]) and not flat[0].why
    assert [r.status for r in rows if r.paper == "A3"] == ["invalid record"]
    assert all("MIXED PROFILE" in r.shown_status for r in rows if r.paper == "Token-Picker")
    assert all(r.status == "not run yet" for r in rows if r.paper in ("SPRINT", "AttMEMO"))
    table = scorecard.markdown(rows)
    head = scorecard.headline_markdown(rows)
    assert LONG.strip() in head and "full accounting" not in head and "about 1.75 x" in head
    assert "1-1.7 (2)" in head and "🟢 reproduced" in head and "| platform, assumptions |" in head
    alt = scorecard.alternatives_markdown(rows, "FLAT")
    assert alt.startswith("<details>") and "1.5 [1.1, 1.6] x" in alt and "context: another chip" in alt
    assert "lies below the paper's about 19.6 x" in table
    counts = scorecard.summary(rows)
    assert counts["inconclusive"] == 0 and counts["not reproduced"] == 2 and counts["invalid record"] == 1
    assert counts["alternative rows"] == 2 and counts["context rows"] == 2


def test_verdict_per_paper_is_generated_from_the_rows(tmp_path):
    _record(tmp_path)
    v = scorecard.verdicts(scorecard.collect(tmp_path, profile="full"))
    assert set(v) == set(scorecard.PAPERS)
    assert v["FLAT"].startswith("1 of 2 headline claims reproduced, 1 not reproduced.")
    assert "Statuses flip with: platform (1 of 2), assumptions (1 of 2)." in v["FLAT"]
    assert "For instance, energy: 1.5 [1.2, 1.9] x lies below the paper's" in v["FLAT"]
    assert v["SPRINT"].startswith("Not run yet")


def test_headline_figure_fits_a_screen_with_complete_labels(tmp_path):
    _record(tmp_path)
    rows = scorecard.collect(tmp_path, profile="full")
    many = [r for r in rows if r.role == "headline" and r.reproduced is not None] * 20  # 40 headline rows
    fig = scorecard.figure(many + rows)
    assert fig.get_figheight() * plt.rcParams["savefig.dpi"] <= scorecard.MAX_FIGURE_PX
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    joined = " ".join(" ".join(part.strip() for part in label.split("\n")) for label in labels)
    assert " ".join(LONG.split()) in joined  # wrapped over lines, never cut
    assert not any("full accounting" in label for label in labels)  # headline rows only
    plt.close(fig)


@pytest.mark.parametrize("status_name", list(scorecard.STATUS_COLORS))
def test_every_status_has_a_colour_and_a_mark(status_name):
    assert scorecard.STATUS_COLORS[status_name].startswith("#") and scorecard.STATUS_MARKS[status_name]
