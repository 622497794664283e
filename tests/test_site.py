"""The static site's page preparation (attnlib.site.prepare) and its offline pieces, without a kernel."""
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from attnlib import site


def _executed():
    nb = new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nb.metadata["papermill"] = {"parameters": {"profile": "quick", "seed": 0}}
    params = new_code_cell('profile = "full"   # "quick": a smoke run\nseed = 0')
    params.metadata["tags"] = ["parameters"]
    injected = new_code_cell('# Parameters\nprofile = "quick"\nseed = 0\n')
    injected.metadata["tags"] = ["injected-parameters"]
    path_cell = new_code_cell("rec.save()", outputs=[new_output(
        "execute_result", data={"text/plain": "PosixPath('/x/.cache/stage/01-1/results/01.json')"}, execution_count=3)])
    bar = new_code_cell("model = load()", outputs=[
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
                                         "text/plain": "HBox()"}),
        new_output("stream", name="stdout", text="loaded\n")])
    widget = new_code_cell("def show(x=1):\n    pass\n\nwidgets.explore(show, x=[1, 2, 4, 8])")
    value = new_code_cell("2 + 2", outputs=[new_output("execute_result", data={"text/plain": "4"}, execution_count=5)])
    nb.cells = [new_markdown_cell("# 07 · A title with $N \\times N$ math\n\ntext"), params, injected, path_cell,
                bar, widget, value]
    return nb


def test_prepare_one_parameters_cell_notes_and_no_stray_outputs():
    nb = site.prepare(_executed(), "07_demo")
    assert "widgets" not in nb.metadata
    assert nb.metadata["title"] == "07 · A title with $N \\times N$ math"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["injected-parameters"] not in tags and tags.count(["parameters"]) == 1
    params = nb.cells[1]
    assert "profile = 'quick'" in params.outputs[0]["data"]["text/html"]          # what differs from defaults
    assert "seed" not in params.outputs[0]["data"]["text/html"]                   # same as the default
    assert nb.cells[2].outputs == []                                              # PosixPath(...) dropped
    assert [o["output_type"] for o in nb.cells[3].outputs] == ["stream"]          # progress widget dropped
    note = nb.cells[4].outputs[-1]["data"]["text/html"]
    assert site.INTERACTIVE_NOTE in note and "notebooks/07_demo.ipynb" in note
    assert nb.cells[5].outputs[0]["data"]["text/plain"] == "4"                   # ordinary results stay
    nbformat.validate(nb)


def test_page_has_no_external_request_and_a_footer(tmp_path):
    page, _ = site.exporter().from_notebook_node(site.prepare(_executed(), "07_demo"))
    assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", page), re.findall(r'(?:src|href)="[^"]*"', page)
    assert "cdnjs" not in page and "unpkg" not in page and "require.min.js" not in page
    assert re.search(r'<script[^>]*src="mathjax/tex-svg-full.js"', page) and "window.MathJax" in page
    assert "<title>07 · A title with $N \\times N$ math</title>" in page
    script = site.install_mathjax(tmp_path)
    assert script.read_bytes()[:200] and (tmp_path / "mathjax" / "LICENSE").exists()
    info = site.provenance("quick")
    assert set(info) == {"commit", "date", "machine", "profile"} and "CPUs" in info["machine"]
    foot = site.footer(info, "2026-01-01 00:00 UTC")
    assert "commit" in foot and "profile <b>quick</b>" in foot and "executed 2026-01-01" in foot


def test_index_keeps_cards_of_pages_from_earlier_runs(tmp_path, monkeypatch):
    """After `run_all.sh 03_flat` on a fresh clone only FLAT's executed copy exists: the index must still
    list every committed page (title from the source notebook, the committed thumbnail)."""
    monkeypatch.setenv("ATTNLIB_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    nb = new_notebook(cells=[new_markdown_cell("# 01 · Kept from an earlier run\n\ntext")])
    nbformat.write(nb, tmp_path / "notebooks" / "01_kept.ipynb")
    (tmp_path / "site" / "thumbs").mkdir(parents=True)
    (tmp_path / "site" / "01_kept.html").write_text("<html><title>01 · Kept from an earlier run</title></html>")
    (tmp_path / "site" / "thumbs" / "01_kept.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    index = site.render("full").read_text()
    assert "<a href='01_kept.html'>01 · Kept from an earlier run</a>" in index
    assert '<img src="thumbs/01_kept.png"' in index
    assert (tmp_path / "site" / "mathjax" / site.MATHJAX_JS).exists() and "attnlib-footer" in index
