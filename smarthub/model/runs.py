"""Model history: every training run keeps its own folder; one promoted run is the model everything uses.

    models/runs/<run id>/           export.pkl, report.json (options, dataset fingerprint, validation images with
                                    their sha256 and prediction), confusion.png, history.csv; ids sort by time
    models/export.pkl, report.json, confusion.png, history.csv
                                    the promoted run's files (hard links, or copies where links do not work)
    models/promoted.json            the pointer: promoted run and the one before it (`promote PREVIOUS` = undo)
    models/runs/promotions.jsonl    one line per promotion (and per interrupted run folder discarded)

A promotion stages every file beside its target and keeps the current files as backups before renaming; an
error puts the backups back, and a promotion cut short by a crash is rolled back on the next use (the
`.promotion-in-progress.tmp` file names it, with the log line it writes), or finished when its pointer was
written: then its log line is written if the crash came first. Staged files of any interrupted promotion
are removed on the next use. The promoted model never changes on an error, and the log names every promotion
that promoted.json shows.
A first-version models folder (a bare export.pkl, no runs/) is adopted as a run on first use, nothing moved.
Imports nothing heavy: the app lists runs at start-up.

Over 400 lines on purpose: the promotion protocol (run folders, pointer, intent file, log, crash recovery) reads as
one piece; its crash tests cover exactly this module.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smarthub import staging, trust
from smarthub.atomicio import (append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, discard_temp,
                               read_json, read_jsonl)
from smarthub.errors import ModelError, SmartHubError
from smarthub.model.options import PROMOTE_POLICIES
from smarthub.workspace import Workspace

PREVIOUS = "PREVIOUS"
ARTEFACTS = ("export.pkl", "history.csv", "confusion.png", "report.json")  # report last: it completes a run
POINTER_NAME = "promoted.json"
INTENT_NAME = ".promotion-in-progress.tmp"
LOG_NAME = "promotions.jsonl"
LOCK_NAME = ".lock"  # in models/runs/
_ID_TIME = "%Y%m%dT%H%M%S"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RunInfo:
    """One run folder as listed: `problem` says what is wrong with a broken run (None when whole)."""

    run_id: str
    path: Path
    created_at: str
    arch: str
    size_px: int | None
    valid_accuracy: float | None
    n_valid: int | None
    model_bytes: int | None
    promoted: bool
    problem: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Two models' validation results on the images both held out (`comparable` False: `reason` says why)."""

    comparable: bool
    n_shared: int = 0
    new_correct: int = 0
    current_correct: int = 0
    same_set: bool = False
    reason: str = ""

    @property
    def new_accuracy(self) -> float:
        return self.new_correct / self.n_shared if self.n_shared else 0.0

    @property
    def current_accuracy(self) -> float:
        return self.current_correct / self.n_shared if self.n_shared else 0.0

    @property
    def not_worse(self) -> bool:
        return self.comparable and self.new_correct >= self.current_correct


@dataclass(frozen=True)
class RunOutcome:
    """What happened to a new run: recorded in `run_dir`, promoted or kept beside the promoted one."""

    run_id: str
    run_dir: Path
    policy: str
    promoted: bool
    previous: str | None
    comparison: Comparison | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_dir"] = str(self.run_dir)
        return out


# ---------------------------------------------------------------------------------------------------------
# Pure helpers

def new_run_id(arch: str, *, now: datetime, existing: Iterable[str] = ()) -> str:
    """`20261128T011530-mobilenet_v2` (UTC); `-2`, `-3`... when that id is taken. Sorts by time."""
    base = f"{now.astimezone(timezone.utc).strftime(_ID_TIME)}-{_UNSAFE.sub('_', arch or 'model').strip('._') or 'model'}"
    taken = set(existing)
    run_id, n = base, 1
    while run_id in taken:
        n += 1
        run_id = f"{base}-{n}"
    return run_id


def valid_image_records(paths: Sequence[Path], labels: Sequence[str], predicted: Sequence[str], *,
                        data_dir: Path, shas: Sequence[str]) -> list[dict[str, str]]:
    """One record per validation image: sha256 of its bytes (as training hashed them), path (relative to
    data_dir), label, prediction."""
    records = []
    for path, label, pred, sha in zip(paths, labels, predicted, shas, strict=True):
        path = Path(path)
        rel = path.relative_to(data_dir).as_posix() if path.is_relative_to(data_dir) else str(path)
        records.append({"sha256": str(sha), "path": rel, "label": str(label), "predicted": str(pred)})
    return records


