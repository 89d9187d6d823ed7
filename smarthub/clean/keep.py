"""Keep-state: images a person marked as correctly labelled, hidden from review until their content changes."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from smarthub.atomicio import atomic_write_json, read_json
from smarthub.dataset import sha256_file
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


def keep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Mark images as correct as labelled: hidden from suspects until their content changes. Returns sha256s."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolved = [_image_sha(ws, p) for p in paths]
    with _KEEP_LOCK:
        kept_map = _read_keep(ws)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for path, sha in resolved:
            rel = path.relative_to(ws.data_dir).as_posix() if path.is_relative_to(ws.data_dir) else str(path)
            kept_map[sha] = {"path": rel, "at": now}
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


