"""Where the workbook keeps things: repo root, figures/, results/, data/, the gitignored cache.

Paths are resolved from the package location (attnlib is installed editable from the repo), never
from the caller's working directory. ``ATTNLIB_ROOT`` overrides the root.

Where figures and results are written depends on who runs the notebook:

- **the runner** (``run_all.sh``) sets ``ATTNLIB_STAGE`` to a temporary folder: figures and results
  are written there and moved into place (``figures/``/``results/`` for the full profile,
  ``executed/<profile>/`` otherwise) only if the whole notebook succeeds;
- **anyone else** (a notebook opened in JupyterLab, a script, a unit test) writes into the gitignored
  scratch folder ``executed/interactive/`` so that exploring never overwrites the committed outputs.
  To publish from an interactive session on purpose, call ``attnlib.paths.publish()`` before running
  (or start Jupyter with ``ATTNLIB_OUTPUT=publish``); ``run_all.sh`` is the usual way to publish.
"""
from __future__ import annotations

import os
from pathlib import Path

#: Scratch folder (relative to the repo root) for runs outside the runner.
SCRATCH = Path("executed") / "interactive"
_OUTPUT_MODES = ("scratch", "publish")


def repo_root() -> Path:
    env = os.environ.get("ATTNLIB_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def output_mode() -> str:
    """``"stage"`` under the runner, else ``ATTNLIB_OUTPUT`` (``"scratch"``, the default, or ``"publish"``)."""
    if os.environ.get("ATTNLIB_STAGE"):
        return "stage"
    mode = os.environ.get("ATTNLIB_OUTPUT", "scratch") or "scratch"
    if mode not in _OUTPUT_MODES:
        raise ValueError(f"ATTNLIB_OUTPUT must be one of {', '.join(_OUTPUT_MODES)}, got {mode!r}")
    return mode


def publish(on: bool = True) -> str:
    """Make this process write figures and results into the committed ``figures/`` and ``results/``
    (``on=False`` goes back to the scratch folder). Returns the new mode. Only for deliberate
    publishing: a full-profile ``./run_all.sh`` is the normal way to regenerate the committed outputs."""
    os.environ["ATTNLIB_OUTPUT"] = "publish" if on else "scratch"
    return os.environ["ATTNLIB_OUTPUT"]


def output_root() -> Path:
    """The folder holding ``figures/`` and ``results/`` for this process (see the module docstring)."""
    mode = output_mode()
    if mode == "stage":
        return Path(os.environ["ATTNLIB_STAGE"])
    return repo_root() if mode == "publish" else repo_root() / SCRATCH


def figures_dir() -> Path:
    """Folder figures are written to (staged under the runner, scratch when interactive)."""
    path = output_root() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Folder claim records (one JSON per notebook) are written to (staged under the runner,
    scratch when interactive)."""
    path = output_root() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def published_results_dir() -> Path:
    """Where finished notebooks' results are read from (the scorecard): the folder the runner
    publishes to (``ATTNLIB_PUBLISH``, e.g. executed/quick/results), else the committed results/.
    An interactive scorecard therefore shows the committed full-profile results, never a mix with
    scratch runs."""
    env = os.environ.get("ATTNLIB_PUBLISH")
    return Path(env) if env else repo_root() / "results"


def data_dir() -> Path:
    return repo_root() / "data"


def cache_dir(*parts: str) -> Path:
    """Gitignored cache folder for expensive, input-keyed results (``ATTNLIB_CACHE`` overrides)."""
    base = Path(os.environ.get("ATTNLIB_CACHE", repo_root() / ".cache"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def relative(path: Path) -> str:
    """``path`` relative to the repo root when inside it (for messages), else the absolute path."""
    try:
        return str(Path(path).resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
