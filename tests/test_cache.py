"""The pickle-free result cache round-trips nested results and recomputes broken files."""
import numpy as np
import pytest

from attnlib import cache


def test_round_trip_preserves_structure_types_and_values():
    value = {0: {"n_kept": np.arange(6.0).reshape(2, 3), "flag": True}, "names": ["a", "b"],
             "pair": (1, 2.5), "none": None, "scalar": np.float64(3.5), 7: [np.int8(4)]}
    back = cache.loads(cache.dumps(value))
    assert set(back) == {0, "names", "pair", "none", "scalar", 7}
    np.testing.assert_array_equal(back[0]["n_kept"], value[0]["n_kept"])
    assert back[0]["flag"] is True and back["names"] == ["a", "b"] and back["pair"] == (1, 2.5)
    assert back["none"] is None and back["scalar"] == 3.5 and back[7][0] == 4


def test_objects_are_refused():
    with pytest.raises(TypeError):
        cache.dumps({"f": np.array([object()], dtype=object)})
    with pytest.raises(TypeError):
        cache.dumps({(1, 2): 3})


def test_cached_computes_once_and_recovers_from_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.ones(3)}

    key = {"model": "m", "n": 3}
    assert cache.cached("ns", "r", key, compute)["x"].sum() == 3
    assert cache.cached("ns", "r", key, compute)["x"].sum() == 3
    assert len(calls) == 1
    cache.cached("ns", "r", {"model": "m", "n": 4}, compute)   # another key -> recomputed
    assert len(calls) == 2
    for f in (tmp_path / "ns").glob("*.npz"):
        f.write_bytes(b"not a zip file")
    assert cache.cached("ns", "r", key, compute)["x"].sum() == 3
    assert len(calls) == 3
