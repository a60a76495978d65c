#!/usr/bin/env bash
# Create .venv (if missing) and install into it, editable, dockwall with its development tools
# and the test harness (harness/, dockwall_sandbox), which dockwall's own wheel does not hold.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
timeout 900 .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' -e ./harness
