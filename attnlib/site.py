"""The rendered workbook: every executed notebook as an HTML page, plus an index page.

`render(profile)` turns the runner's executed copies (``executed/<notebook>.ipynb`` for the full
profile) into ``site/<notebook>.html`` with nbconvert, and writes ``site/index.html``: the scorecard
table (paper names link to their notebook's page), the scorecard figure, and one card per notebook
(its title, the claim counts by status, a thumbnail of its first figure in
``site/thumbs/``). Other profiles
render into ``executed/<profile>/site/`` (gitignored).

The pages need nothing installed and make no request outside the repository (they work offline):
open ``site/index.html`` in a browser from a clone, or serve the repository root with any static web
server (``python3 -m http.server`` then ``/site/``). Figures that the notebook saved with
`attnlib.plotting.savefig` are linked to the committed ``figures/*.png`` (same bytes) instead of being
embedded a second time, so the pages stay small; any other inline image stays embedded.

What the renderer changes on the way from notebook to page (`prepare`):

- math is typeset by a packaged MathJax 3 (``django-static-mathjax``, copied to ``<site>/mathjax/``
  at render time), never a CDN; no require.js, widget-manager or mermaid script is loaded;
- the cell papermill injects (``injected-parameters``) is dropped, so the parameters cell appears once;
  values that differ from its defaults are stated in a note under it;
- a cell with an ``explore(...)`` control gets the note "Interactive in JupyterLab: this control does
  not run on the static page"; other widget outputs (progress bars) are dropped, and so are bare
  ``PosixPath(...)`` / ``<function ...>`` results;
- the page title is the notebook's first heading, and a footer says from which commit, when, on what
  machine and with which profile the page was generated.
"""
from __future__ import annotations

import ast
import base64
import copy
import datetime as _dt
import hashlib
import html
import json
import os
import platform
import re
import subprocess
from pathlib import Path

from .paths import atomic_write_bytes, repo_root

_IMG = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')
_STYLE = re.compile(r"<style[^>]*>.*?</style>", re.S)
CSS_NAME = "notebook.css"
MATHJAX_DIR = "mathjax"
MATHJAX_JS = "tex-svg-full.js"   # TeX input, SVG output, every TeX extension built in: one file, no fonts
INTERACTIVE_NOTE = "Interactive in JupyterLab: this control does not run on the static page."
_EXPLORE = re.compile(r"^\s*(?:widgets\.)?explore\(", re.M)
_BARE_RESULT = re.compile(r"^(?:PosixPath|WindowsPath|PurePosixPath)\(|^<function ")
_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