def compare_reports(new: dict[str, Any], current: dict[str, Any]) -> Comparison:
    """Compare a new run with the promoted one on the validation images both held out (truth: the new labels).

    Reports without per-image records (first version) compare only when the data and the split are unchanged.
    """
    new_images, cur_images = new.get("valid_images"), current.get("valid_images")
    if isinstance(new_images, list) and isinstance(cur_images, list):
        try:
            truth = {r["sha256"]: r["label"] for r in new_images}
            new_pred = {r["sha256"]: r["predicted"] for r in new_images}
            cur_pred = {r["sha256"]: r["predicted"] for r in cur_images}
        except (KeyError, TypeError):
            return Comparison(False, reason="a report's list of validation images is malformed")
        shared = truth.keys() & cur_pred.keys()
        if not shared:
            return Comparison(False, reason="the two runs share no validation image (the data or the split changed)")
        return Comparison(True, n_shared=len(shared),
                          new_correct=sum(new_pred[s] == truth[s] for s in shared),
                          current_correct=sum(cur_pred[s] == truth[s] for s in shared),
                          same_set=truth.keys() == cur_pred.keys())
    keys = ("dataset_fingerprint", "split", "seed", "valid_pct", "n_valid")
    same_split = all(new.get(k) is not None and new.get(k) == current.get(k) for k in keys)
    accs = (new.get("valid_accuracy"), current.get("valid_accuracy"))
    if same_split and all(isinstance(a, (int, float)) for a in accs):
        n = int(new["n_valid"])
        return Comparison(True, n_shared=n, new_correct=round(accs[0] * n), current_correct=round(accs[1] * n),
                          same_set=True)
    return Comparison(False, reason="the promoted model's report does not list its validation images (trained by "
                                    "an older smarthub) and the data or the split changed since")


def describe(promoted: bool, *, run_id: str, policy: str, previous: str | None,
             comparison: Comparison | None) -> str:
    """The one line the user reads after training: promoted or kept, with both accuracies side by side."""
    figures = ""
    if comparison is not None and comparison.comparable:
        where = (f"the same {comparison.n_shared} validation images" if comparison.same_set
                 else f"the {comparison.n_shared} validation images both runs held out")
        figures = (f"validation accuracy {comparison.new_accuracy:.3f} (new) vs {comparison.current_accuracy:.3f} "
                   f"(promoted run {previous}) on {where}")
    elif comparison is not None:
        figures = f"cannot compare with the promoted run {previous}: {comparison.reason}"
    if promoted:
        if previous is None:
            return f"promoted run {run_id}: there was no promoted model"
        how = " (--promote always)" if policy == "always" else ""
        return f"promoted run {run_id}{how}: {figures}"
    why = " (--promote never)" if policy == "never" else ""
    return (f"kept run {run_id}, not promoted{why}" + (f": {figures}" if figures else "")
            + f"; `smarthub models promote {run_id}` uses it anyway")


# ---------------------------------------------------------------------------------------------------------
# Reading the history

def pointer_path(ws: Workspace) -> Path:
    return ws.models_dir / POINTER_NAME


def log_path(ws: Workspace) -> Path:
    return ws.runs_dir / LOG_NAME


def read_pointer(ws: Workspace) -> dict[str, Any] | None:
    """The promoted.json pointer ({run_id, previous, promoted_at}) or None when nothing was promoted yet."""
    path = pointer_path(ws)
    if not path.is_file():
        return None
    data = read_json(path, what="promotion pointer")
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        raise ModelError(f"{path} does not name a run: restore it with `smarthub models promote RUN`")
    return data


def _pointer_or_none(ws: Workspace) -> dict[str, Any] | None:
    """The pointer, or None when it is unreadable (listing and promoting by hand still work then)."""
    try:
        return read_pointer(ws)
    except SmartHubError:
        return None


def run_report(ws: Workspace, run_id: str) -> dict[str, Any]:
    """The report of a whole run. Raises ModelError: unknown run, deleted folder, bad report.json, no export.pkl."""
    run_dir = _run_dir(ws, run_id)
    if not run_dir.is_dir():
        raise ModelError(f"no run {run_id!r} in {ws.runs_dir} (deleted by hand?); `smarthub models` lists the runs")
    report, problem = _read_run(run_dir)
    if problem:
        raise ModelError(f"run {run_id} is broken: {problem}; promote another run (`smarthub models` lists them)")
    return report


