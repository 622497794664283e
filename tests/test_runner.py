"""run_all.sh's runner: failures are isolated and reported, outputs are transactional, bad arguments
rejected before anything runs, figures shown inline, the HTML site rendered; interactive runs write to
a scratch folder; widgets slide over actual values."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from attnlib import paths, plotting, runner, widgets

GOOD = """
from attnlib import plotting, profiles
from attnlib.claims import Recorder
import matplotlib.pyplot as plt
profiles.check_profile(profile)
fig, ax = plt.subplots(); ax.plot([1, 2], [3, 4 * scale])
rec = Recorder("01_good", "Good", profile=profile); rec.value("x", 1.0, unit="", basis="modelled"); rec.save()
plotting.savefig(fig, "good_fig")
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
paths.atomic_write_bytes(paths.results_dir() / "scorecard.md", b"| paper | claim |\\n|---|---|\\n| Good | x |\\n")
"""


def _notebook(path, body, params='profile = "full"'):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "attnlib", "display_name": "attnlib", "language": "python"}
    cell = new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [new_markdown_cell(f"# {path.stem} title\n\nWhat {path.stem} shows. More text."), cell,
                new_code_cell(body)]
    nbformat.write(nb, path)


@pytest.fixture
def fake_repo(tmp_path):
    (tmp_path / "notebooks").mkdir()
    _notebook(tmp_path / "notebooks" / "01_good.ipynb", GOOD, 'profile = "full"\nscale = 1  # a knob (1 = as drawn)')
    _notebook(tmp_path / "notebooks" / "02_bad.ipynb", BAD)
    _notebook(tmp_path / "notebooks" / "99_scorecard.ipynb", CARD)
    return tmp_path


def _run(root, *args):
    env = {**os.environ, "ATTNLIB_ROOT": str(root)}
    for var in ("ATTNLIB_STAGE", "ATTNLIB_PUBLISH", "ATTNLIB_OUTPUT"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "attnlib.runner", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def _outputs(nb_path):
    return [o for c in nbformat.read(nb_path, 4).cells if c.cell_type == "code" for o in c.outputs]


@pytest.mark.notebook
def test_full_run_isolates_failure_shows_figures_and_renders_site(fake_repo):
    (fake_repo / "README.md").write_text("# W\n<!-- verdicts:start -->\nold\n<!-- verdicts:end -->\n\n"
                                         "<!-- scorecard:start -->\nold table\n<!-- scorecard:end -->\nend\n")
    proc = _run(fake_repo)
    assert proc.returncode == 1
    assert "02_bad" in proc.stderr and "boom in the second cell" in proc.stderr
    assert "open executed/02_bad.ipynb" in proc.stderr                    # the copy to open is named
    assert "without encryption" not in proc.stdout + proc.stderr          # kernels over IPC, no warning
    assert "Unable to parse" not in proc.stderr                           # no papermill inference noise
    assert (fake_repo / "figures" / "good_fig.png").exists()
    assert json.loads((fake_repo / "results" / "01_good.json").read_text())["profile"] == "full"
    assert not (fake_repo / "figures" / "bad_fig.png").exists()          # nothing partial survives
    assert "| Good | x |" in proc.stdout                                  # scorecard still ran and printed
    assert not list((fake_repo / ".cache" / "stage").iterdir())            # staging cleaned
    # the executed copy shows the saved figure inline (same bytes), and no PosixPath line
    outs = _outputs(fake_repo / "executed" / "01_good.ipynb")
    pngs = [o["data"]["image/png"] for o in outs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    import base64
    assert base64.b64decode(pngs[0]) == (fake_repo / "figures" / "good_fig.png").read_bytes()
    assert "PosixPath" not in json.dumps(outs)
    # the site: one page per executed notebook that ran, linked figures, an index with the scorecard
    site = fake_repo / "site"
    page = (site / "01_good.html").read_text()
    assert 'src="../figures/good_fig.png"' in page and "data:image/png" not in page
    assert 'href="notebook.css"' in page and (site / "notebook.css").stat().st_size > 10_000
    assert not (site / "02_bad.html").exists()                            # failed: no page
    index = (site / "index.html").read_text()
    assert '<a href="01_good.html">Good</a>' in index                    # scorecard row links the page
    assert "01_good title" in index
    assert index.count("<p class='verdict'>") == 5 and "What the workbook found" in index  # one per paper
    readme = (fake_repo / "README.md").read_text()                       # generated parts, markers kept
    assert "old" not in readme and "- **SPRINT**: Not run yet" in readme and readme.endswith("end\n")
    assert "| paper | claim | paper says |" in readme
    assert '<img src="thumbs/01_good.png"' in index and (site / "thumbs" / "01_good.png").stat().st_size < 60_000
    # offline: MathJax from the packaged copy, no script/style/image from another host; real titles, a footer
    assert (site / "mathjax" / "tex-svg-full.js").stat().st_size > 1_000_000
    assert re.search(r'<script[^>]*src="mathjax/tex-svg-full.js"', page)
    for html_page in (page, index):
        assert not re.search(r'(?:src|href)=["\']?(?:https?:)?//', html_page)
        assert "attnlib-footer" in html_page and "profile <b>full</b>" in html_page
    assert "<title>01_good title</title>" in page
    assert page.count("celltag_parameters") == 1 and "injected-parameters" not in page


@pytest.mark.notebook
def test_quick_profile_never_touches_published_outputs(fake_repo):
    proc = _run(fake_repo, "--quick", "01_good", "-p", "scale", "3")
    assert proc.returncode == 0, proc.stderr
    assert (fake_repo / "executed" / "quick" / "figures" / "good_fig.png").exists()
    assert not (fake_repo / "figures").exists() and not (fake_repo / "site").exists()
    meta = nbformat.read(fake_repo / "executed" / "01_good.quick.ipynb", 4).metadata.papermill
    assert meta["parameters"] == {"profile": "quick", "scale": 3}
    card = nbformat.read(fake_repo / "executed" / "99_scorecard.quick.ipynb", 4).metadata.papermill
    assert card["parameters"] == {"profile": "quick"}                     # only keys a notebook declares


def test_unknown_profile_is_rejected_before_anything_runs(fake_repo):
    proc = _run(fake_repo, "-p", "profile", "bogus")
    assert proc.returncode == 2
    assert "allowed profiles: quick, full" in proc.stderr
    assert not (fake_repo / "figures").exists() and not (fake_repo / "results").exists()


def test_unknown_parameter_is_rejected_before_anything_runs(fake_repo):
    proc = _run(fake_repo, "-p", "scael", "3")
    assert proc.returncode == 2
    assert "'scael'" in proc.stderr and "01_good: profile, scale" in proc.stderr
    assert not (fake_repo / "executed").exists() and not (fake_repo / "results").exists()


def test_unknown_notebook_and_option_exit_2(fake_repo):
    proc = _run(fake_repo, "nonexistent")
    assert proc.returncode == 2 and "01_good" in proc.stderr
    assert _run(fake_repo, "--bogus").returncode == 2


def test_help_and_list(fake_repo):
    proc = _run(fake_repo, "--help")
    assert proc.returncode == 0
    for needle in ("examples:", "where things go:", "times:", "exit status", "executed/", "smoke run"):
        assert needle in proc.stdout
    assert "``" not in proc.stdout                                        # no reST markup on a terminal
    assert "in seconds" not in proc.stdout
    listing = _run(fake_repo, "--list")
    assert listing.returncode == 0 and "01_good" in listing.stdout and "scale=1" in listing.stdout


def test_site_and_no_site_together_is_a_usage_error(fake_repo):
    proc = _run(fake_repo, "--site", "--no-site")
    assert proc.returncode == 2
    assert "--site" in proc.stderr and "not allowed with" in proc.stderr and "usage:" in proc.stderr
    assert not (fake_repo / "executed").exists()                          # nothing ran


@pytest.mark.notebook
def test_ctrl_c_prints_one_line_and_removes_staging(fake_repo):
    started = fake_repo / "started"
    _notebook(fake_repo / "notebooks" / "01_good.ipynb",
              f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('x')\ntime.sleep(120)")
    env = {**os.environ, "ATTNLIB_ROOT": str(fake_repo)}
    for var in ("ATTNLIB_STAGE", "ATTNLIB_PUBLISH", "ATTNLIB_OUTPUT"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "attnlib.runner", "01_good"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.time()
    while not started.exists() and time.time() - t0 < 120 and proc.poll() is None:
        time.sleep(0.2)
    assert started.exists(), proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)                                    # what Ctrl-C in a terminal sends
    t1 = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.time() - t1 < 10
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C) while 01_good ran"), err
    assert not list((fake_repo / ".cache" / "stage").iterdir())          # staging removed
    assert not (fake_repo / "results").exists() and not (fake_repo / "figures").exists()


def test_ctrl_c_exits_even_when_the_notebook_machinery_hangs_while_unwinding(fake_repo):
    """A stand-in for papermill that swallows Ctrl-C and keeps waiting (a kernel or client that does not
    stop): the runner still exits with 130 within its grace period, says so once, and removes the staging."""
    started = fake_repo / "started"
    hang = ("import sys, time, papermill\n"
            "def stuck(*a, **k):\n"
            f"    open({str(started)!r}, 'w').write('x')\n"
            "    while True:\n"
            "        try:\n"
            "            time.sleep(100)\n"
            "        except KeyboardInterrupt:\n"
            "            pass\n"
            "papermill.execute_notebook = stuck\n"
            "import attnlib.runner as r\n"
            "sys.exit(r.main(['01_good']))\n")
    env = {**os.environ, "ATTNLIB_ROOT": str(fake_repo)}
    for var in ("ATTNLIB_STAGE", "ATTNLIB_PUBLISH", "ATTNLIB_OUTPUT"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-c", hang], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    t0 = time.time()
    while not started.exists() and time.time() - t0 < 60 and proc.poll() is None:
        time.sleep(0.1)
    assert started.exists(), proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    t1 = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and runner.INTERRUPT_GRACE_S <= time.time() - t1 < runner.INTERRUPT_GRACE_S + 10
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C) while 01_good ran"), err
    assert not list((fake_repo / ".cache" / "stage").iterdir())          # staging removed


def test_parameters_cell_is_the_list_of_known_keys(tmp_path):
    nb = tmp_path / "x.ipynb"
    _notebook(nb, "pass", 'profile = "full"\nthreshold: float = 0.5\na, b = 1, 2\nseed = 0  # comment')
    assert runner.notebook_parameters(nb) == {"profile": '"full"', "threshold": "0.5", "seed": "0"}
    bare = new_notebook(cells=[new_code_cell("x = 1")])
    nbformat.write(bare, tmp_path / "y.ipynb")
    with pytest.raises(ValueError, match="no code cell tagged 'parameters'"):
        runner.notebook_parameters(tmp_path / "y.ipynb")


def test_mixed_profiles_are_named(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"profile": "full"}))
    (tmp_path / "b.json").write_text(json.dumps({"profile": "quick"}))
    assert runner.mixed_profiles(tmp_path, "full") == ["b.json (profile=quick)"]


# --- interactive runs write to a scratch folder, never into the committed outputs -----------------

@pytest.fixture
def interactive(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLIB_ROOT", str(tmp_path))
    for var in ("ATTNLIB_STAGE", "ATTNLIB_PUBLISH", "ATTNLIB_OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _figure():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def test_interactive_outputs_go_to_scratch_unless_published(interactive, monkeypatch):
    path = plotting.savefig(_figure(), "demo")
    assert path == interactive / "executed" / "interactive" / "figures" / "demo.png" and path.exists()
    assert paths.results_dir() == interactive / "executed" / "interactive" / "results"
    assert not (interactive / "figures").exists()
    assert paths.published_results_dir() == interactive / "results"      # the scorecard reads committed
    assert paths.publish() == "publish"
    assert plotting.savefig(_figure(), "demo") == interactive / "figures" / "demo.png"
    paths.publish(False)
    monkeypatch.setenv("ATTNLIB_OUTPUT", "everywhere")
    with pytest.raises(ValueError, match="ATTNLIB_OUTPUT"):
        paths.figures_dir()
    monkeypatch.setenv("ATTNLIB_STAGE", str(interactive / "stage"))      # the runner wins
    assert paths.figures_dir() == interactive / "stage" / "figures"


def test_saved_path_displays_as_nothing_and_plain_python_shows_nothing(interactive, capsys):
    path = plotting.savefig(_figure(), "quiet")
    assert path._ipython_display_() is None and isinstance(path, type(interactive))
    assert capsys.readouterr().out == ""                                 # outside a kernel: silent
    with pytest.raises(ValueError, match="bare name"):
        plotting.savefig(_figure(), "x.png")


def test_widgets_slide_over_actual_values():
    slider = widgets._control("threshold", [0.001, 0.01, 0.1], default=0.01)
    assert type(slider).__name__ == "SelectionSlider"
    assert [v for _, v in slider.options] == [0.001, 0.01, 0.1] and slider.value == 0.01
    assert slider.label == "0.01" and slider.description == "threshold"
    assert widgets._control("n", (0, 10)) == (0, 10)                     # interact's slider abbreviation
    assert widgets._control("m", ["a", "b"]) == ["a", "b"]               # a menu stays a menu
    with pytest.raises(ValueError, match="not one of the options"):
        widgets.values([1, 2], value=3)
    assert widgets.explore(lambda x=1: None, x=(0, 2)) is None            # headless: inert, returns nothing
