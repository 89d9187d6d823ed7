"""Helpers shared by the CLI subcommands: workspace options, progress, printing."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from smarthub.workspace import Workspace


def add_workspace_args(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """Add --data (and --models) with the workspace defaults."""
    parser.add_argument("--data", metavar="DIR", help="data folder, one sub-folder per class (default: ./data)")
    if models:
        parser.add_argument("--models", metavar="DIR", help="models folder (default: ./models)")


def workspace_from(args: argparse.Namespace) -> Workspace:
    """The Workspace named by --data/--models (or the defaults)."""
    ws = Workspace.from_args(getattr(args, "data", None), getattr(args, "models", None))
    ws.contain_library_caches()
    return ws


def progress_printer(what: str, *, every_s: float = 5.0) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback: a live line on a terminal, a line every few seconds in a log."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if tty:
            print(f"\r{what}: {done}/{total}", end="\n" if final else "", file=sys.stderr, flush=True)
        elif final or now - last[0] >= every_s:
            print(f"{what}: {done}/{total}", file=sys.stderr, flush=True)
            last[0] = now

    return progress


def print_table(rows: list[tuple], headers: tuple[str, ...]) -> None:
    """Print a plain aligned table to stdout."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def quarantine(ws: Workspace, paths: list[Path], what: str) -> int:
    """Trash `paths` in one undoable operation, print what happened, return exit code 0."""
    from smarthub import fileops

    op = fileops.trash(ws, paths)
    print(f"moved {len(op.moves)} {what} to the trash (operation {op.op_id}; `smarthub undo {op.op_id}`)")
    return 0
