#!/usr/bin/env bash
# Run the test suite (unit tests + every notebook in the quick profile). Installs on first use.
#   ./run_tests.sh               everything
#   ./run_tests.sh -k flat       extra arguments go to pytest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false ATTNLIB_HEADLESS=1
exec "$root/.venv/bin/python" -m pytest "$@"
