#!/usr/bin/env bash
# The main job: set up, train the default model on Fashion-MNIST and evaluate it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/eat train --out runs/default "$@"
.venv/bin/eat eval runs/default
