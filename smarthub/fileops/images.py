"""Actions on chosen images: relabel, trash (moves, see `moves`), keep and unkeep (marks, see `marks`), and undo of
the latest or a named operation, each one journaled operation.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from smarthub.dataset import SPLIT_NAMES, check_label_case, has_split_layout, validate_label
from smarthub.errors import FileOpError, MissingFileError
from smarthub.fileops.classes import class_names
from smarthub.fileops.journal import Mark, Operation, history, new_op_id, rel_path
from smarthub.fileops.lock import workspace_lock
from smarthub.fileops.marks import changed_since, read_marks, run_marks
from smarthub.fileops.moves import run_operation
from smarthub.fileops.recover import recover
from smarthub.staging import sha256_file
from smarthub.workspace import META_DIRNAME, Workspace


def relabel(ws: Workspace, paths: Path | Sequence[Path], label: str) -> Operation:
    """Move images into the class folder `label` (created if new), never overwriting.

    Raises:
        LabelError: `label` breaks the label rules.
        FileOpError: a path is missing, outside the data folder, or already has that label.
    """
    label = check_label_case(validate_label(label), class_names(ws))
    with workspace_lock(ws):
        recovered = recover(ws)
        plans: list[tuple[Path, Path]] = []
        for src in _as_list(paths):
            src = _checked_source(ws, src)
            root, class_name = _class_root(ws, src)
            if class_name == label:
                raise FileOpError(f"{rel_path(ws, src)} is already labelled {label!r}")
            if (root / label).exists() and not (root / label).is_dir():
                raise FileOpError(f"{rel_path(ws, root / label)} is a file, not a class folder: give a class name")
            plans.append((src, root / label / src.name))
        return run_operation(ws, "relabel", plans, label=label, recovered=recovered)


def trash(ws: Workspace, paths: Path | Sequence[Path]) -> Operation:
    """Move images to `data/.smarthub/trash/<op id>/…` (restorable with `undo`)."""
    with workspace_lock(ws):
        recovered = recover(ws)
        op_id = new_op_id()
        plans = []
        for src in _as_list(paths):
            src = _checked_source(ws, src)
            plans.append((src, ws.trash_dir / op_id / rel_path(ws, src)))
        return run_operation(ws, "trash", plans, op_id=op_id, recovered=recovered)


def keep(ws: Workspace, paths: Path | Sequence[Path]) -> Operation:
    """Mark images as correctly labelled (keep.json: content sha256 → the class it was kept under), as one
    journaled operation that `undo` reverts.

    Raises:
        MissingFileError: an image is not there (the message names the operation that moved it, if any).
        FileOpError: a path outside the data folder or outside a class folder; nothing is marked then.
    """
    with workspace_lock(ws):
        recovered = recover(ws)
        op_id, kept_map = new_op_id(), read_marks(ws)
        at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        marks: dict[str, Mark] = {}  # one mark per content: byte-identical copies share their sha256
        for src in _as_list(paths):
            src = _checked_source(ws, src)
            _, label = _class_root(ws, src)
            sha = _sha(ws, src)
            marks[sha] = Mark(sha, rel_path(ws, src), before=kept_map.get(sha),
                              after={"path": rel_path(ws, src), "at": at, "label": label, "op": op_id})
        return run_marks(ws, "keep", list(marks.values()), op_id=op_id, recovered=recovered)


def unkeep(ws: Workspace, paths: Path | Sequence[Path]) -> Operation | None:
    """Forget the keep marks of images (by their current content) as one journaled operation; None when none of
    them is kept (nothing is journaled then)."""
    with workspace_lock(ws):
        recovered = recover(ws)
        kept_map = read_marks(ws)
        marks: dict[str, Mark] = {}
        for src in _as_list(paths):
            src = _checked_source(ws, src)
            sha = _sha(ws, src)
            if sha in kept_map:
                marks[sha] = Mark(sha, rel_path(ws, src), before=kept_map[sha], after=None)
        return run_marks(ws, "unkeep", list(marks.values()), recovered=recovered) if marks else None


def undo(ws: Workspace, op_id: str | None = None) -> Operation:
    """Undo operation `op_id`, or the latest committed operation not yet undone.

    Repeated calls walk back through history. Undoing an undo redoes the original.

    Raises:
        FileOpError: nothing to undo, unknown id, or a file of that operation has been moved since.
    """
    with workspace_lock(ws):
        recovered = recover(ws)
        ops = history(ws)
        if op_id is None:
            candidates = [op for op in ops if op.state == "committed" and op.undone_by is None and op.kind != "undo"]
            if not candidates:
                raise FileOpError("nothing to undo: no relabel, delete or keep in the journal is left to undo")
            target = candidates[-1]
        else:
            matches = [op for op in ops if op.op_id == op_id]
            if not matches:
                raise FileOpError(f"no operation {op_id!r} in {ws.journal_path}; `smarthub history` lists them")
            target = matches[0]
            if target.state != "committed":
                raise FileOpError(f"operation {op_id} was {target.state}, there is nothing to undo")
            if target.undone_by is not None:
                raise FileOpError(f"operation {op_id} was already undone by {target.undone_by}")
        if target.marks:
            changed = changed_since(ws, target)
            if changed:
                raise FileOpError(f"cannot undo {target.op_id}: the keep mark of {', '.join(changed[:3])} changed "
                                  f"since; undo the later operations first")
            return run_marks(ws, "undo", [m.inverse() for m in reversed(target.marks)], undoes=target.op_id,
                             recovered=recovered)
        missing = [m.dst for m in target.moves if not (ws.data_dir / m.dst).exists()]
        if missing:
            raise FileOpError(
                f"cannot undo {target.op_id}: {', '.join(missing[:3])} moved since; undo the later operations first"
            )
        plans = [(ws.data_dir / m.dst, ws.data_dir / m.src) for m in reversed(target.moves)]
        return run_operation(ws, "undo", plans, undoes=target.op_id, emptied=target.created, recovered=recovered)


def _checked_source(ws: Workspace, path: Path) -> Path:
    path = Path(path)
    data_root = ws.data_dir.resolve()
    if not path.is_absolute():  # relative to the current folder when it is there or points into the data folder
        here = path.absolute()
        inside = data_root in (here.parent.resolve() / here.name).parents
        path = here if here.exists() or inside else ws.data_dir / path
    resolved = path.parent.resolve() / path.name
    if data_root not in resolved.parents:
        raise FileOpError(f"{path} is not inside the data folder {ws.data_dir}; smarthub only moves its own images")
    rel = resolved.relative_to(data_root)
    if rel.parts[0] == META_DIRNAME:
        raise FileOpError(f"{path} is smarthub bookkeeping, not an image of the dataset")
    if path.is_symlink() or (resolved.exists() and not resolved.is_file()):
        raise FileOpError(f"{path} is not a regular file")
    if not resolved.exists():
        raise _missing(ws, rel.as_posix())
    return ws.data_dir / rel


def _sha(ws: Workspace, path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as e:
        raise FileOpError(f"cannot read {rel_path(ws, path)}: {e.strerror or e}") from e


def _missing(ws: Workspace, rel: str) -> MissingFileError:
    """Why `rel` is not there: the journaled operation that moved it away, else plainly absent."""
    for op in reversed(history(ws)):
        if op.state != "committed":
            continue
        for m in op.moves:
            if m.src == rel:
                where = "to the trash" if m.dst.startswith(f"{META_DIRNAME}/") else f"to {m.dst}"
                return MissingFileError(f"{rel} no longer exists: {op.kind} {op.op_id} moved it {where}", rel,
                                        explained=True)
            if m.dst == rel:  # it arrived here last, so it was removed outside smarthub
                return MissingFileError(f"{rel} no longer exists (deleted or moved outside smarthub)", rel,
                                        explained=True)
    return MissingFileError(f"{rel} does not exist in the data folder {ws.data_dir}", rel)


def _class_root(ws: Workspace, src: Path) -> tuple[Path, str]:
    """Return (folder holding the class folders, current class name) for a source image."""
    rel = src.relative_to(ws.data_dir)
    root = ws.data_dir
    parts = rel.parts
    if len(parts) >= 3 and parts[0] in SPLIT_NAMES and has_split_layout(ws.data_dir):
        root, parts = ws.data_dir / parts[0], parts[1:]
    if len(parts) < 2:
        raise FileOpError(f"{rel.as_posix()} is not inside a class folder")
    return root, parts[0]


def _as_list(paths: Path | Iterable[Path]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if len(set(out)) != len(out):
        raise FileOpError("the same file was given twice")
    return out
