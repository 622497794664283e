"""The paper cards live in the repository (docs/), and what a reader follows from a notebook resolves."""
import json
import re

from attnlib.paths import repo_root

ROOT = repo_root()
PAPERS = ("a3", "sprint", "flat", "token_picker", "attmemo")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _markdown_cells():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                yield nb, "".join(cell["source"])


def test_every_paper_has_a_card_with_source_labels():
    for name in PAPERS:
        text = (ROOT / "docs" / "papers" / f"{name}.md").read_text()
        assert "[paper" in text and "[secondary" in text, name
    assert (ROOT / "docs" / "models_and_data.md").exists()


def test_notebooks_cite_nothing_outside_the_repository():
    for nb, text in _markdown_cells():
        assert "../shared" not in text and "shared/papers" not in text and "MODELS_AND_DATA" not in text, nb.name


def test_relative_links_in_notebooks_and_docs_resolve():
    sources = [(nb.parent, text) for nb, text in _markdown_cells()]
    sources += [(md.parent, md.read_text()) for md in sorted((ROOT / "docs").rglob("*.md"))]
    for folder, text in sources:
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:|#", target):
                continue
            assert (folder / target.split("#")[0]).exists(), (folder, target)
