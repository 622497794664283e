"""The FLAT model against AccelForge and CACTI (attnlib/flat/accelforge_check.csv).

The CSV is written by scripts/flat_accelforge_check.py, which needs Python >= 3.12 and AccelForge; these
tests only read it. attnlib's side of every row is recomputed from attnlib here, never read from the CSV.
"""
import numpy as np
import pandas as pd
import pytest

from attnlib import flat
from attnlib.flat import crosscheck as cc


@pytest.fixture(scope="module")
def stored():
    return cc.read()


@pytest.fixture(scope="module")
def tab(stored):
    return cc.table(stored, recompute=True)


def test_csv_is_small_and_complete(stored):
    assert 20 <= len(stored) <= 60
    need = {"quantity", "unit", "platform", "seq", "mapping", "component", "attnlib", "tool", "tool_name", "expect",
            "tool_source", "note", "versions", "date"}
    assert need <= set(stored.columns)
    assert stored.tool.notna().all() and (stored.tool > 0).all()
    assert "accelforge 1.0.467" in stored.versions.iloc[0] and "hwcomponents 1.0.114" in stored.versions.iloc[0]
    maps = stored[stored.mapping.notna()]
    # every (platform, N, unfused/fused) has traffic, latency and MAC energy
    got = set(zip(maps.platform, maps.seq.astype(int), maps.mapping, maps.quantity))
    for p in ("edge", "cloud"):
        for n in (512, 4096, 16384):
            for m in ("unfused", "fused"):
                for q in ("DRAM traffic", "latency", "MAC energy"):
                    assert (p, n, m, q) in got


def test_stored_attnlib_column_is_current(stored, tab):
    # the model has not moved since the CSV was written (else: rerun the script)
    np.testing.assert_allclose(tab.attnlib, stored.attnlib, rtol=1e-9)


def test_expectations_follow_from_attnlib(stored):
    maps = stored[stored.mapping.notna()]
    for r in maps.itertuples():
        assert r.expect == cc.expected(r.quantity, r.platform, int(r.seq), r.mapping), r


def test_agreeing_rows_within_tolerance(tab):
    agree = tab[tab.expect == "agree"]
    assert set(agree.quantity) == {"DRAM traffic", "latency", "MAC energy", "SRAM energy"}
    for r in agree.itertuples():
        assert abs(r.tool / r.attnlib - 1) <= cc.TOLERANCE[r.quantity], r
    # the cloud platform: unfused traffic and latency agree at every N (the earlier probe's finding)
    cloud_unf = agree[(agree.platform == "cloud") & (agree.mapping == "unfused")]
    assert set(cloud_unf.quantity) == {"DRAM traffic", "latency", "MAC energy"} and len(cloud_unf) == 9


def test_one_sided_rows(tab):
    fused_lat = tab[(tab.quantity == "latency") & (tab.mapping == "fused")]
    assert (fused_lat.expect == "tool >= attnlib").all()
    assert (fused_lat.tool >= fused_lat.attnlib * (1 - cc.ONE_SIDED_SLACK)).all()
    traffic = tab[(tab.quantity == "DRAM traffic") & (tab.expect == "tool <= attnlib")]
    assert (traffic.tool <= traffic.attnlib * (1 + cc.ONE_SIDED_SLACK)).all()
    assert tab.ok.all()


def test_fused_latency_is_the_sum_of_stages(stored):
    # AccelForge adds the stage times: its fused latency is the sum of its per-Einsum latencies
    for r in stored[(stored.quantity == "latency") & (stored.mapping == "fused")].itertuples():
        parts = [float(x.split()[1]) for x in r.note.removeprefix("per-Einsum ").split(", ")]
        assert sum(parts) == pytest.approx(r.tool, rel=1e-3)


def test_cacti_energies_and_the_sweep(tab):
    # the documented disagreements: CACTI's single-bank 32 MiB SRAM, the DRAM and 16-bit MAC tables
    d = tab[tab.expect == "differs"].set_index(["quantity", "component"])
    assert d.loc[("SRAM energy", "SRAM 32768 KiB"), "ratio"] > 2           # attnlib charges a 1 MiB bank
    assert d.loc[("MAC energy per op", "16-bit int MAC, 32-bit accumulator"), "ratio"] > 2
    assert 1 < d.loc[("DRAM energy", "HBM2"), "ratio"] < 2
    # every tool energy of a swept constant lies inside the sweep's range (the CACTI end added to it)
    for q, name in (("SRAM energy", "SRAM energy scale"), ("DRAM energy", "DRAM energy scale"),
                    ("MAC energy per op", "MAC energy scale")):
        rng = flat.ASSUMPTIONS[name]
        r = tab[(tab.quantity == q)].ratio
        assert min(rng) <= r.min() + 0.005 and r.max() - 0.005 <= max(rng), (q, rng, list(r))
        assert set(cc.tool_scales(q, df=tab)) <= set(rng)
    # SRAMs no larger than attnlib's 1 MiB bank agree with Horowitz's points within 10%
    small = tab[(tab.quantity == "SRAM energy") & (tab.expect == "agree")]
    assert len(small) == 2 and (small.rel_diff.abs() <= cc.TOLERANCE["SRAM energy"]).all()


def test_table_and_scales_are_pure_reads(stored):
    t = cc.table(stored)
    assert {"ratio", "rel_diff", "tolerance", "ok"} <= set(t.columns)
    assert isinstance(cc.versions(stored), str)
    with pytest.raises(ValueError):
        cc.attnlib_value("no such quantity", "edge")
    with pytest.raises(ValueError):
        cc.table(pd.DataFrame(dict(quantity=["latency"], expect=["maybe"], tool=[1.0], attnlib=[1.0])))
