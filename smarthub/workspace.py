"""Where things live: the data folder, the models folder and smarthub's bookkeeping inside them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

META_DIRNAME = ".smarthub"


def contain_library_caches(cache_dir: Path) -> None:
    """Point libraries that cache under ~ into `cache_dir`, unless the user chose a place.

    Today that is matplotlib's font list, which importing fastai or ultralytics builds. Call before
    they are imported; nothing is created here.
    """
    os.environ.setdefault("MPLCONFIGDIR", str(Path(cache_dir) / "matplotlib"))


@dataclass(frozen=True)
class Workspace:
    """A data folder (one sub-folder per class) and a models folder.

    Nothing is created on construction; writers create what they need.
    """

    data_dir: Path
    models_dir: Path

    @classmethod
    def from_args(cls, data: str | Path | None = None, models: str | Path | None = None) -> Workspace:
        """Build from CLI/app options; defaults are $SMARTHUB_DATA / $SMARTHUB_MODELS, else ./data and ./models."""
        data_dir = Path(data or os.environ.get("SMARTHUB_DATA") or "data")
        models_dir = Path(models or os.environ.get("SMARTHUB_MODELS") or "models")
        return cls(data_dir=data_dir.expanduser().absolute(), models_dir=models_dir.expanduser().absolute())

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
        """True when `path` (resolved, symlinks followed) lies inside the data or models folder."""
        resolved = Path(path).resolve()
        for root in (self.data_dir.resolve(), self.models_dir.resolve()):
            if resolved == root or root in resolved.parents:
                return True
        return False
