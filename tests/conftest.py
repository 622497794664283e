"""Shared test fixtures: run a notebook through papermill in the quick profile, isolated.

`run_notebook("03_flat")` executes notebooks/03_flat.ipynb with profile="quick" into a temporary
folder, with figures and results staged there (ATTNLIB_STAGE), so tests never touch the committed
figures/ and results/. It returns the recorded results JSON and the figure paths. Kernels run over IPC like the runner's (no
transport warning), and papermill's parameter-inference warnings are dropped.
"""
from __future__ import annotations

import json

import pytest

from attnlib.paths import repo_root
from attnlib.runner import KERNEL, _kernel_manager_class, _quiet_papermill


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
    def run(stem: str, **parameters):
        import papermill as pm

        _quiet_papermill()
        stage = tmp_path / "stage"
        monkeypatch.setenv("ATTNLIB_STAGE", str(stage))
        monkeypatch.setenv("ATTNLIB_PUBLISH", str(stage / "results"))
        monkeypatch.setenv("ATTNLIB_HEADLESS", "1")
        params = {"profile": "quick", **parameters}
        nb = repo_root() / "notebooks" / f"{stem}.ipynb"
        pm.execute_notebook(str(nb), str(tmp_path / f"{stem}.out.ipynb"), parameters=params,
                            kernel_name=KERNEL, cwd=str(nb.parent), execution_timeout=600, progress_bar=False,
                            kernel_manager_class=_kernel_manager_class())
        result_file = stage / "results" / f"{stem}.json"
        results = json.loads(result_file.read_text()) if result_file.exists() else None
        figures = sorted((stage / "figures").glob("*.png")) if (stage / "figures").exists() else []
        return results, {p.stem: p for p in figures}

    return run
