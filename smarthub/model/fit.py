"""The fit floor of training: LP-FT on a Learner from model/data.py, with progress, stop, probe and budget.

`fit(learner, options, head_data=...)` — stage 1 fits a linear head on pooled body features (`HeadData`, from
the embeddings cache shared with review by `cached_head_data`, else through the Learner), stage 2 fine-tunes
the whole Learner from it (the recipe's parts are in model/lpft.py). Returns a `FitResult`; writes nothing.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.dataset import ImageItem
from smarthub.errors import DatasetError
from smarthub.model.embeddings import embed_items
from smarthub.model.lpft import (fit_linear_head, frozen_early_layers, learner_features, make_frozen_bn, score_head,
                                 set_head)
from smarthub.model.stopping import (check_head_fits, earliest_stop, make_deadline, make_keep_best, make_probe,
                                     plan_epochs, probe_length, skip_reason)
from smarthub.model.options import (DEFAULT_FINETUNE_LR, DEFAULT_SCRATCH_LR, FINETUNE_BODY_LR_DIV,
                                    FINETUNE_PCT_START, SAVE_ALLOWANCE_S, TrainOptions)
from smarthub.model.progress import ProgressFn, StopFn, TrainingStopped, TrainProgress, report_note, report_stage

__all__ = ["FitResult", "HeadData", "cached_head_data", "channels_last", "fit", "head_data_from_learner"]


@dataclass(frozen=True)
class HeadData:
    """Stage-1 input: pooled body features and class indices (dls.vocab order) of the training and
    validation images (rows in any order, features matching labels)."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray


@dataclass(frozen=True)
class FitResult:
    """What `fit` did: the per-epoch history (the fitted head is epoch 0), the epoch whose weights were kept,
    whether it stopped early, the fitted head's validation accuracy (None from scratch) and how many of the
    body's leading blocks stayed frozen in stage 2."""

    history: list[dict]
    best_epoch: int
    stopped_early: bool
    head_accuracy: float | None
    frozen_blocks: int = 0
    decision: str = ""  # why stage 2 stopped or was cut short (probe, budget), "" when it ran as planned
    probe: dict | None = None  # the probe's steps, validation score, verdict and timings
    plan: dict | None = None  # the budget's epoch plan (lpft.EpochPlan)


def head_data_from_learner(learner: Any) -> HeadData:
    """Stage-1 input computed through the Learner's own body (when no embeddings cache is at hand)."""
    o2i = {str(v): i for i, v in enumerate(learner.dls.vocab)}
    parts = []
    for dl in (learner.dls.train, learner.dls.valid):
        paths = list(dl.items)
        parts += [learner_features(learner, paths), np.array([o2i[Path(p).parent.name] for p in paths])]
    return HeadData(*parts)


def cached_head_data(ws: Any, learn: Any, cached: Sequence[ImageItem], shas: Sequence[str],
                     is_valid: Sequence[bool], *, options: TrainOptions, spec: Any,
                     progress: ProgressFn | None = None) -> HeadData:
    """Stage-1 input from the embeddings cache shared with review (torchvision archs: the cache's extractor
    is the Learner's body + average pooling); timm archs compute it through the Learner."""
    if spec.is_timm:
        return head_data_from_learner(learn)
    report_stage(progress, "embedding")
    feats, failed = embed_items(ws, [it.path for it in cached], list(shas), arch=spec.name, size_px=options.size_px,
                                pretrained=True,
                                progress=lambda what, d, t: report_stage(progress, "embedding", d, t))
    if failed:
        path, reason = failed[0]
        raise DatasetError(f"{path}: {reason}; delete the image cache folder {ws.cache_dir} and train again")
    o2i = {str(v): i for i, v in enumerate(learn.dls.vocab)}
    parts = []
    for want_valid in (False, True):
        idx = [i for i, v in enumerate(is_valid) if v == want_valid]
        parts += [np.stack([feats[shas[i]] for i in idx]), np.array([o2i[cached[i].label] for i in idx])]
    return HeadData(*parts)


