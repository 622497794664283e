"""One accelerator template for every technique: compute array, vector unit, on-chip buffer, main memory.

`template(platform, memory)` takes FLAT's two published platforms (`attnlib.hw` presets "flat-edge" and
"flat-cloud": PE array, buffer, bandwidth, clock, 16-bit) and sets the main-memory technology, a
scenario axis:

- "DRAM": DDR-class, 20.3 pJ/bit read and write (Horowitz ISSCC'14, the shared energy table);
- "HBM": HBM2-class, 3.9 pJ/bit (O'Connor MICRO'17, the shared energy table);
- "ReRAM": ReRAM main memory as SPRINT's card gives it [paper]: 3.1 pJ/bit read, 24.4 pJ/bit write,
  0.10 pJ per in-memory (4-bit key MSB) MAC; bandwidth that of the platform (ASSUMPTION).

`cost(work, tpl)` turns a `Work` (what one forward or one decode step does) into seconds and joules:
time = max(array, vector unit, main memory) (ASSUMPTION: perfect overlap; ``overlap="sum"`` is the
other end), energy = MACs x MAC energy + vector ops x exp energy + main-memory bits x pJ/bit + buffer
bits x SRAM pJ/bit + in-memory MACs x their energy. No static power (ASSUMPTION, stated in the league
notebook's constants table).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from .. import hw
from ..hw.energy import energy_pj

PLATFORMS = {"edge": "flat-edge", "cloud": "flat-cloud"}
MEMORIES = ("DRAM", "HBM", "ReRAM")
#: The main memory each FLAT platform ships with (the preset's own).
PLATFORM_MEMORY = {"edge": "DRAM", "cloud": "HBM"}
RERAM_READ_PJ, RERAM_WRITE_PJ, RERAM_MAC_PJ = 3.1, 24.4, 0.10
SOURCES = {
    "platforms": "FLAT (ASPLOS'23) edge / cloud as modelled in the FuseMax MICRO'24 artifact (attnlib.hw presets)",
    "DRAM": "Horowitz ISSCC'14, low end of DDR: 20.3 pJ/bit (attnlib.hw energy table)",
    "HBM": "O'Connor et al. MICRO'17: HBM2 3.9 pJ/bit (attnlib.hw energy table)",
    "ReRAM": "SPRINT (MICRO'22) [paper, per the card]: 65 nm ReRAM, 3.1 pJ/bit read, 24.4 pJ/bit write, "
             "0.10 pJ per in-memory MAC; bandwidth of the platform (ASSUMPTION)",
    "vector unit": "ASSUMPTION (attnlib.hw): sqrt(PEs) lanes for exp / compare / sort steps (edge 32, cloud 256)",
    "logit spill": "ASSUMPTION: an unfused kernel spills a head's logits when its tile exceeds half the buffer",
    "overlap": "ASSUMPTION: array, vector unit and main memory overlap perfectly (time = max); swept against sum",
    "static": "ASSUMPTION: no static power (dynamic energy only)",
}


@dataclass(frozen=True)
class Template:
    """A platform with a main-memory technology. ``acc``: the `attnlib.hw.Accelerator`; ``memory``:
    one of `MEMORIES`; read/write energies in pJ/bit; ``in_memory_mac_pj``: ReRAM only (else nan)."""

    platform: str
    memory: str
    acc: hw.Accelerator
    read_pj_per_bit: float
    write_pj_per_bit: float
    in_memory_mac_pj: float

    @property
    def name(self) -> str:
        return f"{self.platform} / {self.memory}"


def template(platform: str, memory: str | None = None) -> Template:
    """The template of ``platform`` ("edge" / "cloud") with ``memory`` (default: the platform's own)."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    memory = memory or PLATFORM_MEMORY[platform]
    if memory not in MEMORIES:
        raise ValueError(f"unknown main memory {memory!r}; known: {', '.join(MEMORIES)}")
    acc = hw.preset(PLATFORMS[platform])
    if memory == "ReRAM":
        rd, wr, mac = RERAM_READ_PJ, RERAM_WRITE_PJ, RERAM_MAC_PJ
    else:
        rd = wr = energy_pj("dram_ddr" if memory == "DRAM" else "dram_hbm2")
        mac = math.nan
    acc = replace(acc, dram=replace(acc.dram, name=memory, read_pj_per_bit=rd, write_pj_per_bit=wr))
    return Template(platform, memory, acc, rd, wr, mac)


@dataclass(frozen=True)
class Work:
    """What one inference unit (a forward pass, or one decode step) does. Counts, not rates.

    macs: 16-bit multiply-accumulates on the array; vector_ops: exp / compare / sort steps on the vector
    unit; read_bytes / write_bytes: main-memory traffic (bytes); buffer_bytes: on-chip buffer bytes
    accessed; in_memory_macs: 4-bit in-memory MACs (ReRAM main memory only)."""

    macs: float = 0.0
    vector_ops: float = 0.0
    read_bytes: float = 0.0
    write_bytes: float = 0.0
    buffer_bytes: float = 0.0
    in_memory_macs: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"Work.{f.name} must be a finite count >= 0, got {v}")

    def __add__(self, other: "Work") -> "Work":
        return Work(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


def cost(work: Work, tpl: Template, *, overlap: str = "max") -> dict:
    """Seconds and joules of ``work`` on ``tpl``: {seconds, joules, bound, parts: {array, vector, memory}
    seconds, energy: {array, vector, memory, buffer, in_memory} joules}."""
    if overlap not in ("max", "sum"):
        raise ValueError(f"overlap must be 'max' or 'sum', got {overlap!r}")
    if work.in_memory_macs and tpl.memory != "ReRAM":
        raise ValueError(f"in-memory MACs need ReRAM main memory; the template has {tpl.memory}")
    a = tpl.acc
    parts = dict(array=work.macs / (a.compute.pes * a.compute.clock_hz),
                 vector=work.vector_ops / (a.vector.lanes * a.vector.clock_hz),
                 memory=(work.read_bytes + work.write_bytes) / a.dram.bandwidth)
    seconds = max(parts.values()) if overlap == "max" else sum(parts.values())
    energy = dict(array=work.macs * a.compute.mac_pj * 1e-12,
                  vector=work.vector_ops * a.vector.op_pj * 1e-12,
                  memory=8e-12 * (work.read_bytes * tpl.read_pj_per_bit + work.write_bytes * tpl.write_pj_per_bit),
                  buffer=8e-12 * work.buffer_bytes * a.buffer.read_pj_per_bit,
                  in_memory=work.in_memory_macs * (tpl.in_memory_mac_pj if work.in_memory_macs else 0.0) * 1e-12)
    return dict(seconds=seconds, joules=sum(energy.values()), bound=max(parts, key=parts.get), parts=parts,
                energy=energy)
