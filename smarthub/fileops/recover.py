"""Repair after a crash: every operation left begun (its owner gone) is finished from its begin line's plan when
each unmoved file is intact, else rolled back as a whole; one `Recovery` record each.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smarthub.errors import FileOpError
from smarthub.fileops import journal
from smarthub.fileops.journal import (FINISHED, ROLLED_BACK, Move, Operation, Recovery, describe_error, history,
                                      rel_path)
from smarthub.fileops.lock import check_journal, owner_alive, workspace_lock
from smarthub.fileops.marks import apply_marks
from smarthub.fileops.moves import move_no_clobber, remove_empty_folders, same_file, verify_move
from smarthub.staging import sha256_file
from smarthub.workspace import Workspace


def recover(ws: Workspace) -> list[Recovery]:
    """Repair the operations a crash left open (begun, never committed), each as a whole.

    From the begin line's plan, an operation is finished when every file it has not moved yet is still at
    its source with the same sha256 (moved now, no clobber, verified); otherwise every file it moved goes
    back (rolled back). A hard link left with both names is settled by inode. An undo is repaired like any
    operation: finished, its original counts as undone; rolled back, the original stays committed and
    undoable. A keep-mark operation (keep, unkeep, or their undo) is finished by writing its records to
    keep.json again. Operations whose owner process is still running are left alone; when there is nothing to
    repair no lock is taken (read-only commands never wait). Returns one record per repaired operation.
    """
    check_journal(ws)
    if not ws.journal_path.exists() or not _repairable(history(ws)):
        return []
    repaired: list[Recovery] = []
    with workspace_lock(ws):
        ops = history(ws)  # again, under the lock: another process may have repaired them meanwhile
        for op in _repairable(ops):
            repaired.append(_repair(ws, op, ops))
    return repaired


def _repairable(ops: list[Operation]) -> list[Operation]:
    return [op for op in ops if op.state == "begun" and not owner_alive(op.owner)]


@dataclass
class _Found:
    """Where one planned move of an interrupted operation stands."""

    move: Move
    state: str  # pending (still at its source) | linked (both names) | done | changed | gone
    at: Path | None = None  # the file's new name (linked, done)


def _repair(ws: Workspace, op: Operation, ops: list[Operation]) -> Recovery:
    """Finish `op` when every unmoved file is intact, else roll it back; close its journal entry."""
    if op.marks:  # keep marks: keep.json is written whole or not at all, so writing its records again finishes it
        apply_marks(ws, op.marks)
        journal.end_operation(ws, op, [], reason="recovered after an interrupted operation: finished it")
        op.state = "committed"
        return Recovery(op.op_id, op.kind, len(op.marks), FINISHED, undoes=op.undoes)
    claimed: set[Path] = set()
    found = [_find_move(ws, m, claimed) for m in op.moves]
    broken = [f for f in found if f.state in ("changed", "gone")]
    reason = ""
    if not broken:
        try:
            done = _roll_forward(ws, found)
        except (OSError, FileOpError) as e:
            reason = f"finishing it failed ({describe_error(ws, e)})"
        else:
            remove_empty_folders(ws, _emptied(op, ops))
            op.moves = done
            journal.end_operation(ws, op, done, reason="recovered after an interrupted operation: finished it")
            op.state = "committed"
            return Recovery(op.op_id, op.kind, len(op.moves), FINISHED, undoes=op.undoes)
        found = [_find_move(ws, m, set()) for m in op.moves]  # where each file is after the failed attempt
    else:
        first = broken[0]
        reason = (f"{first.move.src} {'changed' if first.state == 'changed' else 'is gone'} since it was planned"
                  + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""))
    stayed, failures = _roll_back_found(ws, found)
    remove_empty_folders(ws, op.created)
    journal.end_operation(ws, op, stayed, reason=f"recovered after an interrupted operation: rolled back, {reason}",
                 abort=not stayed)
    op.state = "committed" if stayed else "aborted"
    if failures:
        reason += f"; {'; '.join(failures[:3])}"
    return Recovery(op.op_id, op.kind, len(op.moves), ROLLED_BACK, undoes=op.undoes, reason=reason)


def _find_move(ws: Workspace, m: Move, claimed: set[Path]) -> _Found:
    """Where the file of move `m` is: still at its source, linked under both names, moved, changed or gone."""
    src = ws.data_dir / m.src
    if src.is_file() and not src.is_symlink():
        for candidate in _dst_names(ws, m):
            if candidate not in claimed and same_file(src, candidate):
                claimed.add(candidate)
                return _Found(m, "linked", candidate)
        try:
            same = sha256_file(src) == m.sha256
        except OSError:
            same = False
        return _Found(m, "pending" if same else "changed")
    candidates = [c for c in _dst_names(ws, m) if c not in claimed and not c.is_symlink()]
    # the moved file itself (same inode) first; by content alone when the folder was copied since (new inodes)
    for same_inode in (True, False):
        for candidate in candidates:
            try:
                if (not same_inode or candidate.stat().st_ino == m.ino) and sha256_file(candidate) == m.sha256:
                    claimed.add(candidate)
                    return _Found(m, "done", candidate)
            except OSError:
                continue
    return _Found(m, "gone")


def _dst_names(ws: Workspace, m: Move) -> Iterator[Path]:
    """The planned destination, then its collision names (`x_1.jpg`, …) while they exist."""
    dst = ws.data_dir / m.dst
    if dst.exists():
        yield dst
    for n in range(1, 10_000):
        candidate = dst.with_name(f"{dst.stem}_{n}{dst.suffix}")
        if not candidate.exists():
            return
        yield candidate


def _roll_forward(ws: Workspace, found: list[_Found]) -> list[Move]:
    """Complete every move of an interrupted operation; returns the moves with their final names."""
    done = []
    for f in found:
        m = f.move
        if f.state == "linked":
            os.unlink(ws.data_dir / m.src)  # both names are one inode: drop the old one
            final = f.at
        elif f.state == "pending":
            final = move_no_clobber(ws.data_dir / m.src, ws.data_dir / m.dst)
        else:
            final = f.at
        if final is None:
            raise FileOpError(f"{m.dst} is missing")
        moved = Move(src=m.src, dst=rel_path(ws, final), sha256=m.sha256)
        verify_move(ws, moved)
        done.append(moved)
    return done


def _roll_back_found(ws: Workspace, found: list[_Found]) -> tuple[list[Move], list[str]]:
    """Put every moved file of an interrupted operation back; returns (moves that stayed, failure messages)."""
    stayed, failures = [], []
    for f in reversed(found):
        m = f.move
        try:
            if f.state == "linked" and f.at is not None:
                os.unlink(f.at)  # the new name of a link pair: the source name keeps the file
            elif f.state == "done" and f.at is not None:
                back = move_no_clobber(f.at, ws.data_dir / m.src)
                if rel_path(ws, back) != m.src:
                    failures.append(f"{m.src} came back as {rel_path(ws, back)} (name taken meanwhile)")
        except (OSError, FileOpError) as e:
            failures.append(f"{rel_path(ws, f.at) if f.at else m.dst} stays at its new place ({describe_error(ws, e)})")
            stayed.append(Move(src=m.src, dst=rel_path(ws, f.at) if f.at else m.dst, sha256=m.sha256))
    return stayed, failures


def _emptied(op: Operation, ops: list[Operation]) -> list[str]:
    """Folders a finished `op` leaves empty and removes: a renamed or merged class's folders, or the folders
    the operation an undo reverts had created."""
    if op.kind in ("rename", "merge"):
        return sorted({str(Path(m.src).parent.as_posix()) for m in op.moves})
    if op.kind == "undo":
        return next((o.created for o in ops if o.op_id == op.undoes), [])
    return []
