#!/usr/bin/env bash
# Robustness cards of the three shipped models (eat audit, 2,000 Fashion-MNIST test images,
# standard and strong), each crafted transfer check from another shipped model.
#   bash scripts/audit_shipped.sh            writes results/audit/{vanilla,baseline,eat}/
set -euo pipefail
cd "$(dirname "$0")/.."
for model in vanilla baseline eat; do
  surrogate=vanilla
  [[ $model == vanilla ]] && surrogate=baseline
  .venv/bin/eat audit "assets/models/$model" --max-images 2000 --surrogate "assets/models/$surrogate" \
    --out "results/audit/$model" --quiet "$@"
done
