"""Where the workbook keeps things: repo root, figures/, results/, data/, the gitignored cache.

Paths are resolved from the package location (attnlib is installed editable from the repo), never
from the caller's working directory. ``ATTNLIB_ROOT`` overrides the root. When the runner executes a
notebook it sets ``ATTNLIB_STAGE`` to a temporary folder: figures and results are then written there
and moved into place only if the whole notebook succeeds, so a failure never leaves partial outputs.
"""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    env = os.environ.get("ATTNLIB_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


def _output_base() -> Path:
    stage = os.environ.get("ATTNLIB_STAGE")
    return Path(stage) if stage else repo_root()


def figures_dir() -> Path:
    """Folder figures are written to (staged while the runner executes a notebook)."""
    path = _output_base() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """Folder claim records (one JSON per notebook) are written to (staged under the runner)."""
    path = _output_base() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def published_results_dir() -> Path:
    """Where finished notebooks' results live: the committed results/ folder for the full profile,
    or the folder the runner publishes to (``ATTNLIB_PUBLISH``, e.g. executed/quick/results)."""
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


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
