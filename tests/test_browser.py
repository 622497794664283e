"""The workbook in a real browser: JupyterLab in headless Chromium, driven over WebDriver.

What a student does, checked end to end: JupyterLab starts (bound to 127.0.0.1, a free port, a random
token) in a *copy* of the workbook; the primer notebook opens with its kernel picked automatically, is
not marked modified, shows no news pop-up; "run all" in the quick profile shows every saved figure
inline and no stray ``PosixPath``/``<function ...>`` line; moving the widget's slider redraws its
figure and its readout shows the actual sequence length; the interactive run wrote to the scratch
folder ``executed/interactive/`` and the committed figures/, results/ and notebooks/ are untouched (in
the copy and in this checkout).

The rendered site, offline: ``run_all.sh`` renders a site in a copy of the workbook (the primer and the
scorecard, full profile: seconds), and Chromium, with every host but 127.0.0.1 unresolvable, opens each
page: no request leaves 127.0.0.1, the math is typeset by the packaged MathJax (no raw TeX left), every
image loads; screenshots of the index and the scorecard page are saved. Committed ``site/`` pages made
by the offline renderer are checked the same way (pages from an older renderer are named in a warning
until the next full ``./run_all.sh`` re-renders them).

The browser is Debian's ``chromium`` with its matching ``chromium-driver``, installed on first use by
``scripts/setup_browser.sh`` (apt-get, needs root as in CI). The WebDriver protocol is spoken directly
(a few HTTP calls, below), so no extra Python package is needed. Screenshots land in the gitignored
``executed/screenshots/``. The test never skips silently: if the browser cannot be installed it fails;
set ``ATTNLIB_BROWSER_TEST=skip`` to skip it explicitly (reported as skipped, with that reason).
"""
from __future__ import annotations

import base64
import hashlib
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from attnlib.paths import repo_root
from attnlib.scorecard import MAX_FIGURE_PX

NOTEBOOK = "00_primer"
WAIT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".ipynb_checkpoints" not in p.parts}\
        if folder.is_dir() else {}


def _committed(root: Path) -> dict[str, dict[str, str]]:
    return {sub: _digest(root / sub) for sub in ("figures", "results", "notebooks")}


def _ensure_browser() -> tuple[str, str]:
    if os.environ.get("ATTNLIB_BROWSER_TEST") == "skip":
        pytest.skip("ATTNLIB_BROWSER_TEST=skip: the real-browser test was switched off explicitly")
    setup = subprocess.run(["bash", str(repo_root() / "scripts" / "setup_browser.sh")], capture_output=True,
                           text=True, timeout=900)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if setup.returncode != 0 or not chromium or not driver:
        pytest.fail("could not install Debian's chromium + chromium-driver (scripts/setup_browser.sh):\n"
                    f"{setup.stderr[-2000:]}\n(set ATTNLIB_BROWSER_TEST=skip to skip this test explicitly)")
    return chromium, driver


class WebDriver:
    """The few W3C WebDriver calls the test needs, over plain HTTP."""

    ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

    def __init__(self, port: int, chromium: str, extra_args: tuple[str, ...] = ()):
        self.base = f"http://127.0.0.1:{port}"
        caps = {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions", *extra_args]}}
        value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{value['sessionId']}"

    def _call(self, method, path, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return json.loads(resp.read() or b"{}").get("value")
        except urllib.error.HTTPError as err:
            raise AssertionError(f"WebDriver {method} {path}: {err.read()[:500]!r}") from None

    def get(self, url):
        self._call("POST", f"{self.session}/url", {"url": url})

    def js(self, script, *args):
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self._call("POST", f"{self.session}/element", {"using": "css selector", "value": css})[self.ELEMENT]

    def click(self, element):
        self._call("POST", f"{self.session}/element/{element}/click", {})

    def keys(self, element, text):
        self._call("POST", f"{self.session}/element/{element}/value", {"text": text})

    def resize(self, width: int, height: int):
        self._call("POST", f"{self.session}/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", f"{self.session}/screenshot")))

    def quit(self):
        try:
            self._call("DELETE", self.session)
        except Exception:  # the browser may already be gone; the driver process is killed anyway
            pass

    def wait(self, script, what, timeout=WAIT_S, *args):
        t0, value = time.time(), None
        while time.time() - t0 < timeout:
            value = self.js(script, *args)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")


