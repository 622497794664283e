"""One figure style for the whole workbook, and deterministic PNG output.

`savefig` writes ``<name>.png`` through a temporary file and a rename, with fixed metadata (no
software version or date), so re-running a deterministic notebook rewrites byte-identical files. The
folder is ``attnlib.paths.figures_dir()``: staged then published by the runner, the gitignored scratch
folder ``executed/interactive/figures`` in an interactive session.

Inside an IPython kernel (JupyterLab, and the runner's papermill runs, so executed notebooks and the
rendered HTML carry their figures) `savefig` also shows the saved PNG inline when it closes the figure
(the default). With ``close=False`` the caller keeps the figure and shows it itself (``plt.show()`` or
the inline backend at the end of the cell), so it is never shown twice. The returned path displays
as nothing, so a cell ending in ``savefig(...)`` shows the figure, not a ``PosixPath(...)`` line.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from .paths import atomic_write_bytes, figures_dir, output_mode, relative

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


class SavedFigure(type(Path())):
    """The path of a saved figure; an ordinary ``Path`` that displays as nothing in IPython."""

    def _ipython_display_(self):  # the figure itself was already shown inline
        return None


def in_kernel() -> bool:
    """True inside an IPython kernel (JupyterLab, papermill), False in plain Python and pytest."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


_scratch_noted = False


def _show_inline(png: bytes, path: Path) -> None:
    global _scratch_noted
    from IPython.display import Image, display

    display(Image(data=png, format="png"))
    if output_mode() == "scratch" and not _scratch_noted:
        _scratch_noted = True
        print(f"(interactive run: figures and results go to the scratch folder {relative(path.parent.parent)}/, "
              "the committed figures/ and results/ are untouched; attnlib.paths.publish() to publish)")


def savefig(fig, name: str, *, close: bool = True) -> Path:
    """Save ``fig`` as ``<figures_dir>/<name>.png`` with deterministic metadata; returns the path.

    In a kernel the saved PNG is also displayed inline when ``close`` is true (see the module
    docstring); ``ATTNLIB_INLINE=0`` turns that off.
    """
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"figure name must be a bare name without extension, got {name!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    path = SavedFigure(figures_dir() / f"{name}.png")
    atomic_write_bytes(path, buf.getvalue())
    if close:
        plt.close(fig)
        if in_kernel() and os.environ.get("ATTNLIB_INLINE", "1") != "0":
            _show_inline(buf.getvalue(), path)
    return path


use_style()
