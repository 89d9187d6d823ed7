"""THE ONLY module that moves or removes a user's image files: relabel, trash, undo.

Every operation is journaled to `data/.smarthub/journal.jsonl` before any file moves
(a "begin" line listing the planned moves) and closed by a "commit" or "abort" line.
Moves never overwrite (hard link + unlink, or a unique new name on collision), are
verified afterwards (source gone, destination present, same sha256), and an operation
either completes or is rolled back. A crash between "begin" and "commit" is repaired by
`recover()`, which every mutating call (and every CLI command, through the shell) runs first: it
finishes the operation from the begin line's plan when every file that has not moved yet is still
there unchanged, and otherwise rolls the whole operation back; each repair is one `Recovery`
record. No image is ever lost and no batch is left half done.

One writer at a time per workspace, across processes: recovery and every journaled operation run
under `workspace_lock` (an `fcntl.flock` on `data/.smarthub/lock`, which names its holder). Each
"begin" line records its owner (pid, process start time, boot id), and recovery leaves alone an
operation whose owner is still running.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from smarthub.atomicio import append_jsonl, read_jsonl
from smarthub.dataset import SPLIT_NAMES, check_label_case, has_split_layout, sha256_file, validate_label
from smarthub.errors import FileOpError, MissingFileError
from smarthub.workspace import META_DIRNAME, Workspace

_OP_LOCK = threading.RLock()  # one file operation at a time per process (app handlers run in threads)
_held = threading.local()  # depth of workspace_lock held by this thread (flock is not re-entrant per open)
LOCK_WAIT_S = 5.0  # how long a second process waits for the workspace lock before saying who holds it
LOCK_FILENAME = "lock"


FINISHED, ROLLED_BACK = "finished", "rolled back"


@dataclass(frozen=True)
class Move:
    """One file move, paths relative to the data folder (POSIX form); `ino` is the file's inode when planned
    (moves keep it: a hard link or a rename), so recovery tells the moved file from a copy already there."""

    src: str
    dst: str
    sha256: str
    ino: int | None = None


@dataclass(frozen=True)
class Recovery:
    """What `recover()` did with one operation a crash left open: finished it, or rolled all of it back."""

    op_id: str
    kind: str
    files: int
    outcome: str  # FINISHED | ROLLED_BACK
    undoes: str | None = None
    reason: str = ""  # why it could not be finished (rolled back), or what stayed where

    @property
    def message(self) -> str:
        """One line for the user, e.g. `recovered: relabel 2026… (120 images) was interrupted; finished it`."""
        what = {"trash": "delete"}.get(self.kind, self.kind)
        of = f"of {self.undoes}, " if self.kind == "undo" else ""
        done = "finished it" if self.outcome == FINISHED else "rolled it back"
        if self.kind == "undo" and self.outcome == ROLLED_BACK:
            done += f" (operation {self.undoes} can still be undone)"
        why = f": {self.reason}" if self.reason else ""
        images = f"{self.files} image{'' if self.files == 1 else 's'}"
        return f"recovered: {what} {self.op_id} ({of}{images}) was interrupted; {done}{why}"


@dataclass
class Operation:
    """A journaled file operation: relabel, trash or undo (of another operation)."""

    op_id: str
    kind: str
    moves: list[Move]
    at: str
    label: str | None = None
    undoes: str | None = None
    state: str = "begun"  # begun → committed | aborted
    undone_by: str | None = None
    notes: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)  # folders this operation made (undo removes them when empty)
    owner: dict | None = None  # {"pid", "start", "boot"} of the process that began it
    recovered: list[Recovery] = field(default_factory=list)  # what the recovery run before it repaired

    def to_record(self) -> dict:
        return {
            "event": "begin",
            "op_id": self.op_id,
            "kind": self.kind,
            "label": self.label,
            "undoes": self.undoes,
            "at": self.at,
            "owner": self.owner,
            "moves": [{"from": m.src, "to": m.dst, "sha256": m.sha256, **({"ino": m.ino} if m.ino else {})}
                      for m in self.moves],
            **({"created": self.created} if self.created else {}),
        }


# ---------------------------------------------------------------- one writer per workspace


@contextlib.contextmanager
def workspace_lock(ws: Workspace, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the workspace's writer lock (threads of this process and other processes); re-entrant.

    Waits up to `wait_s` for another process to finish, then raises FileOpError naming the holder
    (pid, command, since when), which the holder writes into the lock file.
    """
    with _OP_LOCK:
        depth = getattr(_held, "depth", 0)
        if depth:
            _held.depth = depth + 1
            try:
                yield
            finally:
                _held.depth = depth
            return
        fd = _acquire(ws, wait_s)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


