"""What changed in the data folder since the last scan, without reading every file: the mtime of every folder
(adding, removing or renaming a file changes its folder's mtime) and a rescan of only the class folders whose
mtime changed. A page of keeps changes no folder; a page of relabels between existing classes re-lists the
classes involved, and the moved files keep their (device, inode, size, mtime) key, so their sha256 comes from the
index without hashing. The re-rank after a page of decisions (`review.relearn`) uses it; `review()` and
`refresh()` read every file. An image edited in place (same name) changes no folder: only those two see it.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from smarthub.clean.records import Entry
from smarthub.dataset import has_split_layout
from smarthub.model.embeddings import load_sha_index, scan_stat
from smarthub.workspace import Workspace


def stamp_folders(data_dir: Path) -> dict[str, int]:
    """Folder path → st_mtime_ns, for the data folder and every folder below it (hidden ones aside: `.smarthub`)."""
    stamps: dict[str, int] = {}
    todo = [str(data_dir)]
    while todo:
        folder = todo.pop()
        try:
            stamps[folder] = os.stat(folder).st_mtime_ns  # before listing: a change while listing shows next time
            with os.scandir(folder) as it:
                todo.extend(d.path for d in it if not d.name.startswith(".") and d.is_dir(follow_symlinks=False))
        except OSError:
            continue  # vanished meanwhile: its parent's mtime changed too
    return stamps


def rescan_changed(ws: Workspace, entries: Sequence[Entry],
                   stamps: dict[str, int]) -> tuple[list[Entry], dict[str, int]] | None:
    """(the entries as a full scan would list them, new stamps), re-listing only the class folders whose stamp
    changed; None when only a full scan can tell: the folder layout changed (a class folder added or removed), a
    train/valid layout, or an image not in the sha256 index (new content)."""
    data_dir = str(ws.data_dir)
    changed = []
    for folder, mtime in stamps.items():
        try:
            if os.stat(folder).st_mtime_ns != mtime:
                changed.append(folder)
        except OSError:
            return None  # a folder went away
    if data_dir in changed:  # fine when only hidden entries changed (`.smarthub` created): the classes are the same
        changed.remove(data_dir)
        stamps = {**stamps, data_dir: os.stat(data_dir).st_mtime_ns}
        tops = {f for f in stamps if os.path.dirname(f) == data_dir}
        with os.scandir(data_dir) as it:
            if {d.path for d in it if not d.name.startswith(".") and d.is_dir(follow_symlinks=False)} != tops:
                return None
    if not changed:
        return list(entries), stamps
    if has_split_layout(ws.data_dir):
        return None
    classes = {Path(os.path.relpath(f, data_dir)).parts[0] for f in changed}
    fresh: dict[str, int] = {}
    for name in sorted(classes):
        fresh.update(stamp_folders(ws.data_dir / name))
    outside: list[Path] = []
    known = {str(e.path): e.path for e in entries}
    scanned = scan_stat(ws.data_dir, known=known, outside=outside, only=classes)
    index = load_sha_index(ws)
    if outside or any(key not in index for _, key in scanned):
        return None
    listed = [Entry(path=item.path, label=item.label, sha256=index[key]) for item, key in scanned]
    kept = [e for e in entries if e.path.relative_to(ws.data_dir).parts[0] not in classes]
    merged = sorted(kept + listed, key=lambda e: str(e.path).split(os.sep))  # scan_stat's order
    prefixes = tuple(os.path.join(data_dir, c) + os.sep for c in classes)
    new_stamps = {f: m for f, m in stamps.items() if not (f + os.sep).startswith(prefixes)}
    return merged, {**new_stamps, **fresh}
