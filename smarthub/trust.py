"""Which model files may be unpickled: those smarthub wrote itself, others only when the user says so.

Loading a pickle (fastai's export.pkl, an Ultralytics .pt) runs whatever code the file holds. Every
model file smarthub writes (through `save_model`) gets a line in a record beside it,
`<folder>/.smarthub-models.jsonl` (name, sha256, when); a file whose exact bytes are listed there was
written by smarthub in that models folder. The CLI and the app refuse any other pickle unless started
with `--trust`; library calls (notebooks, tests) only print the notice.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smarthub import __version__
from smarthub.atomicio import append_jsonl, atomic_save_file, read_jsonl
from smarthub.errors import ModelError
from smarthub.staging import now, sha256_file

RECORD_NAME = ".smarthub-models.jsonl"


@dataclass
class _Policy:
    enforce: bool = False  # refuse pickles smarthub did not write (the CLI and the app turn this on)


_POLICY = _Policy()  # process-wide: set once from the command line (--trust), like the process's own argv


def require_known_models(enforce: bool) -> bool:
    """Refuse (True) or allow with a notice (False) pickles smarthub did not write; returns the previous setting."""
    previous, _POLICY.enforce = _POLICY.enforce, enforce
    return previous


def record_path(model: Path) -> Path:
    return Path(model).parent / RECORD_NAME


def save_model(path: Path, save: Callable[[Path], object]) -> None:
    """Write a model file atomically (`save(tmp_path)`, e.g. learn.export / torch.save; see
    `atomicio.atomic_save_file`), then list it as written by smarthub, so it may be loaded again."""
    atomic_save_file(path, save)
    record_written(path)


def record_written(model: Path) -> None:
    """Note that smarthub has just written `model` (call after the file is in place)."""
    model = Path(model)
    append_jsonl(record_path(model), {"name": model.name, "sha256": sha256_file(model), "at": now(),
                                      "by": f"smarthub {__version__}"})


def written_by_smarthub(model: Path) -> dict | None:
    """The record line of `model` when its current bytes are the ones smarthub wrote, else None."""
    model = Path(model)
    record = record_path(model)
    if not record.is_file():
        return None
    lines = [r for r in read_jsonl(record) if r.get("name") == model.name]
    if not lines:
        return None
    digest = sha256_file(model)
    matches = [r for r in lines if r.get("sha256") == digest]
    return matches[-1] if matches else None


def check_pickle(model: Path, *, what: str = "model") -> str:
    """Before unpickling `model`: refuse it when smarthub did not write it (CLI/app without --trust).

    Returns the notice to print once it has loaded: where it came from and that loading runs its code.
    Raises:
        ModelError: the file is not one smarthub wrote and `--trust` was not given.
    """
    model = Path(model)
    origin = written_by_smarthub(model)
    if origin is not None:
        return (f"loaded {what} {model}: written by {origin.get('by', 'smarthub')} at {origin.get('at', '?')} "
                f"(a pickle: loading it runs code from the file)")
    if _POLICY.enforce:
        raise ModelError(f"{model} was not written by smarthub in a models folder (no matching line in "
                         f"{record_path(model)}): it is a pickle, and loading it runs any code it holds; if you "
                         f"trust where it came from, run the command (or `smarthub app`) again with --trust")
    return (f"loaded {what} {model}: NOT written by smarthub — a pickle: loading it ran code from the file; "
            f"load only files you trust")


def announce(notice: str) -> None:
    """Print a `check_pickle` notice (stderr: it is about the run, not its result)."""
    print(notice, file=sys.stderr, flush=True)
