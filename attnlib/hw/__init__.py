"""Hardware primitives shared by all five papers: energy per action, memory levels, compute, roofline,
accelerator presets."""
from .accelerator import GiB, KiB, MiB, PRESETS, Accelerator, make_accelerator, preset
from .compute import ComputeArray, VectorUnit
from .energy import ENERGY_TABLE, EnergyEntry, energy_pj, mac_energy_pj, sram_energy_pj_per_bit, table_rows
from .memory import MemoryLevel, dram, sram
from .roofline import RooflinePoint, roofline

__all__ = [
    "Accelerator", "make_accelerator", "preset", "PRESETS", "GiB", "KiB", "MiB",
    "ComputeArray", "VectorUnit", "ENERGY_TABLE", "EnergyEntry", "energy_pj", "mac_energy_pj",
    "sram_energy_pj_per_bit", "table_rows", "MemoryLevel", "dram", "sram", "RooflinePoint", "roofline",
]
