"""The scorecard: grouping of headline and alternative rows, flags for old records and mixed profiles,
labels never truncated, the why line for every claim that is not reproduced."""
import json

import pytest

from attnlib import claims, scorecard, stats
from attnlib.claims import Deviation

DEV = [Deviation("baseline", "FLEX-Opt", "unfused", "paper", "lowers: weaker baseline")]
OP = dict(how="paper setting", rule="N = 512")
LONG = "edge: speedup of FLAT-Opt over FLEX-Opt under FLAT's own convention, geomean over the five models " * 2


def _record(folder, notebook="03_flat", paper="FLAT", profile="full"):
    rec = claims.Recorder(notebook, paper, profile=profile)
    common = dict(unit="x", kind="ratio", basis="modelled", deviations=DEV, operating_point=OP,
                  averaging="geomean over 5 models", note="modelled")
    rec.claim("speedup", LONG, paper_value=1.75, reproduced=1.7, interval=stats.no_interval(1.7),
              assumption_range=dict(lo=1.2, hi=1.8, swept={"dram_pj_per_bit": [10, 20, 40]}), **common)
    rec.claim("energy", "energy", paper_value=19.6, reproduced=1.5, interval=stats.Interval(1.2, 1.9, "boot", 40),
              assumption_range=dict(lo=1.5, hi=1.5, swept={}), **common)
    rec.claim("speedup_full", "full accounting", paper_value=1.75, reproduced=1.1, role="alternative", of="speedup",
              interval=stats.Interval(0.8, 1.6, "boot", 40), assumption_range=dict(lo=1.0, hi=1.2, swept={"w": [8, 32]}),
              **common)
    path = folder / f"{notebook}.json"
    path.write_text(json.dumps(rec.to_dict()))
    return path


def test_rows_grouped_flagged_and_explained(tmp_path):
    _record(tmp_path)
    old = {"notebook": "01_a3", "paper": "A3", "profile": "full", "values": [], "claims": [
        {"claim_id": "x", "description": "old claim", "paper_value": 2.0, "reproduced": 1.0, "unit": "x",
         "kind": "ratio", "basis": "modelled", "params": {}, "note": "", "status": "partially reproduced"}]}
    (tmp_path / "01_a3.json").write_text(json.dumps(old))
    _record(tmp_path, "04_token_picker", "Token-Picker", profile="quick")
    rows = scorecard.collect(tmp_path, profile="full")
    flat = [r for r in rows if r.paper == "FLAT"]
    assert [r.claim_id for r in flat] == ["speedup", "speedup_full", "energy"]  # alternative right after its headline
    assert flat[0].status == "reproduced" and flat[0].robustness == "assumption-dependent"
    assert flat[1].status == "inconclusive" and flat[2].status == "not reproduced"
    assert all(r.why for r in flat[1:]) and not flat[0].why
    assert [r.status for r in rows if r.paper == "A3"] == ["invalid record"]
    assert all("MIXED PROFILE" in r.shown_status for r in rows if r.paper == "Token-Picker")
    assert all(r.status == "not run yet" for r in rows if r.paper in ("SPRINT", "AttMEMO"))
    table = scorecard.markdown(rows)
    assert LONG.strip() in table and "↳ full accounting" in table and "1.1 [0.8, 1.6] x" in table
    assert "lies below the paper's 19.6 x" in table
    counts = scorecard.summary(rows)
    assert counts["inconclusive"] == 2 and counts["alternative rows"] == 2 and counts["invalid record"] == 1


def test_figure_labels_are_complete(tmp_path):
    _record(tmp_path)
    rows = scorecard.collect(tmp_path, profile="full")
    fig = scorecard.figure(rows)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    joined = " ".join(" ".join(part.strip() for part in label.split("\n")) for label in labels)
    assert " ".join(LONG.split()) in joined  # wrapped over lines, never cut
    assert any(label.lstrip().startswith("↳ alternative") for label in labels)
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("status_name", list(scorecard.STATUS_COLORS))
def test_every_status_has_a_colour(status_name):
    assert scorecard.STATUS_COLORS[status_name].startswith("#")
