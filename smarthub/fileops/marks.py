"""Keep marks as journaled operations: the records of `data/.smarthub/keep.json` (image content → the label a
person kept it under) change only through `run_marks`, which writes the journal's begin line (every mark with
its record before and after), then keep.json (atomically), then the commit line: the same write-ahead rule as a
file move, so `recover()` finishes a keep a crash interrupted and `undo` reverts it like any operation.
"""
from __future__ import annotations

from collections.abc import Sequence

from smarthub.atomicio import append_jsonl, atomic_write_json, read_json
from smarthub.errors import FileOpError, SmartHubError
from smarthub.fileops import journal
from smarthub.fileops.journal import Mark, Operation, Recovery, new_op_id
from smarthub.fileops.lock import this_owner, workspace_lock
from smarthub.staging import now
from smarthub.workspace import Workspace


def read_marks(ws: Workspace) -> dict[str, dict]:
    """sha256 → keep record ({"path", "label", "at", "op"}) of keep.json; {} when there is none."""
    if not ws.keep_path.exists():
        return {}
    data = read_json(ws.keep_path, what="keep list")
    kept_map = data.get("kept") if isinstance(data, dict) else None
    if not isinstance(kept_map, dict):
        raise SmartHubError(f"keep list {ws.keep_path} is malformed (no 'kept' object): fix or delete it")
    return kept_map


def apply_marks(ws: Workspace, marks: Sequence[Mark]) -> None:
    """Write every mark's `after` record into keep.json (atomically; idempotent, so recovery can repeat it)."""
    kept_map = read_marks(ws)
    for m in marks:
        if m.after is None:
            kept_map.pop(m.sha256, None)
        else:
            kept_map[m.sha256] = m.after
    atomic_write_json(ws.keep_path, {"version": 1, "kept": kept_map})


def changed_since(ws: Workspace, op: Operation) -> list[str]:
    """Paths of `op`'s marks whose record in keep.json is no longer the one `op` wrote (a later keep or unkeep)."""
    kept_map = read_marks(ws)
    return [m.path for m in op.marks if kept_map.get(m.sha256) != m.after]


def run_marks(ws: Workspace, kind: str, marks: list[Mark], *, op_id: str | None = None, undoes: str | None = None,
              label: str | None = None, recovered: Sequence[Recovery] = ()) -> Operation:
    """Journal and apply keep-mark changes as one operation: begin line, keep.json, commit line.

    Callers hold `workspace_lock` (it is taken again here, re-entrantly). A failed keep.json write aborts the
    operation and leaves keep.json as it was.
    """
    if not marks:
        raise FileOpError("no images given")
    with workspace_lock(ws):
        op = Operation(op_id=op_id or new_op_id(), kind=kind, moves=[], at=now(), label=label, undoes=undoes,
                       owner=this_owner(), marks=list(marks))
        append_jsonl(ws.journal_path, op.to_record())  # write-ahead: the change is on disk before keep.json
        try:
            apply_marks(ws, op.marks)
        except SmartHubError as e:
            if changed_since(ws, op):  # keep.json is as it was (else it was written and only its fsync failed)
                journal.end_operation(ws, op, [], reason=str(e), abort=True)
                op.state = "aborted"
                raise FileOpError(f"{kind} failed, no keep mark changed: {e}") from e
        journal.end_operation(ws, op, [])
        op.state = "committed"
    op.recovered = list(recovered)
    return op
