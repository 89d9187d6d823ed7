"""Where the annotate job's inputs come from, for the shells that take them from a person (the app's Annotate tab):
a batch folder typed as text (inside the workspace only), uploaded images staged in the cache, a detector by name,
run folder or uploaded file (kept in models/detectors/uploads/ only when it loads as a detector).

Nothing here knows a screen: the app turns its upload objects into paths and phrases the results.
"""
from __future__ import annotations

import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from smarthub import staging
from smarthub.annotate.options import DEFAULT_DETECTOR
from smarthub.errors import DatasetError, ModelError
from smarthub.workspace import Workspace

DETECTOR_SUFFIXES = (".pt", ".pth", ".onnx")


@dataclass(frozen=True)
class StoredDetector:
    """An uploaded detector kept in the models folder: its spec (relative to the models folder, what the detector
    box takes), the detector's type and its class names (background entries aside)."""

    spec: str
    kind: str
    classes: tuple[str, ...]


def runs_dir(ws: Workspace) -> Path:
    """The cache folder of the app's annotate runs (staged uploads, zips)."""
    return ws.cache_dir / "annotate"


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def new_zip_path(ws: Workspace) -> Path:
    """A fresh path for a zip of Labelme files, in the runs folder."""
    return runs_dir(ws) / "zips" / f"annotations-{_stamp()}.zip"


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `stem_N.suffix` with the first N not taken (never an existing file)."""
    dst = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    n = 1
    while dst.exists():
        dst = folder / f"{stem}_{n}{suffix}"
        n += 1
    return dst


def stage_uploads(ws: Workspace, paths: Sequence[Path]) -> Path:
    """Copy uploaded images into a fresh run folder inside the workspace cache (a name taken twice gets `_N`);
    returns the folder of images."""
    images = runs_dir(ws) / _stamp() / "images"
    images.mkdir(parents=True)
    for src in paths:
        src = Path(src)
        shutil.copyfile(src, _free_name(images, src.name))
    return images


def inside_workspace(ws: Workspace, text: str, *, what: str) -> Path:
    """Resolve a typed path (a batch name in the batches folder, else relative to the data folder) and refuse
    anything outside the workspace.

    Raises:
        DatasetError: the path lies outside the workspace.
    """
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = ws.batches_dir / path if (ws.batches_dir / path).is_dir() else ws.data_dir / path
    if not ws.contains(path):
        raise DatasetError(f"{what} {text.strip()!r} is outside the workspace ({ws.data_dir}, {ws.models_dir} or "
                           f"{ws.batches_dir}); the app only reads files inside it")
    return path


def resolve_detector(ws: Workspace, spec: str) -> str:
    """A torchvision detector name as is, or a checkpoint path that must lie inside the workspace.

    Raises:
        ModelError: no spec, or a path outside the workspace.
    """
    spec = (spec or "").strip()
    if not spec:
        raise ModelError("choose a detector name or type the path of a checkpoint inside the models folder")
    from smarthub.annotate.detect import TORCHVISION_ARCHS

    if spec in TORCHVISION_ARCHS:
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = ws.models_dir / path
    if not ws.contains(path):
        raise ModelError(f"detector checkpoint {spec!r} must be inside the workspace (e.g. {ws.models_dir}/detector.pt)")
    return str(path)


def uploads_dir(ws: Workspace) -> Path:
    """models/detectors/uploads/: the detectors a person uploaded."""
    from smarthub.annotate.train_detector import detectors_dir

    return detectors_dir(ws.models_dir) / "uploads"


def detector_choices(ws: Workspace) -> list[str]:
    """Detector run folders and uploaded detectors (relative to the models folder), then torchvision names."""
    from smarthub.annotate.detect import TORCHVISION_ARCHS
    from smarthub.annotate.train_detector import list_runs

    runs = [p.relative_to(ws.models_dir).as_posix() for p in list_runs(ws.models_dir)]
    uploads = uploads_dir(ws)
    files = sorted(p.relative_to(ws.models_dir).as_posix() for p in uploads.iterdir()
                   if p.suffix.lower() in DETECTOR_SUFFIXES) if uploads.is_dir() else []
    return runs + files + list(TORCHVISION_ARCHS)


def default_detector(ws: Workspace) -> str:
    """The last detector run that finished, else annotate's default detector (annotate/options.py)."""
    from smarthub.annotate.train_detector import latest_run

    latest = latest_run(ws.models_dir)
    return latest.relative_to(ws.models_dir).as_posix() if latest else DEFAULT_DETECTOR


def store_detector(ws: Workspace, src: Path | None) -> StoredDetector:
    """Check an uploaded detector file loads as a detector and keep it in models/detectors/uploads/ (a new name,
    never overwriting). A file that is not a detector is refused and not kept.

    Raises:
        ModelError: no file, a suffix other than .pt/.pth/.onnx, or a file that does not load as a detector
            (or is not trusted).
    """
    from smarthub.annotate import detect

    if not src:
        raise ModelError("choose a detector file (.pt, .pth or .onnx) to upload")
    src = Path(src)
    if src.suffix.lower() not in DETECTOR_SUFFIXES:
        raise ModelError(f"{src.name} is not a detector file: upload a .pt, .pth or .onnx file")
    uploads = uploads_dir(ws)
    staged = uploads / f".partial-{secrets.token_hex(4)}"
    staged.mkdir(parents=True)
    try:
        shutil.copyfile(src, staged / src.name)
        detector = detect.load_detector(staged / src.name,
                                        detect.DetectorOptions(config_dir=ws.cache_dir / "ultralytics"))
        dst = _free_name(uploads, src.name)
        staging.put_in_place(staged / src.name, dst)
    finally:
        staging.discard(staged)
    classes = tuple(c for c in detector.class_names if c not in ("__background__", "N/A"))
    return StoredDetector(spec=dst.relative_to(ws.models_dir).as_posix(), kind=type(detector).__name__,
                          classes=classes)