def _start(cmd, env, log: Path):
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc):
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait_http(url, what, proc, log: Path, timeout=WAIT_S):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return time.time() - t0
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    raise AssertionError(f"{what} did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def workbook_copy(tmp_path):
    """A copy of the workbook's notebooks and committed outputs; the primer's parameters set to quick."""
    copy = tmp_path / "workbook"
    for sub in ("notebooks", "figures", "results", "data"):
        if (repo_root() / sub).is_dir():
            shutil.copytree(repo_root() / sub, copy / sub)
    nb_path = copy / "notebooks" / f"{NOTEBOOK}.ipynb"
    nb = json.loads(nb_path.read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = [line.replace('profile = "full"', 'profile = "quick"') for line in params["source"]]
    assert any('profile = "quick"' in line for line in params["source"])
    nb_path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return copy


# JS run in the page: the state of the notebook panel in view.
_STATE = """
const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
const prompts = cells.map(c => (c.querySelector('.jp-InputPrompt') || {}).textContent || '');
const tab = document.querySelector('.lm-TabBar-tab.jp-mod-current');
const kernel = document.querySelector('.jp-Toolbar-kernelName, .jp-KernelName');
const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
return {n: cells.length, prompts: prompts,
        dirty: tab ? tab.classList.contains('jp-mod-dirty') : null,
        kernel: kernel ? kernel.textContent.trim() : null,
        busy: status ? (status.getAttribute('data-status') || '') : '',
        imgs: [...document.querySelectorAll('.jp-OutputArea-output img')].map(i => i.naturalWidth),
        text: [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText).join('\\n'),
        dialogs: [...document.querySelectorAll('.jp-Dialog, .jp-toast-message, .Toastify__toast')]
                   .map(d => d.innerText)};
"""


@pytest.mark.notebook
def test_primer_in_jupyterlab_in_a_real_browser(workbook_copy, tmp_path):
    chromium, driver_bin = _ensure_browser()
    repo = repo_root()
    shots = repo / "executed" / "screenshots"
    before_repo, before_copy = _committed(repo), _committed(workbook_copy)

    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNLIB_")}
    home = tmp_path / "home"
    env.update(ATTNLIB_ROOT=str(workbook_copy), ATTNLIB_CACHE=str(repo / ".cache"),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    lab_port, driver_port, token = _free_port(), _free_port(), os.urandom(12).hex()
    lab_cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={lab_port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workbook_copy}",
               "--ServerApp.port_retries=0"]
    if os.geteuid() == 0:
        lab_cmd.append("--allow-root")
    lab_log, driver_log = tmp_path / "jupyterlab.log", tmp_path / "chromedriver.log"
    lab = driver = browser = None
    try:
        t0 = time.time()
        lab = _start(lab_cmd, env, lab_log)
        driver = _start([driver_bin, f"--port={driver_port}"], env, driver_log)
        _wait_http(f"http://127.0.0.1:{lab_port}/api/status?token={token}", "JupyterLab", lab, lab_log)
        _wait_http(f"http://127.0.0.1:{driver_port}/status", "chromedriver", driver, driver_log)
        browser = WebDriver(driver_port, chromium)
        browser.get(f"http://127.0.0.1:{lab_port}/lab/tree/notebooks/{NOTEBOOK}.ipynb?token={token}")

        # the kernel is picked automatically and becomes idle; the notebook is not marked modified
        browser.wait("const s = (function(){" + _STATE + "})(); return s.n > 0 && s.kernel && "
                     "!/No Kernel|Starting|Connecting/i.test(s.kernel) && s.busy === 'idle' ? s : null;",
                     "the notebook to open with an idle kernel")
        time.sleep(2)  # let JupyterLab write the kernel's metadata into the model (what marks it dirty)
        state = browser.js(_STATE)
        opened_s = time.time() - t0
        browser.screenshot(shots / f"{NOTEBOOK}-opened.png")
        assert state["kernel"].startswith("attnlib"), state["kernel"]
        assert state["dirty"] is False, "the notebook opened as modified: run scripts/normalize_notebooks.py"
        assert not any("news" in d.lower() for d in state["dialogs"]), state["dialogs"]

        # run all cells (Run menu shortcut: the app's command), wait until every prompt has a number
        t1 = time.time()
        _run_all(browser)
        state = browser.wait("const s = (function(){" + _STATE + "})(); return s.prompts.length && "
                             "s.prompts.every(p => /\\[\\d+\\]/.test(p)) && s.busy === 'idle' ? s : null;",
                             "every cell to finish")
        run_s = time.time() - t1
        browser.screenshot(shots / f"{NOTEBOOK}-ran.png")
        saved = json.dumps(json.loads((workbook_copy / "notebooks" / f"{NOTEBOOK}.ipynb").read_text()))
        n_savefig = saved.count("savefig(")
        assert "Traceback" not in state["text"] and "Error" not in state["text"], state["text"][-2000:]
        assert len([w for w in state["imgs"] if w > 100]) >= n_savefig >= 1, (state["imgs"], n_savefig)
        assert "PosixPath" not in state["text"] and "<function" not in state["text"]

        # the widget: move its slider one step, its figure is redrawn
        before_img = browser.js("const w = document.querySelector('.widget-interact'); "
                                "const i = w && w.querySelector('img'); return i ? i.src : null;")
        assert before_img, "the explore() widget drew no figure"
        handle = browser.find(".widget-interact .noUi-handle, .widget-interact .slider-container [role=slider]")
        browser.click(handle)
        browser.keys(handle, "\ue014\ue014")  # two ArrowRight presses
        browser.wait("const w = document.querySelector('.widget-interact'); const i = w && w.querySelector('img');"
                     " return i && i.src !== arguments[0] && i.naturalWidth > 100;", "the widget to redraw",
                     60, before_img)
        readout = browser.js("const r = document.querySelector('.widget-interact .widget-readout');"
                             " return r ? r.textContent.trim() : null;")
        assert readout == "8192", readout       # the slider shows the sequence length itself (2048, two steps up)
        browser.js("document.querySelector('.widget-interact').scrollIntoView({block: 'start'});")
        time.sleep(0.5)
        browser.screenshot(shots / f"{NOTEBOOK}-widget-moved.png")
    finally:
        if browser:
            browser.quit()
        _stop(driver)
        _stop(lab)

    # the interactive run wrote to the scratch folder only; committed outputs untouched everywhere
    scratch = workbook_copy / "executed" / "interactive" / "figures"
    assert sorted(p.name for p in scratch.glob("primer_*.png")), "no figure in the scratch folder"
    after_copy = _committed(workbook_copy)
    after_copy["notebooks"].pop(f"{NOTEBOOK}.ipynb", None)   # autosave may rewrite the opened copy
    before_copy["notebooks"].pop(f"{NOTEBOOK}.ipynb", None)
    assert after_copy == before_copy
    assert _committed(repo) == before_repo
    (shots / "timings.json").write_text(json.dumps({"jupyterlab_open_s": round(opened_s, 1),
                                                    "run_all_quick_s": round(run_s, 1)}) + "\n")


def _run_all(browser: WebDriver) -> None:
    """Run ▸ Run All Cells, through the menus a student would use."""
    menu = browser.wait("return [...document.querySelectorAll('.lm-MenuBar-item')]"
                        ".find(e => e.textContent.trim() === 'Run') || null;", "the Run menu")
    browser.click(menu[WebDriver.ELEMENT])
    item = browser.wait("return [...document.querySelectorAll('.lm-Menu-item')]"
                        ".find(e => /^Run All Cells/.test(e.textContent.trim())) || null;", "Run All Cells")
    browser.click(item[WebDriver.ELEMENT])


# --- the rendered site, offline ------------------------------------------------------------------

#: every host name but 127.0.0.1 fails to resolve: a page that needs the internet shows it
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
MATHJAX_MARK = "mathjax/tex-svg-full.js"

# JS run in a site page once MathJax has finished: what loaded, from where, and what is left untypeset.
_PAGE = r"""
const done = arguments[arguments.length - 1];
const ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
ready.then(() => {
  const origin = location.origin;
  const requested = performance.getEntriesByType('resource').map(e => e.name);
  const loads = [...document.querySelectorAll('script[src], img[src], link[rel=stylesheet][href], iframe[src]')]
    .map(e => e.src || e.href);
  const raw = [...document.querySelectorAll('.jp-RenderedMarkdown, .jp-RenderedHTMLCommon')].map(e => {
    const c = e.cloneNode(true);
    c.querySelectorAll('code, pre, mjx-container, script, style').forEach(x => x.remove());
    return c.textContent;
  }).join('\n');
  const leftover = raw.match(/\\(?:frac|times|sqrt|mathrm|top|cdot|approx|le|ge|to)\b|\$\$/g) || [];
  done({title: document.title,
        external: [...requested, ...loads].filter(u => !u.startsWith(origin) && !u.startsWith('data:')),
        math: document.querySelectorAll('mjx-container').length,
        mathjax: !!(window.MathJax && MathJax.version), leftover: leftover,
        imgs: [...document.querySelectorAll('img')].map(i => [i.getAttribute('src').slice(0, 80),
                                                              i.complete && i.naturalWidth > 0]),
        footer: (document.querySelector('.attnlib-footer') || {}).textContent || '',
        interactive: document.querySelectorAll('.attnlib-interactive').length,
        params: document.querySelectorAll('.celltag_parameters').length,
        injected: document.querySelectorAll('.celltag_injected-parameters').length,
        verdicts: document.querySelectorAll('p.verdict').length,
        scorecard_px: [...document.querySelectorAll('img')].filter(i => /scorecard\.png$/.test(i.src))
                        .map(i => i.naturalHeight),
        height: document.documentElement.scrollHeight});
}, err => done({error: String(err)}));
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _render_site_copy(tmp_path: Path) -> Path:
    """``run_all.sh 00_primer`` (primer + scorecard, full profile, site on) in a copy of the workbook."""
    copy = tmp_path / "workbook"
    for sub in ("notebooks", "figures", "results", "data", "docs"):
        if (repo_root() / sub).is_dir():
            shutil.copytree(repo_root() / sub, copy / sub)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTNLIB_")}
    env.update(ATTNLIB_ROOT=str(copy), ATTNLIB_CACHE=str(repo_root() / ".cache"))
    proc = subprocess.run([sys.executable, "-m", "attnlib.runner", "00_primer"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return copy / "site"


def _check_page(browser: WebDriver, url: str) -> dict:
    browser.get(url)
    state = browser._call("POST", f"{browser.session}/execute/async", {"script": _PAGE, "args": []})
    assert "error" not in state, (url, state)
    assert state["external"] == [], (url, state["external"])              # nothing requested off this machine
    assert not state["leftover"], (url, state["leftover"])                # no raw TeX left on the page
    assert state["mathjax"] or url.endswith("/index.html"), url            # notebook pages load MathJax
    assert all(ok for _, ok in state["imgs"]), (url, [src for src, ok in state["imgs"] if not ok])
    assert state["title"] and state["title"] != "Notebook", url
    assert "commit" in state["footer"] and "profile" in state["footer"] and "CPUs" in state["footer"], url
    return state


@pytest.mark.notebook
def test_site_works_offline_in_a_real_browser(tmp_path):
    chromium, driver_bin = _ensure_browser()
    site = _render_site_copy(tmp_path)
    shots = repo_root() / "executed" / "screenshots"
    served = tmp_path / "served"
    served.mkdir()
    (served / "copy").symlink_to(site.parent)
    (served / "repo").symlink_to(repo_root())
    pages = {f"copy/site/{p.name}": p for p in sorted(site.glob("*.html"))}
    committed = sorted((repo_root() / "site").glob("*.html"))
    current = [p for p in committed if p.name == "index.html" or MATHJAX_MARK in p.read_text()]
    old = sorted(set(committed) - set(current))
    if old:
        warnings.warn(f"site/ pages rendered before the offline renderer (re-run ./run_all.sh): "
                      f"{', '.join(p.name for p in old)}")
    if not old:
        pages.update({f"repo/site/{p.name}": p for p in current})
    server, driver_port = _serve(served), _free_port()
    driver_log = tmp_path / "chromedriver.log"
    driver = browser = None
    try:
        driver = _start([driver_bin, f"--port={driver_port}"], dict(os.environ), driver_log)
        _wait_http(f"http://127.0.0.1:{driver_port}/status", "chromedriver", driver, driver_log)
        browser = WebDriver(driver_port, chromium, (OFFLINE,))
        base = f"http://127.0.0.1:{server.server_address[1]}"
        states = {name: _check_page(browser, f"{base}/{name}") for name in pages}
        assert any(s["math"] > 0 for s in states.values())                 # the primer's formulas were typeset
        primer = states["copy/site/00_primer.html"]
        assert primer["math"] > 0 and primer["interactive"] == 1           # its slider is labelled
        assert primer["params"] == 1 and primer["injected"] == 0           # one parameters cell
        index = states["copy/site/index.html"]
        assert index["verdicts"] == 5                                      # one generated verdict per paper
        assert index["scorecard_px"] and max(index["scorecard_px"]) <= MAX_FIGURE_PX  # fits a screen
        prefix = "repo/site" if not old else "copy/site"
        for page, shot in (("index.html", "site-index"), ("99_scorecard.html", "site-scorecard")):
            browser.resize(1400, 1000)
            browser.get(f"{base}/{prefix}/{page}")
            browser._call("POST", f"{browser.session}/execute/async", {"script": _PAGE, "args": []})
            browser.screenshot(shots / f"{shot}.png")                      # the first screen a reader sees
            browser.resize(1400, min(max(states[f"{prefix}/{page}"]["height"], 1000), 8000))
            time.sleep(0.5)
            browser.screenshot(shots / f"{shot}-full.png")                 # the whole page (up to 8000 px)
    finally:
        if browser:
            browser.quit()
        _stop(driver)
        server.shutdown()
