"""Energy per action, every number with its source and technology node.

In the spirit of Accelergy's energy reference tables: an action (a MAC of a given precision, an SRAM
access of a given size, a DRAM transfer) has an energy in picojoules, per operation or per bit, at the
node where it was published. `energy_pj` returns it scaled to the node of the experiment.

Scaling rule between nodes (an ASSUMPTION, stated so it can be swept): on-chip dynamic energy
(logic, SRAM, register files) scales as (node / node_ref) ** alpha with alpha = 1 (switched
capacitance proportional to feature size at the same supply voltage). Stillmaker & Baas, "Scaling
equations for the accurate prediction of CMOS device performance from 180 nm to 7 nm",
Integration 58 (2017) give fitted factors that are more accurate; alpha is a parameter so notebooks
can sweep it. Off-chip DRAM energy is given per memory standard and is NOT scaled with the logic node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, 45 nm, 0.9 V"
EYERISS = "Chen, Emer, Sze, 'Eyeriss', ISCA 2016, Fig./Table of normalised energy (65 nm): RF 1x, NoC 2x, 100 KB buffer 6x, DRAM 200x of one 16-bit MAC"
OCONNOR = "O'Connor et al., 'Fine-Grained DRAM', MICRO 2017: HBM2 ~3.9 pJ/bit"


@dataclass(frozen=True)
class EnergyEntry:
    """One action's energy at its published node. ``per`` is "op" or "bit"."""

    action: str
    pj: float
    per: str
    node_nm: float | None  # None: not scaled with the logic node (off-chip)
    source: str
    note: str = ""


def _derived_int_mult(bits: int) -> float:
    # array multiplier energy grows ~ bits^2; anchored at Horowitz's 8-bit (0.2 pJ) multiply
    return 0.2 * (bits / 8) ** 2


ENERGY_TABLE: dict[str, EnergyEntry] = {e.action: e for e in [
    # arithmetic (45 nm, Horowitz 2014)
    EnergyEntry("int8_add", 0.03, "op", 45, HOROWITZ),
    EnergyEntry("int32_add", 0.1, "op", 45, HOROWITZ),
    EnergyEntry("int8_mult", 0.2, "op", 45, HOROWITZ),
    EnergyEntry("int32_mult", 3.1, "op", 45, HOROWITZ),
    EnergyEntry("fp16_add", 0.4, "op", 45, HOROWITZ),
    EnergyEntry("fp16_mult", 1.1, "op", 45, HOROWITZ),
    EnergyEntry("fp32_add", 0.9, "op", 45, HOROWITZ),
    EnergyEntry("fp32_mult", 3.7, "op", 45, HOROWITZ),
    # multiply-accumulate = multiply + accumulate (derived from the rows above)
    EnergyEntry("int8_mac", 0.2 + 0.1, "op", 45, HOROWITZ, "derived: int8 mult + int32 accumulate"),
    EnergyEntry("int16_mac", _derived_int_mult(16) + 0.1, "op", 45, HOROWITZ,
                "derived: 16-bit mult interpolated as bits^2 from the 8-bit mult (0.8 pJ) + int32 accumulate"),
    EnergyEntry("fp16_mac", 1.1 + 0.4, "op", 45, HOROWITZ, "derived: fp16 mult + fp16 add"),
    EnergyEntry("fp32_mac", 3.7 + 0.9, "op", 45, HOROWITZ, "derived: fp32 mult + fp32 add"),
    # transcendental: exp evaluated by a small fp32 polynomial/LUT unit
    EnergyEntry("fp32_exp", 4 * (3.7 + 0.9), "op", 45, HOROWITZ,
                "ASSUMPTION: one exp ~ 4 fp32 multiply-adds (range reduction + polynomial)"),
    # on-chip storage (Horowitz: 64-bit access energy of an SRAM of the given size)
    EnergyEntry("sram_8KB", 10 / 64, "bit", 45, HOROWITZ, "10 pJ per 64-bit access"),
    EnergyEntry("sram_32KB", 20 / 64, "bit", 45, HOROWITZ, "20 pJ per 64-bit access"),
    EnergyEntry("sram_1MB", 100 / 64, "bit", 45, HOROWITZ, "100 pJ per 64-bit access"),
    EnergyEntry("register_file", (0.2 + 0.1) / 8, "bit", 45, EYERISS + "; " + HOROWITZ,
                "derived: Eyeriss puts a 0.5 KB RF access at 1x a MAC; here 1x an int8 MAC per 8 bits"),
    # off-chip (not node-scaled)
    EnergyEntry("dram_ddr", 1300 / 64, "bit", None, HOROWITZ,
                "1.3-2.6 nJ per 64-bit DRAM access; the LOW end is taken (20.3 pJ/bit)"),
    EnergyEntry("dram_hbm2", 3.9, "bit", None, OCONNOR),
]}

