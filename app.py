"""`python app.py [--demo] [--host H] [--port P] [--auth user:pass] [--data DIR] [--models DIR]`.

Serves the smarthub app on http://127.0.0.1:7860 with the default workspace (./data, ./models);
`--demo` builds a demo workspace from the shipped sample images first.
"""
from __future__ import annotations

import sys

from smarthub.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
