"""Shapes, platforms and the two cost conventions of the FLAT reproduction.

Two conventions exist for the same dataflows (docs/papers/flat.md, "Hardware and cost model"):

* ``FLAT`` -- FLAT's own cost model as FuseMax (arXiv 2406.10491 §VI-A, footnote 6) describes it
  [secondary]: the softmax is free (no data movement, unlimited 1D compute) and the energy is the DRAM
  traffic of the two tensor products (L = Q K^T and A V) times the DRAM energy per bit. Spilled logits
  therefore cost two passes over the scores (L written by the first product, A read by the second).
* ``FULL`` -- full accounting: the softmax runs as its passes (max, subtract+exp, sum, divide) on a 1D
  array of ``lanes`` units, one element per lane and cycle per pass; spilled logits cost four passes
  (write L, read L, write A, read A); the energy counts DRAM, SRAM (operand delivery to the array per
  tile, softmax reads/writes, every DRAM byte filled or drained once), MACs and vector operations.

`Costs` keeps the raw counts of a mapping so energies can be recomputed for other energy constants
without searching again (the sensitivity sweeps do that).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..hw import KiB, Accelerator, energy_pj, make_accelerator, preset
from ..workloads import workload

#: Sequence lengths of FLAT's evaluation grid [paper, v7 §8; FuseMax artifact]: 512 ... 64K.
FLAT_SEQS = tuple(512 * 2 ** i for i in range(8))
#: Batch of FLAT's evaluation [paper, v1 §6.1]; FuseMax artifact column B.
FLAT_BATCH = 64
#: Clock of both platforms [secondary: FuseMax artifact, src/accel/cascade.py]: 940 MHz.
FUSEMAX_CLOCK_HZ = 940e6

#: Softmax passes of the full accounting (max; subtract + exp; sum; divide): 1D-array cycles per score.
SOFTMAX_PASSES = 4
#: SRAM accesses per score of an on-chip softmax (reads in all 4 passes, writes after exp and divide).
SOFTMAX_SRAM_ACCESSES = 6
#: Vector operations per score: one exp and four simple ones (max, subtract, add, multiply by 1/sum).
SOFTMAX_EXP_OPS, SOFTMAX_SIMPLE_OPS = 1, 4
#: Passes over the scores when the logits live off chip: FLAT's convention (write L, read A) and full
#: accounting (write L, read L, write A, read A).
SPILL_PASSES = {"flat": 2, "full": 4}


@dataclass(frozen=True)
class Convention:
    """A cost convention: ``softmax_free`` (no softmax time or traffic) and ``energy`` ("dram-products"
    or "full")."""

    name: str
    softmax_free: bool
    energy: str
    label: str

    @property
    def spill_passes(self) -> int:
        return SPILL_PASSES[self.name]


FLAT = Convention("flat", True, "dram-products",
                  "FLAT's convention: softmax free, energy = DRAM traffic of the two products")
FULL = Convention("full", False, "full",
                  "full accounting: softmax passes on the 1D array, energy over DRAM, SRAM, MAC and vector work")
CONVENTIONS = {"flat": FLAT, "full": FULL}


def convention(c) -> Convention:
    """``c`` as a Convention (a Convention or one of the names "flat", "full")."""
    if isinstance(c, Convention):
        return c
    if c not in CONVENTIONS:
        raise ValueError(f"unknown cost convention {c!r}; known: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[c]


# ----------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class AttentionShape:
    """One attention layer: ``batch`` sequences x ``heads`` heads, ``seq`` tokens, ``d_head`` wide."""

    batch: int
    heads: int
    seq: int
    d_head: int
    name: str = ""

    def __post_init__(self):
        for k in ("batch", "heads", "seq", "d_head"):
            v = getattr(self, k)
            if int(v) != v or v < 1:
                raise ValueError(f"{k} must be a positive integer, got {v}")

    @property
    def bh(self) -> int:
        return self.batch * self.heads

    @property
    def scores(self) -> int:
        return self.batch * self.heads * self.seq ** 2

    @classmethod
    def from_model(cls, model: str, seq: int, batch: int = FLAT_BATCH) -> "AttentionShape":
        m = workload(model)
        return cls(batch, m.heads, seq, m.d_head, m.name)

    def ideal_latency_s(self, pes: int, clock_hz: float = FUSEMAX_CLOCK_HZ) -> float:
        """Compute-bound latency of the two products: 2*B*H*N^2*d MACs on ``pes`` MACs per cycle
        (the FuseMax artifact's ideal latency)."""
        return 2 * self.batch * self.heads * self.seq ** 2 * self.d_head / (pes * clock_hz)


# ----------------------------------------------------------------------------- platforms
def platform(name: str, *, buffer_bytes: float | None = None, dram_scale: float = 1.0, sram_scale: float = 1.0,
             lanes_scale: float = 1.0) -> Accelerator:
    """FLAT's ``"edge"`` or ``"cloud"`` platform (shared presets ``flat-edge`` / ``flat-cloud``), optionally
    with another buffer size (SRAM energy re-interpolated for it), DRAM / SRAM energy scaled, or the 1D
    array (vector lanes, default sqrt(PEs)) scaled -- the labelled assumptions the sweeps vary."""
    if name not in ("edge", "cloud"):
        raise ValueError(f"unknown FLAT platform {name!r}; known: edge, cloud")
    for k, v in (("dram_scale", dram_scale), ("sram_scale", sram_scale), ("lanes_scale", lanes_scale)):
        if not v > 0:
            raise ValueError(f"{k} must be positive, got {v}")
    p = preset(f"flat-{name}")
    buf = p.buffer.capacity_bytes if buffer_bytes is None else buffer_bytes
    acc = make_accelerator(p.name if buffer_bytes is None else f"{p.name} ({buf / KiB:g} KiB)",
                           pes=p.compute.pes, clock_hz=p.compute.clock_hz, bits=p.compute.bits, buffer_bytes=buf,
                           dram_bandwidth=p.dram.bandwidth, dram_pj_per_bit=p.dram.read_pj_per_bit * dram_scale,
                           sram_scale=sram_scale, vector_lanes=max(1, int(round(p.vector.lanes * lanes_scale))),
                           sources=p.sources)
    return acc


@dataclass(frozen=True)
class Hardware:
    """The numbers of an accelerator the dataflow model uses (plain floats, for vectorised code)."""

    name: str
    side: int            # P: the 2D array is P x P
    capacity: float      # on-chip buffer, elements
    elem_bytes: float
    clock_hz: float
    dram_bw: float       # bytes/s
    lanes: int           # 1D array width
    dram_pj_bit: float
    sram_pj_bit: float
    mac_pj: float
    exp_pj: float
    simple_pj: float

    @classmethod
    def of(cls, acc: Accelerator) -> "Hardware":
        side = int(round(math.sqrt(acc.compute.pes)))
        if side * side != acc.compute.pes:
            raise ValueError(f"{acc.name}: the dataflow model needs a square PE array, got {acc.compute.pes} PEs")
        e = acc.bytes_per_element
        node = acc.node_nm
        return cls(acc.name, side, acc.buffer.capacity_bytes / e, e, acc.compute.clock_hz, acc.dram.bandwidth,
                   acc.vector.lanes, acc.dram.read_pj_per_bit, acc.buffer.read_pj_per_bit, acc.compute.mac_pj,
                   energy_pj("fp32_exp", node), energy_pj("fp32_add", node))

    def with_buffer_elems(self, capacity: float) -> "Hardware":
        return replace(self, capacity=float(capacity))


def as_hardware(acc) -> Hardware:
    return acc if isinstance(acc, Hardware) else Hardware.of(acc)


def energy_j(counts: dict, hw: Hardware, conv) -> float:
    """Energy (J) of raw ``counts`` (dram_bytes, sram_bytes, macs, exp_ops, simple_ops; arrays or
    floats) under convention ``conv`` with the energies of ``hw``."""
    conv = convention(conv)
    dram = counts["dram_bytes"] * 8 * hw.dram_pj_bit
    if conv.energy == "dram-products":
        return dram * 1e-12
    return 1e-12 * (dram + counts["sram_bytes"] * 8 * hw.sram_pj_bit + counts["macs"] * hw.mac_pj
                    + counts["exp_ops"] * hw.exp_pj + counts["simple_ops"] * hw.simple_pj)


def combine(compute_s, memory_s, overlap: float):
    """Latency of an operator: max(c, m) + (1 - overlap) * min(c, m); overlap=1 full (the Timeloop /
    TeAAL convention of the FuseMax replica), 0 serial."""
    import numpy as np

    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    c, m = np.asarray(compute_s, float), np.asarray(memory_s, float)
    return np.maximum(c, m) + (1 - overlap) * np.minimum(c, m)
