"""The scorecard: every recorded claim of every paper notebook in one table and one figure.

A paper whose notebook has not produced ``results/<notebook>.json`` yet appears as "not run yet",
never as reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .claims import format_value, load_results

#: The five papers, the notebook that reproduces each, and the headline the notebook must check.
PAPERS = {
    "A3": ("01_a3", "approximate-over-base speedup 2.6-7.0x, >10,000x energy efficiency vs CPU, "
                    "accuracy loss ~1-1.6% (conservative) / ~8-9% (aggressive)"),
    "SPRINT": ("02_sprint", "7.5x speedup, 19.6x energy reduction at 16 KB, 0.36% accuracy drop"),
    "FLAT": ("03_flat", "1.94x / 1.76x speedup, 49% / 42% energy saving (edge / cloud)"),
    "Token-Picker": ("04_token_picker", "12.1x pruning, 2.6x fewer memory accesses, 2.3x speedup, "
                                        "2.4x energy efficiency"),
    "AttMEMO": ("05_attmemo", "22% average (up to 68%) latency reduction, negligible accuracy loss"),
}

STATUS_COLORS = {"reproduced": "#2ca02c", "partially reproduced": "#ff7f0e", "not reproduced": "#d62728",
                 "not run yet": "#bbbbbb"}


@dataclass
class Row:
    paper: str
    claim: str
    paper_value: object
    reproduced: float | None
    unit: str
    kind: str
    status: str
    basis: str


def collect(results_folder: Path) -> list[Row]:
    """Rows for every claim of the five papers, in paper order; missing notebooks -> "not run yet"."""
    results = load_results(results_folder)
    rows = []
    for paper, (notebook, headline) in PAPERS.items():
        data = results.get(notebook)
        if not data or not data.get("claims"):
            rows.append(Row(paper, headline, None, None, "", "", "not run yet", "-"))
            continue
        for c in data["claims"]:
            rows.append(Row(paper, c["description"], c["paper_value"], c["reproduced"], c["unit"], c["kind"],
                            c["status"], c["basis"]))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| paper | claim | paper value | reproduced | status | basis |", "|---|---|---|---|---|---|"]
    for r in rows:
        unit = f" {r.unit}" if r.unit else ""
        pv = "-" if r.paper_value is None else format_value(r.paper_value) + unit
        rv = "-" if r.reproduced is None else format_value(r.reproduced) + unit
        lines.append(f"| {r.paper} | {r.claim} | {pv} | {rv} | {r.status} | {r.basis} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[Row]) -> dict[str, int]:
    out = {s: 0 for s in STATUS_COLORS}
    for r in rows:
        out[r.status] += 1
    return out


def _deviation(r: Row) -> float:
    """Signed deviation used for plotting: log2(reproduced/paper) for ratios, point difference otherwise
    (0 inside a paper range)."""
    pv = r.paper_value
    if isinstance(pv, (list, tuple)):
        low, high = pv
        if r.reproduced >= low and (high is None or r.reproduced <= high):
            return 0.0
        pv = low if r.reproduced < low else high
    if r.kind == "ratio":
        return math.log2(r.reproduced / pv) if r.reproduced > 0 and pv > 0 else float("nan")
    return r.reproduced - pv


def figure(rows: list[Row]):
    """Bar chart: one bar per claim, its deviation from the paper, coloured by status."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.32 * len(rows) + 1.6), sharey=True)
    y = np.arange(len(rows))[::-1]
    labels = [f"{r.paper}: {r.claim[:48]}" for r in rows]
    for ax, kinds, title, bands in (
        (axes[0], ("ratio",), "ratio claims: log2(reproduced / paper)", (math.log2(0.8), math.log2(1.25))),
        (axes[1], ("percent", "accuracy"), "percent / accuracy claims: reproduced - paper (points)", (-5, 5)),
    ):
        ax.axvspan(*bands, color="#2ca02c", alpha=0.08)
        ax.axvline(0, color="black", lw=0.8)
        for yi, r in zip(y, rows):
            if r.reproduced is None:
                if ax is axes[0]:
                    ax.text(0.02, yi, "not run yet", va="center", color="#777777", fontsize=8,
                            transform=ax.get_yaxis_transform())
                continue
            if r.kind in kinds:  # bar for the size of the gap, dot so a zero gap stays visible
                dev = _deviation(r)
                ax.barh(yi, dev, color=STATUS_COLORS[r.status], height=0.6)
                ax.plot(dev, yi, "o", color=STATUS_COLORS[r.status], mec="black", mew=0.5, ms=5)
        ax.set_title(title, fontsize=9)
        lo, hi = ax.get_xlim()
        span = max(abs(lo), abs(hi), 4 * abs(bands[1]))
        ax.set_xlim(-span, span)
    axes[0].set_yticks(y, labels, fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATUS_COLORS.values()]
    axes[1].legend(handles, list(STATUS_COLORS), loc="lower right", fontsize=7)
    fig.suptitle("Scorecard: each paper's headline claims vs this workbook", fontsize=11)
    fig.tight_layout()
    return fig
