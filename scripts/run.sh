#!/usr/bin/env bash
# The main job: set everything up, then serve the web app on http://127.0.0.1:7860 with the
# shipped models in assets/models (no training, no internet). Extra arguments go to
# `eat app` (e.g. --port 8080, --gallery PHOTOS_ROOT).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GRADIO_ANALYTICS_ENABLED=False
exec .venv/bin/eat app "$@"
