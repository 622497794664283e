"""The shared status rule (band test, interval rule, robustness), the claim schema and the results files."""
import json

import pytest

from attnlib import claims
from attnlib.paths import repo_root
from attnlib.stats import Interval, no_interval


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
def test_band_test_unchanged(kind, paper, repro, expected):
    assert claims.status(kind, paper, repro) == expected


@pytest.mark.parametrize("kind,paper,value,lo,hi,expected", [
    # ratio bands at paper 2.0: reproduced [1.6, 2.5], partially [1.0, 4.0]
    ("ratio", 2.0, 2.0, 1.6, 2.5, "reproduced"),            # both ends exactly on the reproduced edges
    ("ratio", 2.0, 2.0, 1.59, 2.5, "partially reproduced"),  # lo just inside the partial band
    ("ratio", 2.0, 1.2, 1.0, 1.5, "partially reproduced"),
    ("ratio", 2.0, 1.0, 0.99, 1.2, "inconclusive"),          # lo falls out of the partial band
    ("ratio", 2.0, 0.5, 0.4, 0.99, "not reproduced"),        # both below
    ("ratio", 2.0, 5.0, 4.01, 9.0, "not reproduced"),        # both above
    ("ratio", 2.0, 2.0, 0.9, 4.5, "inconclusive"),           # spans the band from below to above
    ("ratio", 2.0, 4.0, 3.0, 4.0, "partially reproduced"),   # hi exactly on the partial edge
    ("ratio", (10000, None), 9991, 7000, 12000, "partially reproduced"),
    ("ratio", (10000, None), 9991, 4000, 12000, "inconclusive"),
    # accuracy bands at paper 0.36: reproduced [-0.14, 0.86], partially [-0.64, 1.36]
    ("accuracy", 0.36, 0.56, -0.14, 0.86, "reproduced"),
    ("accuracy", 0.36, 0.56, -1.1, 2.2, "inconclusive"),
    ("accuracy", 0.36, 2.0, 1.37, 3.0, "not reproduced"),
    ("accuracy", (1.0, 1.6), -0.5, -1.2, -0.1, "not reproduced"),
    ("accuracy", (1.0, 1.6), -0.5, -1.2, 0.2, "inconclusive"),      # hi within 1 point of the range
    ("percent", 22, 1.4, -1.5, 4.4, "not reproduced"),
    ("percent", 22, 15, 12.1, 17.1, "partially reproduced"),
    ("percent", 22, 15, 11.0, 17.1, "inconclusive"),
])
def test_status_rule_on_the_interval_at_the_band_edges(kind, paper, value, lo, hi, expected):
    assert claims.status(kind, paper, value, (lo, hi)) == expected


@pytest.mark.parametrize("paper,value,arange,expected", [
    (2.0, 2.0, (1.7, 2.4), "robust"),
    (2.0, 2.0, (1.5, 2.4), "assumption-dependent"),
    ((10000, None), 9991, (3000, 40000), "assumption-dependent"),
    (7.5, 1.45, (1.2, 2.0), "robust"),
])
def test_robustness_at_the_ends_of_the_assumption_range(paper, value, arange, expected):
    assert claims.robustness("ratio", paper, value, arange) == expected


DEV = claims.Deviation("model", "BERT-base", "MiniLM", "unconfirmed", "unknown: smaller model")


def _claim(rec, cid="speedup", **kw):
    args = dict(paper_value=2.0, reproduced=1.9, unit="x", kind="ratio", basis="modelled",
                interval=no_interval(1.9), assumption_range=dict(lo=1.5, hi=2.1, swept={"dram_pj": [10, 20]}),
                deviations=[DEV], operating_point=dict(how="paper setting", rule="N = 512"),
                averaging="geomean over 5 models", params={"n": 512}, note="modelled")
    args.update(kw)
    return rec.claim(cid, cid, **args)


def test_recorder_writes_schema_2_json_to_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_STAGE", str(tmp_path))
    rec = claims.Recorder("07_demo", "Demo", profile="quick")
    c = _claim(rec)
    assert (c.status, c.point_status, c.robustness) == ("reproduced", "reproduced", "assumption-dependent")
    _claim(rec, "speedup_alt", role="alternative", of="speedup", reproduced=0.9, interval=Interval(0.7, 1.1, "boot", 30),
           assumption_range=dict(lo=0.9, hi=0.9, swept={}))
    rec.value("ppl", 25.0, unit="", basis="measured")
    with pytest.raises(ValueError, match="twice"):
        _claim(rec)
    data = json.loads(rec.save().read_text())
    assert data["schema"] == 2 and claims.schema_problems(data) == []
    alt = data["claims"][1]
    assert alt["status"] == "inconclusive" and alt["why"].startswith("the 95% interval")
    assert "straddles" in rec.conclusion() and "| speedup |" in rec.table()
    assert claims.load_results(tmp_path / "results")["07_demo"]["paper"] == "Demo"


@pytest.mark.parametrize("change,match", [
    (dict(basis="guessed"), "basis"),
    (dict(kind="vibes"), "known kinds"),
    (dict(interval=None), "interval is required"),
    (dict(interval=Interval(2.0, 2.2, "boot", 10)), "outside its interval"),
    (dict(assumption_range=dict(lo=1.0, hi=1.5, swept={})), "outside its assumption range"),
    (dict(assumption_range=dict(lo=1.0, hi=2.5)), "exactly lo, hi, swept"),
    (dict(operating_point=dict(how="my rule", rule="x")), "operating_point"),
    (dict(averaging=" "), "averaging"),
    (dict(role="alternative"), "names its headline"),
    (dict(deviations=[("model", "a", "b", "folklore", "raises")]), "source"),
    (dict(deviations=[("model", "a", "b", "paper", "bigger")]), "effect"),
])
def test_bad_claims_raise_naming_the_problem(change, match):
    with pytest.raises(ValueError, match=match):
        _claim(claims.Recorder("nb", "P"), **change)


def test_alternative_must_name_an_existing_headline():
    rec = claims.Recorder("nb", "P")
    _claim(rec, "alt", role="alternative", of="missing")
    with pytest.raises(ValueError, match="not a headline"):
        rec.to_dict()


def test_values_are_recorded_at_the_stated_precision():
    assert claims.round_sig(9990.679902304) == 9991.0
    assert claims.round_sig(1.4491092861) == 1.449
    assert claims._jsonable({"x": 0.123456789}) == {"x": 0.123457}
    # two runs that differ in the 6th digit record the same value
    assert claims.round_sig(1.2345671) == claims.round_sig(1.2345689)


def test_committed_results_follow_the_claim_schema():
    """Every claim in results/*.json has interval, assumption range, deviations, operating point,
    averaging and role (a claim without them fails here)."""
    folder = repo_root() / "results"
    results = claims.load_results(folder)
    assert results, "no results/*.json committed"
    problems = [p for data in results.values() for p in claims.schema_problems(data)]
    assert problems == []
