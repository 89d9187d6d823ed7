"""Whole classes: their folders and names, and rename / merge as one journaled, undoable operation.
"""
from __future__ import annotations

from pathlib import Path

from smarthub.dataset import SPLIT_NAMES, check_label_case, has_split_layout, validate_label
from smarthub.errors import FileOpError
from smarthub.fileops.journal import Operation, Recovery, rel_path
from smarthub.fileops.lock import workspace_lock
from smarthub.fileops.moves import run_operation
from smarthub.fileops.recover import recover
from smarthub.workspace import Workspace


def class_folders(ws: Workspace, label: str) -> list[Path]:
    """The folders holding class `label`: `data/<label>`, or one per split (`data/train/<label>`, …)."""
    roots = [ws.data_dir / s for s in SPLIT_NAMES] if has_split_layout(ws.data_dir) else [ws.data_dir]
    return [root / label for root in roots if (root / label).is_dir()]


def class_names(ws: Workspace) -> list[str]:
    """The class folder names of the data folder (all splits), sorted; bookkeeping folders left out."""
    roots = [ws.data_dir / s for s in SPLIT_NAMES] if has_split_layout(ws.data_dir) else [ws.data_dir]
    return sorted({d.name for root in roots if root.is_dir() for d in root.iterdir()
                   if d.is_dir() and not d.name.startswith(".")})


def rename_class(ws: Workspace, old: str, new: str) -> Operation:
    """Rename class `old` to `new` (a class that does not exist yet): one journaled, undoable operation.

    Raises:
        LabelError: a name breaks the label rules.
        FileOpError: `old` has no folder, `new` exists already (merge instead), or a move failed (rolled back).
    """
    old, new = validate_label(old), validate_label(new)
    check_label_case(new, [c for c in class_names(ws) if c != old])
    with workspace_lock(ws):
        recovered = recover(ws)
        sources = _class_sources(ws, old, new)
        taken = [f for f in sources if (f.parent / new).exists()]
        if taken:
            raise FileOpError(f"class {new!r} exists already (folder {rel_path(ws, taken[0].parent / new)}): "
                              f"`smarthub classes merge {old} {new}` moves the images of {old!r} into it")
        return _move_class(ws, "rename", sources, new, recovered=recovered)


def merge_classes(ws: Workspace, source: str, target: str) -> Operation:
    """Move every image of class `source` into the existing class `target` (no overwrite), as one operation.

    Raises:
        LabelError: a name breaks the label rules.
        FileOpError: either class has no folder, or a move failed (rolled back).
    """
    source, target = validate_label(source), validate_label(target)
    check_label_case(target, class_names(ws))
    with workspace_lock(ws):
        recovered = recover(ws)
        sources = _class_sources(ws, source, target)
        if not class_folders(ws, target):
            raise FileOpError(f"no class {target!r} to merge into (no folder {rel_path(ws, ws.data_dir / target)}); "
                              f"`smarthub classes rename {source} {target}` renames instead")
        return _move_class(ws, "merge", sources, target, recovered=recovered)


def _class_sources(ws: Workspace, source: str, target: str) -> list[Path]:
    if source == target:
        raise FileOpError(f"{source!r} and {target!r} are the same class")
    folders = class_folders(ws, source)
    if not folders:
        raise FileOpError(f"no class {source!r}: there is no folder {rel_path(ws, ws.data_dir / source)}")
    return folders


def _move_class(ws: Workspace, kind: str, sources: list[Path], label: str, *,
                recovered: list[Recovery]) -> Operation:
    """Move the regular files of each source class folder next door into `label`; remove the emptied folders
    (before the commit line, so a crash in between is finished by recovery too)."""
    plans = [(f, folder.parent / label / f.name) for folder in sources for f in sorted(folder.iterdir())
             if f.is_file() and not f.is_symlink()]
    if not plans:
        raise FileOpError(f"class folder {rel_path(ws, sources[0])} holds no file to move")
    return run_operation(ws, kind, plans, label=label, emptied=[rel_path(ws, f) for f in sources], recovered=recovered)
