"""Folders and files smarthub writes whole (runs, exports, the promoted model): build beside, swap whole, discard.

The one place, with `fileops` (the user's images) and `atomicio` (its own temp files), that renames or removes
anything. Only for what smarthub itself wrote:
- a folder is built in a hidden name beside its destination (`beside`, `build_beside`), then put in place
  (`put_in_place` when the name is free, `swap_whole` when an old folder is replaced: the old one is renamed
  aside first, so a crash leaves the old or the new folder under the name, the other one beside it);
  `recover_beside` cleans up after a writer that died, `discard` removes an unfinished one;
- a set of files is replaced together (the promoted model): links of the new files and of the current ones
  (the backups) are staged as `.<name>.new.tmp` / `.<name>.prev.tmp` beside them (`stage_files`), then renamed
  over the targets (`replace_files`); `restore_files` puts the backups back, `discard_file_temps` removes the
  leftovers. The caller journals the intent (see model/runs.py);
- `link_or_copy`, `sha256_file` and `now` are the small pieces all of them share.
Imports nothing heavy, and of smarthub only atomicio.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from smarthub.atomicio import discard_temp, is_own_temp

NEW, PREVIOUS, STALE = ".new.tmp", ".prev.tmp", ".stale.tmp"  # suffixes of a file set's staged files


def now() -> str:
    """The current UTC time for records, ISO 8601 to the second (`2026-12-01T18:16:30+00:00`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def link_or_copy(src: Path, dst: Path, *, symbolic: bool = False) -> Path:
    """Put `src` at `dst` without using space where possible; returns `dst`.

    A hard link, else a copy of the bytes; `symbolic=True`: a symbolic link, else a copy with its times
    (a working tree for a trainer). A leftover temp of ours at `dst` (`.<name>….tmp`) is removed first;
    `dst`'s folder is created. Never overwrites: FileExistsError when `dst` is taken (a copy through a link
    there would write into the file it points at).
    """
    src, dst = Path(src), Path(dst)
    if is_own_temp(dst):
        discard_temp(dst)  # a leftover of an interrupted swap
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        if symbolic:
            os.symlink(src, dst)
        else:
            os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:
        if symbolic:
            shutil.copy2(src, dst)
        else:
            shutil.copyfile(src, dst)
    return dst


# ---------------------------------------------------------------- whole folders


def beside(dest: Path, *, token: bool = True) -> Path:
    """The hidden name a folder for `dest` is built under: `.<name>.partial-<token>` (`.<name>.partial`)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.partial" + (f"-{secrets.token_hex(4)}" if token else ""))


def build_beside(dest: Path) -> Path:
    """Create and return a fresh hidden folder beside `dest` (see `beside`) to build its new content in."""
    staged = beside(dest)
    staged.mkdir()
    return staged


def put_in_place(staged: Path, dest: Path) -> None:
    """Rename the complete `staged` (a folder or a file) to `dest`, a name nothing else holds (one rename)."""
    os.replace(staged, dest)


def swap_whole(staged: Path, dest: Path) -> None:
    """Put the fully written folder `staged` in place of `dest` (an export or run smarthub wrote).

    `dest` is first renamed aside, then `staged` renamed into place, then the old copy removed:
    a crash at any point leaves the old folder or the new one under `dest` (the other one, if any,
    beside it under a dot name). Not for user images: those go through fileops' relabel/trash.
    """
    staged, dest = Path(staged), Path(dest)
    aside = dest.with_name(f".{dest.name}.old-{secrets.token_hex(4)}")
    had_old = dest.exists()
    if had_old:
        os.rename(dest, aside)
    try:
        os.rename(staged, dest)
    except OSError:
        if had_old:
            os.rename(aside, dest)
        raise
    if had_old:
        shutil.rmtree(aside)


def discard(path: Path) -> None:
    """Remove a folder smarthub staged and did not finish (a stopped export or training run)."""
    if Path(path).exists():
        shutil.rmtree(Path(path))


def discard_if_empty(folder: Path) -> None:
    """Remove `folder` when it is empty (a staged folder nothing was written in yet); else leave it."""
    with contextlib.suppress(OSError):
        os.rmdir(folder)


def recover_beside(dest: Path) -> list[str]:
    """Remove what an interrupted writer of the folder `dest` left beside it (call under its writer lock,
    `outputs.output_lock`): staged folders (`.<name>.partial-*`, `.partial-<name>`) are removed; a copy
    `swap_whole` set aside (`.<name>.old-*`) is put back when `dest` is missing (the swap was cut short),
    else removed. Returns one note per thing done."""
    dest = Path(dest)
    parent, notes = dest.parent, []
    if not parent.is_dir():
        return notes
    for staged in sorted(parent.glob(f".{dest.name}.partial-*")) + [parent / f".partial-{dest.name}"]:
        if staged.is_dir() and not staged.is_symlink():
            shutil.rmtree(staged)
            notes.append(f"removed {staged.name}, left by an interrupted run (its process had stopped)")
    asides = sorted((p for p in parent.glob(f".{dest.name}.old-*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: p.stat().st_mtime)
    if asides and not dest.exists():
        os.rename(asides.pop(), dest)
        notes.append(f"put the previous {dest.name} back from its aside copy (a replacement was cut short)")
    for aside in asides:
        shutil.rmtree(aside)
        notes.append(f"removed {aside.name}, the previous {dest.name} kept aside by an interrupted replacement")
    return notes


def discard_lock_file(path: Path) -> None:
    """Remove the lock file of a folder's writer (`outputs.output_lock`), when it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# ---------------------------------------------------------------- a set of files replaced together


def temp_of(folder: Path, name: str, suffix: str) -> Path:
    """The staged file `.<name><suffix>` beside `folder/name` (suffix NEW, PREVIOUS or STALE)."""
    return Path(folder) / f".{name}{suffix}"


def stage_files(source: Path, folder: Path, names: Sequence[str]) -> tuple[dict[str, Path], dict[str, Path]]:
    """Links (or copies) of `source/<name>` beside `folder/<name>` (NEW), then of the current `folder/<name>`
    (PREVIOUS, the backups), for each name whose file exists; returns (staged, backups) by name."""
    staged = {name: link_or_copy(Path(source) / name, temp_of(folder, name, NEW))
              for name in names if (Path(source) / name).is_file()}
    backups = {name: link_or_copy(Path(folder) / name, temp_of(folder, name, PREVIOUS))
               for name in names if (Path(folder) / name).is_file()}
    return staged, backups


def replace_files(folder: Path, names: Sequence[str], staged: dict[str, Path], done: list[str]) -> None:
    """Rename each staged file over `folder/<name>`, in `names` order; a name without a staged file has its old
    file set aside (STALE: it must not pass for the new set's). Appends each name to `done` as it is replaced,
    so the caller can `restore_files` after an error."""
    for name in names:
        target = Path(folder) / name
        if name in staged:
            os.replace(staged[name], target)
        elif target.exists():
            os.replace(target, temp_of(folder, name, STALE))
        done.append(name)


def restore_files(folder: Path, done: Iterable[str], backups: dict[str, Path]) -> None:
    """Put back the files replaced so far (backups are hard links or copies of the previous files)."""
    for name in done:
        if name in backups:
            os.replace(backups[name], Path(folder) / name)
        elif (Path(folder) / name).exists():
            os.replace(Path(folder) / name, temp_of(folder, name, STALE))


def discard_file_temps(folder: Path, names: Iterable[str]) -> None:
    """Remove the staged files (NEW, PREVIOUS, STALE) of `names` a swap left in `folder`."""
    for name in names:
        for suffix in (NEW, PREVIOUS, STALE):
            discard_temp(temp_of(folder, name, suffix))


def discard_file(path: Path) -> None:
    """Remove a file smarthub wrote (e.g. a pointer a failed promotion must take back): renamed to a temp name
    beside it, then that temp removed."""
    path = Path(path)
    aside = path.with_name(f".{path.name}.undone.tmp")
    os.replace(path, aside)
    discard_temp(aside)
