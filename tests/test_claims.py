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
    ("ratio", 2.0, 1.3, 1.2, 1.5, "partially reproduced"),
    ("ratio", 2.0, 1.2, 1.0, 1.5, "inconclusive"),           # 1.0x is no gain: lo not reproduced
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
                averaging="geomean over 5 models", params={"n": 512}, note="modelled", direction="about",
                no_axes="a test claim")
    args.update(kw)
    return rec.claim(cid, cid, **args)


def test_recorder_writes_the_schema_to_staging(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_STAGE", str(tmp_path))
    rec = claims.Recorder("07_demo", "Demo", profile="quick")
    c = _claim(rec)
    assert (c.status, c.point_status, c.robustness) == ("reproduced", "reproduced", "assumption-dependent")
    _claim(rec, "speedup_alt", role="alternative", of="speedup", reproduced=1.5, interval=Interval(1.1, 1.9, "boot", 30),
           assumption_range=dict(lo=1.5, hi=1.5, swept={}))
    rec.value("ppl", 25.0, unit="", basis="measured")
    with pytest.raises(ValueError, match="twice"):
        _claim(rec)
    data = json.loads(rec.save().read_text())
    assert data["schema"] == claims.SCHEMA and claims.schema_problems(data) == []
    alt = data["claims"][1]
    assert alt["status"] == "inconclusive" and alt["why"].startswith("the 95% interval")
    assert "straddles" in rec.conclusion() and "| speedup |" in rec.table()
    assert claims.QUICK_BANNER in rec.conclusion() and claims.QUICK_BANNER in rec.table()
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
    (dict(direction=None), "direction"),
    (dict(direction="roughly"), "unknown direction"),
    (dict(direction="within"), "needs a .low, high. paper range"),
    (dict(no_axes=""), "scenario axes"),
    (dict(interval=Interval(1.8, 2.0, "boot", 10)), "variation"),
    (dict(interval=Interval(1.8, 2.0, "boot", 10), variation=dict(unit="x")), "exactly unit, covers, not_covered"),
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


# --- direction: one-sided claims are judged one-sided -------------------------------------------------
@pytest.mark.parametrize("paper,direction,value,lo,hi,expected", [
    (0.36, "at most", -0.48, -1.33, 0.38, "reproduced"),         # SPRINT: below the bound, hi 0.02 above it
    (0.36, "about", -0.48, -1.33, 0.38, "inconclusive"),         # the same interval judged two-sided
    (0.36, "at most", 1.0, 0.8, 1.2, "partially reproduced"),    # hi 0.84 above the bound: the partial band
    (0.36, "at most", 1.5, 1.37, 2.0, "not reproduced"),          # more than a point above the bound
    (10000, "at least", 3e5, 2e5, 4e5, "reproduced"),
    (10000, "at least", 3000, 2000, 4000, "not reproduced"),
    ((1.5, 3.3), "within", 2.0, 1.8, 3.0, "reproduced"),
])
def test_one_sided_claims(paper, direction, value, lo, hi, expected):
    assert claims.status("accuracy" if paper == 0.36 else "ratio", paper, value, (lo, hi), direction) == expected


def test_direction_must_fit_the_paper_value():
    with pytest.raises(ValueError, match="within"):
        claims.status("ratio", 2.0, 2.0, direction="within")
    with pytest.raises(ValueError, match="does not match"):
        claims.status("ratio", (1.0, 2.0), 2.0, direction="at least")


# --- gains: 1.00x never reproduces a claimed gain ----------------------------------------------------
@pytest.mark.parametrize("paper,value,expected", [
    (1.94, 1.00, "not reproduced"),          # FLAT edge: no gain at all (r = 0.52 was "partially")
    (1.94, 0.99, "not reproduced"),
    (2.0, 2 ** 0.25 - 1e-6, "not reproduced"),   # g just below 0.25
    (2.0, 2 ** 0.25 + 1e-6, "partially reproduced"),
    (1.3, 1.05, "not reproduced"),           # r = 0.81 alone would say reproduced: a sixth of the gain
    (2.0, 2 ** 0.5 + 1e-6, "partially reproduced"),  # g >= 0.5 but r = 0.71: the ratio band decides
    (1.5, 1.25, "reproduced"),               # r = 0.83 and g = 0.55: both bands say reproduced
    (7.5, 7.02, "reproduced"),
    (1.65, 1.85, "reproduced"),              # g = 1.23, r = 1.12
    (1.05, 1.3, "reproduced"),               # r = 1.24; a claimed 5% gain is judged on the ratio alone
    (1.5, 2.9, "partially reproduced"),      # r = 1.93 (partial band); g = 2.6 caps at partially too

    (0.75, 0.70, "reproduced"),              # a fraction, not a gain: the ratio band alone
    (1.02, 1.00, "reproduced"),              # a claimed 2% gain is inside the band around 1x: ratio alone
    (1.25, 1.00, "reproduced"),              # at the band's edge the gain rule does not apply yet
    (1.26, 1.00, "not reproduced"),          # above it, 1.00x is no gain
])
def test_gain_rule_at_its_edges(paper, value, expected):
    assert claims.status("ratio", paper, value) == expected


def test_percent_reduction_at_or_below_zero_is_no_gain():
    assert claims.status("percent", 8.0, -1.0) == "not reproduced"   # 9 points away (partial), but the wrong sign
    assert claims.status("percent", 8.0, 0.5) == "partially reproduced"
    assert claims.status("percent", 4.0, -0.5) == "reproduced"       # a 4% claim is inside the band around 0


def test_band_edges_are_where_the_status_changes():
    e = claims.edges("ratio", 7.1)
    assert e == pytest.approx([3.55, 5.68, 8.875, 14.2])
    assert claims.edges("ratio", 1.94)[0] == pytest.approx(1.94 ** 0.25)  # below it: no gain worth the name
    for x in e:
        assert claims.band("ratio", 7.1, x * 0.999)[0] != claims.band("ratio", 7.1, x * 1.001)[0]
    assert claims.straddled_edges("ratio", 7.1, 3.37, 3.66) == pytest.approx([3.55])


def test_inconclusive_why_says_how_close_the_edge_is():
    rec = claims.Recorder("nb", "P")
    c = _claim(rec, paper_value=7.1, reproduced=3.53, interval=Interval(3.37, 3.66, "boot", 84),
               assumption_range=dict(lo=3.53, hi=3.53, swept={}), variation=dict(unit="heads", covers=["heads"],
                                                                                 not_covered=["corpus"]))
    assert c.status == "inconclusive"
    assert "band edge at 3.55 x, 0.02 x from the value" in c.why


# --- scenario axes ---------------------------------------------------------------------------------
RES = claims.Axis("baseline residency", ("none", "LRU rows", "query-tiled"), "none", "paper",
                  "what the baseline re-fetches decides the traffic it pays")
CTX = claims.Axis("context length", ("1K", "2K", "4K"), "unknown", "unknown", "kept tokens are constant per head")


def _scen_claim(axes, scenarios, head, value, paper=7.5, **kw):
    rec = claims.Recorder("nb", "P")
    return _claim(rec, paper_value=paper, reproduced=value, interval=no_interval(value),
                  assumption_range=dict(lo=value, hi=value, swept={}), axes=axes, scenarios=scenarios,
                  headline_scenario=head, headline_rule="the paper's text", no_axes="", **kw)


def test_an_axis_that_flips_the_status_decides_it():
    c = _scen_claim([RES], [({"baseline residency": "LRU rows"}, 3.4), ({"baseline residency": "query-tiled"}, 16.0)],
                    {"baseline residency": "none"}, 7.0)
    assert c.status == "reproduced" and c.robustness == "scenario-dependent"
    assert c.decided_by == ["baseline residency"]
    assert c.scenario_range == dict(lo=3.4, hi=16.0, n=3)
    assert "decided by: baseline residency" in claims.scenario_sentence(c)


def test_an_unknown_paper_option_that_flips_the_status_makes_it_inconclusive():
    c = _scen_claim([CTX], [({"context length": "1K"}, 5.7), ({"context length": "4K"}, 21.0)],
                    {"context length": "2K"}, 10.6, paper=12.1)
    assert c.status == "inconclusive" and c.point_status == "reproduced"
    assert c.why.startswith("decided by context length, whose paper option is not known")
    same = _scen_claim([CTX], [({"context length": "1K"}, 11.0), ({"context length": "4K"}, 13.0)],
                       {"context length": "2K"}, 12.0, paper=12.1)
    assert same.status == "reproduced" and same.robustness == "robust" and same.decided_by == []


def test_two_axes_decided_by_names_only_the_flipping_one():
    mem = claims.Axis("memory", ("ReRAM", "DRAM"), "ReRAM", "paper", "baseline memory technology")
    scen = [({"baseline residency": r, "memory": m}, v) for (r, m), v in {
        ("none", "DRAM"): 7.2, ("LRU rows", "ReRAM"): 3.0, ("LRU rows", "DRAM"): 3.1}.items()]
    c = _scen_claim([RES, mem], scen, {"baseline residency": "none", "memory": "ReRAM"}, 7.0)
    assert c.decided_by == ["baseline residency"] and c.unswept == []


def test_declared_but_unswept_axis_is_not_robust():
    c = _scen_claim([RES], [], {"baseline residency": "none"}, 7.0)
    assert c.robustness == "axes not swept" and c.unswept == ["baseline residency"]
    assert c.scenarios == [dict(options={"baseline residency": "none"}, value=7.0, status="reproduced")]


@pytest.mark.parametrize("change,match", [
    (dict(head={"baseline residency": "LRU rows"}), "headline is the paper's setting"),
    (dict(scen=[({"baseline residency": "cached"}, 3.0)]), "not one of axis"),
    (dict(scen=[({"residency": "none"}, 3.0)]), "exactly the axes"),
    (dict(scen=[({"baseline residency": "none"}, 3.0)]), "is not the reproduced value"),
    (dict(scen=[({"baseline residency": "LRU rows"}, 3.0), ({"baseline residency": "LRU rows"}, 3.1)]), "twice"),
    (dict(rule=""), "headline_rule"),
])
def test_bad_scenarios_raise_naming_the_problem(change, match):
    with pytest.raises(ValueError, match=match):
        rec = claims.Recorder("nb", "P")
        _claim(rec, paper_value=7.5, reproduced=7.0, interval=no_interval(7.0),
               assumption_range=dict(lo=7.0, hi=7.0, swept={}), axes=[RES], scenarios=change.get("scen", []),
               headline_scenario=change.get("head", {"baseline residency": "none"}),
               headline_rule=change.get("rule", "the paper's text"), no_axes="")


def test_bad_axes_raise():
    with pytest.raises(ValueError, match="not among its options"):
        claims.Axis("x", ("a", "b"), "c", "paper", "why")
    with pytest.raises(ValueError, match="unknown paper option"):
        claims.Axis("x", ("a", "b"), "unknown", "paper", "why")
    with pytest.raises(ValueError, match="say why"):
        claims.Axis("x", ("a", "b"), "a", "paper", " ")


def test_context_rows_are_shown_not_judged(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_STAGE", str(tmp_path))
    rec = claims.Recorder("nb", "P")
    _claim(rec)
    c = _claim(rec, "chip", role="context", of="speedup", paper_value=0.75, reproduced=0.71,
               interval=Interval(0.7, 0.72, "boot", 9), assumption_range=dict(lo=0.71, hi=0.71, swept={}))
    assert c.status == "context" and "context, not judged" in rec.conclusion()
    data = json.loads(rec.save().read_text())
    assert claims.schema_problems(data) == []


def test_rejudge_recomputes_the_recorded_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_STAGE", str(tmp_path))
    rec = claims.Recorder("nb", "P")
    c = _scen_claim([CTX], [({"context length": "1K"}, 5.7), ({"context length": "4K"}, 21.0)],
                    {"context length": "2K"}, 10.6, paper=12.1)
    rec.claims.append(c)
    data = json.loads(rec.save().read_text())
    rec_c = data["claims"][0]
    assert claims.rejudge(rec_c) == {k: rec_c[k] for k in ("status", "point_status", "robustness", "decided_by",
                                                           "plausible_statuses")}
