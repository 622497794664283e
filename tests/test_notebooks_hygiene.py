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
