"""One journaled operation run as a whole: the write-ahead begin line, each move hash-checked and never
overwriting (hard link + unlink, a new name on collision), rolled back on any error, closed by its commit line.
"""
from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from smarthub.atomicio import append_jsonl
from smarthub.errors import FileOpError
from smarthub.fileops import journal
from smarthub.fileops.journal import Move, Operation, Recovery, describe_error, new_op_id, rel_path
from smarthub.fileops.lock import this_owner, workspace_lock
from smarthub.staging import now, sha256_file
from smarthub.workspace import Workspace


def run_operation(
    ws: Workspace,
    kind: str,
    plans: list[tuple[Path, Path]],
    *,
    label: str | None = None,
    undoes: str | None = None,
    op_id: str | None = None,
    emptied: Sequence[str] = (),
    recovered: Sequence[Recovery] = (),
) -> Operation:
    """Journal, execute and verify a list of (src, dst) moves as one all-or-nothing operation.

    `emptied`: folders (relative to the data folder) to remove once every move is done, if empty; this
    happens before the commit line, so recovery finishes it too. Runs under `workspace_lock` (callers that
    plan from the files on disk should hold it too).
    """
    if not plans:
        raise FileOpError("no files given")
    with workspace_lock(ws):
        op = _run_locked(ws, kind, plans, label=label, undoes=undoes, op_id=op_id, emptied=emptied)
    op.recovered = list(recovered)
    return op


def _run_locked(
    ws: Workspace,
    kind: str,
    plans: list[tuple[Path, Path]],
    *,
    label: str | None,
    undoes: str | None,
    op_id: str | None,
    emptied: Sequence[str],
) -> Operation:
    moves = []
    for src, dst in plans:
        try:
            digest = sha256_file(src)
            ino = os.stat(src).st_ino
        except OSError as e:
            raise FileOpError(f"cannot read {rel_path(ws, src)}: {e.strerror or e}") from e
        moves.append(Move(src=rel_path(ws, src), dst=rel_path(ws, dst), sha256=digest, ino=ino))
    op = Operation(op_id=op_id or new_op_id(), kind=kind, moves=moves, at=now(), label=label, undoes=undoes,
                   created=_missing_folders(ws, [dst for _, dst in plans]), owner=this_owner())
    append_jsonl(ws.journal_path, op.to_record())  # write-ahead: the plan is on disk before any file moves
    done: list[Move] = []
    try:
        for i, m in enumerate(op.moves):
            final = move_no_clobber(ws.data_dir / m.src, ws.data_dir / m.dst)
            final_rel = rel_path(ws, final)
            if final_rel != m.dst:  # collision: record the name actually used
                m = Move(src=m.src, dst=final_rel, sha256=m.sha256, ino=m.ino)
                op.moves[i] = m
                op.notes.append(f"{m.src} → {final_rel} (name taken)")
            verify_move(ws, m)
            done.append(m)
    except (OSError, FileOpError) as e:
        reason = describe_error(ws, e)
        rollback_failures, stayed = _rollback(ws, done)
        journal.end_operation(ws, op, stayed, reason=reason, abort=not stayed)
        op.state = "aborted"
        remove_empty_folders(ws, op.created)
        if rollback_failures:
            raise FileOpError(f"{kind} failed ({reason}) and could not be rolled back: "
                              f"{'; '.join(rollback_failures)}; the journal records where each file is") from e
        raise FileOpError(f"{kind} failed and was rolled back, no file changed: {reason}") from e
    remove_empty_folders(ws, emptied)
    journal.end_operation(ws, op, done)
    op.state = "committed"
    return op


def move_no_clobber(src: Path, dst: Path) -> Path:
    """Move `src` to `dst`, or to `dst` with a numeric suffix if taken; never overwrites. Returns the path used."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        candidate = dst if n == 0 else dst.with_name(f"{dst.stem}_{n}{dst.suffix}")
        try:
            os.link(src, candidate)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # filesystem without hard links: check-then-rename (the window is tiny and single-user)
            if candidate.exists():
                continue
            os.rename(src, candidate)
            return candidate
        try:
            os.unlink(src)
        except FileNotFoundError:
            return candidate  # the source name vanished meanwhile: the new name is the only one left, keep it
        except OSError:
            if same_file(src, candidate):
                with contextlib.suppress(OSError):
                    os.unlink(candidate)  # undo the link so the file keeps exactly one name
            raise
        return candidate
    raise FileOpError(f"no free file name for {dst} after 10,000 tries")


def same_file(a: Path, b: Path) -> bool:
    """True when both names exist and are the same inode (a hard link pair)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def verify_move(ws: Workspace, m: Move) -> None:
    src, dst = ws.data_dir / m.src, ws.data_dir / m.dst
    if src.exists():
        raise FileOpError(f"{m.src} still exists after moving it to {m.dst}")
    if not dst.exists():
        raise FileOpError(f"{m.dst} is missing after the move")
    if sha256_file(dst) != m.sha256:
        raise FileOpError(f"{m.dst} has different content after the move (sha256 mismatch)")


def _rollback(ws: Workspace, done: list[Move]) -> tuple[list[str], list[Move]]:
    """Move back what an aborted operation moved; return (failure messages, moves that stayed)."""
    failures, stayed = [], []
    for m in reversed(done):
        try:
            move_no_clobber(ws.data_dir / m.dst, ws.data_dir / m.src)
        except (OSError, FileOpError) as e:
            failures.append(f"{m.dst} stays at its new place ({describe_error(ws, e)})")
            stayed.append(m)
    return failures, stayed


def _missing_folders(ws: Workspace, destinations: Iterable[Path]) -> list[str]:
    """Folders (relative to the data folder) that moving files to `destinations` will create."""
    missing: set[str] = set()
    for dst in destinations:
        folder = Path(dst).parent
        while not folder.exists() and ws.data_dir in folder.parents and folder not in (ws.meta_dir, ws.trash_dir):
            missing.add(rel_path(ws, folder))
            folder = folder.parent
    return sorted(missing)


def remove_empty_folders(ws: Workspace, folders: Iterable[str]) -> list[str]:
    """Remove the folders (relative to the data folder) that are empty, deepest first; returns those removed."""
    removed = []
    for rel in sorted(set(folders), key=lambda r: r.count("/"), reverse=True):
        folder = ws.data_dir / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue  # the journal names folders inside the data folder only; anything else is not ours
        if rel and not folder.is_symlink() and folder.is_dir() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # emptied but busy (another process): it stays, nothing is lost
                folder.rmdir()
                removed.append(rel)
    return removed
