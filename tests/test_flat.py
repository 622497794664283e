"""Unit tests of attnlib.flat: closed forms, the tiling search, errors, and the FuseMax cross-check.

FuseMax figures below are typed in from the FuseMax MICRO'24 artifact, FPSG-UIUC/micro24-fusemax-artifact
commit f543beb, workspace/outputs/pregenerated/results/flat_validation.csv (MIT licence). The test does
not read that file.
"""
import itertools
import math

import numpy as np
import pytest

from attnlib import flat
from attnlib.hw import KiB, make_accelerator

E = 2  # bytes per element on the FLAT platforms (16-bit)


def small_acc(buffer_bytes, pes=16):
    return make_accelerator("test", pes=pes, clock_hz=1e9, bits=16, buffer_bytes=buffer_bytes, dram_bandwidth=1e10)


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("model,seq", [("bert-base", 2048), ("xlm", 8192), ("t5", 65536)])
def test_baseline_traffic_closed_form_when_scores_do_not_fit(model, seq):
    acc = flat.platform("edge")
    sh = flat.AttentionShape.from_model(model, seq)
    b = flat.baseline_cost(sh, acc)
    scores = sh.bh * seq * seq
    assert b.spilled_fraction == 1.0
    assert b.traffic["scores"] == pytest.approx(4 * scores * E)          # write L, read L, write A, read A
    compulsory = 4 * sh.bh * seq * sh.d_head * E                        # Q, K, V, O once each
    qkvo = b.traffic["Q"] + b.traffic["K"] + b.traffic["V"] + b.traffic["O"]
    assert qkvo >= compulsory - 1
    # each GEMM tile is searched: re-reads of Q/K/V stay a small fraction of the score passes
    assert qkvo - compulsory <= 0.5 * b.traffic["scores"]


def test_baseline_keeps_scores_on_chip_when_they_fit():
    acc = small_acc(1 * 1024 ** 2)
    sh = flat.AttentionShape(1, 2, 128, 16)
    b = flat.baseline_cost(sh, acc)
    assert b.spilled_fraction == 0 and b.traffic["scores"] == 0
    assert b.traffic_bytes == pytest.approx(4 * 2 * 128 * 16 * E)


@pytest.mark.parametrize("platform,model,seq", [("cloud", "bert-base", 4096), ("cloud", "xlm", 16384),
                                                ("edge", "bert-base", 512)])
def test_flat_traffic_is_compulsory_when_rows_fit(platform, model, seq):
    acc = flat.platform(platform)
    sh = flat.AttentionShape.from_model(model, seq)
    f = flat.search_flat(sh, acc).best
    assert f.spilled_fraction == 0
    assert f.traffic_bytes == pytest.approx(4 * sh.bh * seq * sh.d_head * E)
    assert f.footprint_bytes <= acc.buffer.capacity_bytes


def test_streamed_kv_is_reread_once_per_row_tile():
    acc = flat.platform("cloud")
    sh = flat.AttentionShape.from_model("bert-base", 4096)
    f = flat.flat_cost(sh, acc, rows=256, kv_resident=False)
    assert f.traffic["K"] == pytest.approx(sh.bh * 4096 * 64 * E * 4096 / 256)
    assert f.traffic["Q"] == pytest.approx(sh.bh * 4096 * 64 * E)


def test_spill_is_counted():
    # edge, 64K tokens, 1024 rows: 1024 x 64K logits (128 MiB) cannot fit in 512 KiB -> almost all spilled
    acc = flat.platform("edge")
    sh = flat.AttentionShape.from_model("bert-base", 65536)
    f = flat.flat_cost(sh, acc, rows=1024)
    assert f.spilled_fraction > 0.99
    assert f.traffic["scores"] == pytest.approx(4 * f.spilled_fraction * sh.bh * 65536 ** 2 * E)


def test_latency_overlap_bounds():
    acc = flat.platform("edge")
    sh = flat.AttentionShape.from_model("bert-base", 4096)
    full = flat.baseline_cost(sh, acc, overlap=1.0)
    serial = flat.baseline_cost(sh, acc, overlap=0.0)
    for op_f, op_s in zip(full.ops, serial.ops):
        assert op_f["latency_s"] == pytest.approx(max(op_f["compute_s"], op_f["memory_s"]))
        assert op_s["latency_s"] == pytest.approx(op_s["compute_s"] + op_s["memory_s"])
    with pytest.raises(ValueError):
        flat.combine(1.0, 1.0, 1.5)


def test_energy_parts_and_flat_saves_dram_energy():
    acc = flat.platform("cloud")
    sh = flat.AttentionShape.from_model("t5", 8192)
    b, f = flat.baseline_cost(sh, acc), flat.search_flat(sh, acc).best
    assert b.energy["MAC"] == pytest.approx(f.energy["MAC"]) == pytest.approx(2 * sh.bh * 8192 ** 2 * 64 * acc.compute.mac_pj * 1e-12)
    assert b.energy["DRAM"] == pytest.approx(8e-12 * b.traffic_bytes * acc.dram.read_pj_per_bit)
    assert f.energy["DRAM"] < b.energy["DRAM"] / 10


