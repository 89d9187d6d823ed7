"""Keep-state and a person's decisions: images marked as correctly labelled (keep.json, with the label kept) and
images relabelled through `fileops` (its journal). Both are *trusted labels*: never suspects again while the
image's content and label are the ones decided, and full weight in the ranking (active label cleaning:
Bernhardt et al. 2022, Nature Communications 13:1161; cleanlab's ActiveLab, Goh & Mueller 2023).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from smarthub import fileops
from smarthub.atomicio import atomic_write_json, read_json
from smarthub.clean.records import Entry
from smarthub.dataset import SPLIT_NAMES, has_split_layout, sha256_file
from smarthub.errors import FileOpError, SmartHubError
from smarthub.workspace import Workspace

_KEEP_LOCK = threading.Lock()


def _read_keep(ws: Workspace) -> dict[str, dict]:
    if not ws.keep_path.exists():
        return {}
    data = read_json(ws.keep_path, what="keep list")
    kept_map = data.get("kept") if isinstance(data, dict) else None
    if not isinstance(kept_map, dict):
        raise SmartHubError(f"keep list {ws.keep_path} is malformed (no 'kept' object): fix or delete it")
    return kept_map


def _image_sha(ws: Workspace, path: Path) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_absolute():
        path = path.absolute() if path.exists() else ws.data_dir / path
    if not ws.contains(path):
        raise FileOpError(f"{path} is not inside the data folder {ws.data_dir}")
    try:
        return path, sha256_file(path)
    except OSError as e:
        raise FileOpError(f"cannot read {path}: {e.strerror or e} (deleted or moved meanwhile? refresh)") from e


def _label_of(ws: Workspace, path: Path) -> str:
    """The class an image inside the data folder is filed under (its class folder, below a split folder)."""
    parts = path.relative_to(ws.data_dir).parts if path.is_relative_to(ws.data_dir) else ()
    if len(parts) > 2 and parts[0] in SPLIT_NAMES and has_split_layout(ws.data_dir):
        return parts[1]
    return parts[0] if len(parts) > 1 else ""


def keep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Mark images as correct as labelled: trusted labels, hidden from suspects until their content or label
    changes. Returns sha256s."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolved = [_image_sha(ws, p) for p in paths]
    with _KEEP_LOCK:
        kept_map = _read_keep(ws)
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        for path, sha in resolved:
            rel = path.relative_to(ws.data_dir).as_posix() if path.is_relative_to(ws.data_dir) else str(path)
            kept_map[sha] = {"path": rel, "at": now, "label": _label_of(ws, path)}
        atomic_write_json(ws.keep_path, {"version": 1, "kept": kept_map})
    return [sha for _, sha in resolved]


def unkeep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Forget 'keep' marks of images (by their current content). Returns the sha256s removed."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolved = [_image_sha(ws, p) for p in paths]
    with _KEEP_LOCK:
        kept_map = _read_keep(ws)
        removed = [sha for _, sha in resolved if kept_map.pop(sha, None) is not None]
        if removed:
            atomic_write_json(ws.keep_path, {"version": 1, "kept": kept_map})
    return removed


def kept(ws: Workspace) -> set[str]:
    """sha256s of the images marked 'keep'."""
    return set(_read_keep(ws))




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
    (a later relabel wins over an earlier keep, and a keep made after a relabel wins over it)."""
    out = {sha: Decision(sha, str(rec.get("label", "")) if isinstance(rec, dict) else "", "keep",
                         str(rec.get("at", "")) if isinstance(rec, dict) else "")
           for sha, rec in _read_keep(ws).items()}
    if not ws.journal_path.exists():
        return out
    for op in fileops.history(ws):
        if op.kind != "relabel" or op.state != "committed" or op.undone_by is not None or not op.label:
            continue
        for m in op.moves:
            earlier = out.get(m.sha256)
            if not m.sha256:
                continue
            if earlier is None or earlier.how == "relabel" or _when(earlier.at) < _when(op.at):  # journal order
                out[m.sha256] = Decision(m.sha256, op.label, "relabel", op.at)
            elif earlier.how == "keep" and _when(earlier.at).replace(microsecond=0) == _when(op.at):
                # the same second: the order is not recorded, so the label the image has now decides
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
