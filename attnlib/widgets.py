"""Interactive controls for JupyterLab that stay inert in headless runs.

`explore(fn, **controls)` shows ipywidgets controls bound to ``fn`` when a person runs the notebook in
a live kernel. Under papermill (the runner sets ``ATTNLIB_HEADLESS=1``) or outside IPython it does
nothing, so headless runs neither render widgets nor recompute anything. ``fn`` should only draw
(never save figures or record claims).

Controls follow ``ipywidgets.interact``'s abbreviations (``(lo, hi)`` / ``(lo, hi, step)`` a slider,
a list of strings a menu, a widget as is) with two changes that make them readable:

- a **list or tuple of numbers longer than three** becomes a slider over those actual values
  (``SelectionSlider``), e.g. ``threshold=list(S.thresholds)`` slides over the thresholds themselves,
  not their indices (``values(...)`` builds one explicitly, with a label);
- every label is shown in full (no truncated descriptions), and sliders redraw when released rather
  than on every pixel, so a slow drawing function does not queue up dozens of redraws.

`explore` returns nothing, so a cell ending with it shows only the controls and the drawing (no stray
``<function ...>`` line).
"""
from __future__ import annotations

import numbers
import os

_STYLE = {"description_width": "initial"}


def is_headless() -> bool:
    if os.environ.get("ATTNLIB_HEADLESS") == "1":
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or not hasattr(shell, "kernel")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _format(v) -> str:
    if isinstance(v, numbers.Integral):
        return str(int(v))
    return f"{float(v):.4g}"


def values(options, description: str | None = None, value=None):
    """A slider over the actual ``options`` (numbers shown as numbers), starting at ``value``
    (default: the first option). Raises ValueError for an empty list or a ``value`` not in it."""
    import ipywidgets

    opts = list(options)
    if not opts:
        raise ValueError("values() needs at least one option")
    if value is not None and value not in opts:
        raise ValueError(f"start value {value!r} is not one of the options {opts}")
    labelled = [(_format(v) if _is_number(v) else str(v), v) for v in opts]
    return ipywidgets.SelectionSlider(options=labelled, value=opts[0] if value is None else value,
                                      description=description or "", continuous_update=False,
                                      style=_STYLE, layout={"width": "32em"})


def _control(name: str, spec, default=None):
    """Turn one ``explore`` keyword into a widget, or leave it to ``interact``'s abbreviations.
    A slider over values starts at ``fn``'s default for that argument when it is one of them."""
    numeric_list = isinstance(spec, list) and spec and all(_is_number(v) for v in spec)
    long_tuple = isinstance(spec, tuple) and len(spec) > 3 and all(_is_number(v) for v in spec)
    if numeric_list or long_tuple:
        return values(spec, description=name, value=default if default in list(spec) else None)
    return spec


def _defaults(fn) -> dict:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def explore(fn, **controls) -> None:
    """Controls bound to ``fn`` in a live notebook (see the module docstring); nothing when headless."""
    if is_headless():
        return None
    import ipywidgets
    from IPython.display import display

    defaults = _defaults(fn)
    box = ipywidgets.interactive(fn, **{k: _control(k, v, defaults.get(k)) for k, v in controls.items()})
    for child in box.children[:-1]:  # the last child is the output area
        if hasattr(child, "style") and child.style.has_trait("description_width"):
            child.style.description_width = "initial"
        if hasattr(child, "continuous_update"):
            child.continuous_update = False
        if isinstance(child, (ipywidgets.IntSlider, ipywidgets.FloatSlider, ipywidgets.SelectionSlider)):
            child.layout.width = "32em"
    display(box)
    return None
