"""One figure style for the whole workbook, and deterministic PNG output.

`savefig` writes ``figures/<name>.png`` through a temporary file and a rename, with fixed metadata
(no software version or date), so re-running a deterministic notebook rewrites byte-identical files.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from .paths import atomic_write_bytes, figures_dir

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "figure.figsize": (7.0, 4.0),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "font.size": 9,
    "svg.hashsalt": "attnlib",
}

#: Colours used consistently: baseline vs the paper's method vs exact reference.
COLORS = {"baseline": "#7f7f7f", "method": "#d62728", "exact": "#1f77b4", "measured": "#2ca02c", "paper": "#000000"}


def use_style() -> None:
    """Apply the workbook style to matplotlib (idempotent)."""
    matplotlib.rcParams.update(STYLE)


def savefig(fig, name: str, *, close: bool = True) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` with deterministic metadata; returns the path."""
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"figure name must be a bare name without extension, got {name!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    path = figures_dir() / f"{name}.png"
    atomic_write_bytes(path, buf.getvalue())
    if close:
        plt.close(fig)
    return path


use_style()
