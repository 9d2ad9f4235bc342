#!/usr/bin/env bash
# Shared set-up for a fresh Debian machine: system packages (when allowed), a virtual
# environment in .venv, and the project with its extras ([all]; the tests: [dev]). Idempotent.
#   EAT_SKIP_APT=1   never call apt-get (then install dataset-fashion-mnist yourself)
#   EAT_BROWSER=1    also install Debian's chromium + chromium-driver (browser tests)
#   EAT_EXTRAS=dev   install the dev extras (what scripts/test.sh asks for)
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(dataset-fashion-mnist)
if [[ "${EAT_BROWSER:-0}" == 1 ]]; then apt_packages+=(chromium chromium-driver); fi

need_apt=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [[ ${#need_apt[@]} -gt 0 && "${EAT_SKIP_APT:-0}" != 1 ]] && command -v apt-get >/dev/null; then
  if [[ $(id -u) == 0 ]]; then SUDO=(); elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=(sudo -n); else SUDO=(none); fi
  if [[ "${SUDO[0]:-}" != none ]]; then
    echo "[setup] apt-get install -y ${need_apt[*]}"
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "[setup] not root and no sudo: install ${need_apt[*]} yourself (apt-get install -y ${need_apt[*]})"
  fi
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
# extras: 'all' (library, index, Milvus, app, benchmarks); the test command asks for 'dev'
# (all + pytest, ruff, playwright). See pyproject.toml for what each extra adds.
EXTRAS="${EAT_EXTRAS:-all}"
stamp=.venv/.eat-installed-$EXTRAS
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "[setup] pip install -e .[$EXTRAS] (torch 2.14.1 + torchvision 0.29.1, faiss-cpu, gradio, ...)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, torchvision, faiss, gradio, pytorch_metric_learning" \
    || { echo "[setup] install failed"; exit 1; }
  touch "$stamp"
fi
