"""The rendered workbook: every executed notebook as an HTML page, plus an index page.

`render(profile)` turns the runner's executed copies (``executed/<notebook>.ipynb`` for the full
profile) into ``site/<notebook>.html`` with nbconvert, and writes ``site/index.html``: the scorecard
table (paper names link to their notebook's page), the scorecard figure, and one card per notebook
(its title, the claim counts by status, a thumbnail of its first figure in
``site/thumbs/``). Other profiles
render into ``executed/<profile>/site/`` (gitignored).

The pages need nothing installed: open ``site/index.html`` in a browser from a clone, or serve the
repository root with any static web server (``python3 -m http.server`` then ``/site/``). Figures that
the notebook saved with `attnlib.plotting.savefig` are linked to the committed ``figures/*.png``
(same bytes) instead of being embedded a second time, so the pages stay small; any other inline image
stays embedded.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from pathlib import Path

from .paths import atomic_write_bytes, repo_root

_IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')
_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.S)
CSS_NAME = "notebook.css"


def site_dir(profile: str) -> Path:
    return repo_root() / "site" if profile == "full" else repo_root() / "executed" / profile / "site"


def _figure_index(figures: Path) -> dict[str, str]:
    """sha256 of each PNG in ``figures`` -> its file name."""
    if not figures.is_dir():
        return {}
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p.name for p in sorted(figures.glob("*.png"))}


def _link_figures(page: str, figures: dict[str, str], rel: str) -> str:
    """Replace embedded PNGs that are byte-identical to a saved figure by a link to that file."""
    def swap(m):
        digest = hashlib.sha256(base64.b64decode(re.sub(r"\s", "", m.group(1)))).hexdigest()
        return f'src="{rel}/{figures[digest]}"' if digest in figures else m.group(0)

    return _IMG.sub(swap, page)


def _share_css(page: str, out_dir: Path, written: dict) -> str:
    """Move the template's style sheets (about 300 kB, the same on every page) out of the page into
    one shared ``notebook.css``; a page whose styles differ from the shared file keeps them inline."""
    head_end = page.find("</head>")
    if head_end < 0:
        return page
    head, body = page[:head_end], page[head_end:]
    blocks = _STYLE.findall(head)
    if not blocks:
        return page
    css = "\n".join(re.sub(r"^<style[^>]*>|</style>$", "", b) for b in blocks)
    if "css" not in written:
        atomic_write_bytes(out_dir / CSS_NAME, css.encode())
        written["css"] = css
    if written["css"] != css:
        return page
    head = _STYLE.sub("", head)
    return head + f'<link rel="stylesheet" href="{CSS_NAME}">\n' + body


def _thumbnail(nb: dict, figures: dict[str, str]) -> tuple[bytes | None, str | None]:
    """The notebook's first inline PNG that is a saved figure (its bytes and file name), else its
    first inline PNG (bytes, None), else (None, None)."""
    first = None
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("image/png")
            if data:
                png = base64.b64decode("".join(data) if isinstance(data, list) else data)
                name = figures.get(hashlib.sha256(png).hexdigest())
                if name:
                    return png, name
                first = first or png
    return first, None


def _shrink(png: bytes, box=(480, 300)) -> bytes:
    """A small PNG thumbnail of ``png`` (deterministic bytes: no metadata)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB")
        im.thumbnail(box)
        im = im.quantize(colors=128)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _title(nb: dict, fallback: str) -> str:
    """The notebook's first markdown heading (its title)."""
    for cell in nb["cells"]:
        lines = "".join(cell["source"]).strip().splitlines() if cell["cell_type"] == "markdown" else []
        if lines and lines[0].startswith("#"):
            return lines[0].lstrip("#").strip()
    return fallback


def _nav(stem: str, profile: str) -> str:
    return (f'<div style="font:14px sans-serif;padding:8px 16px;background:#f3f3f3;border-bottom:1px solid #ddd">'
            f'<a href="index.html">&larr; all notebooks and the scorecard</a> &nbsp;·&nbsp; '
            f'<code>notebooks/{html.escape(stem)}.ipynb</code>, executed by <code>./run_all.sh</code> '
            f'(profile {html.escape(profile)})</div>')


