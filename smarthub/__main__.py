"""`python -m smarthub` → the CLI."""
from __future__ import annotations

import sys

from smarthub.cli import main

if __name__ == "__main__":
    sys.exit(main())
