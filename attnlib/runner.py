"""Run the workbook's notebooks headless with papermill (what ``run_all.sh`` calls).

    python -m attnlib.runner [--quick] [-p KEY VALUE]... [--no-site] [NOTEBOOK ...]

Each notebook runs in its own staging folder (``ATTNLIB_STAGE``): its figures and results are moved
into place only when the whole notebook succeeded, so a failure never leaves a partial figure or
result behind. On a terminal each notebook shows a progress bar over its cells. A failing notebook is
reported by name with the failing cell's error and the executed copy to open; the others still run.
The scorecard notebook (99_scorecard) always runs last.

Exit status: 0 every notebook ran; 1 at least one notebook failed (the others still ran and were
published); 2 bad arguments (unknown option, notebook, profile or parameter): nothing ran; 130
interrupted (Ctrl-C): one line says which notebook was stopped, its staging folder is removed and
nothing of it is published (notebooks that finished before it were).

Each notebook's wall time is printed as it finishes and recorded in ``executed/timings.<profile>.json``
(gitignored), so the times quoted in the README can be checked against a real run.

The full profile publishes into the repository (figures/, results/: the committed outputs) and renders
the executed notebooks to HTML in site/ (``attnlib.site``). Any other profile publishes into
``executed/<profile>/`` so a quick smoke run never overwrites them. Executed notebook copies go to
``executed/`` (gitignored).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from .paths import atomic_write_bytes, relative, repo_root
from .profiles import PROFILES

SCORECARD = "99_scorecard"
KERNEL = "attnlib"
CELL_TIMEOUT_S = 1800
#: After Ctrl-C the notebook machinery gets this long to unwind before the runner cleans up and exits itself.
INTERRUPT_GRACE_S = 5.0

EPILOG = """\
examples:
  ./run_all.sh                       every notebook, full profile: publishes figures/, results/,
                                     the README scorecard and the rendered site (site/index.html)
  ./run_all.sh --quick               every notebook in the small quick profile (a smoke run, not a
                                     result); outputs under executed/quick/
  ./run_all.sh 03_flat               one notebook (names, file names or unique prefixes), then the scorecard
  ./run_all.sh --quick 00_primer -p model bert-large
                                     a parameter of the notebooks that declare it (papermill -p)
  ./run_all.sh --list                the notebooks and the parameters each accepts

