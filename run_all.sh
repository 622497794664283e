#!/usr/bin/env bash
# Reproduce everything: run every notebook headless (papermill), regenerate figures/, results/ and
# the scorecard. First use creates .venv and installs what is needed (scripts/setup_env.sh).
#   ./run_all.sh                 full profile (publishes figures/ and results/)
#   ./run_all.sh --quick         every notebook in the quick profile: a smoke run (outputs under executed/quick/)
#   ./run_all.sh 03_flat         one notebook (then the scorecard)
#   ./run_all.sh -p key value    parameter passed to every notebook
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m attnlib.runner "$@"
