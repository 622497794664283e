"""Checks shared by the paper-notebook tests: the recorded claims and the figures written."""
import math

from attnlib.claims import rejudge, schema_problems


def check_claims(results, notebook: str, paper: str, expected: dict) -> dict:
    """Assert the quick-profile results of ``notebook`` hold every claim of ``expected``
    (claim_id -> fields such as kind, basis, paper_value that must match exactly), each with a finite
    reproduced value in range (ratios > 0, points strictly within +-100), a note, every field of the
    claim schema (interval, assumption range, deviations, operating point, averaging, role) and the
    status the shared rule gives on its interval. Returns the claims by id."""
    assert results is not None, f"{notebook} saved no results"
    assert results["notebook"] == notebook and results["paper"] == paper and results["profile"] == "quick"
    assert schema_problems(results) == []
    claims = {c["claim_id"]: c for c in results["claims"]}
    assert set(expected) <= set(claims), sorted(set(expected) - set(claims))
    for cid, fields in expected.items():
        c = claims[cid]
        for key, value in fields.items():
            assert c[key] == value, (cid, key, c[key], value)
        r = c["reproduced"]
        assert r is not None and math.isfinite(r), cid
        verdict = rejudge(c)
        assert {k: c[k] for k in verdict} == verdict, cid
        assert c["note"], cid
        assert r > 0 if c["kind"] == "ratio" else -100 < r < 100, (cid, r)
    assert any(c["role"] == "headline" for c in claims.values())
    assert all(math.isfinite(v["value"]) for v in results["values"])
    return claims


def check_figures(figures: dict, names, min_bytes: int = 5000) -> None:
    """Assert every figure in ``names`` was written and is a real image (more than ``min_bytes``)."""
    for name in names:
        assert name in figures and figures[name].stat().st_size > min_bytes, name