def fit(learner: Any, options: TrainOptions, *, head_data: HeadData | None = None,
        progress: ProgressFn | None = None, bars: bool = False, should_stop: StopFn | None = None,
        cbs: Sequence[Any] = (), probe: bool = False, started: float | None = None) -> FitResult:
    """Train a Learner from `build_learner` with the recipe of `options` (see TrainOptions).

    Pretrained: stage 1 fits the linear head on `head_data` (computed through the Learner when None), then
    (unless head_only) stage 2 fine-tunes everything for `options.epochs` epochs with early stopping, keeping
    the best epoch. With `probe`, stage 2 first runs `stopping.probe_length` steps and goes on only when they beat
    the head (`stopping.fine_tuning_pays`); else the head is kept. With `options.budget_s` (counted from `started`,
    a time.monotonic() value; default: now), the probe's timing plans how many epochs fit and the fit ends
    before the budget runs out, keeping the best model by then. From scratch: fit_one_cycle for
    `options.epochs` epochs, best epoch kept. `cbs` join stage 2 (e.g. the distributed trainer). fastai's own
    progress bars only when `bars`.
    Raises TrainingStopped when `should_stop()` turned true (polled after every batch), stopping.BudgetError when
    the budget cannot hold the head.
    """
    started = time.monotonic() if started is None else started
    deadline = None if options.budget_s is None else started + options.budget_s
    history: list[dict] = []
    baseline = None
    if options.pretrained:
        head_started = time.monotonic()
        report_stage(progress, "fitting the head")
        data = head_data if head_data is not None else head_data_from_learner(learner)
        n_classes = len(learner.dls.vocab)
        head = fit_linear_head(data.train_x, data.train_y, n_classes)
        set_head(learner, head)
        baseline = score_head(head, data.valid_x, data.valid_y)
        train_score = score_head(head, data.train_x, data.train_y)
        row = {"epoch": 0, "train_loss": round(train_score.valid_loss, 6), "valid_loss": round(baseline.valid_loss, 6),
               "error_rate": round(1 - baseline.accuracy, 6), "accuracy": round(baseline.accuracy, 6),
               "time": round(time.monotonic() - head_started, 3), "stage": "head"}
        history.append(row)
        if progress is not None:
            progress(TrainProgress("head", 0, options.epochs, 0, 0,
                                   {k: v for k, v in row.items() if k not in ("epoch", "stage")}))
        if options.budget_s is not None:
            n_valid, n_all = len(data.valid_y), len(data.valid_y) + len(data.train_y)
            head_s = time.monotonic() - started
            check_head_fits(budget_s=options.budget_s, head_s=head_s,
                            finish_s=SAVE_ALLOWANCE_S + head_s * n_valid / max(n_all, 1))
        if options.head_only:
            return FitResult(history=history, best_epoch=0, stopped_early=False, head_accuracy=baseline.accuracy)
        if should_stop is not None and should_stop():
            raise TrainingStopped("training stopped after fitting the head; nothing was written, the previous "
                                  "model is unchanged")
    skip = skip_reason(baseline, n_valid=len(data.valid_y)) if probe and baseline is not None else None
    if skip:
        decision = skip
        report_note(progress, decision)
        return FitResult(history=history, best_epoch=0, stopped_early=False, head_accuracy=baseline.accuracy,
                         decision=decision)
    pct_start = FINETUNE_PCT_START  # fit_one_cycle's own default, for both recipes
    frozen = 0
    decision = ""
    plan = None
    outcome = None
    deadline_cb = None
    noted: set[str] = set()

    def stage(n_epochs: int, *, gate: Any = None, reset_opt: bool = False) -> tuple[Any, Any]:
        nonlocal deadline_cb
        cb = _make_progress_callback(progress, silence_logger=not bars, n_stages_epochs=n_epochs,
                                     history=history, should_stop=should_stop)
        keep = make_keep_best(baseline=baseline, patience=options.patience, earliest=earliest_stop(n_epochs, pct_start))
        extra = [gate] if gate is not None else []
        if deadline is not None:
            deadline_cb = make_deadline(deadline=deadline, finish_s=SAVE_ALLOWANCE_S + (outcome.valid_s if outcome else 0))
            extra.append(deadline_cb)
        if options.pretrained:
            lr = options.lr or DEFAULT_FINETUNE_LR
            learner.fit_one_cycle(n_epochs, slice(lr / FINETUNE_BODY_LR_DIV, lr), pct_start=pct_start,
                                  reset_opt=reset_opt, cbs=[cb, keep, make_frozen_bn(), *extra, *cbs])
        else:
            learner.fit_one_cycle(n_epochs, options.lr or DEFAULT_SCRATCH_LR, pct_start=pct_start,
                                  cbs=[cb, keep, *extra, *cbs])
        _raise_if_stopped(cb, history)
        return cb, keep

    def on_probe(result: Any) -> bool:
        nonlocal outcome, plan
        outcome = result
        if probe and not result.pays:
            return False
        if deadline is not None:
            plan = plan_epochs(budget_s=options.budget_s, elapsed_s=time.monotonic() - started, step_s=result.step_s,
                               steps_per_epoch=len(learner.dls.train), valid_s=result.valid_s,
                               finish_s=SAVE_ALLOWANCE_S + result.valid_s, max_epochs=options.epochs)
            report_note(progress, plan.reason)
            noted.add(plan.reason)
            if plan.epochs < options.epochs:
                return False
        if probe:
            report_note(progress, f"fine-tuning goes on: after {result.steps} steps validation accuracy is "
                            f"{result.score.accuracy:.3f} (the head's {baseline.accuracy:.3f}), within the warm-up's "
                            f"usual dip")
        return True

    with learner.no_bar() if not bars else nullcontext(), channels_last(learner):
        gated = options.pretrained and (probe or deadline is not None)
        gate = (make_probe(at_step=probe_length(len(learner.dls.train)), baseline=baseline,
                           n_valid=len(learner.dls.valid_ds), on_probe=on_probe) if gated else None)
        if options.pretrained:
            learner.unfreeze()
        with frozen_early_layers(learner, options.freeze_stride) if options.pretrained else nullcontext(0) as frozen:
            _, keep = stage(options.epochs, gate=gate)
            if gate is not None and gate.cancelled:
                if probe and not outcome.pays:
                    decision = (f"fine-tuning did not beat the head after {outcome.steps} steps (validation "
                                f"accuracy {outcome.score.accuracy:.3f}, the head's {baseline.accuracy:.3f}, further "
                                f"below it than the warm-up's usual dip): kept the head")
                elif plan is not None and plan.epochs == 0:
                    decision = plan.reason
                else:
                    _, keep = stage(plan.epochs, reset_opt=True)
                    decision = plan.reason
            elif plan is not None:
                decision = plan.reason
    if deadline_cb is not None and deadline_cb.hit:
        decision = (decision + "; " if decision else "") + "the budget ran out: kept the best model by then"
    if decision and decision not in noted:
        report_note(progress, decision)
    return FitResult(history=history, best_epoch=keep.best_epoch, stopped_early=keep.stopped_early,
                     head_accuracy=None if baseline is None else baseline.accuracy, frozen_blocks=frozen,
                     decision=decision, probe=None if outcome is None else _probe_record(outcome),
                     plan=None if plan is None else asdict(plan))