def list_runs(ws: Workspace) -> list[RunInfo]:
    """Every run folder, oldest first (a first-version model is adopted as a run first); broken ones flagged."""
    if not _has_history(ws):
        return []
    with _locked(ws):
        _prepare(ws)
        pointer = _pointer_or_none(ws)
        promoted_id = pointer["run_id"] if pointer else None
        if not ws.runs_dir.is_dir():
            return []
        return [_info(d, promoted=d.name == promoted_id) for d in sorted(ws.runs_dir.iterdir())
                if d.is_dir() and not d.name.startswith(".")]


def promotion_log(ws: Workspace) -> list[dict[str, Any]]:
    """The promotions so far, oldest first."""
    return list(read_jsonl(log_path(ws)))


def current_report(ws: Workspace) -> dict[str, Any] | None:
    """The promoted model's report (models/report.json), None when there is no model. Raises on a bad file."""
    if not ws.export_path.is_file():
        return None
    path = ws.report_path
    if not path.is_file():  # an adopted first-version model without a report: its run has a stand-in
        pointer = _pointer_or_none(ws)
        path = ws.runs_dir / pointer["run_id"] / "report.json" if pointer else path
    if not path.is_file():
        raise ModelError(f"{ws.report_path} is missing beside {ws.export_path}: promote a run again "
                         f"(`smarthub models promote RUN`)")
    report = read_json(path, what="training report")
    if not isinstance(report, dict):
        raise ModelError(f"{ws.report_path} is not a training report: promote a run again")
    return report


def _run_dir(ws: Workspace, run_id: str) -> Path:
    if not run_id or run_id != Path(run_id).name or run_id.startswith("."):
        raise ModelError(f"{run_id!r} is not a run id; `smarthub models` lists the runs")
    return ws.runs_dir / run_id


