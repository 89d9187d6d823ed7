"""Helpers shared by the CLI subcommands: workspace options, progress, printing."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from smarthub.errors import SmartHubError
from smarthub.workspace import Workspace


def add_workspace_args(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """Add --data (and --models) with the workspace defaults."""
    parser.add_argument("--data", metavar="DIR", help="data folder, one sub-folder per class (default: ./data)")
    if models:
        parser.add_argument("--models", metavar="DIR", help="models folder (default: ./models)")


def workspace_from(args: argparse.Namespace) -> Workspace:
    """The Workspace named by --data/--models (or the defaults)."""
    ws = Workspace.from_args(getattr(args, "data", None), getattr(args, "models", None))
    check_folders(ws)
    ws.contain_library_caches()
    report_recovery(ws)
    return ws


def report_recovery(ws: Workspace) -> None:
    """Finish or roll back the file operations a crash left open, one line on stderr for each (every command
    runs this first, the read-only ones too, so no batch stays half done)."""
    if not ws.journal_path.is_file():
        return
    from smarthub import fileops

    for repaired in fileops.recover(ws):
        print(repaired.message, file=sys.stderr)


def check_folders(ws: Workspace) -> None:
    """Refuse a --data or --models that exists but is not a folder (before any slow work)."""
    for option, path in (("--data", ws.data_dir), ("--models", ws.models_dir)):
        if path.exists() and not path.is_dir():
            raise SmartHubError(f"{option} {path} is a file, not a folder; give a folder (it is created if new)")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse `type` for an integer in low..high (out of range: a one-line usage error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range (allowed {low}..{high})")
        return value

    parse.__name__ = "integer"
    return parse


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
    """Trash `paths` in one undoable operation, print what happened, return exit code 0.

    A path that cannot be moved (a symlink, a folder, gone since it was listed) is skipped and reported;
    the rest are still moved.
    """
    from smarthub import fileops

    movable, skipped = [], []
    for path in paths:
        if path.is_symlink():
            skipped.append((path, "a symlink (smarthub moves only regular files; remove the link yourself)"))
        elif not path.is_file():
            skipped.append((path, "not a regular file, or gone since it was checked"))
        else:
            movable.append(path)
    for path, reason in skipped:
        print(f"skipped {_shown(ws, path)}: {reason}")
    if movable:
        op = fileops.trash(ws, movable)
        print(f"moved {len(op.moves)} {what} to the trash (operation {op.op_id}; `smarthub undo {op.op_id}`)")
    if skipped:
        print(f"{len(skipped)} {what} not moved (listed above)")
    return 0


def _shown(ws: Workspace, path: Path) -> str:
    try:
        return Path(path).relative_to(ws.data_dir).as_posix()
    except ValueError:
        return str(path)
