#!/usr/bin/env bash
# The test command: sets everything up on a fresh Debian machine, then runs the suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k data).
set -euo pipefail
cd "$(dirname "$0")/.."
EAT_BROWSER=1 EAT_EXTRAS=dev bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
mkdir -p test-artifacts
exec .venv/bin/python -m pytest "$@"