def _acquire(ws: Workspace, wait_s: float) -> int:
    path = ws.meta_dir / LOCK_FILENAME
    if not ws.data_dir.is_dir():  # never create a workspace by locking it (a --data typo)
        raise FileOpError(f"no data folder at {ws.data_dir}; check --data")
    _check_journal(ws)
    try:
        ws.meta_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FileOpError(f"cannot open the workspace lock {path}: {e.strerror or e}; "
                          f"check that {ws.meta_dir} is a writable folder") from e
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise FileOpError(f"another smarthub process is changing files in {ws.data_dir} "
                                  f"({holder}); waited {wait_s:g} s — try again when it has finished") from None
            time.sleep(0.01)
        except OSError as e:
            os.close(fd)
            raise FileOpError(f"cannot lock {path}: {e.strerror or e}") from e
    me = {"pid": os.getpid(), "command": " ".join(sys.argv)[:200], "since": _now()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    """'pid 123, `smarthub relabel …`, since …' from the lock file (what the holder wrote)."""
    try:
        rec = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        rec = {}
    if not isinstance(rec, dict) or "pid" not in rec:
        return "holder unknown"
    return f"held by pid {rec.get('pid')}, `{rec.get('command', '?')}`, since {rec.get('since', '?')}"


def _check_journal(ws: Workspace) -> None:
    """Refuse damaged bookkeeping: a `.smarthub` that is a file, or a journal that is not a regular file."""
    if ws.meta_dir.exists() and not ws.meta_dir.is_dir():
        raise FileOpError(f"{ws.meta_dir} is a file; smarthub keeps its bookkeeping in that folder — move the "
                          f"file aside and run the command again")
    if ws.journal_path.exists() and not ws.journal_path.is_file():
        raise FileOpError(f"{ws.journal_path} is not a regular file; smarthub keeps its journal there — move it "
                          f"aside and run the command again")


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (/proc), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _this_owner() -> dict:
    return {"pid": os.getpid(), "start": _process_start(os.getpid()) or "", "boot": _boot_id()}


def _owner_alive(owner: object) -> bool:
    """True when the process that began an operation is still running (and is not this process)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False  # a line from before owners were recorded: its writer is long gone
    pid = owner["pid"]
    if pid == os.getpid() or (owner.get("boot") and owner.get("boot") != _boot_id()):
        return False
    start = _process_start(pid)
    if start is None:
        return False
    return not owner.get("start") or start == owner.get("start")


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
                raise FileOpError(f"{_rel(ws, src)} is already labelled {label!r}")
            if (root / label).exists() and not (root / label).is_dir():
                raise FileOpError(f"{_rel(ws, root / label)} is a file, not a class folder: give a class name")
            plans.append((src, root / label / src.name))
        return _run(ws, "relabel", plans, label=label, recovered=recovered)


def trash(ws: Workspace, paths: Path | Sequence[Path]) -> Operation:
    """Move images to `data/.smarthub/trash/<op id>/…` (restorable with `undo`)."""
    with workspace_lock(ws):
        recovered = recover(ws)
        op_id = _new_op_id()
        plans = []
        for src in _as_list(paths):
            src = _checked_source(ws, src)
            plans.append((src, ws.trash_dir / op_id / _rel(ws, src)))
        return _run(ws, "trash", plans, op_id=op_id, recovered=recovered)


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
                raise FileOpError("nothing to undo: no relabel or delete in the journal is left to undo")
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
        missing = [m.dst for m in target.moves if not (ws.data_dir / m.dst).exists()]
        if missing:
            raise FileOpError(
                f"cannot undo {target.op_id}: {', '.join(missing[:3])} moved since; undo the later operations first"
            )
        plans = [(ws.data_dir / m.dst, ws.data_dir / m.src) for m in reversed(target.moves)]
        return _run(ws, "undo", plans, undoes=target.op_id, emptied=target.created, recovered=recovered)


def history(ws: Workspace) -> list[Operation]:
    """All operations in journal order with their state and, if undone, the id of the undo."""
    ops: dict[str, Operation] = {}
    _check_journal(ws)
    for rec in read_jsonl(ws.journal_path):
        event, op_id = rec.get("event"), rec.get("op_id")
        if not isinstance(op_id, str):
            continue
        if event == "begin":
            moves = [
                Move(src=str(m["from"]), dst=str(m["to"]), sha256=str(m.get("sha256", "")),
                     ino=m["ino"] if isinstance(m.get("ino"), int) else None)
                for m in rec.get("moves", [])
                if isinstance(m, dict) and "from" in m and "to" in m
            ]
            ops[op_id] = Operation(
                op_id=op_id, kind=str(rec.get("kind")), moves=moves, at=str(rec.get("at")),
                label=rec.get("label"), undoes=rec.get("undoes"), owner=rec.get("owner"),
                created=[str(d) for d in rec.get("created") or [] if isinstance(d, str)],
            )
        elif op_id in ops and event in ("commit", "abort"):
            op = ops[op_id]
            op.state = "committed" if event == "commit" else "aborted"
            if event == "commit" and isinstance(rec.get("moves"), list):
                # the commit line is authoritative: it lists the moves that happened, with final names
                op.moves = [
                    Move(src=str(m["from"]), dst=str(m["to"]), sha256=str(m.get("sha256", "")))
                    for m in rec["moves"]
                    if isinstance(m, dict) and "from" in m and "to" in m
                ]
            if rec.get("reason"):
                op.notes.append(str(rec["reason"]))
    for op in ops.values():
        if op.kind == "undo" and op.state == "committed" and op.undoes in ops:
            target = ops[op.undoes]
            target.undone_by = op.op_id
            op.undone_by = None
            # an undo of an undo re-opens the original operation
            if target.kind == "undo" and target.undoes in ops:
                ops[target.undoes].undone_by = None
    return list(ops.values())


def recover(ws: Workspace) -> list[Recovery]:
    """Repair the operations a crash left open (begun, never committed), each as a whole.

    From the begin line's plan, an operation is finished when every file it has not moved yet is still at
    its source with the same sha256 (moved now, no clobber, verified); otherwise every file it moved goes
    back (rolled back). A hard link left with both names is settled by inode. An undo is repaired like any
    operation: finished, its original counts as undone; rolled back, the original stays committed and
    undoable. Operations whose owner process is still running are left alone; when there is nothing to
    repair no lock is taken (read-only commands never wait). Returns one record per repaired operation.
    """
    _check_journal(ws)
    if not ws.journal_path.exists() or not _repairable(history(ws)):
        return []
    repaired: list[Recovery] = []
    with workspace_lock(ws):
        ops = history(ws)  # again, under the lock: another process may have repaired them meanwhile
        for op in _repairable(ops):
            repaired.append(_repair(ws, op, ops))
    return repaired


def _repairable(ops: list[Operation]) -> list[Operation]:
    return [op for op in ops if op.state == "begun" and not _owner_alive(op.owner)]


@dataclass
class _Found:
    """Where one planned move of an interrupted operation stands."""

    move: Move
    state: str  # pending (still at its source) | linked (both names) | done | changed | gone
    at: Path | None = None  # the file's new name (linked, done)


def _repair(ws: Workspace, op: Operation, ops: list[Operation]) -> Recovery:
    """Finish `op` when every unmoved file is intact, else roll it back; close its journal entry."""
    claimed: set[Path] = set()
    found = [_find_move(ws, m, claimed) for m in op.moves]
    broken = [f for f in found if f.state in ("changed", "gone")]
    reason = ""
    if not broken:
        try:
            done = _roll_forward(ws, found)
        except (OSError, FileOpError) as e:
            reason = f"finishing it failed ({_describe(ws, e)})"
        else:
            remove_empty_folders(ws, _emptied(op, ops))
            op.moves = done
            _journal_end(ws, op, done, reason="recovered after an interrupted operation: finished it")
            op.state = "committed"
            return Recovery(op.op_id, op.kind, len(op.moves), FINISHED, undoes=op.undoes)
        found = [_find_move(ws, m, set()) for m in op.moves]  # where each file is after the failed attempt
    else:
        first = broken[0]
        reason = (f"{first.move.src} {'changed' if first.state == 'changed' else 'is gone'} since it was planned"
                  + (f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""))
    stayed, failures = _roll_back_found(ws, found)
    remove_empty_folders(ws, op.created)
    _journal_end(ws, op, stayed, reason=f"recovered after an interrupted operation: rolled back, {reason}",
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
            if candidate not in claimed and _same_file(src, candidate):
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
            final = _move_no_clobber(ws.data_dir / m.src, ws.data_dir / m.dst)
        else:
            final = f.at
        if final is None:
            raise FileOpError(f"{m.dst} is missing")
        moved = Move(src=m.src, dst=_rel(ws, final), sha256=m.sha256)
        _verify_move(ws, moved)
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
                back = _move_no_clobber(f.at, ws.data_dir / m.src)
                if _rel(ws, back) != m.src:
                    failures.append(f"{m.src} came back as {_rel(ws, back)} (name taken meanwhile)")
        except (OSError, FileOpError) as e:
            failures.append(f"{_rel(ws, f.at) if f.at else m.dst} stays at its new place ({_describe(ws, e)})")
            stayed.append(Move(src=m.src, dst=_rel(ws, f.at) if f.at else m.dst, sha256=m.sha256))
    return stayed, failures


def _emptied(op: Operation, ops: list[Operation]) -> list[str]:
    """Folders a finished `op` leaves empty and removes: a renamed or merged class's folders, or the folders
    the operation an undo reverts had created."""
    if op.kind in ("rename", "merge"):
        return sorted({str(Path(m.src).parent.as_posix()) for m in op.moves})
    if op.kind == "undo":
        return next((o.created for o in ops if o.op_id == op.undoes), [])
    return []


def _run(
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
            raise FileOpError(f"cannot read {_rel(ws, src)}: {e.strerror or e}") from e
        moves.append(Move(src=_rel(ws, src), dst=_rel(ws, dst), sha256=digest, ino=ino))
    op = Operation(op_id=op_id or _new_op_id(), kind=kind, moves=moves, at=_now(), label=label, undoes=undoes,
                   created=_missing_folders(ws, [dst for _, dst in plans]), owner=_this_owner())
    append_jsonl(ws.journal_path, op.to_record())  # write-ahead: the plan is on disk before any file moves
    done: list[Move] = []
    try:
        for i, m in enumerate(op.moves):
            final = _move_no_clobber(ws.data_dir / m.src, ws.data_dir / m.dst)
            final_rel = _rel(ws, final)
            if final_rel != m.dst:  # collision: record the name actually used
                m = Move(src=m.src, dst=final_rel, sha256=m.sha256, ino=m.ino)
                op.moves[i] = m
                op.notes.append(f"{m.src} → {final_rel} (name taken)")
            _verify_move(ws, m)
            done.append(m)
    except (OSError, FileOpError) as e:
        reason = _describe(ws, e)
        rollback_failures, stayed = _rollback(ws, done)
        _journal_end(ws, op, stayed, reason=reason, abort=not stayed)
        op.state = "aborted"
        remove_empty_folders(ws, op.created)
        if rollback_failures:
            raise FileOpError(f"{kind} failed ({reason}) and could not be rolled back: "
                              f"{'; '.join(rollback_failures)}; the journal records where each file is") from e
        raise FileOpError(f"{kind} failed and was rolled back, no file changed: {reason}") from e
    remove_empty_folders(ws, emptied)
    _journal_end(ws, op, done)
    op.state = "committed"
    return op


def _move_no_clobber(src: Path, dst: Path) -> Path:
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
            if _same_file(src, candidate):
                with contextlib.suppress(OSError):
                    os.unlink(candidate)  # undo the link so the file keeps exactly one name
            raise
        return candidate
    raise FileOpError(f"no free file name for {dst} after 10,000 tries")


def _same_file(a: Path, b: Path) -> bool:
    """True when both names exist and are the same inode (a hard link pair)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _verify_move(ws: Workspace, m: Move) -> None:
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
            _move_no_clobber(ws.data_dir / m.dst, ws.data_dir / m.src)
        except (OSError, FileOpError) as e:
            failures.append(f"{m.dst} stays at its new place ({_describe(ws, e)})")
            stayed.append(m)
    return failures, stayed


def _journal_end(
    ws: Workspace, op: Operation, done: list[Move], *, reason: str | None = None, abort: bool = False
) -> None:
    """Close `op` in the journal: commit the moves that happened, or abort when none did."""
    rec: dict = {"event": "abort" if abort or (reason is not None and not done) else "commit",
                 "op_id": op.op_id, "at": _now(),
                 "moves": [{"from": m.src, "to": m.dst, "sha256": m.sha256} for m in done]}
    if reason:
        rec["reason"] = reason
    append_jsonl(ws.journal_path, rec)


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


def _rel(ws: Workspace, path: Path) -> str:
    path = Path(path)
    try:
        return path.relative_to(ws.data_dir).as_posix()
    except ValueError:
        return path.as_posix()


def _as_list(paths: Path | Iterable[Path]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    out = [Path(p) for p in paths]
    if len(set(out)) != len(out):
        raise FileOpError("the same file was given twice")
    return out


def _describe(ws: Workspace, e: BaseException) -> str:
    if isinstance(e, OSError):
        where = f" ({_rel(ws, Path(e.filename))})" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return str(e)


def _new_op_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- whole classes: rename, merge

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
            raise FileOpError(f"class {new!r} exists already (folder {_rel(ws, taken[0].parent / new)}): "
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
            raise FileOpError(f"no class {target!r} to merge into (no folder {_rel(ws, ws.data_dir / target)}); "
                              f"`smarthub classes rename {source} {target}` renames instead")
        return _move_class(ws, "merge", sources, target, recovered=recovered)


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


def _class_sources(ws: Workspace, source: str, target: str) -> list[Path]:
    if source == target:
        raise FileOpError(f"{source!r} and {target!r} are the same class")
    folders = class_folders(ws, source)
    if not folders:
        raise FileOpError(f"no class {source!r}: there is no folder {_rel(ws, ws.data_dir / source)}")
    return folders


def _move_class(ws: Workspace, kind: str, sources: list[Path], label: str, *,
                recovered: list[Recovery]) -> Operation:
    """Move the regular files of each source class folder next door into `label`; remove the emptied folders
    (before the commit line, so a crash in between is finished by recovery too)."""
    plans = [(f, folder.parent / label / f.name) for folder in sources for f in sorted(folder.iterdir())
             if f.is_file() and not f.is_symlink()]
    if not plans:
        raise FileOpError(f"class folder {_rel(ws, sources[0])} holds no file to move")
    return _run(ws, kind, plans, label=label, emptied=[_rel(ws, f) for f in sources], recovered=recovered)


def _missing_folders(ws: Workspace, destinations: Iterable[Path]) -> list[str]:
    """Folders (relative to the data folder) that moving files to `destinations` will create."""
    missing: set[str] = set()
    for dst in destinations:
        folder = Path(dst).parent
        while not folder.exists() and ws.data_dir in folder.parents and folder not in (ws.meta_dir, ws.trash_dir):
            missing.add(_rel(ws, folder))
            folder = folder.parent
    return sorted(missing)


# ---------------------------------------------------------------- derived folders (exports, detector runs)


def replace_folder(staged: Path, dest: Path) -> None:
    """Put the fully written folder `staged` in place of `dest` (an export or run smarthub wrote).

    `dest` is first renamed aside, then `staged` renamed into place, then the old copy removed:
    a crash at any point leaves the old folder or the new one under `dest` (the other one, if any,
    beside it under a dot name). Not for user images: those go through relabel/trash.
    """
    import shutil

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


def discard_folder(path: Path) -> None:
    """Remove a folder smarthub staged and did not finish (a stopped export or training run)."""
    import shutil

    if Path(path).exists():
        shutil.rmtree(Path(path))


def recover_folder(dest: Path) -> list[str]:
    """Remove what an interrupted writer of the derived folder `dest` left beside it (call under its writer
    lock, `outputs.output_lock`): staged folders (`.<name>.partial-*`, `.partial-<name>`) are removed; a copy
    `replace_folder` set aside (`.<name>.old-*`) is put back when `dest` is missing (the swap was cut short),
    else removed. Returns one note per thing done."""
    import shutil

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
    """Remove the lock file of a derived folder's writer (`outputs.output_lock`), when it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
