#!/usr/bin/env bash
# Set everything up (venv, packages, Debian chromium and datasets), then run the whole test suite.
# Extra arguments go to pytest (e.g. -k fileops).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 YOLO_OFFLINE=1 MPLBACKEND=Agg
exec .venv/bin/python -m pytest "$@"
