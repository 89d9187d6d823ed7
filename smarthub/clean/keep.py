"""Keep-state and a person's decisions: images marked as correctly labelled (keep.json, with the label kept, changed
only by journaled `fileops.keep` / `unkeep` operations) and images relabelled through `fileops` (its journal).
Both are *trusted labels*: never suspects again while the image's content and label are the ones decided, and full
weight in the ranking (active label cleaning: Bernhardt et al. 2022, Nature Communications 13:1161; cleanlab's
ActiveLab, Goh & Mueller 2023).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from smarthub import fileops
from smarthub.clean.records import Entry
from smarthub.workspace import Workspace


def keep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Mark images as correct as labelled (one journaled operation: `smarthub undo` reverts it): trusted labels,
    hidden from suspects until their content or label changes. Returns sha256s."""
    return [m.sha256 for m in fileops.keep(ws, paths).marks]


def unkeep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Forget 'keep' marks of images (by their current content; journaled). Returns the sha256s removed."""
    op = fileops.unkeep(ws, paths)
    return [m.sha256 for m in op.marks] if op is not None else []


def kept(ws: Workspace) -> set[str]:
    """sha256s of the images marked 'keep'."""
    return set(fileops.read_marks(ws))


@dataclass(frozen=True)
class Decision:
    """A person's latest decision on one image content: kept as `label`, or relabelled to `label`."""

    sha256: str
    label: str  # '' for a keep mark written before labels were recorded: trusted under any label
    how: str  # keep | relabel
    at: str
    tied: str = ""  # the label of a keep made in the same second as this relabel (the journal keeps whole seconds)


def _when(at: str) -> datetime:
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def decisions(ws: Workspace) -> dict[str, Decision]:
    """sha256 → the latest decision: keep marks, and relabels of the fileops journal that were not undone
    (a later relabel wins over an earlier keep, and a keep made after a relabel wins over it: journal order, or
    the times of a keep mark written before keeps were journaled)."""
    marks = fileops.read_marks(ws)
    out = {sha: Decision(sha, str(rec.get("label", "")) if isinstance(rec, dict) else "", "keep",
                         str(rec.get("at", "")) if isinstance(rec, dict) else "")
           for sha, rec in marks.items()}
    if not ws.journal_path.exists():
        return out
    ops = fileops.history(ws)
    position = {op.op_id: i for i, op in enumerate(ops)}
    keep_at = {sha: position.get(rec.get("op")) for sha, rec in marks.items() if isinstance(rec, dict)}
    for i, op in enumerate(ops):
        if op.kind != "relabel" or op.state != "committed" or op.undone_by is not None or not op.label:
            continue
        for m in op.moves:
            earlier = out.get(m.sha256)
            if not m.sha256:
                continue
            journaled = keep_at.get(m.sha256) if earlier is not None and earlier.how == "keep" else None
            if journaled is not None:
                if journaled < i:
                    out[m.sha256] = Decision(m.sha256, op.label, "relabel", op.at)
            elif earlier is None or earlier.how == "relabel" or _when(earlier.at) < _when(op.at):
                out[m.sha256] = Decision(m.sha256, op.label, "relabel", op.at)
            elif earlier.how == "keep" and _when(earlier.at).replace(microsecond=0) == _when(op.at):
                # a mark from before keeps were journaled, in the same second: the order is not recorded, so
                # the label the image has now decides
                out[m.sha256] = Decision(m.sha256, op.label, "relabel", op.at, tied=earlier.label)
    return out


def trusted_shas(entries: Iterable[Entry], decided: dict[str, Decision]) -> set[str]:
    """sha256s of `entries` whose current label is the one a person decided.

    An image moved to another class since (by hand, or by a later operation that is not a person's decision)
    is a suspect again; its content changing gives it a new sha256 and so no decision.
    """
    out = set()
    for e in entries:
        d = decided.get(e.sha256)
        if d is not None and (not d.label or e.label in (d.label, d.tied)):
            out.add(e.sha256)
    return out


def fixed_count(entries: Iterable[Entry], decided: dict[str, Decision]) -> int:
    """Label errors a person has fixed: images whose current label is a relabel decision of theirs."""
    entries = list(entries)
    trusted = trusted_shas(entries, decided)
    labels: dict[str, set[str]] = {}
    for e in entries:
        labels.setdefault(e.sha256, set()).add(e.label)
    return sum(1 for sha in trusted if decided[sha].how == "relabel" and decided[sha].label in labels.get(sha, ()))
