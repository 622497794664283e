"""run_all.sh's runner: failures are isolated and reported, outputs are transactional, bad profiles rejected."""
import os
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

GOOD = """
from attnlib import plotting, profiles
from attnlib.claims import Recorder
import matplotlib.pyplot as plt
profiles.check_profile(profile)
fig, ax = plt.subplots(); ax.plot([1, 2], [3, 4])
plotting.savefig(fig, "good_fig")
rec = Recorder("01_good", "Good", profile=profile); rec.value("x", 1.0, unit="", basis="modelled"); rec.save()
"""
BAD = """
from attnlib import plotting, profiles
import matplotlib.pyplot as plt
fig, ax = plt.subplots(); ax.plot([1], [1])
plotting.savefig(fig, "bad_fig")   # written to staging, must never be published
raise RuntimeError("boom in the second cell")
"""
CARD = """
from attnlib import paths
paths.atomic_write_bytes(paths.results_dir() / "scorecard.md", b"| fake scorecard |\\n")
"""


def _notebook(path, body):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "attnlib", "display_name": "attnlib", "language": "python"}
    params = new_code_cell('profile = "full"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def fake_repo(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_good.ipynb", GOOD)
    _notebook(tmp_path / "notebooks" / "02_bad.ipynb", BAD)
    _notebook(tmp_path / "notebooks" / "99_scorecard.ipynb", CARD)
    return tmp_path


def _run(root, *args):
    env = {**os.environ, "ATTNLIB_ROOT": str(root)}
    env.pop("ATTNLIB_STAGE", None)
    env.pop("ATTNLIB_PUBLISH", None)
    return subprocess.run([sys.executable, "-m", "attnlib.runner", *args], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.notebook
def test_failure_is_reported_and_isolated(fake_repo):
    proc = _run(fake_repo)
    assert proc.returncode == 1
    assert "02_bad" in proc.stderr and "boom in the second cell" in proc.stderr
    assert (fake_repo / "figures" / "good_fig.png").exists()
    assert (fake_repo / "results" / "01_good.json").exists()
    assert not (fake_repo / "figures" / "bad_fig.png").exists()          # nothing partial survives
    assert "fake scorecard" in proc.stdout                                 # scorecard still ran and printed
    assert not list((fake_repo / ".cache" / "stage").iterdir())            # staging cleaned


@pytest.mark.notebook
def test_quick_profile_never_touches_published_outputs(fake_repo):
    proc = _run(fake_repo, "--quick", "01_good")
    assert proc.returncode == 0, proc.stderr
    assert (fake_repo / "executed" / "quick" / "figures" / "good_fig.png").exists()
    assert not (fake_repo / "figures").exists()


def test_unknown_profile_is_rejected_before_anything_runs(fake_repo):
    proc = _run(fake_repo, "-p", "profile", "bogus")
    assert proc.returncode == 2
    assert "allowed profiles: quick, full" in proc.stderr
    assert not (fake_repo / "figures").exists() and not (fake_repo / "results").exists()


def test_unknown_notebook_name_lists_known(fake_repo):
    proc = _run(fake_repo, "nonexistent")
    assert proc.returncode != 0 and "01_good" in proc.stderr
