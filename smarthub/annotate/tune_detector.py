"""`train-detector --tune N`: Ultralytics' own genetic tuner searches the detector's learning rate, augmentation
strength and image size on the validation split, then the final detector is trained with the best settings.

The search is Ultralytics' `Tuner` (what `YOLO.tune()` runs; YOLOv5's `--evolve`, which the livestock work used,
carried on): the first trial is the default recipe, each next one mutates the best trials so far, and every
trial is a real training run (a subprocess of Ultralytics' own CLI) scored by its fitness, the validation
mAP50-95. A trial that fails is recorded as failed (fitness 0) and the search goes on. smarthub adds: a space
checked before anything runs, image sizes kept to multiples of the stride, the time budget shared between the
trials and the final run, and the record: `tune-trials.csv` (every trial: state, fitness, mAP, settings,
seconds, note) and `tune-trials.png` in the promoted run's folder, with Ultralytics' own output in `tune.log`.

No trial time is thrown away: the best trial's weights (Ultralytics' trial `weights/best.pt`, kept as smarthub's
file before the tuner cleans the trial up) are where the final run starts, for the rest of the budget, and they
are a candidate themselves: both are measured on the validation split the way train_detector measures a run, and
the better one is put in use (run.json's "tuning" says which and why; a tie keeps the trial's). Trial 1 is the
default recipe, so a tuned detector is never worse on validation than a default run of a trial's length.
The previous detector stays in use when no trial completes or anything fails before the decision.

Over 400 lines on purpose: one job, the search around Ultralytics' Tuner (its space, the budget, the subclass that
records each trial and keeps the best one's weights, the descriptor-level output redirection its subprocess
trials need) and its record; the run folder written from the trial's weights is annotate/weights_run.py.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smarthub import staging, trust
from smarthub.annotate.detect import RUN_FILE, import_ultralytics
from smarthub.annotate.detset import check_not_nested, scan_labelme_dir
from smarthub.annotate.export import dataset_split
from smarthub.annotate.options import DetectorTrainOptions
from smarthub.annotate.split import SPLITS
from smarthub.annotate.starts import backbone_yaml, choose_start
from smarthub.annotate.train_detector import (
    EPOCHS_FILE,
    LATEST_FILE,
    MAX_EPOCHS,
    DetectorRun,
    TrainingStopped,
    TrainProgress,
    _ultralytics_device,
    _ultralytics_output_to,
    check_trainable,
    detectors_dir,
    fold_imagenet_normalisation,
    train_detector,
    write_yolo_tree,
)
from smarthub.atomicio import atomic_write_bytes, atomic_write_json, atomic_write_text
from smarthub.errors import DatasetError, OptionError, SmartHubError
from smarthub.model.devices import resolve_device
from smarthub.annotate.weights_run import evaluate_weights, write_weights_run
from smarthub.trials import best_trial, choose_promoted, csv_text
from smarthub.trials import trials_png as plot_trials

STRIDE_PX = 32  # Ultralytics rounds image sizes up to a multiple of the detector's largest stride
AUGMENTATIONS = ("scale", "translate", "mosaic")  # Ultralytics' own names: zoom ±, shift ±, mosaic probability
AUGMENTATION_LIMITS = {"scale": (0.0, 0.95), "translate": (0.0, 0.9), "mosaic": (0.0, 1.0)}
AUGMENTATION_DEFAULTS = {"scale": 0.5, "translate": 0.1, "mosaic": 1.0}  # = Ultralytics' defaults (trial 1)
TRIAL_COLUMNS = ("trial", "state", "fitness", "map50", "map50_95", "lr0", "imgsz", *AUGMENTATIONS, "seconds", "note")
TRIALS_CSV, TRIALS_PNG, TUNE_LOG = "tune-trials.csv", "tune-trials.png", "tune.log"
MIN_FINAL_SHARE = 0.5  # a final run shorter than half a trial's share of the budget is not started


@dataclass(frozen=True)
class DetectorTuneSpace:
    """Where the genetic search looks: a learning-rate range (AdamW's lr0), image sizes (multiples of 32
    between the two bounds) and a range per augmentation strength (`AUGMENTATIONS`). Raises SmartHubError when it
    holds no valid point."""

    lr0: tuple[float, float] = (1e-4, 1e-2)
    imgsz: tuple[int, int] = (160, 480)
    augment: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(AUGMENTATION_LIMITS))

    def __post_init__(self) -> None:
        problems = []
        low, high = self.lr0
        if not 0 < low <= high < 1:
            problems.append(f"learning rates {low:g}..{high:g} (need 0 < low <= high < 1)")
        if not self.sizes():
            problems.append(f"image sizes {self.imgsz[0]}..{self.imgsz[1]} px (need a multiple of {STRIDE_PX} "
                            f"between them, from {STRIDE_PX} px)")
        for name, (a, b) in self.augment.items():
            limit = AUGMENTATION_LIMITS.get(name)
            if limit is None:
                problems.append(f"augmentation {name!r} (tunable: {', '.join(AUGMENTATIONS)})")
            elif not limit[0] <= a <= b <= limit[1]:
                problems.append(f"{name} {a:g}..{b:g} (valid: {limit[0]:g} to {limit[1]:g}, low <= high)")
        if problems:
            raise SmartHubError("the tuning space has no valid point: " + "; ".join(problems))

    def sizes(self) -> list[int]:
        """The image sizes the search may try."""
        low = max(STRIDE_PX, math.ceil(self.imgsz[0] / STRIDE_PX) * STRIDE_PX)
        return list(range(low, int(self.imgsz[1]) + 1, STRIDE_PX))

    def bounds(self) -> dict[str, tuple[float, float]]:
        """The space as Ultralytics' Tuner takes it: {argument: (min, max)}."""
        sizes = self.sizes()
        return {"lr0": tuple(self.lr0), "imgsz": (sizes[0], sizes[-1]),
                **{k: tuple(v) for k, v in self.augment.items()}}


