"""Test helper process: hammer relabel/delete/undo on one workspace for a while, then print what it did.

Usage: python fileops_hammer.py DATA_DIR SECONDS SEED. With SMARTHUB_TEST_UNLINK_DELAY_S set, every
os.unlink in this process first sleeps that long (slow or network storage); production code has no hook.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from smarthub import fileops
from smarthub.errors import SmartHubError
from smarthub.workspace import Workspace

CLASSES = ("apple", "pear", "plum")


def _slow_unlink_factory(delay_s: float):
    real_unlink = os.unlink

    def slow_unlink(path, *args, **kwargs):
        time.sleep(delay_s)
        return real_unlink(path, *args, **kwargs)

    return slow_unlink


def main() -> int:
    data_dir, seconds, seed = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    delay = float(os.environ.get("SMARTHUB_TEST_UNLINK_DELAY_S", "0") or 0)
    if delay:
        os.unlink = _slow_unlink_factory(delay)  # this helper process only
    ws = Workspace(data_dir=data_dir, models_dir=data_dir.parent / "models")
    rng = random.Random(seed)
    counts = {"ok": 0, "refused": 0}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        images = sorted(p for c in CLASSES if (data_dir / c).is_dir() for p in (data_dir / c).iterdir())
        action = rng.random()
        try:
            if action < 0.2 or not images:
                fileops.undo(ws)
            else:
                picks = rng.sample(images, min(len(images), rng.randint(1, 3)))
                if action < 0.4:
                    fileops.trash(ws, picks)
                else:
                    fileops.relabel(ws, picks, rng.choice(CLASSES))
            counts["ok"] += 1
        except SmartHubError:
            counts["refused"] += 1  # a file the other process moved first, nothing to undo, same label
        time.sleep(rng.uniform(0, 0.03))  # between two commands (a click, a shell loop) the lock is free a moment
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
