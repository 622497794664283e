"""Compute resources: a MAC array (PEs) and a vector unit, turning operation counts into seconds and joules."""
from __future__ import annotations

from dataclasses import dataclass

from .memory import _positive


@dataclass(frozen=True)
class ComputeArray:
    """A spatial array of ``pes`` multiply-accumulate units at ``clock_hz``, ``bits``-bit operands.

    mac_pj: energy of one MAC in picojoules; utilisation: fraction of peak sustained (assumption of the
    caller, 1.0 = ideal).
    """

    pes: int
    clock_hz: float
    bits: int
    mac_pj: float
    utilisation: float = 1.0

    def __post_init__(self):
        _positive("PE count", self.pes)
        _positive("clock (Hz)", self.clock_hz)
        _positive("operand bits", self.bits)
        if self.mac_pj < 0:
            raise ValueError(f"MAC energy must be >= 0 pJ, got {self.mac_pj}")
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"utilisation must lie in (0, 1], got {self.utilisation}")

    @property
    def peak_macs_per_s(self) -> float:
        return self.pes * self.clock_hz

    @property
    def peak_flops(self) -> float:
        """Peak FLOP/s (a MAC counts 2)."""
        return 2 * self.peak_macs_per_s

    def time_s(self, macs: float) -> float:
        return macs / (self.peak_macs_per_s * self.utilisation)

    def cycles(self, macs: float) -> float:
        return self.time_s(macs) * self.clock_hz

    def energy_j(self, macs: float) -> float:
        return macs * self.mac_pj * 1e-12


@dataclass(frozen=True)
class VectorUnit:
    """``lanes`` element-wise units (exp, add, divide, compare) at ``clock_hz``; op_pj per operation."""

    lanes: int
    clock_hz: float
    op_pj: float

    def __post_init__(self):
        _positive("vector lanes", self.lanes)
        _positive("vector clock (Hz)", self.clock_hz)
        if self.op_pj < 0:
            raise ValueError(f"vector op energy must be >= 0 pJ, got {self.op_pj}")

    def time_s(self, ops: float) -> float:
        return ops / (self.lanes * self.clock_hz)

    def energy_j(self, ops: float) -> float:
        return ops * self.op_pj * 1e-12
