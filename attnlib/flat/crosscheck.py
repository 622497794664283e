"""Cross-check of the FLAT cost model with the field's own tools: AccelForge and CACTI.

`scripts/flat_accelforge_check.py` (run by hand: it needs Python >= 3.12, about 900 MB of packages and
graphviz) maps FLAT's attention onto FLAT's two platforms with AccelForge (PyPI ``accelforge``, the
Timeloop/Accelergy family's mapper, with a fused multi-Einsum mapper) and asks CACTI (through
``hwcomponents-cacti``) and ``hwcomponents-library`` for the energies attnlib's table takes from
Horowitz (ISSCC'14) and O'Connor (MICRO'17). It stores one row per comparison in
``accelforge_check.csv`` beside this file. This module reads that CSV (pandas only: AccelForge is not
needed), recomputes attnlib's side of every row from attnlib (`attnlib_value`), and turns the rows into a
tidy table with relative differences.

What each row expects (column ``expect``):

* ``agree`` -- the tool and attnlib compute the same quantity the same way: DRAM traffic and latency of
  the unfused attention, MAC energy (AccelForge is given attnlib's energy per MAC, so this checks the MAC
  count), CACTI's energy of an SRAM no larger than attnlib's 1 MiB bank. Within `TOLERANCE` of the row.
* ``tool >= attnlib`` -- fused latency: AccelForge adds the two products' stage times (each stage the
  max of its compute and memory time) without overlapping one stage with the other, while attnlib's
  fused tile overlaps everything (max of the summed compute and the summed memory time).
* ``tool <= attnlib`` -- fused DRAM traffic: the AccelForge workload has no softmax (FLAT's convention
  makes it free), so nothing forces a fused tile to hold whole score rows; its mapper may also tile the
  key dimension (and keeps no double buffers), a superset of FLAT's tiles as far as traffic goes.
* ``differs`` -- energy constants where the tool's source and attnlib's differ (CACTI's single-bank
  32 MiB SRAM, hwcomponents' DRAM and 16-bit MAC tables). Their ratio to attnlib's value is an end of the
  assumption range the FLAT sweep uses (`experiments.ASSUMPTIONS`) where the table has a matching
  sweep, see `tool_scales`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CSV = Path(__file__).with_name("accelforge_check.csv")

#: Relative tolerance of an ``agree`` row, by quantity: exact model quantities (AccelForge reports its
#: latencies in float32, hence 1e-6 rather than 1e-12) and 10% for CACTI vs Horowitz's SRAM points
#: (two independent estimates of the same memory).
TOLERANCE = {"DRAM traffic": 1e-6, "latency": 1e-6, "MAC energy": 1e-6, "SRAM energy": 0.10}
#: Slack of the one-sided rows (float32 latencies).
ONE_SIDED_SLACK = 1e-6

#: The model each ``seq`` row is evaluated on (FLAT's BERT-like layer: 12 heads, d_head 64).
MODEL = "bert-base"


def read(path: Path | str | None = None) -> pd.DataFrame:
    """The stored comparisons (one row each)."""
    df = pd.read_csv(CSV if path is None else path, comment="#")
    df["seq"] = df["seq"].astype("Int64")
    return df


def _mapping(platform: str, seq: int, mapping: str):
    from .conventions import AttentionShape, Hardware, platform as _platform
    from .dataflows import search_flat, search_unfused

    hw = Hardware.of(_platform(platform))
    shape = AttentionShape.from_model(MODEL, int(seq))
    if mapping == "unfused":
        # FLEX-Opt with the logits in DRAM: AccelForge's unfused spec keeps every tensor in main memory
        return search_unfused(shape, hw, dataflow="flex", conv="flat", residency="off chip"), hw
    if mapping == "fused":
        return search_flat(shape, hw, conv="flat", map_space="full"), hw
    raise ValueError(f"unknown mapping {mapping!r}; known: unfused, fused")


def attnlib_value(quantity: str, platform: str, seq=None, mapping: str | None = None, component: str | None = None) -> float:
    """attnlib's value of one comparison, computed from attnlib (never read from the CSV).

    Mapping quantities ("DRAM traffic" bytes, "latency" s, "MAC energy" J) are those of the FLAT
    convention (softmax free) for `MODEL` at batch 64 on ``platform``; energy constants ("SRAM energy",
    "DRAM energy" pJ/bit, "MAC energy per op" pJ) are the platform's (``component`` names the SRAM size
    for a bank row)."""
    from ..hw import KiB
    from ..hw.energy import sram_energy_pj_per_bit
    from .conventions import Hardware, platform as _platform

    if quantity in ("DRAM traffic", "latency", "MAC energy"):
        m, hw = _mapping(platform, seq, mapping)
        return {"DRAM traffic": m.counts["dram_bytes"], "latency": m.latency_s,
                "MAC energy": m.counts["macs"] * hw.mac_pj * 1e-12}[quantity]
    hw = Hardware.of(_platform(platform))
    if quantity == "SRAM energy":
        if component and component.startswith("SRAM ") and component.endswith(" KiB"):
            return sram_energy_pj_per_bit(float(component[5:-4]) * KiB)
        return hw.sram_pj_bit
    if quantity == "DRAM energy":
        return hw.dram_pj_bit
    if quantity == "MAC energy per op":
        return hw.mac_pj
    raise ValueError(f"unknown quantity {quantity!r}")


def compulsory_bytes(platform: str, seq: int, mapping: str) -> float:
    """DRAM bytes when every tensor crosses once: Q, K, V read and O written, plus (unfused) the logits
    written by the first product and read by the second."""
    from .conventions import AttentionShape, Hardware, platform as _platform

    e = Hardware.of(_platform(platform)).elem_bytes
    s = AttentionShape.from_model(MODEL, int(seq))
    return (4 * s.bh * s.seq * s.d_head + (2 * s.scores if mapping == "unfused" else 0)) * e


def expected(quantity: str, platform: str, seq=None, mapping: str | None = None) -> str:
    """What a mapping row should show, decided from attnlib alone (before looking at the tool):

    * unfused traffic "agree" where attnlib's FLEX-Opt mapping moves every tensor once (nothing smaller is
      possible); where the buffer is too small for that, "tool <= attnlib" (AccelForge's map space has any
      tile factor and no double buffering, attnlib's powers of two and double buffers);
    * unfused latency "agree" where the traffic agrees or attnlib's operators are compute-bound at full
      array utilisation (the time is then the MAC count over the array), else "tool <= attnlib";
    * fused traffic "tool <= attnlib" (see the module docstring); fused latency "tool >= attnlib" unless
      attnlib's tile is memory-bound on more than the compulsory traffic (then no direction: "differs");
    * MAC energy "agree" (same MAC count, same energy per MAC)."""
    if quantity == "MAC energy":
        return "agree"
    m, hw = _mapping(platform, seq, mapping)
    compulsory = np.isclose(m.counts["dram_bytes"], compulsory_bytes(platform, seq, mapping), rtol=1e-12)
    if mapping == "unfused":
        if quantity == "DRAM traffic":
            return "agree" if compulsory else "tool <= attnlib"
        ideal = m.counts["macs"] / (hw.side ** 2 * hw.clock_hz)
        return "agree" if compulsory or np.isclose(m.latency_s, ideal, rtol=1e-9) else "tool <= attnlib"
    if quantity == "DRAM traffic":
        return "tool <= attnlib"
    return "tool >= attnlib" if compulsory or m.bound == "compute" else "differs"


def table(df: pd.DataFrame | None = None, *, recompute: bool = False) -> pd.DataFrame:
    """The comparisons as a tidy table: attnlib's value (the stored one, or recomputed from attnlib with
    ``recompute``), the tool's, their ratio, relative difference, tolerance and whether the row's
    expectation holds (``ok``)."""
    df = read() if df is None else df.copy()
    if recompute:
        df["attnlib"] = [attnlib_value(r.quantity, r.platform, None if pd.isna(r.seq) else int(r.seq),
                                       None if pd.isna(r.mapping) else r.mapping,
                                       None if pd.isna(r.component) else r.component) for r in df.itertuples()]
    df["ratio"] = df.tool / df.attnlib
    df["rel_diff"] = df.ratio - 1
    df["tolerance"] = [TOLERANCE.get(q, np.nan) if e == "agree" else np.nan for q, e in zip(df.quantity, df.expect)]
    df["ok"] = [_holds(e, r, t) for e, r, t in zip(df.expect, df.ratio, df.tolerance)]
    return df


def _holds(expect: str, ratio: float, tol: float) -> bool:
    if expect == "agree":
        return bool(abs(ratio - 1) <= tol)
    if expect == "tool >= attnlib":
        return bool(ratio >= 1 - ONE_SIDED_SLACK)
    if expect == "tool <= attnlib":
        return bool(ratio <= 1 + ONE_SIDED_SLACK)
    if expect == "differs":
        return True
    raise ValueError(f"unknown expectation {expect!r}")


def tool_scales(quantity: str, inside=(0.5, 2.0), df: pd.DataFrame | None = None) -> tuple:
    """Ratios tool / attnlib of the ``differs`` rows of an energy constant (``quantity`` "SRAM energy",
    "DRAM energy" or "MAC energy per op") that fall outside ``inside`` (the sweep's own range): the
    lowest below it and the highest above it, rounded to 2 decimals, as extra values of the sweep."""
    df = read() if df is None else df
    r = (df.tool / df.attnlib)[(df.quantity == quantity) & (df.expect == "differs")]
    out = []
    if (r < inside[0]).any():
        out.append(round(float(r.min()), 2))
    if (r > inside[1]).any():
        out.append(round(float(r.max()), 2))
    return tuple(out)


def versions(df: pd.DataFrame | None = None) -> str:
    """The tool versions and date the CSV was written with."""
    df = read() if df is None else df
    return f"{df.versions.iloc[0]}; written {df.date.iloc[0]}"
