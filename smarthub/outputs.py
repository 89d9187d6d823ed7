"""Folders smarthub writes whole (exports, imports, detector runs): staged, locked, swapped in, never a stranger's.

An output is written into a hidden staged folder beside it, `.<name>.partial-<token>`, while the writer holds
an `flock` on `.<name>.lock` (which names its pid), then swapped in by `staging.swap_whole` (the old folder
is renamed aside to `.<name>.old-<token>` until the new one is in place). The lock dies with its process,
whatever signal ended it, so the next writer of the same name takes the lock and cleans up what a dead one left:
stale staged folders are removed, and an aside copy is either put back (the swap was cut before the new folder
was in place) or removed (the new folder is complete). A staged folder whose writer still runs is never touched.

`--overwrite` replaces only a folder smarthub exported itself (every export holds `.smarthub-export`, JSON
listing the files it wrote) or an empty one: a data folder, a models folder, or a folder holding any file
smarthub did not write is refused with one line.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from smarthub import __version__, staging
from smarthub.atomicio import atomic_write_json
from smarthub.errors import SmartHubError

MARKER_NAME = ".smarthub-export"  # JSON, without the .json suffix: Labelme folder scans never take it for theirs
MODELS_RECORD = ".smarthub-models.jsonl"  # = trust.RECORD_NAME (tested)


def _lock_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.lock")


def _entries(folder: Path) -> list[str]:
    """Every non-folder entry under `folder` (links included, never followed), relative, POSIX form."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        rel_root = Path(root).relative_to(folder)
        out += [(rel_root / f).as_posix() for f in files]
        out += [(rel_root / d).as_posix() for d in dirs if os.path.islink(os.path.join(root, d))]
    return sorted(out)


def check_replaceable(dest: Path) -> None:
    """Refuse to replace `dest` unless it is missing, empty, or an output smarthub wrote that holds nothing else.

    Raises:
        SmartHubError: one line naming the folder and why it is not smarthub's to replace.
    """
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise SmartHubError(f"{dest} is not a folder smarthub wrote (a file or a link): choose another output")
    if not any(dest.iterdir()):
        return
    why = None
    if (dest / ".smarthub").exists():
        why = "it is a data folder (it holds .smarthub/ with the journal and trash)"
    elif (dest / MODELS_RECORD).exists() or (dest / "runs").is_dir() or (dest / "export.pkl").exists():
        why = "it is a models folder"
    else:
        written = _marker_files(dest)
        if written is None:
            why = f"smarthub did not export it (no {MARKER_NAME})"
        else:
            strangers = [e for e in _entries(dest) if e != MARKER_NAME and e not in written]
            if strangers:
                why = (f"it holds {strangers[0]!r}" + (f" and {len(strangers) - 1} more files" if len(strangers) > 1
                                                        else "") + ", which smarthub did not write")
    if why is not None:
        raise SmartHubError(f"refusing to replace {dest}: {why}; --overwrite replaces only a folder smarthub "
                            f"exported (or an empty one) — choose a new output folder")


def _marker_files(dest: Path) -> set[str] | None:
    marker = dest / MARKER_NAME
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        rec = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = rec.get("files") if isinstance(rec, dict) else None
    return {str(f) for f in files} if isinstance(files, list) else None


def write_marker(folder: Path, *, kind: str) -> None:
    """Record in `folder` (complete, not yet in place) that smarthub wrote it and which files it holds."""
    folder = Path(folder)
    atomic_write_json(folder / MARKER_NAME, {
        "kind": kind, "at": staging.now(),
        "by": f"smarthub {__version__}", "files": [e for e in _entries(folder) if e != MARKER_NAME]})


@contextlib.contextmanager
def output_lock(dest: Path) -> Iterator[None]:
    """Hold the writer lock of output `dest` (`.<name>.lock` beside it); refuse when another process holds it."""
    dest = Path(dest)
    path = _lock_path(dest)
    while True:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SmartHubError(f"cannot create the lock {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise SmartHubError(f"another smarthub process is writing {dest} ({holder}); "
                                    f"try again when it has finished") from None
            raise SmartHubError(f"cannot lock {path}: {e.strerror or e}") from e
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed that lock file as we opened it: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"held by pid {os.getpid()}\n".encode(), 0)
        yield
    finally:
        staging.discard_lock_file(path)  # while still held: a writer that opened it meanwhile sees it gone
        os.close(fd)


def recover_output(dest: Path) -> list[str]:
    """Repair what a dead writer of `dest` left (`staging.recover_beside`, under the output lock); returns the
    notes saying what was done."""
    if not Path(dest).parent.is_dir():
        return []
    with output_lock(dest):
        return staging.recover_beside(dest)


@contextlib.contextmanager
def staged_output(dest: Path, *, kind: str | None, overwrite: bool = False,
                  notes: list[str] | None = None) -> Iterator[Path]:
    """A fresh hidden folder beside `dest`, under the output lock; on success it is marked as an export of `kind`
    (None: not marked, e.g. a run folder that is never replaced) and replaces `dest` whole; on any failure it is
    removed. What a dead writer left is cleaned up first (said in `notes`).

    Raises:
        SmartHubError: another process writes `dest`; `dest` is not empty and `overwrite` is not set, or it is
            not smarthub's to replace (`check_replaceable`).
    """
    dest = Path(dest)
    with output_lock(dest):
        done = staging.recover_beside(dest)
        if notes is not None:
            notes += done
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise SmartHubError(f"output folder {dest} is not empty: choose a new folder or pass --overwrite "
                                f"(replaces it whole)")
        check_replaceable(dest)
        staged = staging.build_beside(dest)
        try:
            yield staged
            if kind is not None:
                write_marker(staged, kind=kind)
            staging.swap_whole(staged, dest)
        finally:
            staging.discard(staged)