# The lab template without its CDN scripts (require.js, the widget manager, mermaid) and with the
# packaged MathJax 3 instead of MathJax 2 from a CDN. Same inline/display delimiters as nbconvert's.
_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  svg: {fontCache: 'global'},
  startup: {typeset: true}
};
</script>
<script src="{{ resources.mathjax_url }}" id="MathJax-script"></script>
{%- endblock html_head_js_mathjax -%}
"""


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


def mathjax_source() -> Path:
    """The packaged MathJax 3 file (from the ``django-static-mathjax`` wheel's plain files)."""
    import importlib.util

    spec = importlib.util.find_spec("mathjax")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "static" / "mathjax" / "es5" / MATHJAX_JS
        if path.exists():
            return path
    raise FileNotFoundError("MathJax is not installed: scripts/setup_env.sh installs django-static-mathjax "
                            "(pyproject.toml) which ships it")


def install_mathjax(out_dir: Path) -> Path:
    """Copy the packaged MathJax (and its licence) into ``out_dir/mathjax/``; unchanged bytes are not
    rewritten. Returns the script's path."""
    src = mathjax_source()
    dest = out_dir / MATHJAX_DIR
    for name, path in ((MATHJAX_JS, src), ("LICENSE", src.parent.parent / "LICENSE")):
        data = path.read_bytes()
        target = dest / name
        if not target.exists() or target.read_bytes() != data:
            dest.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
    return dest / MATHJAX_JS


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(profile: str) -> dict:
    """What the footer states: commit (with a mark when notebooks/ or attnlib/ had local changes),
    render date (UTC), machine and profile."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--", "notebooks", "attnlib"):
        commit += " + local changes to notebooks/ or attnlib/"
    return {"commit": commit or "unknown (not a git checkout)",
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({_cpu_model()}), "
                       f"Python {platform.python_version()}",
            "profile": profile}


def footer(info: dict, executed_at: str | None = None) -> str:
    ran = f"executed {html.escape(executed_at)} · " if executed_at else ""
    return (f'<footer class="attnlib-footer" style="font:13px sans-serif;color:#555;padding:10px 16px;'
            f'margin-top:24px;border-top:1px solid #ddd;background:#f7f7f7">Generated by <code>./run_all.sh</code>'
            f' · {ran}rendered {html.escape(info["date"])} · commit <code>{html.escape(info["commit"])}</code>'
            f' · machine: {html.escape(info["machine"])} · profile <b>{html.escape(info["profile"])}</b></footer>')


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _defaults(source: str) -> dict:
    """Name -> default value of the simple assignments in a parameters cell."""
    found = {}
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return found
    for node in body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    found[t.id] = _literal(ast.get_source_segment(source, node.value))
    return found


def _note_output(text_html: str, text: str) -> dict:
    import nbformat

    return nbformat.v4.new_output("display_data", data={"text/html": text_html, "text/plain": text})


def prepare(nb, stem: str):
    """A copy of executed notebook ``nb`` made ready for the static page (see the module docstring)."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)          # no widget state: no widget-manager script on the page
    nb.metadata["title"] = _title(nb, stem)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    passed = dict(nb.metadata.get("papermill", {}).get("parameters", {}) or {})
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "".join(cell.source)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            defaults = _defaults(source)
            changed = {k: v for k, v in passed.items() if k not in defaults or defaults[k] != v}
            if changed:
                shown = ", ".join(f"<code>{html.escape(k)} = {html.escape(repr(v), quote=False)}</code>"
                                  for k, v in changed.items())
                cell.outputs = [_note_output(f'<div class="attnlib-note" style="padding:4px 8px;border-left:3px '
                                             f'solid #888;background:#f5f5f5">This page was executed with {shown} '
                                             f'(passed by <code>./run_all.sh</code>; the cell shows the defaults).'
                                             f'</div>', f"executed with {changed}")]
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_MIME in data:
                continue                      # a widget (a progress bar): nothing to show without a kernel
            plain = data.get("text/plain", "")
            plain = "".join(plain) if isinstance(plain, list) else plain
            if out.get("output_type") == "execute_result" and set(data) <= {"text/plain"} and \
                    _BARE_RESULT.match(plain.strip()):
                continue                      # a stray PosixPath(...) / <function ...> result
            outputs.append(out)
        if _EXPLORE.search(source):
            outputs.append(_note_output(f'<div class="attnlib-interactive" style="padding:6px 10px;border:1px '
                                        f'dashed #4a7;background:#f3fbf5;border-radius:4px">{INTERACTIVE_NOTE} '
                                        f'Open <code>notebooks/{html.escape(stem)}.ipynb</code> in JupyterLab and '
                                        f'run it to use the control.</div>', INTERACTIVE_NOTE))
        cell.outputs = outputs
    return nb


def _nav(stem: str, profile: str) -> str:
    return (f'<div style="font:14px sans-serif;padding:8px 16px;background:#f3f3f3;border-bottom:1px solid #ddd">'
            f'<a href="index.html">&larr; all notebooks and the scorecard</a> &nbsp;·&nbsp; '
            f'<code>notebooks/{html.escape(stem)}.ipynb</code>, executed by <code>./run_all.sh</code> '
            f'(profile {html.escape(profile)})</div>')


def exporter():
    """nbconvert's lab HTML exporter with the offline template (`_TEMPLATE`)."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", template_file="attnlib_site.html.j2",
                        extra_loaders=[jinja2.DictLoader({"attnlib_site.html.j2": _TEMPLATE})],
                        mathjax_url=f"{MATHJAX_DIR}/{MATHJAX_JS}")


def render_notebook(executed: Path, out: Path, profile: str, figures: dict[str, str], rel: str,
                    shared: dict | None = None, info: dict | None = None) -> None:
    """One executed notebook to one HTML page (nbconvert's lab template, made offline)."""
    import nbformat

    stem = executed.stem.split(".")[0]
    nb = nbformat.read(executed, as_version=4)
    executed_at = (nb.metadata.get("papermill", {}).get("end_time") or "")[:16].replace("T", " ")
    page, _ = exporter().from_notebook_node(prepare(nb, stem))
    page = _link_figures(page, figures, rel)
    page = _share_css(page, out.parent, {} if shared is None else shared)
    page = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(stem, profile), page, count=1)
    info = info or provenance(profile)
    page = page.replace("</main>", "</main>\n" + footer(info, executed_at + " UTC" if executed_at else None), 1)
    atomic_write_bytes(out, page.encode())


def _markdown_table(md: str) -> str:
    """Markdown (tables, and the scorecard's <details> blocks kept as HTML) to HTML."""
    import mistune

    return mistune.create_markdown(plugins=["table"], escape=False)(md)


def _status_counts(result: dict) -> str:
    """The headline claims' statuses in one fixed order, then how many other rows the notebook adds."""
    from .claims import STATUSES

    heads = [c for c in result.get("claims", []) if c.get("role", "headline") == "headline"]
    counts = {s: sum(c.get("status") == s for c in heads) for s in STATUSES}
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    others = len(result.get("claims", [])) - len(heads)
    if not heads:
        return ""
    return f"headline claims: {text}" + (f" · {others} alternative / context rows" if others else "")


def _verdicts_html(publish: Path, pages: dict[str, Path], profile: str) -> str:
    """One paragraph per paper, generated by `attnlib.scorecard.verdicts` from the recorded claims."""
    from .scorecard import PAPERS, collect, verdicts

    if not (publish / "results").is_dir():
        return ""
    found = verdicts(collect(publish / "results", profile=profile))
    out = ["<h2 id='verdicts'>What the workbook found</h2>"]
    for paper, text in found.items():
        stem = PAPERS[paper][0]
        name = f"<a href='{pages[stem].name}'>{html.escape(paper)}</a>" if stem in pages else html.escape(paper)
        out.append(f"<p class='verdict'><b>{name}</b>: {html.escape(text)}</p>")
    return "\n".join(out)


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1200px;margin:24px auto;padding:0 16px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:12px 0}th,td{border:1px solid #ddd;padding:3px 6px;
vertical-align:top}th{background:#f3f3f3}.cards{display:grid;grid-template-columns:repeat(auto-fill,
minmax(260px,1fr));gap:16px}.card{border:1px solid #ddd;border-radius:6px;padding:10px}.card img{width:100%;
height:150px;object-fit:contain;background:#fafafa}.card h3{font-size:15px;margin:6px 0}.muted{color:#666;
font-size:13px}code{background:#f3f3f3;padding:0 3px}
"""


def render_index(out_dir: Path, profile: str, pages: dict[str, Path], executed: dict[str, Path]) -> Path:
    """``index.html``: a card per notebook, then the scorecard figure and table (papers linked to their pages).
    ``executed`` may lack a page's notebook (a page kept from an earlier run): its card is kept."""
    from .runner import notebooks_dir

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
    parts.append(_verdicts_html(publish, pages, profile))
    parts.append("<h2>Notebooks</h2><div class='cards'>")
    figures = _figure_index(root / "figures")
    rel = os.path.relpath(root / "figures", out_dir)
    for stem, page in pages.items():
        # a page kept from an earlier run (its executed copy is not on this machine, e.g. after
        # `./run_all.sh 03_flat` on a fresh clone) keeps its card: title from the source notebook,
        # the thumbnail already in thumbs/
        done = executed.get(stem)
        source = done if done is not None and done.exists() else notebooks_dir() / f"{stem}.ipynb"
        nb = json.loads(source.read_text()) if source.exists() else {"cells": []}
        title = _title(nb, stem)
        png, _ = _thumbnail(nb, figures) if source == done else (None, None)
        src = f"thumbs/{stem}.png"
        if png is not None:
            atomic_write_bytes(out_dir / src, _shrink(png))
        thumb = ""
        if (out_dir / src).exists():
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
    parts.append(footer(provenance(profile)))
    parts.append("</body></html>\n")
    index = out_dir / "index.html"
    atomic_write_bytes(index, "\n".join(parts).encode())
    return index


def render(profile: str, stems: list[str] | None = None) -> Path:
    """Render the executed notebooks of ``profile`` (only ``stems`` if given) and the index, which lists
    every page present in the site folder, including pages kept from earlier runs whose executed copies
    are not on this machine; returns the index path."""
    from .runner import executed_path, notebooks_dir

    out_dir = site_dir(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    root = repo_root() if profile == "full" else repo_root() / "executed" / profile
    figures = _figure_index(root / "figures")
    rel = os.path.relpath(root / "figures", out_dir)
    install_mathjax(out_dir)
    info = provenance(profile)
    pages, executed, shared = {}, {}, {}
    for nb in sorted(notebooks_dir().glob("*.ipynb")):
        done = executed_path(nb, profile)
        page = out_dir / f"{nb.stem}.html"
        if done.exists() and (stems is None or nb.stem in stems):
            render_notebook(done, page, profile, figures, rel, shared, info)
        if page.exists():               # rendered now, or kept from an earlier run
            pages[nb.stem] = page
            if done.exists():
                executed[nb.stem] = done
    return render_index(out_dir, profile, pages, executed)
