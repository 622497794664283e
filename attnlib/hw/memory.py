"""Memory levels that turn traffic (bytes) into time (seconds) and energy (joules)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .energy import energy_pj, sram_energy_pj_per_bit


def _positive(name: str, value: float, allow_inf: bool = False) -> None:
    ok = value > 0 and (allow_inf or math.isfinite(value))
    if not ok:
        raise ValueError(f"{name} must be a positive number, got {value}")


@dataclass(frozen=True)
class MemoryLevel:
    """A level of the memory hierarchy.

    capacity_bytes: bytes it holds (math.inf for off-chip DRAM);
    bandwidth: bytes per second it can deliver;
    read_pj_per_bit, write_pj_per_bit: access energy in picojoules per bit.
    """

    name: str
    capacity_bytes: float
    bandwidth: float
    read_pj_per_bit: float
    write_pj_per_bit: float

    def __post_init__(self):
        _positive(f"{self.name}: capacity_bytes", self.capacity_bytes, allow_inf=True)
        _positive(f"{self.name}: bandwidth (bytes/s)", self.bandwidth)
        if self.read_pj_per_bit < 0 or self.write_pj_per_bit < 0:
            raise ValueError(f"{self.name}: access energies must be >= 0 pJ/bit")

    def time_s(self, nbytes: float) -> float:
        """Seconds to move ``nbytes`` at full bandwidth."""
        if nbytes < 0:
            raise ValueError(f"traffic must be >= 0 bytes, got {nbytes}")
        return nbytes / self.bandwidth

    def energy_j(self, read_bytes: float = 0.0, write_bytes: float = 0.0) -> float:
        """Joules to read ``read_bytes`` and write ``write_bytes``."""
        if read_bytes < 0 or write_bytes < 0:
            raise ValueError("traffic must be >= 0 bytes")
        return 8e-12 * (read_bytes * self.read_pj_per_bit + write_bytes * self.write_pj_per_bit)

    def fits(self, nbytes: float) -> bool:
        return nbytes <= self.capacity_bytes


def dram(bandwidth: float, *, kind: str = "dram_ddr", pj_per_bit: float | None = None, name: str = "DRAM") -> MemoryLevel:
    """Off-chip DRAM of ``bandwidth`` bytes/s; energy from the table entry ``kind`` unless given."""
    e = energy_pj(kind) if pj_per_bit is None else pj_per_bit
    return MemoryLevel(name, math.inf, bandwidth, e, e)


def sram(capacity_bytes: float, bandwidth: float, *, node_nm: float = 45, pj_per_bit: float | None = None,
         alpha: float = 1.0, name: str = "SRAM buffer") -> MemoryLevel:
    """On-chip SRAM buffer; energy per bit interpolated by size from the table unless given."""
    _positive(f"{name}: capacity_bytes", capacity_bytes)
    e = sram_energy_pj_per_bit(capacity_bytes, node_nm, alpha=alpha) if pj_per_bit is None else pj_per_bit
    return MemoryLevel(name, capacity_bytes, bandwidth, e, e)
