"""Hyper-parameter search for the classifier with Optuna: learning rate, frozen depth, augmentation strength and
image size, scored on the validation split, within a number of trials and a time budget; then the final model is
trained with the best settings.

Why Optuna: its TPE sampler models which settings score well from few trials (what a CPU affords), its
MedianPruner ends a trial whose epochs fall below the median of earlier trials at the same epoch, and it runs in
this process with no server or cluster (an in-memory study). Ray Tune is the alternative when trials should run
on several machines at once; it needs a Ray cluster (`ray start`) and would call the same objective.

Every trial runs `train.train` into a scratch models folder (never promoted, removed after), reading the images
and embeddings caches the final run uses. A trial that fails (a SmartHubError: say a size the weights cannot
take) is recorded with its reason and the search goes on. The trials are written into the final run's folder:
`tune-trials.csv` and `tune-trials.png` (validation accuracy per trial, best so far).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from smarthub.atomicio import atomic_write_bytes, atomic_write_text
from smarthub.errors import SmartHubError
from smarthub.model.options import AUG_STRENGTH_MAX, FREEZE_STRIDES, TrainOptions
from smarthub.model.progress import TrainingStopped
from smarthub.staging import discard
from smarthub.trials import best_trial, csv_text
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
    """The trials, the best settings found, and the final run trained with them (train.TrainResult)."""

    trials: list[Trial]
    best: TrainOptions
    final: Any
    table_csv: str = ""
    files: list[str] = field(default_factory=list)


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
    seconds, then train the final model with the best settings (promoted by `base.promote`) and write the
    trials table and plot into its run folder. Raises SmartHubError when no trial completed (the promoted model
    is unchanged then)."""
    import optuna

    from smarthub.model.train import train

    if trials < 1:
        raise SmartHubError(f"--trials must be at least 1 (got {trials})")
    say = say or (lambda _text: None)
    valid_freeze = [s for s in space.freeze_strides if s in FREEZE_STRIDES]
    valid_aug = [a for a in space.aug_strengths if 0 <= a <= AUG_STRENGTH_MAX]
    valid_sizes = [s for s in space.sizes_px if 16 <= s <= 2048]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial has its own line (`say`), failures included
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    records: list[Trial] = []
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
        started = time.monotonic()
        state, acc, epochs_run, note = "failed", None, None, ""
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
                                 options.size_px, epochs_run, round(time.monotonic() - started, 2), note))
            say(_trial_line(records[-1]))
            discard(scratch.models_dir)  # a scratch run: never promoted, never kept
        if state == "pruned":
            raise optuna.TrialPruned()
        return acc

    study.optimize(objective, n_trials=trials, timeout=budget_s, catch=(SmartHubError,))
    discard(scratch_root)
    top = best_trial(records, score=lambda t: t.valid_accuracy if t.state == "complete" else None,
                     seconds=lambda t: t.seconds, kept="the promoted model is unchanged")
    best = replace(base, lr=top.lr, freeze_stride=top.freeze_stride, aug_strength=top.aug_strength,
                   size_px=top.size_px)
    say(f"best: trial {top.number}, validation accuracy {top.valid_accuracy:.3f} (lr {top.lr:.2g}, freeze stride "
        f"{top.freeze_stride}, augmentation {top.aug_strength:g}, {top.size_px} px); training the final model")
    final = train(ws, best)
    table = trials_csv(records)
    files = write_trials(ws, final.report, table=table, png=trials_png(records))
    return TuneResult(trials=records, best=best, final=final, table_csv=table, files=files)


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