# ----------------------------------------------------------------------------- search
def test_search_is_no_worse_than_any_legal_tile_brute_force():
    acc = small_acc(48 * KiB)
    sh = flat.AttentionShape(2, 4, 256, 16)
    best = flat.search_flat(sh, acc).best
    assert best.footprint_bytes <= acc.buffer.capacity_bytes
    n_legal = 0
    for g, r, kv in itertools.product((1, 4), [2 ** i for i in range(9)], (False, True)):
        try:
            c = flat.flat_cost(sh, acc, heads_per_tile=g, rows=r, kv_resident=kv)
        except ValueError:
            continue
        n_legal += 1
        assert c.footprint_bytes <= acc.buffer.capacity_bytes
        assert best.latency_s <= c.latency_s * (1 + 1e-12)
    assert n_legal > 5


def test_search_is_fast():
    s = flat.search_flat(flat.AttentionShape.from_model("xlm", 65536), flat.platform("cloud"))
    assert s.seconds < 0.5 and s.n_legal > 10


def test_impossible_configs_raise():
    sh = flat.AttentionShape(1, 1, 4096, 64)
    tiny = small_acc(256)  # 128 elements: less than one Q row + O row + a K/V chunk
    with pytest.raises(ValueError, match="smaller than the smallest FLAT tile"):
        flat.search_flat(sh, tiny)
    with pytest.raises(ValueError, match="needs .* bytes on chip"):
        flat.flat_cost(sh, flat.platform("edge"), rows=4096, kv_resident=True)
    with pytest.raises(ValueError, match="smaller than the smallest GEMM tile"):
        flat.baseline_cost(sh, small_acc(4))
    with pytest.raises(ValueError):
        flat.flat_cost(sh, flat.platform("edge"), rows=0)
    with pytest.raises(KeyError):
        flat.platform("datacenter")
    with pytest.raises(ValueError):
        flat.AttentionShape(0, 1, 8, 8)


# ----------------------------------------------------------------------------- FuseMax artifact cross-check
# (platform, model, seq): (ideal_latency s, mem_traffic bytes) from flat_validation.csv (see module docstring)
FUSEMAX = {
    ("cloud", "bert-base", 512): (0.0004183148936170213, 352485376.00000006),
    ("cloud", "trxl", 2048): (0.008924051063829787, 6711050240.000001),
    ("cloud", "bert-base", 8192): (0.10708861276595745, 78114881536.00002),
    ("cloud", "xlm", 16384): (1.1422785361702128, 594926982817.5817),
    ("edge", "bert-base", 512): (0.026772153191489362, 1409490944.0),
    ("edge", "bert-base", 8192): (6.853671217021277, 413927520256.0),
    ("edge", "trxl", 16384): (36.55291315744681, 2203318269952.0),
    ("edge", "t5", 32768): (73.10582631489362, 4402341525504.0),
    ("edge", "bert-base", 65536): (438.6349578893617, 26401164015616.0),
}
# Rows where the artifact's FLAT mapping spills the logits (QK_loc = A_loc = offchip, edge N >= 8K):
SPILLED_ROWS = [k for k in FUSEMAX if k[0] == "edge" and k[2] >= 8192]
TRAFFIC_TOL = 0.05  # relative


@pytest.mark.parametrize("key", list(FUSEMAX))
def test_ideal_latency_equals_fusemax_formula(key):
    p, m, n = key
    acc = flat.platform(p)
    sh = flat.AttentionShape.from_model(m, n, batch=64)
    assert sh.ideal_latency_s(acc.compute.pes, acc.compute.clock_hz) == pytest.approx(FUSEMAX[key][0], rel=1e-12)
    assert flat.compare(sh, acc)["ideal_latency_s"] == pytest.approx(FUSEMAX[key][0], rel=1e-12)


@pytest.mark.parametrize("key", SPILLED_ROWS)
def test_flat_traffic_matches_fusemax_where_both_spill(key):
    p, m, n = key
    f = flat.search_flat(flat.AttentionShape.from_model(m, n, batch=64), flat.platform(p)).best
    assert f.spilled_fraction > 0.9
    assert f.traffic_bytes == pytest.approx(FUSEMAX[key][1], rel=TRAFFIC_TOL)


@pytest.mark.parametrize("key", [k for k in FUSEMAX if k not in SPILLED_ROWS])
def test_flat_search_traffic_no_more_than_fusemax_mapping(key):
    # Where the artifact keeps the logits on chip, its Timeloop mapping re-reads operands per array-wide pass;
    # our search must find a tile with at most that traffic (and at least the compulsory Q, K, V, O).
    p, m, n = key
    sh = flat.AttentionShape.from_model(m, n, batch=64)
    f = flat.search_flat(sh, flat.platform(p)).best
    assert 4 * sh.bh * n * sh.d_head * E - 1 <= f.traffic_bytes <= FUSEMAX[key][1]


def test_module_table_matches_typed_rows():
    for key, (ideal, traffic) in FUSEMAX.items():
        row = flat.FUSEMAX_FLAT_ROWS[key]
        assert row[3] == traffic and row[4] == ideal


# ----------------------------------------------------------------------------- measured check (tiny)
def test_measure_fused_vs_unfused_tiny():
    out = flat.measure_fused_vs_unfused([64, 128], batch_heads=2, d_head=16, rows=32, repeats=1, device="cpu")
    assert [r["seq"] for r in out] == [64, 128]
    for r in out:
        assert r["unfused_s"] > 0 and r["fused_s"] > 0 and math.isfinite(r["speedup"])
        assert r["unfused_intermediate_bytes"] == 2 * 2 * r["seq"] ** 2 * 4
        assert r["fused_intermediate_bytes"] == 2 * 2 * 32 * r["seq"] * 4
    pred = flat.predict_cpu([256, 1024])
    assert all(np.isfinite(p["predicted_speedup"]) and p["predicted_speedup"] > 0 for p in pred)
