"""Interactive controls for JupyterLab that stay inert in headless runs.

`explore(fn, **controls)` shows ipywidgets sliders bound to ``fn`` when a person runs the notebook in
a live kernel. Under papermill (the runner sets ``ATTNLIB_HEADLESS=1``) or outside IPython it does
nothing, so headless runs neither render widgets nor recompute anything. ``fn`` should only draw
(never save figures or record claims).
"""
from __future__ import annotations

import os


def is_headless() -> bool:
    if os.environ.get("ATTNLIB_HEADLESS") == "1":
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or not hasattr(shell, "kernel")


def explore(fn, **controls):
    """``ipywidgets.interact(fn, **controls)`` in a live notebook; None when headless."""
    if is_headless():
        return None
    import ipywidgets

    return ipywidgets.interact(fn, **controls)
