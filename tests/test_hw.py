"""Hardware primitives: provenance, closed forms, impossible configurations."""
import math

import numpy as np
import pytest

from attnlib import hw


def test_every_energy_entry_has_source_and_node_rule():
    for e in hw.ENERGY_TABLE.values():
        assert e.source and e.pj > 0 and e.per in ("op", "bit")
        assert e.node_nm is None or e.node_nm > 0
        assert e.node_nm is not None or e.action.startswith("dram")  # only off-chip is unscaled


def test_horowitz_anchor_values_and_scaling_rule():
    assert hw.energy_pj("fp32_mult") == pytest.approx(3.7)
    assert hw.energy_pj("sram_32KB") * 64 == pytest.approx(20.0)
    # linear capacitance scaling: 45 -> 22.5 nm halves on-chip energy, DRAM unchanged
    assert hw.energy_pj("int8_mac", 22.5) == pytest.approx(hw.energy_pj("int8_mac") / 2)
    assert hw.energy_pj("dram_hbm2", 7) == hw.energy_pj("dram_hbm2")
    assert hw.energy_pj("int8_mac", 90, alpha=2) == pytest.approx(4 * hw.energy_pj("int8_mac"))
    with pytest.raises(KeyError, match="known actions"):
        hw.energy_pj("quantum_mac")
    with pytest.raises(ValueError):
        hw.energy_pj("int8_mac", -5)


def test_sram_energy_interpolation_is_monotone_and_hits_anchors():
    assert hw.sram_energy_pj_per_bit(32 * 1024) == pytest.approx(20 / 64)
    sizes = [2 ** k for k in range(10, 27)]
    e = [hw.sram_energy_pj_per_bit(s) for s in sizes]
    assert all(a <= b for a, b in zip(e, e[1:]))
    assert hw.sram_energy_pj_per_bit(64 * 1024 * 1024) == pytest.approx(100 / 64)  # banked at 1 MB
    with pytest.raises(ValueError):
        hw.sram_energy_pj_per_bit(0)


def test_memory_level_time_and_energy():
    d = hw.dram(100e9, pj_per_bit=10.0)
    assert d.time_s(1e9) == pytest.approx(0.01)
    assert d.energy_j(read_bytes=1e9) == pytest.approx(8e9 * 10e-12)
    with pytest.raises(ValueError, match="bandwidth"):
        hw.dram(0)
    with pytest.raises(ValueError, match="capacity"):
        hw.sram(-1, 1e9)


def test_compute_array():
    c = hw.ComputeArray(pes=1024, clock_hz=1e9, bits=16, mac_pj=1.0)
    assert c.peak_flops == 2.048e12
    assert c.time_s(1024e9) == pytest.approx(1.0)
    assert c.energy_j(1e12) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        hw.ComputeArray(pes=0, clock_hz=1e9, bits=16, mac_pj=1.0)
    with pytest.raises(ValueError):
        hw.ComputeArray(pes=4, clock_hz=1e9, bits=16, mac_pj=1.0, utilisation=1.5)


def test_roofline_bounds():
    p = hw.roofline(flops=1e9, nbytes=1e9, peak_flops=1e12, bandwidth=1e11)
    assert p.bound == "memory" and p.ridge == 10 and p.time_s == pytest.approx(1e-2)
    p = hw.roofline(flops=1e12, nbytes=1e9, peak_flops=1e12, bandwidth=1e11)
    assert p.bound == "compute" and p.time_s == pytest.approx(1.0)
    arr = hw.roofline(np.array([1e9, 1e12]), np.array([1e9, 1e9]), 1e12, 1e11)
    assert list(arr["bound"]) == ["memory", "compute"]
    with pytest.raises(ValueError):
        hw.roofline(1, 1, 0, 1)


def test_flat_presets_match_the_paper_card():
    edge, cloud = hw.preset("flat-edge"), hw.preset("flat-cloud")
    assert edge.compute.pes == 32 * 32 and cloud.compute.pes == 256 * 256
    assert edge.buffer.capacity_bytes == 512 * hw.KiB and cloud.buffer.capacity_bytes == 32 * hw.MiB
    assert edge.dram.bandwidth == 50 * hw.GiB and cloud.dram.bandwidth == 400 * hw.GiB
    assert edge.compute.clock_hz == cloud.compute.clock_hz == 940e6
    assert edge.bytes_per_element == 2
    assert edge.sources and cloud.sources
    with pytest.raises(KeyError, match="known presets"):
        hw.preset("tpu-v9")
    with pytest.raises(ValueError):
        edge.with_buffer(0)
    assert edge.with_buffer(64 * hw.KiB).buffer.read_pj_per_bit < edge.buffer.read_pj_per_bit


def test_decode_is_memory_bound_and_long_prefill_compute_bound_on_flat_edge():
    from attnlib.attention import attention_cost, decode_cost
    edge = hw.preset("flat-edge")
    d = decode_cost(1, 12, 4096, 64)
    assert edge.roofline(d.flops, d.bytes_qkvo).bound == "memory"
    p = attention_cost(1, 12, 4096, 4096, 64)
    assert edge.roofline(p.flops, p.bytes_qkvo).bound == "compute"
    assert math.isclose(edge.roofline(p.flops, p.bytes_qkvo).time_s, p.flops / edge.compute.peak_flops)
