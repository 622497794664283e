#!/usr/bin/env bash
# Install what the real-browser test (tests/test_browser.py) needs: Debian's chromium and its
# matching chromium-driver, from the distribution's own archive (no browser downloaded from elsewhere).
# Idempotent: does nothing when both are on PATH. Needs root (CI runs as root) or passwordless sudo.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
sudo=""
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo -n"
    else
        echo "[setup-browser] need root to apt-get install chromium chromium-driver" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null; then
    echo "[setup-browser] no apt-get: install chromium and chromedriver with your package manager" >&2
    exit 1
fi
echo "[setup-browser] installing chromium and chromium-driver from Debian (first use; about a minute)" >&2
log="$(mktemp)"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
    echo "[setup-browser] FAILED:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi
rm -f "$log"
echo "[setup-browser] done: $(chromium --version 2>/dev/null || true)" >&2
