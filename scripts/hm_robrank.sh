#!/usr/bin/env bash
# HM in RobRank's own Fashion-MNIST setting, to check our implementation against the
# published numbers (RobRank README: HM clean R@1 0.880, NMI 0.772; vanilla 0.876 / 0.778):
# triplet loss, training eps 77/255 (0.302), PGD-8 in training, all 60k images, then the
# clean evaluation on the 10k test set and RobRank's attack budget (eps 0.302, 32 steps) for
# the embedding shift, plus our headline clustering attack (eps 0.1, PGD-20), on 2k images.
#   EPOCHS=2 WIDTH=32 bash scripts/hm_robrank.sh      (RobRank trains 16 epochs)
# Writes results/hm-robrank/{train,eval,es-eps0.302,ca-eps0.1}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-2}
WIDTH=${WIDTH:-32}
OUT=${OUT:-results/hm-robrank}
RUN=${RUN:-runs/hm-robrank}
mkdir -p "$OUT"
.venv/bin/eat train --defense hm --loss triplet --train-eps 0.302 --train-steps 8 \
  --width "$WIDTH" --epochs "$EPOCHS" --out "$RUN" --quiet
.venv/bin/python - "$RUN" "$OUT" <<'PY'
import json, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
record = json.loads((run / "config.json").read_text())["train"]
(out / "train.json").write_text(json.dumps(record, indent=2))
PY
.venv/bin/eat eval "$RUN" --out "$OUT/eval.json" --quiet
.venv/bin/eat attack "$RUN" --attack es --eps 0.302 --steps 32 --max-test 2000 \
  --out "$OUT/es-eps0.302.json" --quiet
.venv/bin/eat attack "$RUN" --attack ca --eps 0.1 --steps 20 --max-test 2000 \
  --out "$OUT/ca-eps0.1.json" --quiet
echo "HM (RobRank setting) results in $OUT"
