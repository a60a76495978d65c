#!/usr/bin/env bash
# Create .venv (if missing) and install dockwall with its development tools into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
timeout 900 .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
