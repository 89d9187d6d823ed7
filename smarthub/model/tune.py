"""Hyper-parameter search for the classifier with Optuna: learning rate, frozen depth, augmentation strength and
image size, scored on the validation split, within a number of trials and a time budget; the best trial's model
is kept, and a final run with the best settings fills what the budget leaves.

Why Optuna: its TPE sampler models which settings score well from few trials (what a CPU affords), its
MedianPruner ends a trial whose epochs fall below the median of earlier trials at the same epoch, and it runs in
this process with no server or cluster (an in-memory study). Ray Tune is the alternative when trials should run
on several machines at once; it needs a Ray cluster (`ray start`) and would call the same objective.

Every trial runs `train.train` into a scratch models folder (never promoted; removed after, except the best
trial's so far), reading the images and embeddings caches the final run uses. A trial that fails (a
SmartHubError: say a size the weights cannot take) is recorded with its reason and the search goes on.

No trial time is thrown away: the best trial *is* a model trained with the best settings, so it is kept rather
than trained again (the same settings and seed give the same model). Only when a budget leaves at least the
best trial's time does a final run with those settings fill it (up to (N+1)× the epochs, as the budget plans);
then the better on validation of the two is recorded (a tie keeps the trial's). The chosen run is written into
the workspace's runs and promoted by `--promote` like any training run, with "tuning" in its report.json (which
won and why) and the trials in its folder: `tune-trials.csv` and `tune-trials.png` (validation accuracy per
trial, best so far). On any error the promoted model is unchanged.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from smarthub.atomicio import atomic_write_bytes, atomic_write_text
from smarthub.errors import SmartHubError
from smarthub.model import runs
from smarthub.model.options import AUG_STRENGTH_MAX, FREEZE_STRIDES, TrainOptions
from smarthub.model.progress import TrainingStopped
from smarthub.staging import discard
from smarthub.trials import best_trial, choose_promoted, csv_text
from smarthub.trials import trials_png as plot_trials

TRIAL_COLUMNS = ("trial", "state", "valid_accuracy", "lr", "freeze_stride", "aug_strength", "size_px", "epochs_run",
                 "seconds", "note")


@dataclass(frozen=True)
class TuneSpace:
    """Where the search looks: a log-uniform learning-rate range, and the choices of frozen depth (output stride),
    augmentation strength and image size. Raises SmartHubError when it holds no valid point."""

    lr: tuple[float, float] = (5e-4, 8e-3)
    freeze_strides: tuple[int, ...] = (0, 4, 8, 16)
    aug_strengths: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    sizes_px: tuple[int, ...] = (64, 96, 128, 160)

    def __post_init__(self) -> None:
        low, high = self.lr
        problems = []
        if not (0 < low <= high < 10):
            problems.append(f"learning rates {low:g}..{high:g} (need 0 < low <= high < 10)")
        if not [s for s in self.freeze_strides if s in FREEZE_STRIDES]:
            problems.append(f"freeze strides {list(self.freeze_strides)} (valid: {', '.join(map(str, FREEZE_STRIDES))})")
        if not [a for a in self.aug_strengths if 0 <= a <= AUG_STRENGTH_MAX]:
            problems.append(f"augmentation strengths {list(self.aug_strengths)} (valid: 0 to {AUG_STRENGTH_MAX:g})")
        if not [s for s in self.sizes_px if 16 <= s <= 2048]:
            problems.append(f"image sizes {list(self.sizes_px)} (valid: 16 to 2048 px)")
        if problems:
            raise SmartHubError("the tuning space has no valid point: " + "; ".join(problems))


@dataclass(frozen=True)
class Trial:
    """One trial as recorded: its settings, state (complete, pruned, failed), score and what went wrong."""

    number: int
    state: str
    valid_accuracy: float | None
    lr: float
    freeze_stride: int
    aug_strength: float
    size_px: int
    epochs_run: int | None
    seconds: float
    note: str = ""


@dataclass(frozen=True)
class TuneResult:
    """The trials, the best settings found, and the run recorded in the workspace (train.TrainResult): the best
    trial's model or the final run, whichever is better on validation (`promoted`: 'trial' or 'final'; `why`:
    the one line that says so)."""

    trials: list[Trial]
    best: TrainOptions
    final: Any
    table_csv: str = ""
    files: list[str] = field(default_factory=list)
    promoted: str = "trial"
    why: str = ""


def parse_space(*, lr: str | None = None, freeze: str | None = None, aug: str | None = None,
                sizes: str | None = None) -> TuneSpace:
    """A TuneSpace from comma-separated text ('1e-3,5e-3' for the lr range; lists for the others); None keeps the
    default. Raises SmartHubError on text that is not numbers."""
    d = TuneSpace.__dataclass_fields__

    def numbers(text: str | None, kind: type, name: str) -> tuple | None:
        if text is None:
            return None
        try:
            return tuple(kind(x) for x in text.split(",") if x.strip())
        except ValueError as e:
            raise SmartHubError(f"{name} must be comma-separated numbers (got {text!r})") from e

    lr_range = numbers(lr, float, "--tune-lr")
    if lr_range is not None and len(lr_range) != 2:
        raise SmartHubError(f"--tune-lr takes two numbers, LOW,HIGH (got {lr!r})")
    return TuneSpace(lr=lr_range or d["lr"].default,
                     freeze_strides=numbers(freeze, int, "--tune-freeze") or d["freeze_strides"].default,
                     aug_strengths=numbers(aug, float, "--tune-aug") or d["aug_strengths"].default,
                     sizes_px=numbers(sizes, int, "--tune-sizes") or d["sizes_px"].default)


def tune(ws: Any, base: TrainOptions, *, space: TuneSpace, trials: int, budget_s: float | None = None,
         seed: int = 0, say: Callable[[str], object] | None = None) -> TuneResult:
    """Search `space` around `base` with Optuna (TPE, MedianPruner) for at most `trials` trials and `budget_s`
    seconds. The best trial's model is kept (a run trained with the best settings: retraining them from the start
    gives the same model again); when the budget leaves at least the best trial's time, a final run with the best
    settings fills what is left, and the better on validation of the two is recorded in `ws` and promoted by
    `base.promote`, with the trials table and plot in its run folder. Raises SmartHubError when no trial completed,
    or the chosen run cannot be written (the promoted model is unchanged then)."""
    import optuna

    from smarthub.model.train import TrainResult, train

    if trials < 1:
        raise SmartHubError(f"--trials must be at least 1 (got {trials})")
    started = time.monotonic()
    say = say or (lambda _text: None)
    valid_freeze = [s for s in space.freeze_strides if s in FREEZE_STRIDES]
    valid_aug = [a for a in space.aug_strengths if 0 <= a <= AUG_STRENGTH_MAX]
    valid_sizes = [s for s in space.sizes_px if 16 <= s <= 2048]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial has its own line (`say`), failures included
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    records: list[Trial] = []
    kept: dict[int, tuple[Any, Any]] = {}  # the best completed trial so far: number -> (its scratch ws, TrainResult)
    scratch_root = ws.cache_dir / "tune"

    def objective(trial: Any) -> float:
        options = replace(base, lr=trial.suggest_float("lr", space.lr[0], space.lr[1], log=True),
                          freeze_stride=trial.suggest_categorical("freeze_stride", valid_freeze),
                          aug_strength=trial.suggest_categorical("aug_strength", valid_aug),
                          size_px=trial.suggest_categorical("size_px", valid_sizes),
                          promote="never", budget_s=None)
        pruned = [False]

        def progress(p: Any) -> None:
            if "valid_loss" in p.metrics and p.stage == "training":
                trial.report(float(p.metrics.get("accuracy", 0.0)), step=p.epoch)
                pruned[0] = trial.should_prune()

        scratch = type(ws)(ws.data_dir, scratch_root / f"trial-{trial.number}")
        started_trial = time.monotonic()
        state, acc, epochs_run, note, result = "failed", None, None, "", None
        try:
            result = train(scratch, options, progress=progress, should_stop=lambda: pruned[0])
            acc, epochs_run, state = float(result.report["valid_accuracy"]), result.report["epochs_run"], "complete"
            note = result.report.get("finetune_decision") or ""
        except TrainingStopped:
            state, note = "pruned", "below the median of earlier trials at the same epoch"
        except SmartHubError as e:
            note = str(e)
            raise
        finally:
            records.append(Trial(trial.number, state, acc, options.lr, options.freeze_stride, options.aug_strength,
                                 options.size_px, epochs_run, round(time.monotonic() - started_trial, 2), note))
            say(_trial_line(records[-1]))
            _keep_best(records, kept, scratch, result)
        if state == "pruned":
            raise optuna.TrialPruned()
        return acc

    try:
        study.optimize(objective, n_trials=trials, timeout=budget_s, catch=(SmartHubError,))
        top = best_trial(records, score=lambda t: t.valid_accuracy if t.state == "complete" else None,
                         seconds=lambda t: t.seconds, kept="the promoted model is unchanged")
        best = replace(base, lr=top.lr, freeze_stride=top.freeze_stride, aug_strength=top.aug_strength,
                       size_px=top.size_px)
        trial_ws, trial_result = kept[top.number]
        left_s = None if budget_s is None else budget_s - (time.monotonic() - started)
        final, why_not = None, ""
        if left_s is None:
            why_not = "no time budget: a final run with its settings and seed would train the same model again"
        elif left_s < top.seconds:
            why_not = f"the budget left ({left_s:.0f} s) is shorter than the best trial took ({top.seconds:.0f} s)"
        else:
            say(f"best: trial {top.number}, validation accuracy {top.valid_accuracy:.3f} (lr {top.lr:.2g}, freeze "
                f"stride {top.freeze_stride}, augmentation {top.aug_strength:g}, {top.size_px} px); a final run with "
                f"these settings for the {left_s:.0f} s left")
            final_ws = type(ws)(ws.data_dir, scratch_root / "final")
            try:
                final = train(final_ws, replace(best, promote="never", budget_s=left_s,
                                                epochs=base.epochs * (trials + 1)))
            except SmartHubError as e:  # the best trial's model is a finished model: it is kept (said below)
                why_not = f"the final run failed ({str(e).splitlines()[0][:300]})"
        choice = choose_promoted(top.valid_accuracy, None if final is None else final.report["valid_accuracy"],
                                 metric="accuracy", why_not=why_not)
        say(choice.line)
        won_ws, won = (final_ws, final) if choice.promoted == "final" else (trial_ws, trial_result)
        table = trials_csv(records)
        report = record_winner(ws, won_ws, won.report, promote=base.promote,
                               tuning={"searcher": "optuna", "trials": len(records), "best_trial": top.number,
                                       **choice.to_json(), "seconds": round(time.monotonic() - started, 2)})
        files = write_trials(ws, report, table=table, png=trials_png(records))
    finally:
        discard(scratch_root)
    final_result = TrainResult(export_path=ws.export_path, report_path=ws.report_path, report=report,
                               seconds=report["seconds"])
    return TuneResult(trials=records, best=best, final=final_result, table_csv=table, files=files,
                      promoted=choice.promoted, why=choice.line)


def _keep_best(records: Sequence[Trial], kept: dict[int, tuple[Any, Any]], scratch: Any, result: Any) -> None:
    """Keep the last trial's scratch workspace when it is the best completed trial so far (dropping the one it
    beats); discard it otherwise."""
    last = records[-1]
    done = [t for t in records if t.state == "complete"]
    if last.state == "complete" and best_trial(done, score=lambda t: t.valid_accuracy, seconds=lambda t: t.seconds,
                                               kept="") is last:
        for old_ws, _ in kept.values():
            discard(old_ws.models_dir)
        kept.clear()
        kept[last.number] = (scratch, result)
    else:
        discard(scratch.models_dir)  # a scratch run: never promoted, never kept


def record_winner(ws: Any, scratch: Any, report: dict, *, promote: str, tuning: dict[str, Any]) -> dict:
    """Record the run that won (in the scratch workspace `scratch`) as a run of `ws` and promote it by `promote`
    (model/runs.py: atomic, the promoted model unchanged on an error); its report, with "tuning" and "promotion"."""
    run_dir = scratch.runs_dir / str(report["run_id"])
    report = {k: v for k, v in report.items() if k not in ("run_id", "promotion")}
    report["options"] = {**report["options"], "promote": promote}
    report["tuning"] = tuning
    outcome = runs.record_run(ws, report, save_export=lambda tmp: shutil.copyfile(run_dir / "export.pkl", tmp),
                              history_csv=(run_dir / "history.csv").read_text(encoding="utf-8"),
                              confusion_png=(run_dir / "confusion.png").read_bytes(), policy=promote)
    report["promotion"] = outcome.to_dict()
    return report


def _trial_line(t: Trial) -> str:
    score = "—" if t.valid_accuracy is None else f"{t.valid_accuracy:.3f}"
    return (f"trial {t.number}: {t.state}, accuracy {score} (lr {t.lr:.2g}, freeze stride {t.freeze_stride}, "
            f"augmentation {t.aug_strength:g}, {t.size_px} px) {t.seconds:.0f}s" + (f": {t.note}" if t.note else ""))


def trials_csv(trials: Sequence[Trial]) -> str:
    """The trials as CSV text (TRIAL_COLUMNS)."""
    return csv_text(TRIAL_COLUMNS, ([t.number, t.state, "" if t.valid_accuracy is None else round(t.valid_accuracy, 4),
                                     f"{t.lr:.6g}", t.freeze_stride, t.aug_strength, t.size_px,
                                     "" if t.epochs_run is None else t.epochs_run, asdict(t)["seconds"], t.note]
                                    for t in trials))


def trials_png(trials: Sequence[Trial]) -> bytes:
    """Validation accuracy per trial (failed and pruned trials marked at the bottom) and the best so far."""
    return plot_trials([(t.number, t.valid_accuracy, t.state) for t in trials], ylabel="validation accuracy",
                       title="tuning trials (x: failed red, pruned grey)", ylim=(-0.05, 1.05))


def write_trials(ws: Any, report: dict, *, table: str, png: bytes) -> list[str]:
    """Write tune-trials.csv and tune-trials.png atomically into the final run's folder; their paths."""
    run_dir = ws.runs_dir / str(report.get("run_id"))
    atomic_write_text(run_dir / "tune-trials.csv", table)
    atomic_write_bytes(run_dir / "tune-trials.png", png)
    return [str(run_dir / "tune-trials.csv"), str(run_dir / "tune-trials.png")]
