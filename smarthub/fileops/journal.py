"""The journal of file operations (`data/.smarthub/journal.jsonl`): its records (`Move`, `Mark`, `Operation`,
`Recovery`), reading it back (`history`) and closing an operation (`end_operation`).

Keep marks (`keep`, `unkeep`, and their undo) are journaled operations too: they move no file, they change the
records of `data/.smarthub/keep.json`, and each `Mark` holds the record before and after, so one undo rule serves
moves and marks alike.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from smarthub.atomicio import append_jsonl, read_jsonl
from smarthub.fileops.lock import check_journal
from smarthub.staging import now
from smarthub.workspace import Workspace


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
class Mark:
    """One change of a keep mark: the record of image content `sha256` in keep.json before and after it (None:
    no mark). `path` is the image's path relative to the data folder when it was marked."""

    sha256: str
    path: str
    before: dict | None = None
    after: dict | None = None

    def inverse(self) -> Mark:
        return Mark(self.sha256, self.path, before=self.after, after=self.before)


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
    """A journaled operation: file moves (relabel, trash, rename, merge), keep marks (keep, unkeep), or the undo of
    another operation (moves or marks)."""

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
    marks: list[Mark] = field(default_factory=list)  # keep-mark changes (an operation has moves or marks)

    @property
    def n_images(self) -> int:
        """How many images it touched (moved, or marked)."""
        return len(self.moves) + len(self.marks)

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
            **({"marks": [{"sha256": m.sha256, "path": m.path, "before": m.before, "after": m.after}
                          for m in self.marks]} if self.marks else {}),
        }


def history(ws: Workspace) -> list[Operation]:
    """All operations in journal order with their state and, if undone, the id of the undo."""
    ops: dict[str, Operation] = {}
    check_journal(ws)
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
                marks=[Mark(str(m["sha256"]), str(m.get("path", "")),
                            before=m.get("before") if isinstance(m.get("before"), dict) else None,
                            after=m.get("after") if isinstance(m.get("after"), dict) else None)
                       for m in rec.get("marks") or [] if isinstance(m, dict) and m.get("sha256")],
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


def end_operation(
    ws: Workspace, op: Operation, done: list[Move], *, reason: str | None = None, abort: bool = False
) -> None:
    """Close `op` in the journal: commit the moves that happened (or its marks), or abort when none did."""
    rec: dict = {"event": "abort" if abort or (reason is not None and not done and not op.marks) else "commit",
                 "op_id": op.op_id, "at": now(),
                 "moves": [{"from": m.src, "to": m.dst, "sha256": m.sha256} for m in done]}
    if reason:
        rec["reason"] = reason
    append_jsonl(ws.journal_path, rec)


def rel_path(ws: Workspace, path: Path) -> str:
    path = Path(path)
    try:
        return path.relative_to(ws.data_dir).as_posix()
    except ValueError:
        return path.as_posix()


def describe_error(ws: Workspace, e: BaseException) -> str:
    if isinstance(e, OSError):
        where = f" ({rel_path(ws, Path(e.filename))})" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return str(e)


def new_op_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
