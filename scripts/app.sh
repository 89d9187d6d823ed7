#!/usr/bin/env bash
# Set everything up, then launch the app on 127.0.0.1:7860 with the default workspace (data/, models/).
# Extra arguments go to `smarthub app` (e.g. --demo, --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if [[ " $* " == *" --demo "* ]]; then
  # the demo's detector is trained with the optional Ultralytics extra (AGPL-3.0), pinned as in requirements-test.txt
  .venv/bin/python -m pip install -q "ultralytics==8.4.190"
fi
exec .venv/bin/python app.py "$@"
