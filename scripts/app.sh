#!/usr/bin/env bash
# Set everything up, then launch the app on 127.0.0.1:7860 with the default workspace (data/, models/).
# Extra arguments go to `smarthub app` (e.g. --demo, --port 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python app.py "$@"