where things go:
  full profile     figures/*.png, results/*.json, results/scorecard.md, README scorecard, site/*.html
  other profiles   executed/<profile>/figures, executed/<profile>/results (committed files untouched)
  executed copies  executed/<notebook>.ipynb (full) or executed/<notebook>.<profile>.ipynb: open the
                   one a failure names to see the failing cell and its traceback

times: every notebook's time is printed as it finishes ([ok] NAME: N s) and written to
executed/timings.<profile>.json. Last measured on 2 cores (see README): full profile with warm caches
9m21s in all, --quick 2m44s; a first run also creates .venv and fills .cache/ (measured notebook by
notebook on a quiet machine: 52m11s for the notebooks, over the 25-minute target; see README).

exit status: 0 all notebooks ran; 1 a notebook failed (named on stderr, the others still ran);
2 bad arguments (nothing ran).
"""


class UsageError(Exception):
    """Bad command line: reported with exit status 2 before anything runs."""


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def find_notebooks(names: list[str]) -> list[Path]:
    """Notebook paths for ``names`` (stems, file names or unique prefixes); all but the scorecard if empty."""
    every = sorted(p for p in notebooks_dir().glob("*.ipynb") if p.stem != SCORECARD)
    if not names:
        return every
    chosen = []
    for name in names:
        stem = Path(name).stem
        hits = [p for p in every + [notebooks_dir() / f"{SCORECARD}.ipynb"] if p.stem == stem] or \
               [p for p in every if p.stem.startswith(stem) or stem in p.stem]
        if len(hits) != 1:
            known = ", ".join(p.stem for p in every)
            raise UsageError(f"notebook {name!r} matches {len(hits)} notebooks; known: {known}")
        chosen.append(hits[0])
    return chosen


def notebook_parameters(nb: Path) -> dict:
    """The parameters a notebook accepts: names assigned in its cell tagged ``parameters``, with the
    default's source text. Raises ValueError if the notebook has no such cell."""
    cells = json.loads(nb.read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            found = {}
            for node in ast.parse(source).body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AnnAssign) else []
                for t in targets:
                    if isinstance(t, ast.Name):
                        found[t.id] = ast.get_source_segment(source, node.value) if node.value else ""
            return found
    raise ValueError(f"{nb.name} has no code cell tagged 'parameters'")


def check_parameters(nbs: list[Path], params: dict) -> dict[str, dict]:
    """Per notebook, the parameters it declares among ``params`` (profile always). Raises UsageError
    naming every key no selected notebook declares, with the keys each one does declare."""
    declared = {nb.stem: notebook_parameters(nb) for nb in nbs}
    unknown = [k for k in params if k != "profile" and not any(k in d for d in declared.values())]
    if unknown:
        lines = "\n".join(f"  {stem}: {', '.join(d) or '(none)'}" for stem, d in declared.items())
        raise UsageError(f"unknown parameter(s) {', '.join(map(repr, unknown))}: no selected notebook "
                         f"declares them in its parameters cell. Known parameters:\n{lines}")
    return {nb.stem: {k: v for k, v in params.items() if k == "profile" or k in declared[nb.stem]}
            for nb in nbs}


def publish_root(profile: str) -> Path:
    root = repo_root()
    return root if profile == "full" else root / "executed" / profile


def executed_path(nb: Path, profile: str) -> Path:
    """Where the executed copy of ``nb`` goes (gitignored)."""
    return repo_root() / "executed" / (nb.name if profile == "full" else f"{nb.stem}.{profile}.ipynb")


def _move_outputs(stage: Path, dest_root: Path) -> list[str]:
    moved = []
    for sub in ("figures", "results"):
        src = stage / sub
        if not src.is_dir():
            continue
        (dest_root / sub).mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            os.replace(f, dest_root / sub / f.name)
            moved.append(f"{sub}/{f.name}")
    return moved


class _QuietParameterInference:
    """Drop papermill's own parameter-inference warnings ("Unable to parse line ..." for a comment it
    cannot read, "Passed unknown parameter"): `check_parameters` has already validated every key."""

    NOISE = ("Unable to parse line", "Passed unknown parameter")

    def filter(self, record) -> bool:
        return not str(record.getMessage()).startswith(self.NOISE)


def _quiet_papermill() -> None:
    import logging

    for name in ("papermill", "papermill.translators", "papermill.execute"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _QuietParameterInference) for f in log.filters):
            log.addFilter(_QuietParameterInference())


def _kernel_manager_class(stderr_log: Path | None = None):
    """Kernels talk over IPC sockets (not TCP): no "running over TCP without encryption" warning.
    With ``stderr_log``, the kernel process's own stderr (its logger: what it says while being shut
    down after Ctrl-C, or as it dies) goes to that file instead of the terminal; cell output is not
    affected (the kernel sends it to the notebook)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _default_transport(self):
            return "ipc"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if stderr_log is not None:
                stderr_log.parent.mkdir(parents=True, exist_ok=True)
                with open(stderr_log, "ab") as log:
                    kw["stderr"] = log   # the child keeps its own copy of the descriptor
                    return await super()._async_launch_kernel(kernel_cmd, **kw)
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return IPCKernelManager


def kernel_log(out_nb: Path) -> Path:
    """Where a notebook's kernel process writes its own stderr (beside the executed copy)."""
    return out_nb.with_suffix(".kernel.log")


def stage_dir(stem: str) -> Path:
    """The staging folder of notebook ``stem`` in this process."""
    return repo_root() / ".cache" / "stage" / f"{stem}-{os.getpid()}"


def run_one(nb: Path, parameters: dict, profile: str) -> tuple[bool, str]:
    """Execute one notebook with staging; returns (ok, message)."""
    import papermill as pm

    _quiet_papermill()
    root = repo_root()
    dest = publish_root(profile)
    stage = stage_dir(nb.stem)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    out_nb = executed_path(nb, profile)
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    os.environ.update(ATTNLIB_STAGE=str(stage), ATTNLIB_PUBLISH=str(dest / "results"))
    t0 = time.time()
    opened = f"; open {relative(out_nb)} to see the failing cell"
    klog = kernel_log(out_nb)
    klog.unlink(missing_ok=True)
    try:
        pm.execute_notebook(str(nb), str(out_nb), parameters=parameters, kernel_name=KERNEL,
                            cwd=str(nb.parent), execution_timeout=CELL_TIMEOUT_S, progress_bar=sys.stderr.isatty(),
                            kernel_manager_class=_kernel_manager_class(klog))
    except pm.PapermillExecutionError as err:
        shutil.rmtree(stage, ignore_errors=True)
        return False, f"cell {err.exec_count}: {err.ename}: {err.evalue}{opened}"
    except Exception as err:  # kernel died, timeout, bad notebook
        shutil.rmtree(stage, ignore_errors=True)
        said = f"; the kernel's own log: {relative(klog)}" if klog.exists() and klog.stat().st_size else ""
        return False, f"{type(err).__name__}: {err}{opened if out_nb.exists() else ''}{said}"
    except BaseException:     # Ctrl-C (KeyboardInterrupt) or exit: nothing staged may survive
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        os.environ.pop("ATTNLIB_STAGE", None)
    moved = _move_outputs(stage, dest)
    shutil.rmtree(stage, ignore_errors=True)
    if klog.exists() and not klog.stat().st_size:
        klog.unlink()
    return True, f"{time.time() - t0:.0f} s, {len(moved)} outputs"


def mixed_profiles(results_folder: Path, profile: str) -> list[str]:
    """Results files in ``results_folder`` recorded under another profile than ``profile``."""
    odd = []
    for f in sorted(Path(results_folder).glob("*.json")):
        try:
            recorded = json.loads(f.read_text()).get("profile")
        except (ValueError, AttributeError):
            continue
        if recorded is not None and recorded != profile:
            odd.append(f"{f.name} (profile={recorded})")
    return odd


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"
VERDICTS_START, VERDICTS_END = "<!-- verdicts:start -->", "<!-- verdicts:end -->"


def _replace_between(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        return text
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{rest.split(end, 1)[1]}"


def update_readme(results_folder: Path) -> None:
    """Rewrite the README's generated parts from ``results_folder`` (full profile only): the verdict per
    paper near the top and the headline scorecard table, each between its markers."""
    from . import scorecard

    readme = repo_root() / "README.md"
    text = readme.read_text() if readme.exists() else ""
    rows = scorecard.collect(results_folder, profile="full")
    new = _replace_between(text, VERDICTS_START, VERDICTS_END, scorecard.verdicts_markdown(rows))
    new = _replace_between(new, README_START, README_END, scorecard.headline_markdown(rows) +
                           "\nAlternative and context rows, and the why of every headline that is not reproduced: "
                           "[results/scorecard.md](results/scorecard.md).")
    if new != text:
        atomic_write_bytes(readme, new.encode())


class Interrupted(Exception):
    """Ctrl-C while a notebook ran (in this process or as a KeyboardInterrupt in its kernel)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: status 2 with the usage line, like ours
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def parse_args(argv):
    summary = __doc__.split("\n\n")[0].strip().replace("``", "")   # no reST markup in --help
    ap = _Parser(prog="run_all.sh", description=summary + " Rebuilds figures, results, the scorecard and the "
                 "rendered site.", epilog=EPILOG,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebook names (default: all)")
    ap.add_argument("--quick", action="store_true", help="profile=quick: small sizes, a smoke run that checks the code, not a result "
                    "(outputs under executed/quick/)")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="a parameter, passed to the notebooks whose parameters cell declares KEY")
    site = ap.add_mutually_exclusive_group()
    site.add_argument("--no-site", action="store_true", help="do not render the HTML site (full profile)")
    site.add_argument("--site", action="store_true",
                      help="render the HTML site for a non-full profile too (into executed/<profile>/site)")
    ap.add_argument("--list", action="store_true", help="list the notebooks and their parameters, run nothing")
    args = ap.parse_args(argv)
    params = {}
    for key, value in args.p:
        params[key] = _parse_value(value)
    if args.quick:
        params["profile"] = "quick"
    params.setdefault("profile", "full")
    return args, params


def _parse_value(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(value, value)


def _plan(args, params):
    profile = params["profile"]
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; allowed profiles: {', '.join(PROFILES)}")
    nbs = find_notebooks(args.notebooks)
    if not any(nb.stem == SCORECARD for nb in nbs):
        nbs.append(notebooks_dir() / f"{SCORECARD}.ipynb")
    nbs = [nb for nb in nbs if nb.stem != SCORECARD] + [notebooks_dir() / f"{SCORECARD}.ipynb"]
    return profile, nbs, check_parameters(nbs, params)


def _record_timings(profile: str, timings: dict[str, float], total: float) -> None:
    """Each notebook's wall time of this run, merged into ``executed/timings.<profile>.json``."""
    path = repo_root() / "executed" / f"timings.{profile}.json"
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        known = {}
    known.setdefault("notebooks_s", {}).update(timings)
    known.update(last_run_s=round(total, 1), last_run_notebooks=list(timings),
                 last_run_at=time.strftime("%Y-%m-%d %H:%M:%S"), cpus=os.cpu_count())
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(known, indent=1, sort_keys=True) + "\n").encode())


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # outside a notebook run (scorecard printing, site rendering)
        print("\ninterrupted (Ctrl-C): stopped after the notebooks ran; every published file is complete "
              "(each is written atomically)", file=sys.stderr, flush=True)
        return 130


def _main(argv=None) -> int:
    args, params = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.list:
            for nb in find_notebooks([]) + [notebooks_dir() / f"{SCORECARD}.ipynb"]:
                declared = notebook_parameters(nb)
                print(f"{nb.stem:18s} " + ", ".join(f"{k}={v}" for k, v in declared.items()))
            return 0
        profile, nbs, per_nb = _plan(args, params)
    except (UsageError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.environ.update(ATTNLIB_HEADLESS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                      TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    failed, ran, t_all = [], [], time.time()
    timings: dict[str, float] = {}
    current = None
    said = threading.Lock()                    # the interrupted line is printed once, by whoever comes first

    def interrupted_line() -> None:
        if said.acquire(blocking=False):
            done = ", ".join(s for s, _ in ran) or "none"
            print(f"\ninterrupted (Ctrl-C) while {current} ran: nothing of it was published and its staging folder "
                  f"was removed; notebooks published before it: {done}", file=sys.stderr, flush=True)

    def force_exit() -> None:                  # the unwinding hung (a kernel or the async client did not stop)
        if current is not None:
            shutil.rmtree(stage_dir(current), ignore_errors=True)
        interrupted_line()
        os._exit(130)

    def on_sigint(signum, frame):
        timer = threading.Timer(INTERRUPT_GRACE_S, force_exit)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        for nb in nbs:
            current = nb.stem
            print(f"[run] {nb.stem} (profile={profile}) ...", flush=True)
            t0 = time.time()
            ok, msg = run_one(nb, per_nb[nb.stem], profile)
            if not ok and "KeyboardInterrupt" in msg:
                raise Interrupted(msg)
            timings[nb.stem] = round(time.time() - t0, 1)
            print(f"[{'ok' if ok else 'FAILED'}] {nb.stem}: {msg}", flush=True)
            (ran if ok else failed).append((nb.stem, msg))
    except (KeyboardInterrupt, Interrupted):
        interrupted_line()
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    _record_timings(profile, timings, time.time() - t_all)
    dest = publish_root(profile)
    odd = mixed_profiles(dest / "results", profile)
    if odd:
        print(f"WARNING: {relative(dest / 'results')} mixes profiles: {', '.join(odd)} (not {profile}); "
              "re-run those notebooks with this profile", file=sys.stderr)
    card = dest / "results" / "scorecard.md"
    if card.exists():
        print("\n" + card.read_text())
        if profile == "full":
            update_readme(dest / "results")
    if (profile == "full" and not args.no_site) or args.site:
        from . import site

        index = site.render(profile, [s for s, _ in ran])
        print(f"[site] {relative(index)} (open it in a browser)")
    minutes, seconds = divmod(int(time.time() - t_all), 60)
    if failed:
        print(f"{len(failed)} notebook(s) failed (profile={profile}, {minutes}m{seconds:02d}s):", file=sys.stderr)
        for name, msg in failed:
            print(f"  - {name}: {msg}", file=sys.stderr)
        return 1
    print(f"all {len(nbs)} notebooks ran (profile={profile}, {minutes}m{seconds:02d}s); "
          f"outputs in {relative(dest / 'figures')}/ and {relative(dest / 'results')}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
