"""Where things live: the data folder, the models folder and smarthub's bookkeeping inside them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

META_DIRNAME = ".smarthub"
BATCHES_DIRNAME = "batches"


def contain_library_caches(cache_dir: Path) -> None:
    """Point libraries that cache under ~ into `cache_dir`, unless the user chose a place.

    Today that is matplotlib's font list, which importing fastai or ultralytics builds. Call before
    they are imported; nothing is created here.
    """
    os.environ.setdefault("MPLCONFIGDIR", str(Path(cache_dir) / "matplotlib"))


@dataclass(frozen=True)
class Workspace:
    """A data folder (one sub-folder per class), a models folder, and a folder of batches to annotate.

    Nothing is created on construction; writers create what they need. Batches (images to pre-annotate
    with a detector) live outside the data folder, where every folder is a class: by default in
    `batches/` beside the data folder.
    """

    data_dir: Path
    models_dir: Path
    batches: Path | None = None  # None: `batches/` beside the data folder

    @property
    def batches_dir(self) -> Path:
        return self.batches if self.batches is not None else self.data_dir.parent / BATCHES_DIRNAME

    @classmethod
    def from_args(cls, data: str | Path | None = None, models: str | Path | None = None) -> Workspace:
        """Build from CLI/app options; defaults are $SMARTHUB_DATA / $SMARTHUB_MODELS, else ./data and ./models."""
        data_dir = Path(data or os.environ.get("SMARTHUB_DATA") or "data")
        models_dir = Path(models or os.environ.get("SMARTHUB_MODELS") or "models")
        batches = os.environ.get("SMARTHUB_BATCHES")
        return cls(data_dir=data_dir.expanduser().absolute(), models_dir=models_dir.expanduser().absolute(),
                   batches=Path(batches).expanduser().absolute() if batches else None)

    # bookkeeping inside the data folder (never taken for a class: it starts with a dot)
    @property
    def meta_dir(self) -> Path:
        return self.data_dir / META_DIRNAME

    @property
    def journal_path(self) -> Path:
        return self.meta_dir / "journal.jsonl"

    @property
    def ledger_path(self) -> Path:
        return self.meta_dir / "ledger.jsonl"

    @property
    def trash_dir(self) -> Path:
        return self.meta_dir / "trash"

    @property
    def cache_dir(self) -> Path:
        return self.meta_dir / "cache"

    @property
    def keep_path(self) -> Path:
        return self.meta_dir / "keep.json"

    def contain_library_caches(self) -> None:
        """Keep library caches in this workspace (see `contain_library_caches`) once the data folder exists."""
        if self.data_dir.is_dir():
            contain_library_caches(self.cache_dir)

    # model artefacts
    @property
    def export_path(self) -> Path:
        return self.models_dir / "export.pkl"

    @property
    def report_path(self) -> Path:
        return self.models_dir / "report.json"

    @property
    def confusion_path(self) -> Path:
        return self.models_dir / "confusion.png"

    @property
    def history_path(self) -> Path:
        return self.models_dir / "history.csv"

    @property
    def runs_dir(self) -> Path:
        """One folder per training run (model/runs.py); the files above are the promoted run's."""
        return self.models_dir / "runs"

    def contains(self, path: Path) -> bool:
        """True when `path` (resolved, symlinks followed) lies inside the data, models or batches folder."""
        resolved = Path(path).resolve()
        for root in (self.data_dir.resolve(), self.models_dir.resolve(), self.batches_dir.resolve()):
            if resolved == root or root in resolved.parents:
                return True
        return False


def batch_placement_warning(ws: Workspace, folder: Path) -> str | None:
    """One line when `folder`, about to receive Labelme files, lies among the classes of the data folder.

    There every folder is a class: `smarthub info` and training would take the batch for one, and the
    JSON files land beside a class's images. None when the folder is elsewhere (or in a dot folder).
    """
    data = ws.data_dir.resolve()
    target = Path(folder).resolve()
    if target != data and data not in target.parents:
        return None
    rel = target.relative_to(data).parts
    if any(part.startswith(".") for part in rel):
        return None
    what = "the data folder itself" if not rel else f"inside the data folder {ws.data_dir}, where every folder is a class"
    return (f"{folder} is {what}: Labelme files will be written among its images; put batches to annotate "
            f"in {ws.batches_dir} instead")
