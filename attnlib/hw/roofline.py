"""The roofline: is a kernel compute-bound or memory-bound on a given machine?"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RooflinePoint:
    """intensity: FLOP/byte of the kernel; ridge: FLOP/byte where the machine turns compute-bound;
    attainable: FLOP/s the roofline allows; time_s: max(compute time, memory time) (full overlap)."""

    flops: float
    bytes: float
    intensity: float
    ridge: float
    attainable: float
    time_s: float
    bound: str  # "compute" or "memory"


def roofline(flops, nbytes, peak_flops: float, bandwidth: float):
    """Roofline of kernels with ``flops`` and off-chip ``nbytes`` (scalars -> RooflinePoint,
    arrays -> dict of arrays) on a machine with ``peak_flops`` FLOP/s and ``bandwidth`` bytes/s."""
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(f"peak FLOP/s and bandwidth must be positive, got {peak_flops}, {bandwidth}")
    f, b = np.asarray(flops, dtype=float), np.asarray(nbytes, dtype=float)
    if np.any(f < 0) or np.any(b <= 0):
        raise ValueError("flops must be >= 0 and bytes > 0")
    intensity = f / b
    ridge = peak_flops / bandwidth
    attainable = np.minimum(peak_flops, intensity * bandwidth)
    time_s = np.maximum(f / peak_flops, b / bandwidth)
    bound = np.where(intensity >= ridge, "compute", "memory")
    if f.ndim == 0 and b.ndim == 0:
        return RooflinePoint(float(f), float(b), float(intensity), ridge, float(attainable), float(time_s), str(bound))
    return dict(intensity=intensity, ridge=ridge, attainable=attainable, time_s=time_s, bound=bound)