def _read_run(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """(report or {}, what is wrong with the run or None)."""
    if not (run_dir / "report.json").is_file():
        return {}, "report.json is missing"
    try:
        report = read_json(run_dir / "report.json", what="run report")
    except SmartHubError as e:
        return {}, str(e)
    if not isinstance(report, dict):
        return {}, f"{run_dir / 'report.json'} is not a training report"
    if not (run_dir / "export.pkl").is_file():
        return report, "export.pkl is missing"
    return report, None


def _info(run_dir: Path, *, promoted: bool) -> RunInfo:
    report, problem = _read_run(run_dir)
    export = run_dir / "export.pkl"
    acc = report.get("valid_accuracy")
    return RunInfo(run_id=run_dir.name, path=run_dir, created_at=str(report.get("created_at") or ""),
                   arch=str(report.get("arch") or "?"),
                   size_px=report.get("size_px") if isinstance(report.get("size_px"), int) else None,
                   valid_accuracy=float(acc) if isinstance(acc, (int, float)) else None,
                   n_valid=report.get("n_valid") if isinstance(report.get("n_valid"), int) else None,
                   model_bytes=export.stat().st_size if export.is_file() else None,
                   promoted=promoted, problem=problem)


# ---------------------------------------------------------------------------------------------------------
# Writing: a new run, a promotion, adoption of the first-version layout, recovery

def prepare(ws: Workspace) -> None:
    """Before any use: roll back a promotion a crash cut short, then adopt a first-version model as a run."""
    if _has_history(ws):
        with _locked(ws):
            _prepare(ws)


def _has_history(ws: Workspace) -> bool:
    """Runs, or a first-version model to adopt (otherwise reading creates nothing)."""
    return ws.runs_dir.is_dir() or ws.export_path.is_file()


def _prepare(ws: Workspace) -> None:
    _recover(ws)
    _discard_interrupted_runs(ws)
    _adopt_first_version(ws)
    _reconcile_log(ws)


def _reconcile_log(ws: Workspace) -> None:
    """Write the log line of a promotion whose process stopped after the pointer and before its line."""
    pointer = _pointer_or_none(ws)
    if pointer is None:
        return
    last = _last_promotion(ws)
    if last is not None and last.get("run_id") == pointer["run_id"]:
        return
    append_jsonl(log_path(ws), {"at": pointer.get("promoted_at") or staging.now(), "run_id": pointer["run_id"],
                                "previous": pointer.get("previous"),
                                "reason": "recorded on the next use (the process that promoted it stopped "
                                          "before writing this line)"})


def _discard_interrupted_runs(ws: Workspace) -> None:
    """Remove the hidden `.<run id>.partial` folders of runs whose writer died before the folder was renamed
    into place. Called under the history lock, which every writer holds from making such a folder to renaming
    it, so none of them is still being written. They hold only files training wrote (never a user's image),
    were never listed or promoted, and each is noted in the promotions log."""
    if not ws.runs_dir.is_dir():
        return
    for partial in sorted(ws.runs_dir.glob(".*.partial")):
        if not partial.is_dir():
            continue
        try:
            staging.discard(partial)
        except OSError:
            continue  # tried again on the next use; it is never listed meanwhile
        append_jsonl(log_path(ws), {"at": staging.now(), "discarded": partial.name,
                                    "reason": "discarded an interrupted training run (its process stopped before "
                                              "the run folder was complete)"})


@contextlib.contextmanager
def _locked(ws: Workspace) -> Iterator[None]:
    """One writer of the history at a time (the app's Train and Promote buttons, a CLI in another shell)."""
    try:
        ws.runs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(ws.runs_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise SmartHubError(f"cannot open {ws.runs_dir / LOCK_NAME}: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def record_run(ws: Workspace, report: dict[str, Any], *, save_export: Callable[[Path], object], history_csv: str,
               confusion_png: bytes, policy: str = "if-better") -> RunOutcome:
    """Write a finished run into models/runs/<run id>/ and promote it by `policy` (see PROMOTE_POLICIES).

    `save_export(path)` writes export.pkl (e.g. learn.export). `report["run_id"]` is set. The run folder
    appears whole or not at all (written hidden, then renamed). Raises SmartHubError when a file cannot be
    written; the promoted model is unchanged then.
    """
    if policy not in PROMOTE_POLICIES:
        raise SmartHubError(f"--promote must be one of {', '.join(PROMOTE_POLICIES)} (got {policy!r})")
    with _locked(ws):
        _prepare(ws)
        # the id is the run's start time (reports before it have only the time they were written)
        created = (_parse_time(report.get("started_at")) or _parse_time(report.get("created_at"))
                   or datetime.now(timezone.utc))
        existing = [p.name for p in ws.runs_dir.iterdir()] if ws.runs_dir.is_dir() else []
        run_id = new_run_id(str(report.get("arch") or "model"), now=created,
                            existing=[n.lstrip(".").removesuffix(".partial") for n in existing])
        report["run_id"] = run_id
        run_dir = ws.runs_dir / run_id
        partial = staging.beside(run_dir, token=False)
        try:
            partial.mkdir(parents=True)
        except OSError as e:
            raise SmartHubError(f"cannot create {partial}: {e.strerror or e}") from e
        try:
            trust.save_model(partial / "export.pkl", save_export)
            atomic_write_text(partial / "history.csv", history_csv)
            atomic_write_bytes(partial / "confusion.png", confusion_png)
            atomic_write_json(partial / "report.json", report)
            try:
                staging.put_in_place(partial, run_dir)
            except OSError as e:
                raise SmartHubError(f"cannot write {run_dir}: {e.strerror or e}") from e
        except SmartHubError:
            # an empty staged folder goes; a partly written one stays hidden (never listed, never promoted)
            staging.discard_if_empty(partial)
            raise
        return _decide(ws, run_id, report, policy=policy)


def _decide(ws: Workspace, run_id: str, report: dict[str, Any], *, policy: str) -> RunOutcome:
    pointer = read_pointer(ws)
    previous = pointer["run_id"] if pointer else None
    current_id = previous if ws.export_path.is_file() else None  # promoted files deleted: nothing to compare
    comparison: Comparison | None = None
    if current_id is not None:
        try:
            current = current_report(ws)
        except SmartHubError as e:
            current, comparison = None, Comparison(False, reason=str(e))
        if current is not None:
            comparison = compare_reports(report, current)
    if policy == "never":
        promote_it = False
    elif current_id is None or policy == "always":
        promote_it = True
    else:
        promote_it = comparison is not None and comparison.not_worse
    message = describe(promote_it, run_id=run_id, policy=policy, previous=current_id, comparison=comparison)
    if promote_it:
        _switch(ws, run_id, previous=previous, reason=f"{policy}: {message}")
    return RunOutcome(run_id=run_id, run_dir=ws.runs_dir / run_id, policy=policy, promoted=promote_it,
                      previous=current_id, comparison=comparison, message=message)


def promote(ws: Workspace, run_id: str) -> str:
    """Make run `run_id` (or PREVIOUS: the one promoted before the current one) the promoted model.

    Returns a one-line summary. Raises ModelError (unknown, deleted or broken run; nothing to undo);
    SmartHubError when a file cannot be written. On any error the promoted model is unchanged.
    """
    with _locked(ws):
        _prepare(ws)
        pointer = _pointer_or_none(ws)
        current = pointer["run_id"] if pointer else None
        if run_id == PREVIOUS:
            run_id = (pointer or {}).get("previous") or ""
            if not run_id:
                raise ModelError("no previous promotion to go back to; `smarthub models` lists the runs")
        run_report(ws, run_id)
        if run_id == current:
            return f"run {run_id} is already the promoted model"
        _switch(ws, run_id, previous=current, reason="promoted by hand")
    back = f"; undo with `smarthub models promote {current}`" if current else ""
    return f"promoted run {run_id} to {ws.export_path}{back}"


def _switch(ws: Workspace, run_id: str, *, previous: str | None, reason: str) -> None:
    """Replace the promoted files with run `run_id`'s, all or nothing, then move the pointer (the commit point),
    then note the promoted model as written by smarthub and append the log line.

    Until the end (or a completed roll-back) the intent and the backups stay on disk: a crash before the
    pointer is rolled back by the next `prepare`, one after it is finished (trust record, log line).
    """
    run_dir = ws.runs_dir / run_id
    models = ws.models_dir
    settled = False
    log_line = {"at": staging.now(), "run_id": run_id, "previous": previous, "reason": reason}
    old_pointer = pointer_path(ws).read_bytes() if pointer_path(ws).is_file() else None
    try:
        staged, backups = staging.stage_files(run_dir, models, ARTEFACTS)
        atomic_write_json(models / INTENT_NAME, {"run_id": run_id, "names": list(ARTEFACTS), "log": log_line})
        done: list[str] = []
        try:
            # a file the run lacks is set aside: the old one must not pass for the new run's
            staging.replace_files(models, ARTEFACTS, staged, done)
            _write_pointer(ws, run_id, previous=previous)  # the promotion's commit point
        except (OSError, SmartHubError) as e:
            try:
                staging.restore_files(models, done, backups)
                _restore_pointer(ws, run_id, old_pointer)
            except (OSError, SmartHubError) as e2:
                raise SmartHubError(f"cannot promote run {run_id}: {e}; putting the previous files back failed "
                                    f"too ({getattr(e2, 'strerror', None) or e2}): run `smarthub models` to "
                                    f"finish") from e
            settled = True
            raise SmartHubError(f"cannot promote run {run_id}: {e}; the promoted model is unchanged") from e
        try:
            _finish_promotion(ws, run_id, log_line)
        except (OSError, SmartHubError) as e:  # the intent stays: the next use finishes the record
            raise SmartHubError(f"promoted run {run_id}, but recording it failed ({e}); the next `smarthub "
                                f"models` finishes that") from e
        settled = True
    except OSError as e:
        settled = True  # failed while staging: nothing was replaced yet
        raise SmartHubError(f"cannot promote run {run_id}: {e.strerror or e}; the promoted model is unchanged") from e
    finally:
        if settled:
            _discard_promotion_temps(models)


def _finish_promotion(ws: Workspace, run_id: str, log_line: dict[str, Any]) -> None:
    """After the pointer names `run_id`: the promoted link of a run's export.pkl that smarthub wrote loads
    without --trust too, and the log's last promotion is this one (each written once, also when redone)."""
    promoted = ws.models_dir / "export.pkl"
    if (trust.written_by_smarthub(ws.runs_dir / run_id / "export.pkl") is not None and promoted.is_file()
            and trust.written_by_smarthub(promoted) is None):
        trust.record_written(promoted)
    if _last_promotion(ws) != log_line:
        append_jsonl(log_path(ws), log_line)


def _last_promotion(ws: Workspace) -> dict[str, Any] | None:
    """The log's last promotion line (lines of discarded runs left out), None when there is none."""
    return next((r for r in reversed(promotion_log(ws)) if isinstance(r, dict) and "run_id" in r), None)


def _restore_pointer(ws: Workspace, run_id: str, old: bytes | None) -> None:
    """After a failed promotion: the pointer goes back to what it was if the promotion had already moved it."""
    current = _pointer_or_none(ws)
    if current is None or current.get("run_id") != run_id:
        return
    if old is None:  # there was none: it goes
        staging.discard_file(pointer_path(ws))
    else:
        atomic_write_bytes(pointer_path(ws), old)


def _discard_promotion_temps(models: Path) -> None:
    staging.discard_file_temps(models, ARTEFACTS)
    discard_temp(models / INTENT_NAME)
    # the temporary files of atomic writes a kill cut short (only writers holding the history lock make them)
    for name in (POINTER_NAME, INTENT_NAME):
        for temp in models.glob(f".{name}.*.tmp"):
            discard_temp(temp)


def _recover(ws: Workspace) -> None:
    """Roll back a promotion that a crash cut short, or finish it (its log line) when its pointer was written;
    remove the staged files of one that died before writing its intent."""
    models = ws.models_dir
    intent_path = models / INTENT_NAME
    if not intent_path.is_file():
        _discard_promotion_temps(models)  # died while staging: nothing was replaced yet
        return
    try:
        intent = read_json(intent_path, what="promotion journal")
        pointer = read_pointer(ws) if pointer_path(ws).is_file() else None
    except SmartHubError:
        intent, pointer = {}, None
    if pointer and isinstance(intent, dict) and pointer.get("run_id") == intent.get("run_id"):
        line = intent.get("log")  # committed (the pointer was written): finish its record
        if isinstance(line, dict):
            _finish_promotion(ws, str(intent["run_id"]), line)
    else:
        names = intent.get("names", ARTEFACTS) if isinstance(intent, dict) else ARTEFACTS
        backups = {n: staging.temp_of(models, n, staging.PREVIOUS) for n in names
                   if staging.temp_of(models, n, staging.PREVIOUS).is_file()}
        try:
            staging.restore_files(models, [n for n in names if n in ARTEFACTS], backups)
        except OSError as e:
            raise SmartHubError(f"cannot finish rolling back an interrupted promotion in {models}: "
                                f"{e.strerror or e}") from e
    _discard_promotion_temps(models)


def _adopt_first_version(ws: Workspace) -> None:
    """A models folder from the first version (export.pkl, no pointer) becomes a run; nothing is moved."""
    if pointer_path(ws).exists() or not ws.export_path.is_file():
        return
    try:
        report = read_json(ws.report_path, what="training report") if ws.report_path.is_file() else None
    except SmartHubError:
        report = None
    if not isinstance(report, dict):
        report = {"arch": "unknown", "note": "adopted from a first-version models folder without a readable "
                                             "report.json"}
    created = (_parse_time(report.get("created_at"))
               or datetime.fromtimestamp(ws.export_path.stat().st_mtime, timezone.utc))
    run_id = new_run_id(str(report.get("arch") or "model"), now=created)
    run_dir = ws.runs_dir / run_id
    if not run_dir.is_dir():  # a crash after the folder was made but before the pointer: reuse it
        partial = staging.beside(run_dir, token=False)
        try:
            partial.mkdir(parents=True, exist_ok=True)
            for name in ARTEFACTS[:-1]:
                if (ws.models_dir / name).is_file() and not (partial / name).exists():
                    staging.link_or_copy(ws.models_dir / name, partial / name)
            atomic_write_json(partial / "report.json", {**report, "run_id": run_id, "adopted": True})
            staging.put_in_place(partial, run_dir)
        except OSError as e:
            raise SmartHubError(f"cannot adopt {ws.export_path} as a run in {run_dir}: {e.strerror or e}; "
                                f"the model is unchanged") from e
    _write_pointer(ws, run_id, previous=None)
    append_jsonl(log_path(ws), {"at": staging.now(), "run_id": run_id, "previous": None,
                                "reason": f"adopted the first-version model {ws.export_path}"})


def _write_pointer(ws: Workspace, run_id: str, *, previous: str | None) -> None:
    atomic_write_json(pointer_path(ws), {"run_id": run_id, "previous": previous, "promoted_at": staging.now()})


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