def default_space(options: DetectorTrainOptions) -> DetectorTuneSpace:
    """The default search around `options`: lr0 1e-4..1e-2, half to one and a half times its image size."""
    return DetectorTuneSpace(imgsz=(max(STRIDE_PX, options.imgsz // 2), options.imgsz * 3 // 2))


@dataclass(frozen=True)
class DetectorTrial:
    """One trial as recorded: its settings, state (complete or failed), fitness (validation mAP50-95), mAPs."""

    number: int
    state: str
    fitness: float | None
    map50: float | None
    map50_95: float | None
    settings: dict[str, float]
    seconds: float
    note: str = ""


@dataclass
class DetectorTuneResult:
    """The trials, the best settings found, and the run now in use: the final run (trained on from the best
    trial's weights) or the best trial's own model, whichever is better on validation (`promoted`: 'final' or
    'trial'); `final_run` is the final run's folder (None when it did not run or failed)."""

    trials: list[DetectorTrial]
    best: dict[str, float]
    run: DetectorRun
    files: list[str] = field(default_factory=list)
    promoted: str = "final"
    final_run: Path | None = None


def check_trials(trials: int) -> int:
    """`--tune N`: N trials, at least 1."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise OptionError(f"{{tune}} needs a number of trials of 1 or more (got {trials!r})", field="tune",
                          owner=DetectorTrainOptions)
    return trials


def auto_lr0(n_classes: int) -> float:
    """The learning rate Ultralytics' `optimizer=auto` gives AdamW on small data (its lr0 fit): trial 1's."""
    return round(0.002 * 5 / (4 + n_classes), 6)


def tune_detector(labelme_dir: Path, models_dir: Path, options: DetectorTrainOptions, *, trials: int,
                  space: DetectorTuneSpace | None = None,
                  progress: Callable[[TrainProgress], None] | None = None) -> DetectorTuneResult:
    """Run `trials` trials of Ultralytics' genetic search over `space` (default: `default_space(options)`) on the
    split `train_detector` uses, then train the final detector on from the best trial's weights with its settings,
    and put in use the better on validation of the two (the best trial's model also when the final run fails or the
    budget left is too short for one), with the trials in its run folder. With a time budget (no `options.epochs`)
    each trial gets a share of 1/(N+1) and the final run what the trials left.

    Raises SmartHubError for N < 1, a space with no valid point, the torchvision backend, and when no trial
    completes (nothing written, the previous detector stays); DatasetError/ModelError as train_detector does. On any
    error the detector in use (latest.json) is unchanged.
    """
    started = time.monotonic()
    check_trials(trials)
    space = space or default_space(options)
    if options.backend != "ultralytics":
        raise SmartHubError(f"--tune searches with Ultralytics' tuner: --model {options.model} is a torchvision "
                            f"detector; use --model auto, a YOLO .pt/.yaml or a torchvision backbone")
    say = progress or (lambda _p: None)
    labelme_dir, models_dir = Path(labelme_dir), Path(models_dir)
    if not labelme_dir.is_dir():
        raise DatasetError(f"Labelme folder not found: {labelme_dir}")
    runs = detectors_dir(models_dir)
    check_not_nested(labelme_dir, runs, what="models folder")
    dataset = scan_labelme_dir(labelme_dir)
    check_trainable(dataset)
    record = dataset_split(dataset, split=options.split, seed=options.seed)
    splits = {s: [it for it in dataset.items if record.assignments[it.key] == s] for s in SPLITS}
    if not splits["val"]:
        raise DatasetError("the validation split is empty (too few images): trials could not be scored; label more "
                           "images or give --split a validation share")
    start = choose_start(options.model)
    share_s = None if options.epochs is not None else options.budget_s / (trials + 1)
    length = {"epochs": options.epochs} if share_s is None else {"epochs": MAX_EPOCHS, "time": share_s / 3600}
    names = dataset.names
    recipe = {"optimizer": "AdamW", "momentum": 0.9, "warmup_bias_lr": 0.0}  # what optimizer=auto picks here
    scratch = runs / ".cache" / f"tune-{secrets.token_hex(3)}"
    records: list[DetectorTrial] = []
    stopped = ""
    try:
        data_yaml = write_yolo_tree(scratch / "dataset", {"train": splits["train"], "val": splits["val"]}, names)
        say(TrainProgress("start", text=f"tuning: {trials} trials of Ultralytics' genetic search (lr0, image size, "
                                        f"{', '.join(space.augment)}), then the final detector; "
                                        + (f"{options.epochs} epochs each" if share_s is None
                                           else f"about {share_s:.0f} s each")))
        log_path = scratch / TUNE_LOG
        with _ultralytics_output_to(log_path) as outside, _fds_to(log_path) as outside_fds:
            report = outside(outside_fds(say))
            YOLO = import_ultralytics(runs / ".cache" / "ultralytics")
            spec = start.model
            if start.kind == "backbone":
                spec = str(scratch / start.model)
                Path(spec).write_text(backbone_yaml(start, len(names)), encoding="utf-8")
            model = YOLO(spec)
            if start.kind == "backbone":  # the trials start from the network train_detector folds in
                fold_imagenet_normalisation(_Holder(model.model))
            initial = {"lr0": auto_lr0(len(names)), "imgsz": options.imgsz, **AUGMENTATION_DEFAULTS}
            args = {**model.overrides, "data": str(data_yaml), "batch": options.batch, "workers": 0,
                    "device": _ultralytics_device(resolve_device(options.device)), "plots": False, "val": True,
                    "amp": False, "project": str(scratch), "verbose": False, "seed": options.seed,
                    "deterministic": True, "patience": options.patience or MAX_EPOCHS * 10, "nbs": options.batch,
                    **options.ultralytics_args, **recipe, **length,
                    **{k: initial[k] for k in space.bounds()}, "mode": "train", "space": space.bounds()}
            tuner = _recording_tuner()(args=args, model=model.model, _callbacks=model.callbacks)
            trials_end = None if share_s is None else time.monotonic() + share_s * trials
            tuner.setup_record(records, report, log_path, trials, deadline=trials_end, keep_dir=scratch / "kept")
            try:
                tuner(iterations=trials)
            except RuntimeError as e:  # Ultralytics' mutation found no new point: the space is used up
                stopped = f"the search stopped after {len(records)} of {trials} trials: {str(e).splitlines()[0]}"
                report(TrainProgress("trial", text=stopped))
        top = best_trial(records, score=lambda t: t.fitness if t.state == "complete" else None,
                         seconds=lambda t: t.seconds, kept="nothing was written, the previous detector stays")
        best = dict(top.settings)
        kept = tuner.kept_weights(top.number)
        final_options = replace(options, model=str(kept), imgsz=int(best["imgsz"]),
                                ultralytics_args={**options.ultralytics_args, **recipe,
                                                  **{k: v for k, v in best.items() if k != "imgsz"}})
        trial_eval = evaluate_weights(kept, splits["val"], names, final_options,
                                      config_dir=runs / ".cache" / "ultralytics")
        left_s = None if share_s is None else options.budget_s - (time.monotonic() - started)
        final, why_not = None, ""
        if left_s is not None and left_s < MIN_FINAL_SHARE * share_s:
            why_not = f"the budget left ({left_s:.0f} s) is too short for a final run"
        else:
            say(TrainProgress("start", text=f"best: trial {top.number}, validation mAP50-95 {top.fitness:.3f} "
                                            f"({_settings_words(best)}); training the final detector on from its "
                                            f"weights" + ("" if left_s is None else f" for {left_s:.0f} s")))
            try:
                # the weights are trained already: no second warm-up from a zero learning rate
                final = train_detector(labelme_dir, models_dir, replace(
                    final_options, budget=left_s or options.budget,
                    ultralytics_args={**final_options.ultralytics_args, "warmup_epochs": 0}), progress=progress,
                    promote=False)
            except TrainingStopped:
                raise
            except SmartHubError as e:  # the trial's model is a finished detector: it is kept (said below)
                why_not = f"the final run failed ({str(e).splitlines()[0][:300]})"
        choice = choose_promoted(trial_eval.map50_95, None if final is None else final.map50_95, metric="mAP50-95",
                                 why_not=why_not)
        say(TrainProgress("start", text=choice.line))
        if choice.promoted == "final":
            run = final
        else:
            run = write_weights_run(labelme_dir, models_dir, replace(final_options, model=options.model),
                                    weights=kept, names=names, evaluation=trial_eval, splits=splits,
                                    reason=f"trial {top.number} of the search ({top.seconds:.0f} s)", record=record,
                                    start=start, epochs_csv=tuner.kept_epochs(top.number))
        files = write_tune_record(run.run_dir, records, best=best, log=log_path,
                                  promoted={**choice.to_json(), "best_trial": top.number,
                                            "final_run": None if final is None else final.run_dir.name})
        atomic_write_json(runs / LATEST_FILE, {"run": run.run_dir.name})  # the decision's commit point
    finally:
        if scratch.exists():
            staging.discard(scratch)
    completed = sum(t.state == "complete" for t in records)
    run.notes.append(f"tuned: {completed} of {len(records)} trials completed, best trial {top.number} "
                     f"({_settings_words(best)}); trials in {run.run_dir / TRIALS_CSV}"
                     + (f"; {stopped}" if stopped else ""))
    run.notes.append(choice.line)
    return DetectorTuneResult(trials=records, best=best, run=run, files=files, promoted=choice.promoted,
                              final_run=None if final is None else final.run_dir)


@dataclass
class _Holder:
    """What fold_imagenet_normalisation reads from a trainer: the model (and no EMA copy)."""

    model: Any
    ema: Any = None


def _recording_tuner() -> type:
    """Ultralytics' Tuner with image sizes kept to stride multiples, and each trial timed and recorded as it ends."""
    from ultralytics.engine.tuner import Tuner

    class RecordingTuner(Tuner):
        def setup_record(self, records: list[DetectorTrial], report: Callable[[TrainProgress], None],
                         log_path: Path, total: int, *, deadline: float | None, keep_dir: Path) -> None:
            self.records, self.report, self.log_path, self.total = records, report, log_path, total
            self.trial_started, self.log_offset, self.deadline = time.monotonic(), 0, deadline
            self.keep_dir, self.kept = keep_dir, None

        def kept_weights(self, number: int) -> Path:
            """The weights of trial `number` (the best one), kept as smarthub's file before Ultralytics cleans up."""
            if self.kept != number:
                raise SmartHubError(f"the weights of trial {number} were not kept (see {TUNE_LOG}); nothing was "
                                    f"written, the previous detector stays")
            return self.keep_dir / "weights.pt"

        def kept_epochs(self, number: int) -> Path | None:
            path = self.keep_dir / EPOCHS_FILE
            return path if self.kept == number and path.is_file() else None

        def _keep(self, trial: DetectorTrial, result: dict) -> None:
            """Copy the trial's best.pt (else last.pt) and results.csv when it is the best trial so far: the final
            run trains on from them, and they are a candidate themselves."""
            done = [t for t in self.records if t.state == "complete"]
            if trial.state != "complete" or best_trial(done, score=lambda t: t.fitness, seconds=lambda t: t.seconds,
                                                       kept="") is not trial:
                return
            save_dir = Path(next(iter(result.get("save_dirs", {}).values()), ""))
            found = [save_dir / "weights" / n for n in ("best.pt", "last.pt") if (save_dir / "weights" / n).is_file()]
            if not found:
                return
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            trust.save_model(self.keep_dir / "weights.pt", lambda tmp: shutil.copyfile(found[0], tmp))
            if (save_dir / "results.csv").is_file():
                atomic_write_bytes(self.keep_dir / EPOCHS_FILE, (save_dir / "results.csv").read_bytes())
            self.kept = trial.number

        def _constrain(self, hyp: dict[str, float]) -> dict[str, float]:
            hyp = super()._constrain(hyp)
            if "imgsz" in hyp:
                low, high = self.space["imgsz"][:2]
                hyp["imgsz"] = int(min(max(round(hyp["imgsz"] / STRIDE_PX) * STRIDE_PX, low), high))
            return hyp

        def _mutate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            longest = max((t.seconds for t in self.records), default=0.0)
            if self.deadline is not None and self.records and time.monotonic() + longest > self.deadline:
                # a trial is a subprocess: its start-up and last validation run past its training time
                raise RuntimeError(f"the trials' share of the budget is used (a trial took up to {longest:.0f} s "
                                   f"here)")
            self.trial_started = time.monotonic()
            self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            return super()._mutate(*args, **kwargs)

        def _save_local_result(self, result: dict) -> None:
            super()._save_local_result(result)
            trial = trial_from_result(result, seconds=time.monotonic() - self.trial_started,
                                      log_tail=_read_from(self.log_path, self.log_offset))
            self.records.append(trial)
            self._keep(trial, result)
            self.report(TrainProgress("trial", text=trial_line(trial, self.total)))

    return RecordingTuner


def trial_from_result(result: dict, *, seconds: float, log_tail: str = "") -> DetectorTrial:
    """One trial from a record of Ultralytics' tune_results.ndjson (pure); a failed one's note is the last error
    line of its output (`log_tail`)."""
    metrics = next(iter(result.get("datasets", {}).values()), None) or {}
    failed = bool(result.get("failed_datasets")) or not metrics
    note = ""
    if failed:
        errors = [ln.strip() for ln in log_tail.splitlines() if "Error" in ln or "error:" in ln]
        note = (errors[-1][:300] if errors else "the trial's training run failed") + f" (see {TUNE_LOG})"
    hyp = {k: (int(v) if k == "imgsz" else float(v)) for k, v in result.get("hyperparameters", {}).items()}
    return DetectorTrial(number=int(result.get("iteration", 0)), state="failed" if failed else "complete",
                         fitness=None if failed else float(result.get("fitness", 0.0)),
                         map50=None if failed else _metric(metrics, "metrics/mAP50(B)"),
                         map50_95=None if failed else _metric(metrics, "metrics/mAP50-95(B)"),
                         settings=hyp, seconds=round(seconds, 2), note=note)


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _settings_words(settings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3g}" if k != "imgsz" else f"{int(v)} px" for k, v in settings.items())


def trial_line(t: DetectorTrial, total: int) -> str:
    """One line per trial for the terminal and the app."""
    score = "—" if t.fitness is None else f"{t.fitness:.3f}"
    return (f"trial {t.number}/{total}: {t.state}, validation mAP50-95 {score} ({_settings_words(t.settings)}) "
            f"{t.seconds:.0f}s" + (f": {t.note}" if t.note else ""))


def trials_csv(trials: Sequence[DetectorTrial]) -> str:
    """The trials as CSV text (TRIAL_COLUMNS)."""
    def cell(v: float | None) -> Any:
        return "" if v is None else round(v, 5)

    return csv_text(TRIAL_COLUMNS, ([t.number, t.state, cell(t.fitness), cell(t.map50), cell(t.map50_95),
                                     *[t.settings.get(k, "") for k in ("lr0", "imgsz", *AUGMENTATIONS)], t.seconds,
                                     t.note] for t in trials))


def trials_png(trials: Sequence[DetectorTrial]) -> bytes:
    """Validation mAP50-95 per trial (failed trials marked at the bottom) and the best so far."""
    return plot_trials([(t.number, t.fitness, t.state) for t in trials], ylabel="validation mAP50-95 (fitness)",
                       title="detector tuning trials")


def write_tune_record(run_dir: Path, trials: Sequence[DetectorTrial], *, best: dict[str, float],
                      log: Path | None = None, promoted: dict[str, Any] | None = None) -> list[str]:
    """tune-trials.csv, tune-trials.png, tune.log (Ultralytics' output) and a "tuning" entry in run.json (with
    `promoted`: which model won and why, trials.Promoted.to_json), each written atomically into the run's folder; the
    paths written."""
    atomic_write_text(run_dir / TRIALS_CSV, trials_csv(trials))
    atomic_write_bytes(run_dir / TRIALS_PNG, trials_png(trials))
    written = [run_dir / TRIALS_CSV, run_dir / TRIALS_PNG]
    if log is not None and log.is_file():
        atomic_write_bytes(run_dir / TUNE_LOG, log.read_bytes())
        written.append(run_dir / TUNE_LOG)
    run = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    run["tuning"] = {"searcher": "ultralytics.engine.tuner.Tuner", "trials": len(trials),
                     "completed": sum(t.state == "complete" for t in trials), "best": best, **(promoted or {})}
    atomic_write_json(run_dir / RUN_FILE, run)
    return [str(p) for p in written]


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


@contextlib.contextmanager
def _fds_to(log_path: Path) -> Iterator[Callable[[Callable[[TrainProgress], None]], Callable[[TrainProgress], None]]]:
    """Point the process's stdout and stderr file descriptors at `log_path` inside the block: each trial is a
    subprocess of Ultralytics' CLI that writes to them directly (Python-level redirection does not reach it).
    Yields a wrapper that runs a progress callback with the descriptors put back (its lines are the user's)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def point(one: int, two: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(one, 1)
        os.dup2(two, 2)

    def outside(report: Callable[[TrainProgress], None]) -> Callable[[TrainProgress], None]:
        def run(p: TrainProgress) -> None:
            point(*saved)
            try:
                report(p)
            finally:
                point(fd, fd)
        return run

    try:
        point(fd, fd)
        yield outside
    finally:
        point(*saved)
        for f in (fd, *saved):
            os.close(f)
