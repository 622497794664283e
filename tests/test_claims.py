"""The shared status rule and the results files."""
import json

import pytest

from attnlib import claims


@pytest.mark.parametrize("kind,paper,repro,expected", [
    ("ratio", 2.0, 2.0, "reproduced"),
    ("ratio", 2.0, 1.6, "reproduced"),      # 0.8 exactly
    ("ratio", 2.0, 2.5, "reproduced"),      # 1.25 exactly
    ("ratio", 2.0, 1.5, "partially reproduced"),
    ("ratio", 2.0, 4.0, "partially reproduced"),
    ("ratio", 2.0, 4.2, "not reproduced"),
    ("ratio", 2.0, 0.9, "not reproduced"),
    ("percent", 49, 44, "reproduced"),
    ("percent", 49, 40, "partially reproduced"),
    ("percent", 49, 30, "not reproduced"),
    ("accuracy", 0.36, 0.8, "reproduced"),
    ("accuracy", 0.36, 1.3, "partially reproduced"),
    ("accuracy", 0.36, 1.5, "not reproduced"),
    ("ratio", (2.6, 7.0), 5.0, "reproduced"),
    ("ratio", (2.6, 7.0), 2.2, "reproduced"),   # 2.2/2.6 = 0.85
    ("ratio", (2.6, 7.0), 1.5, "partially reproduced"),
    ("ratio", (10000, None), 3e5, "reproduced"),
    ("ratio", (10000, None), 3000, "not reproduced"),
    ("accuracy", (1.0, 1.6), 2.0, "reproduced"),
    ("ratio", 2.0, None, "not run yet"),
    ("ratio", 2.0, float("nan"), "not reproduced"),
])
def test_status_rule(kind, paper, repro, expected):
    assert claims.status(kind, paper, repro) == expected


def test_unknown_kind_and_basis_raise():
    with pytest.raises(ValueError, match="known kinds"):
        claims.status("vibes", 1, 1)
    rec = claims.Recorder("nb", "P")
    with pytest.raises(ValueError, match="basis"):
        rec.claim("c", "d", paper_value=1, reproduced=1, unit="x", kind="ratio", basis="guessed")


def test_recorder_writes_json_to_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_STAGE", str(tmp_path))
    rec = claims.Recorder("07_demo", "Demo", profile="quick")
    rec.claim("speedup", "speedup", paper_value=2.0, reproduced=1.9, unit="x", kind="ratio", basis="modelled",
              params={"n": 512})
    rec.value("ppl", 25.0, unit="", basis="measured")
    with pytest.raises(ValueError, match="twice"):
        rec.claim("speedup", "again", paper_value=2.0, reproduced=1.9, unit="x", kind="ratio", basis="modelled")
    path = rec.save()
    assert path == tmp_path / "results" / "07_demo.json"
    data = json.loads(path.read_text())
    assert data["claims"][0]["status"] == "reproduced" and data["values"][0]["value"] == 25.0
    assert claims.load_results(tmp_path / "results")["07_demo"]["paper"] == "Demo"
    assert "| speedup | 2 | 1.9 |" in rec.table()