#: SRAM entries used for size interpolation: (capacity in bytes, action name).
_SRAM_POINTS = ((8 * 1024, "sram_8KB"), (32 * 1024, "sram_32KB"), (1024 * 1024, "sram_1MB"))


def _scale(entry: EnergyEntry, node_nm: float, alpha: float) -> float:
    if entry.node_nm is None:
        return entry.pj
    if not (node_nm > 0 and math.isfinite(node_nm)):
        raise ValueError(f"technology node must be a positive number of nm, got {node_nm}")
    return entry.pj * (node_nm / entry.node_nm) ** alpha


def energy_pj(action: str, node_nm: float = 45, *, alpha: float = 1.0) -> float:
    """Energy of ``action`` in pJ (per op or per bit, see ENERGY_TABLE[action].per) at ``node_nm``."""
    if action not in ENERGY_TABLE:
        raise KeyError(f"unknown action {action!r}; known actions: {', '.join(sorted(ENERGY_TABLE))}")
    return _scale(ENERGY_TABLE[action], node_nm, alpha)


def mac_energy_pj(bits: int, node_nm: float = 45, *, floating: bool = False, alpha: float = 1.0) -> float:
    """Energy of one multiply-accumulate of ``bits``-bit operands in pJ."""
    name = f"{'fp' if floating else 'int'}{bits}_mac"
    if name not in ENERGY_TABLE:
        known = sorted(k for k in ENERGY_TABLE if k.endswith("_mac"))
        raise ValueError(f"no MAC energy for {bits}-bit {'float' if floating else 'int'}; known: {', '.join(known)}")
    return energy_pj(name, node_nm, alpha=alpha)


def sram_energy_pj_per_bit(capacity_bytes: float, node_nm: float = 45, *, alpha: float = 1.0,
                           bank_bytes: float = 1024 * 1024) -> float:
    """Access energy per bit of an SRAM of ``capacity_bytes``, interpolated log-log between
    Horowitz's 8 KB, 32 KB and 1 MB points. Larger memories are assumed to be built from banks of at
    most ``bank_bytes`` (ASSUMPTION), so the energy is that of one bank; smaller than 8 KB is
    extrapolated along the 8-32 KB slope."""
    if not capacity_bytes > 0:
        raise ValueError(f"SRAM capacity must be positive, got {capacity_bytes} bytes")
    size = min(capacity_bytes, bank_bytes)
    xs = [math.log(s) for s, _ in _SRAM_POINTS]
    ys = [math.log(ENERGY_TABLE[a].pj) for _, a in _SRAM_POINTS]
    x = math.log(size)
    i = 0 if x <= xs[1] else 1
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    pj_45 = math.exp(ys[i] + slope * (x - xs[i]))
    return pj_45 * (node_nm / 45) ** alpha


def table_rows(node_nm: float = 45, alpha: float = 1.0) -> list[dict]:
    """The energy table as rows (action, value at the source node, value at ``node_nm``, source)."""
    return [dict(action=e.action, per=e.per, pj_at_source=e.pj, source_node_nm=e.node_nm,
                 pj_at_node=_scale(e, node_nm, alpha), source=e.source, note=e.note)
            for e in ENERGY_TABLE.values()]
