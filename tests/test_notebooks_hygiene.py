"""Every notebook is stored clean, starts with a tagged parameters cell and imports attnlib properly."""
import json

import pytest

from attnlib.paths import repo_root

NOTEBOOKS = sorted((repo_root() / "notebooks").glob("*.ipynb"))


def test_the_primer_and_scorecard_exist():
    stems = {p.stem for p in NOTEBOOKS}
    assert {"00_primer", "99_scorecard"} <= stems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "stored with outputs"
    first = code[0]
    assert "parameters" in first["metadata"].get("tags", []), "first code cell must be tagged 'parameters'"
    assert 'profile = "full"' in "".join(first["source"])
    source = "\n".join("".join(c["source"]) for c in code)
    assert "sys.path" not in source
    assert "attnlib" in source
    if path.stem != "99_scorecard":
        assert "savefig(" in source, "figures must be saved explicitly"
        assert "explore(" in source, "at least one interactive control (attnlib.widgets.explore)"
    assert nb["metadata"]["kernelspec"]["name"] == "attnlib"


def _normaliser():
    import importlib.util

    spec = importlib.util.spec_from_file_location("normalize_notebooks", repo_root() / "scripts" / "normalize_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_unmodified_in_jupyterlab(path):
    """Stored with the metadata JupyterLab writes back when the kernel starts (kernelspec, the kernel's
    language_info) in nbformat's layout, so opening it does not mark it modified."""
    norm = _normaliser()
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"] == norm.KERNELSPEC
    assert nb["metadata"].get("language_info") == norm.language_info(), \
        "language_info differs from the kernel's: run .venv/bin/python scripts/normalize_notebooks.py"
    assert path.read_text() == norm.normalized(path.read_text()), \
        "not in canonical form: run .venv/bin/python scripts/normalize_notebooks.py"


def test_normaliser_clears_outputs_and_adds_kernel_metadata(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    norm = _normaliser()
    nb = new_notebook(cells=[new_code_cell("1 + 1", execution_count=3,
                                           outputs=[nbformat.v4.new_output("execute_result", {"text/plain": "2"})])])
    nb.cells[0].metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    text = norm.normalized(nbformat.writes(nb))
    out = json.loads(text)
    cell = out["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and "execution" not in cell["metadata"]
    assert out["metadata"]["language_info"]["version"].count(".") == 2 and out["nbformat_minor"] == 5
    assert norm.normalized(text) == text                                  # idempotent