def render_notebook(executed: Path, out: Path, profile: str, figures: dict[str, str], rel: str,
                    shared: dict | None = None) -> None:
    """One executed notebook to one HTML page (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    exporter = HTMLExporter(template_name="lab")
    page, _ = exporter.from_notebook_node(nb)
    page = _link_figures(page, figures, rel)
    page = _share_css(page, out.parent, {} if shared is None else shared)
    page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(executed.stem.split(".")[0], profile), page,
                  count=1)
    atomic_write_bytes(out, page.encode())


def _markdown_table(md: str) -> str:
    import mistune

    return mistune.create_markdown(plugins=["table"])(md)


def _status_counts(result: dict) -> str:
    counts: dict[str, int] = {}
    for claim in result.get("claims", []):
        counts[claim.get("status", "?")] = counts.get(claim.get("status", "?"), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:12px 0}th,td{border:1px solid #ddd;padding:3px 6px;
vertical-align:top}th{background:#f3f3f3}.cards{display:grid;grid-template-columns:repeat(auto-fill,
minmax(260px,1fr));gap:16px}.card{border:1px solid #ddd;border-radius:6px;padding:10px}.card img{width:100%;
height:150px;object-fit:contain;background:#fafafa}.card h3{font-size:15px;margin:6px 0}.muted{color:#666;
font-size:13px}code{background:#f3f3f3;padding:0 3px}
"""


def render_index(out_dir: Path, profile: str, pages: dict[str, Path], executed: dict[str, Path]) -> Path:
    """``index.html``: a card per notebook, then the scorecard figure and table (papers linked to their pages)."""
    root = publish = repo_root() if profile == "full" else repo_root() / "executed" / profile
    results = {}
    for f in sorted((publish / "results").glob("*.json")) if (publish / "results").is_dir() else []:
        try:
            results[f.stem] = json.loads(f.read_text())
        except ValueError:
            continue
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Attention-accelerator reproduction "
             f"workbook</title><style>{_CSS}</style></head><body>",
             "<h1>Attention-accelerator reproduction workbook</h1>",
             "<p>Five papers on accelerating transformer attention (A3, SPRINT, FLAT, Token-Picker, AttMEMO), "
             "re-checked on an ordinary computer. Each page below is a notebook as executed by "
             f"<code>./run_all.sh</code> (profile <b>{html.escape(profile)}</b>), with its figures; the "
             "source notebooks are in <code>notebooks/</code>. The <a href='#scorecard'>scorecard</a> follows "
             "the notebooks.</p>"]
    parts.append("<h2>Notebooks</h2><div class='cards'>")
    figures = _figure_index(root / "figures")
    rel = os.path.relpath(root / "figures", out_dir)
    for stem, page in pages.items():
        nb = json.loads(executed[stem].read_text())
        title = _title(nb, stem)
        png, _ = _thumbnail(nb, figures)
        thumb = ""
        if png is not None:
            src = f"thumbs/{stem}.png"
            atomic_write_bytes(out_dir / src, _shrink(png))
            thumb = f'<a href="{page.name}"><img src="{src}" alt="first figure of {html.escape(stem)}"></a>'
        counts = _status_counts(results.get(stem, {}))
        parts.append(f"<div class='card'>{thumb}<h3><a href='{page.name}'>{html.escape(title)}</a></h3>"
                     f"<div class='muted'><code>{html.escape(stem)}</code>"
                     f"{' · ' + html.escape(counts) if counts else ''}</div></div>")
    parts.append("</div>")
    card = root / "results" / "scorecard.md"
    if card.exists():
        table = _markdown_table(card.read_text())
        for stem, res in results.items():
            if stem in pages and res.get("paper"):
                paper = html.escape(res["paper"])
                table = table.replace(f"<td>{paper}</td>", f'<td><a href="{pages[stem].name}">{paper}</a></td>')
        parts.append("<h2 id='scorecard'>Scorecard</h2>")
        if (root / "figures" / "scorecard.png").exists():
            parts.append(f'<p><img src="{rel}/scorecard.png" alt="scorecard figure" style="max-width:100%"></p>')
        parts.append(table)
    parts.append("</body></html>\n")
    index = out_dir / "index.html"
    atomic_write_bytes(index, "\n".join(parts).encode())
    return index


def render(profile: str, stems: list[str] | None = None) -> Path:
    """Render the executed notebooks of ``profile`` (only ``stems`` if given; the index always lists
    every page present) and the index; returns the index path."""
    from .runner import executed_path, notebooks_dir

    out_dir = site_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = repo_root() if profile == "full" else repo_root() / "executed" / profile
    figures = _figure_index(root / "figures")
    rel = os.path.relpath(root / "figures", out_dir)
    pages, executed, shared = {}, {}, {}
    for nb in sorted(notebooks_dir().glob("*.ipynb")):
        copy = executed_path(nb, profile)
        page = out_dir / f"{nb.stem}.html"
        if copy.exists() and (stems is None or nb.stem in stems):
            render_notebook(copy, page, profile, figures, rel, shared)
        if page.exists() and copy.exists():
            pages[nb.stem], executed[nb.stem] = page, copy
    return render_index(out_dir, profile, pages, executed)
