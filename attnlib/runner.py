"""Run the workbook's notebooks headless with papermill (what ``run_all.sh`` calls).

    python -m attnlib.runner [--quick] [-p KEY VALUE]... [NOTEBOOK ...]

Each notebook runs in its own staging folder (``ATTNLIB_STAGE``): its figures and results are moved
into place only when the whole notebook succeeded, so a failure never leaves a partial figure or
result behind. A failing notebook is reported by name with the failing cell's error and the others
still run. The scorecard notebook (99_scorecard) always runs last. Exit status 1 if any notebook
failed, 2 for bad arguments.

The full profile publishes into the repository (figures/, results/: the committed outputs). Any
other profile publishes into ``executed/<profile>/`` so a quick smoke run never overwrites them.
Executed notebook copies go to ``executed/`` (gitignored).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from .paths import atomic_write_bytes, repo_root
from .profiles import PROFILES

SCORECARD = "99_scorecard"
KERNEL = "attnlib"
CELL_TIMEOUT_S = 1800


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
            raise SystemExit(f"error: notebook {name!r} matches {len(hits)} notebooks; known: {known}")
        chosen.append(hits[0])
    return chosen


def publish_root(profile: str) -> Path:
    root = repo_root()
    return root if profile == "full" else root / "executed" / profile


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


def run_one(nb: Path, parameters: dict, profile: str) -> tuple[bool, str]:
    """Execute one notebook with staging; returns (ok, message)."""
    import papermill as pm

    root = repo_root()
    dest = publish_root(profile)
    stage = root / ".cache" / "stage" / f"{nb.stem}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    out_nb = root / "executed" / (nb.name if profile == "full" else f"{nb.stem}.{profile}.ipynb")
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    os.environ.update(ATTNLIB_STAGE=str(stage), ATTNLIB_PUBLISH=str(dest / "results"))
    t0 = time.time()
    try:
        pm.execute_notebook(str(nb), str(out_nb), parameters=parameters, kernel_name=KERNEL,
                            cwd=str(nb.parent), execution_timeout=CELL_TIMEOUT_S, progress_bar=False)
    except pm.PapermillExecutionError as err:
        shutil.rmtree(stage, ignore_errors=True)
        return False, f"cell {err.exec_count}: {err.ename}: {err.evalue}"
    except Exception as err:  # kernel died, timeout, bad notebook
        shutil.rmtree(stage, ignore_errors=True)
        return False, f"{type(err).__name__}: {err}"
    finally:
        os.environ.pop("ATTNLIB_STAGE", None)
    moved = _move_outputs(stage, dest)
    shutil.rmtree(stage, ignore_errors=True)
    return True, f"{time.time() - t0:.0f} s, {len(moved)} outputs"


README_START, README_END = "<!-- scorecard:start -->", "<!-- scorecard:end -->"


def update_readme(table: str) -> None:
    """Replace the scorecard table between the README's markers (full profile only)."""
    readme = repo_root() / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if README_START not in text or README_END not in text:
        return
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    new = f"{head}{README_START}\n{table.strip()}\n{README_END}{tail}"
    if new != text:
        atomic_write_bytes(readme, new.encode())


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebook names (default: all)")
    ap.add_argument("--quick", action="store_true", help="profile=quick: every notebook in seconds")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="parameter passed to every notebook (papermill -p)")
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


def main(argv=None) -> int:
    args, params = parse_args(sys.argv[1:] if argv is None else argv)
    profile = params["profile"]
    if profile not in PROFILES:
        print(f"error: unknown profile {profile!r}; allowed profiles: {', '.join(PROFILES)}", file=sys.stderr)
        return 2
    os.environ.update(ATTNLIB_HEADLESS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                      TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    nbs = find_notebooks(args.notebooks)
    if not any(nb.stem == SCORECARD for nb in nbs):
        nbs.append(notebooks_dir() / f"{SCORECARD}.ipynb")
    failed = []
    for nb in nbs:
        print(f"[run] {nb.stem} (profile={profile}) ...", flush=True)
        ok, msg = run_one(nb, params, profile)
        print(f"[{'ok' if ok else 'FAILED'}] {nb.stem}: {msg}", flush=True)
        if not ok:
            failed.append((nb.stem, msg))
    card = publish_root(profile) / "results" / "scorecard.md"
    if card.exists():
        print("\n" + card.read_text())
        if profile == "full":
            update_readme(card.read_text())
    if failed:
        print(f"{len(failed)} notebook(s) failed:", file=sys.stderr)
        for name, msg in failed:
            print(f"  - {name}: {msg}", file=sys.stderr)
        return 1
    print(f"all {len(nbs)} notebooks ran (profile={profile})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
