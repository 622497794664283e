"""An accelerator = compute array + vector unit + on-chip buffer + DRAM, and the named presets.

Presets carry the provenance of every number in ``sources``. Unknown preset names raise a KeyError
listing the known ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .compute import ComputeArray, VectorUnit
from .energy import energy_pj, mac_energy_pj, sram_energy_pj_per_bit
from .memory import MemoryLevel, dram, sram
from .roofline import roofline

GiB = 1024 ** 3
KiB = 1024
MiB = 1024 ** 2


@dataclass(frozen=True)
class Accelerator:
    """A whole accelerator; ``node_nm`` is the technology node its energies were scaled to."""

    name: str
    node_nm: float
    compute: ComputeArray
    vector: VectorUnit
    buffer: MemoryLevel
    dram: MemoryLevel
    sources: dict = field(default_factory=dict)

    @property
    def bytes_per_element(self) -> float:
        return self.compute.bits / 8

    def roofline(self, flops, nbytes):
        """Roofline of kernels on this accelerator (off-chip bytes against DRAM bandwidth)."""
        return roofline(flops, nbytes, self.compute.peak_flops, self.dram.bandwidth)

    def with_buffer(self, capacity_bytes: float) -> "Accelerator":
        """The same accelerator with a different on-chip buffer size (energy re-interpolated)."""
        buf = sram(capacity_bytes, self.buffer.bandwidth, node_nm=self.node_nm, name=self.buffer.name)
        return replace(self, buffer=buf, name=f"{self.name} ({capacity_bytes / KiB:g} KiB buffer)")

    def with_dram_energy(self, pj_per_bit: float) -> "Accelerator":
        return replace(self, dram=replace(self.dram, read_pj_per_bit=pj_per_bit, write_pj_per_bit=pj_per_bit))

    def summary(self) -> dict:
        return {
            "name": self.name, "node (nm)": self.node_nm, "PEs": self.compute.pes,
            "clock (GHz)": self.compute.clock_hz / 1e9, "bits": self.compute.bits,
            "peak (TFLOP/s)": self.compute.peak_flops / 1e12,
            "buffer (KiB)": self.buffer.capacity_bytes / KiB, "DRAM (GB/s)": self.dram.bandwidth / 1e9,
            "ridge (FLOP/B)": self.compute.peak_flops / self.dram.bandwidth,
            "MAC (pJ)": self.compute.mac_pj, "SRAM (pJ/bit)": self.buffer.read_pj_per_bit,
            "DRAM (pJ/bit)": self.dram.read_pj_per_bit,
        }


def make_accelerator(name: str, *, pes: int, clock_hz: float, bits: int, buffer_bytes: float,
                     dram_bandwidth: float, node_nm: float = 45, alpha: float = 1.0, dram_kind: str = "dram_ddr",
                     dram_pj_per_bit: float | None = None, sram_scale: float = 1.0,
                     vector_lanes: int | None = None, sources: dict | None = None) -> Accelerator:
    """Build an accelerator whose energies all come from the shared energy table at ``node_nm``
    (node-scaling exponent ``alpha``). ``dram_pj_per_bit`` overrides the DRAM table entry
    ``dram_kind``; ``sram_scale`` multiplies the interpolated SRAM energy (both for sensitivity sweeps).

    The on-chip buffer is assumed to feed the array at one operand per PE per cycle (ASSUMPTION: the
    buffer is never the bottleneck); the vector unit has sqrt(PEs) lanes unless given (ASSUMPTION).
    """
    if buffer_bytes <= 0:
        raise ValueError(f"{name}: on-chip buffer must be positive, got {buffer_bytes} bytes")
    if sram_scale <= 0:
        raise ValueError(f"{name}: sram_scale must be positive, got {sram_scale}")
    lanes = vector_lanes or max(1, int(round(pes ** 0.5)))
    compute = ComputeArray(pes, clock_hz, bits, mac_energy_pj(bits, node_nm, floating=(bits == 32), alpha=alpha))
    vector = VectorUnit(lanes, clock_hz, energy_pj("fp32_exp", node_nm, alpha=alpha))
    sram_pj = sram_energy_pj_per_bit(buffer_bytes, node_nm, alpha=alpha) * sram_scale
    buf = sram(buffer_bytes, pes * bits / 8 * clock_hz, pj_per_bit=sram_pj)
    off_chip = dram(dram_bandwidth, kind=dram_kind, pj_per_bit=dram_pj_per_bit)
    return Accelerator(name, node_nm, compute, vector, buf, off_chip, dict(sources or {}))


_FLAT_SRC = ("FLAT (ASPLOS'23) platforms as modelled in the FuseMax MICRO'24 artifact "
             "(FPSG-UIUC/micro24-fusemax-artifact): PE array, buffer, DRAM bandwidth, 940 MHz, 16-bit")
_NODE_ASSUMPTION = "ASSUMPTION: 45 nm energies (Horowitz ISSCC'14 table), node not stated by the paper"

PRESETS = {
    "flat-edge": lambda: make_accelerator(
        "FLAT edge", pes=32 * 32, clock_hz=940e6, bits=16, buffer_bytes=512 * KiB, dram_bandwidth=50 * GiB,
        dram_kind="dram_ddr",
        sources={"array/buffer/bandwidth/clock": _FLAT_SRC, "node": _NODE_ASSUMPTION,
                 "DRAM energy": "ASSUMPTION: DDR/LPDDR-class, Horowitz 2014 low end 20.3 pJ/bit"}),
    "flat-cloud": lambda: make_accelerator(
        "FLAT cloud", pes=256 * 256, clock_hz=940e6, bits=16, buffer_bytes=32 * MiB, dram_bandwidth=400 * GiB,
        dram_kind="dram_hbm2",
        sources={"array/buffer/bandwidth/clock": _FLAT_SRC, "node": _NODE_ASSUMPTION,
                 "DRAM energy": "ASSUMPTION: HBM2-class, O'Connor MICRO'17 3.9 pJ/bit"}),
}


def preset(name: str) -> Accelerator:
    """A named accelerator configuration (see PRESETS)."""
    if name not in PRESETS:
        raise KeyError(f"unknown accelerator preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
