"""Image-quality issues found by CleanVision (blurry, dark, light, low information, odd aspect ratio, odd size),
cached per image sha256 in `data/.smarthub/cache/review/quality.json`.

Only images not in the cache are analysed. "odd size" is judged against the images analysed together
(the whole dataset on the first review; the newcomers on a refresh).
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

from smarthub.atomicio import atomic_write_json, read_json
from smarthub.clean.records import QUALITY_ISSUES
from smarthub.errors import SmartHubError
from smarthub.model.embeddings import Progress, review_cache_dir
from smarthub.workspace import Workspace

QUALITY_VERSION = 1


def _cache_path(ws: Workspace) -> Path:
    return review_cache_dir(ws) / "quality.json"


def load_quality_cache(ws: Workspace) -> dict[str, tuple[str, ...]]:
    """sha256 → its image-quality issues; an unreadable cache counts as empty."""
    path = _cache_path(ws)
    if not path.exists():
        return {}
    try:
        raw = read_json(path, what="image-quality cache")
    except SmartHubError:
        return {}
    if not isinstance(raw, dict) or raw.get("version") != QUALITY_VERSION or not isinstance(raw.get("issues"), dict):
        return {}
    return {str(k): tuple(str(x) for x in v if x in QUALITY_ISSUES)
            for k, v in raw["issues"].items() if isinstance(v, list)}


def find_quality_issues(paths: Sequence[Path]) -> list[tuple[str, ...]]:
    """CleanVision's issues for each image, in order (one process: the app and the CLI share the machine)."""
    if not paths:
        return []
    from cleanvision import Imagelab

    with contextlib.redirect_stderr(io.StringIO()):  # CleanVision draws progress bars even when not verbose
        lab = Imagelab(filepaths=[str(p) for p in paths], verbose=False)
        lab.find_issues(issue_types={name: {} for name in QUALITY_ISSUES}, n_jobs=1, verbose=False)
    table = lab.issues
    out = []
    for p in paths:
        row = table.loc[str(p)] if str(p) in table.index else None
        out.append(() if row is None else
                   tuple(name for name in QUALITY_ISSUES if bool(row.get(f"is_{name}_issue", False))))
    return out


def quality_issues(ws: Workspace, paths: Sequence[Path], shas: Sequence[str], *,
                   progress: Progress | None = None) -> dict[str, tuple[str, ...]]:
    """sha256 → image-quality issues for the given (readable) images, analysing only those not cached."""
    cache = load_quality_cache(ws)
    todo: dict[str, Path] = {}
    for p, s in zip(paths, shas):
        if s not in cache:
            todo.setdefault(s, Path(p))
    if todo:
        if progress is not None:
            progress("image quality", 0, len(todo))
        found = find_quality_issues(list(todo.values()))
        cache.update(zip(todo, found))
        atomic_write_json(_cache_path(ws), {"version": QUALITY_VERSION,
                                            "issues": {k: list(v) for k, v in sorted(cache.items())}})
        if progress is not None:
            progress("image quality", len(todo), len(todo))
    return {s: cache[s] for s in shas if s in cache}
