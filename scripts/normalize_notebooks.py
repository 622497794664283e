#!/usr/bin/env python
"""Store every notebook the way JupyterLab would save it, so opening one does not mark it modified.

JupyterLab writes the kernel's ``language_info`` (and the kernelspec) into a notebook's metadata as soon
as the kernel starts, and saves JSON with one-space indentation and sorted keys. A notebook stored with
less metadata therefore opens as *modified*. This script rewrites ``notebooks/*.ipynb`` with:

- the ``attnlib`` kernelspec and the ``language_info`` the workbook's kernel reports (run it with the
  workbook's Python, ``.venv/bin/python``, whose version is the one recorded);
- no outputs, no execution counts, no per-cell execution metadata (the workbook stores notebooks clean);
- nbformat 4.5 with a cell id on every cell, in nbformat's canonical JSON layout.

    .venv/bin/python scripts/normalize_notebooks.py          # rewrite what differs, list the files
    .venv/bin/python scripts/normalize_notebooks.py --check  # exit 1 and list the files that differ
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "attnlib (.venv)", "language": "python", "name": "attnlib"}
DROP_CELL_METADATA = ("execution", "collapsed", "scrolled", "papermill", "ExecuteTime")


def language_info() -> dict:
    """What ipykernel reports for this interpreter (JupyterLab copies it into the notebook)."""
    return {"codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
            "mimetype": "text/x-python", "name": "python", "nbconvert_exporter": "python",
            "pygments_lexer": "ipython3", "version": ".".join(map(str, sys.version_info[:3]))}


def normalized(text: str) -> str:
    """The canonical stored form of a notebook given as JSON text."""
    nb = nbformat.reads(text, as_version=4)
    nb = copy.deepcopy(nb)
    nb.nbformat, nb.nbformat_minor = 4, 5
    keep = {k: v for k, v in nb.metadata.items() if k not in ("kernelspec", "language_info", "papermill", "widgets")}
    nb.metadata = nbformat.from_dict({**keep, "kernelspec": KERNELSPEC, "language_info": language_info()})
    for i, cell in enumerate(nb.cells):
        if "id" not in cell:
            cell["id"] = f"cell-{i:02d}"
        for key in DROP_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def differing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.read_text() != normalized(p.read_text())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook would change")
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    todo = differing(paths)
    for p in todo:
        print(f"{'would normalise' if args.check else 'normalised'}: {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
        if not args.check:
            p.write_text(normalized(p.read_text()))
    return 1 if (args.check and todo) else 0


if __name__ == "__main__":
    sys.exit(main())
