#!/usr/bin/env bash
# eat audit on models that are not ours: a TorchScript export of torchvision's
# MobileNetV3-Small (random weights: no download here) and the factory
# torchvision.models:squeezenet1_1, both fed Fashion-MNIST resized to 32×32 RGB with
# ImageNet normalisation, on 200 test images, standard only: the strong run of MobileNet did
# not finish within 10 minutes on the two cores (pass --strength both where there is time).
#   bash scripts/audit_foreign.sh      writes results/audit/{mobilenet_v3_small.pt,torchvision.models-squeezenet1_1}/
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/foreign
.venv/bin/python - <<'PY'
import torch
from torchvision.models import mobilenet_v3_small

torch.manual_seed(0)
net = mobilenet_v3_small(num_classes=128).eval()
torch.jit.save(torch.jit.script(net), "runs/foreign/mobilenet_v3_small.pt")
PY
shape=(--input-size 32 --channels 3 --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225 --max-images 200 --strength standard)
.venv/bin/eat audit runs/foreign/mobilenet_v3_small.pt "${shape[@]}" --quiet "$@"
.venv/bin/eat audit torchvision.models:squeezenet1_1 "${shape[@]}" --quiet "$@"