def _probe_record(outcome: Any) -> dict:
    return {"steps": outcome.steps, "valid_loss": round(outcome.score.valid_loss, 6),
            "accuracy": round(outcome.score.accuracy, 6), "pays": outcome.pays,
            "step_s": round(outcome.step_s, 4), "valid_s": round(outcome.valid_s, 4)}


@contextmanager
def channels_last(learner: Any) -> Iterator[None]:
    """Train with the model's conv weights in channels-last memory layout on the CPU and CUDA (oneDNN and cuDNN
    pick their faster kernels: a MobileNetV2 training step on the CPU takes about a third less time,
    bench/RESULTS.md time to accuracy), then put them back in the default layout, so the exported model and
    every later use see ordinary tensors."""
    import torch

    if learner.dls.device.type not in ("cpu", "cuda"):
        yield
        return
    learner.model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        learner.model.to(memory_format=torch.contiguous_format)


def _raise_if_stopped(cb: Any, history: list[dict]) -> None:
    if cb.stopped:
        done = sum(1 for h in history if h.get("stage") != "head")
        raise TrainingStopped(f"training stopped after {done} complete epoch"
                              f"{'s' * (done != 1)}; nothing was written, the previous model is unchanged")


def _make_progress_callback(progress: ProgressFn | None, *, silence_logger: bool, n_stages_epochs: int,
                            history: list[dict], should_stop: StopFn | None = None) -> Any:
    """A fastai Callback reporting TrainProgress per batch and per epoch, collecting the history, and
    ending the fit cleanly (fastai's CancelFitException) when `should_stop()` turns true."""
    from fastai.callback.core import Callback, CancelFitException

    class _SmartHubProgress(Callback):
        order = 70  # after Recorder (50) and ProgressCallback (60)

        def __init__(self) -> None:
            self.stage = "training"
            self.old_logger = None
            self.epoch_start = 0.0
            self.train_batches = 0
            self.stopped = False

        def before_fit(self) -> None:
            if silence_logger:
                self.old_logger, self.learn.logger = self.learn.logger, _no_log

        def after_fit(self) -> None:
            if self.old_logger is not None:
                self.learn.logger, self.old_logger = self.old_logger, None

        def before_epoch(self) -> None:
            self.epoch_start = time.monotonic()

        def after_batch(self) -> None:
            if should_stop is not None and should_stop():
                self.stopped = True
                raise CancelFitException()
            if not self.training:
                return
            self.train_batches = self.n_iter
            if progress is None:
                return
            progress(TrainProgress(self.stage, self.epoch + 1, n_stages_epochs, self.iter + 1, self.n_iter,
                                   {"train_loss": float(self.learn.smooth_loss)}))

        def after_epoch(self) -> None:
            rec = self.learn.recorder
            names = [n for n in rec.metric_names[1:] if n != "time"]
            values = dict(zip(names, (float(v) if v is not None else float("nan") for v in rec.final_record)))
            row = {"epoch": self.epoch + 1, **values,
                   "time": round(time.monotonic() - self.epoch_start, 3), "stage": self.stage}
            history.append(row)
            if progress is not None:
                progress(TrainProgress(self.stage, row["epoch"], n_stages_epochs, self.train_batches,
                                       self.train_batches,
                                       {k: v for k, v in row.items() if k not in ("epoch", "stage")}))

    return _SmartHubProgress()


def _no_log(*_args: Any) -> None:
    """fastai's Recorder logger when progress is reported by smarthub instead."""
