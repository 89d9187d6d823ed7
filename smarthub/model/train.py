"""Train a classifier on the class folders: fastai DataBlock → vision_learner → LP-FT → export + report.

The recipe (model/lpft.py): fit a linear head on cached frozen-body embeddings, then fine-tune the whole
Learner from it with fastai's aug_transforms, keeping the best epoch. The middle is reusable on its own (the
review module runs K-fold fine-tunes with it): `build_learner(items, is_valid, options, work_dir=...)` then
`fit(learner, options)`.
`train(ws, options)` is the whole job: scan, check, split, fit, evaluate, write the artefacts atomically.
`load_classifier` / `predict_probs` are the inference half.
"""
from __future__ import annotations

import csv
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub import trust
from smarthub.dataset import ImageItem
from smarthub.errors import DatasetError, ImageError, ModelError, SmartHubError
from smarthub.model.options import DEFAULT_NUM_WORKERS, TrainOptions

__all__ = ["DEFAULT_NUM_WORKERS", "TrainOptions", "TrainProgress", "TrainResult", "TrainingStopped", "build_learner",
           "fit", "train", "load_classifier", "predict_probs", "split_items"]

_CHECK_CACHE_NAME = "verified-images.json"
# get_preds swaps callbacks and data loaders on the learner: one prediction at a time (the app is threaded)
_PREDICT_LOCK = threading.Lock()


@dataclass(frozen=True)
class TrainProgress:
    """A progress report: stage ('checking images', 'resizing images', 'building', 'embedding', 'fitting the
    head', 'head', 'training', 'evaluating', 'saving', 'done'), epoch (1-based, 0 outside the epochs) of
    `epochs`, batch of `batches`, and the metrics so far (train_loss while in an epoch; train/valid loss,
    error_rate, accuracy at an epoch's end, and for 'head', the fitted head's)."""

    stage: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    metrics: dict = field(default_factory=dict)


ProgressFn = Callable[[TrainProgress], object]
StopFn = Callable[[], bool]


class TrainingStopped(SmartHubError):
    """Training was stopped on request before it finished; no artefact was written."""


@dataclass(frozen=True)
class TrainResult:
    """What `train` wrote and measured."""

    export_path: Path
    report_path: Path
    report: dict
    seconds: float
    wrote: bool = True


# ---------------------------------------------------------------------------------------------------------
# Building and fitting

def split_items(items: Sequence[ImageItem], *, valid_pct: float, seed: int) -> list[bool]:
    """Seeded, per-class random split: is_valid flags.

    Each class keeps at least one training image and gives round(valid_pct * n) to validation
    (so small classes are represented on both sides as far as possible).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_label.setdefault(item.label, []).append(i)
    is_valid = [False] * len(items)
    for label in sorted(by_label):
        idx = by_label[label]
        n_valid = min(len(idx) - 1, max(1 if len(idx) >= 3 else 0, int(round(valid_pct * len(idx)))))
        for j in rng.permutation(len(idx))[:n_valid]:
            is_valid[idx[j]] = True
    if not any(is_valid):  # tiny data: still validate on one image of the largest class
        largest = max(by_label.values(), key=len)
        is_valid[largest[int(rng.integers(len(largest)))]] = True
    return is_valid


def build_learner(items: Sequence[ImageItem], is_valid: Sequence[bool], options: TrainOptions, *,
                  work_dir: Path) -> Any:
    """An untrained fastai Learner over `items` (validation = items flagged in `is_valid`) on `options.device`.

    The DataBlock pickles only fastai names: items are image paths whose folder is the label (`parent_label`);
    items that do not sit in a folder named after their label are read through pre-resized copies in
    `work_dir`. Pretrained: the head is pool → flatten → Linear (stage 1 fits it, see `fit`); from scratch:
    fastai's default head. The vocab is every label in `items`, sorted. Metrics: error_rate, accuracy.
    Mixed precision on CUDA. Raises DatasetError (empty split, a validation class unseen in training),
    ModelError (weights, device).
    """
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, parent_label
    from fastai.metrics import accuracy, error_rate
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from smarthub.dataset import sha256_file
    from smarthub.model.archs import check_weights_available, resolve_arch
    from smarthub.model.devices import resolve_device, uses_mixed_precision
    from smarthub.model.imagecache import resized_copies

    items = list(items)
    if len(items) != len(is_valid):
        raise SmartHubError(f"{len(items)} items but {len(is_valid)} is_valid flags")
    valid_idx = [i for i, v in enumerate(is_valid) if v]
    n_train = len(items) - len(valid_idx)
    if not valid_idx:
        raise DatasetError("the validation set is empty: add images or raise --valid-pct")
    if n_train < 2:
        raise DatasetError(f"only {n_train} training image(s): add images or lower --valid-pct")
    train_labels = {it.label for it, v in zip(items, is_valid) if not v}
    unseen = sorted({it.label for it, v in zip(items, is_valid) if v} - train_labels)
    if unseen:
        raise DatasetError(f"classes {', '.join(map(repr, unseen))} have validation images but no training "
                           f"images: add training images for them")
    device = resolve_device(options.device)
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    if any(Path(it.path).parent.name != it.label for it in items):
        items = resized_copies(Path(work_dir) / "cache", items, [sha256_file(it.path) for it in items],
                               size_px=options.size_px)
    set_seed(options.seed)
    vocab = sorted({it.label for it in items})
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=vocab)),
        get_y=parent_label,
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(options.size_px, method=ResizeMethod.Squish),
        batch_tfms=aug_transforms(mult=options.aug_strength) if options.aug_strength > 0 else None,
    )
    bs = max(2, min(options.batch_size, n_train))
    dls = block.dataloaders([Path(it.path) for it in items], bs=bs, num_workers=options.num_workers,
                            device=torch.device(device))
    # pretrained: a head that is exactly a linear layer on the pooled body features (stage 1 fits it)
    head_args = dict(concat_pool=False, lin_ftrs=[], ps=0.0, first_bn=False) if options.pretrained else {}
    try:
        learn = vision_learner(dls, spec.model_fn, pretrained=options.pretrained, metrics=[error_rate, accuracy],
                               path=Path(work_dir), **head_args)
    except (OSError, RuntimeError) as e:
        raise ModelError(f"cannot build {spec.name} (pretrained={options.pretrained}): {e}; if the weights "
                         f"file is damaged replace it with `smarthub weights add FILE`, or use --no-pretrained") from e
    if uses_mixed_precision(device):
        learn = learn.to_fp16()
    return learn


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
    from smarthub.model.lpft import learner_features

    o2i = {str(v): i for i, v in enumerate(learner.dls.vocab)}
    parts = []
    for dl in (learner.dls.train, learner.dls.valid):
        paths = list(dl.items)
        parts += [learner_features(learner, paths), np.array([o2i[Path(p).parent.name] for p in paths])]
    return HeadData(*parts)


def fit(learner: Any, options: TrainOptions, *, head_data: HeadData | None = None,
        progress: ProgressFn | None = None, bars: bool = False, should_stop: StopFn | None = None,
        cbs: Sequence[Any] = (), probe: bool = False, started: float | None = None) -> FitResult:
    """Train a Learner from `build_learner` with the recipe of `options` (see TrainOptions).

    Pretrained: stage 1 fits the linear head on `head_data` (computed through the Learner when None), then
    (unless head_only) stage 2 fine-tunes everything for `options.epochs` epochs with early stopping, keeping
    the best epoch. With `probe`, stage 2 first runs `lpft.probe_length` steps and goes on only when they beat
    the head (`lpft.fine_tuning_pays`); else the head is kept. With `options.budget_s` (counted from `started`,
    a time.monotonic() value; default: now), the probe's timing plans how many epochs fit and the fit ends
    before the budget runs out, keeping the best model by then. From scratch: fit_one_cycle for
    `options.epochs` epochs, best epoch kept. `cbs` join stage 2 (e.g. the distributed trainer). fastai's own
    progress bars only when `bars`.
    Raises TrainingStopped when `should_stop()` turned true (polled after every batch), lpft.BudgetError when
    the budget cannot hold the head.
    """
    from smarthub.model.lpft import fit_linear_head, frozen_early_layers, make_frozen_bn, score_head, set_head
    from smarthub.model.options import (DEFAULT_FINETUNE_LR, DEFAULT_SCRATCH_LR, FINETUNE_BODY_LR_DIV,
                                        FINETUNE_PCT_START, SAVE_ALLOWANCE_S)
    from smarthub.model.stopping import (check_head_fits, earliest_stop, make_deadline, make_keep_best, make_probe,
                                         plan_epochs, probe_length, skip_reason)

    started = time.monotonic() if started is None else started
    deadline = None if options.budget_s is None else started + options.budget_s
    history: list[dict] = []
    baseline = None
    if options.pretrained:
        head_started = time.monotonic()
        _report(progress, "fitting the head")
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
        _note(progress, decision)
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
            _note(progress, plan.reason)
            noted.add(plan.reason)
            if plan.epochs < options.epochs:
                return False
        if probe:
            _note(progress, f"fine-tuning goes on: after {result.steps} steps validation accuracy is "
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
        _note(progress, decision)
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


# ---------------------------------------------------------------------------------------------------------
# Evaluation (pure)

def classification_report(targets: np.ndarray, preds: np.ndarray, vocab: Sequence[str]) -> dict:
    """Accuracy, error rate, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    n = len(vocab)
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(targets, preds):
        cm[int(t), int(p)] += 1
    per_class = {}
    for i, label in enumerate(vocab):
        tp = int(cm[i, i])
        predicted, support = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                            "support": support}
    total = int(cm.sum())
    acc = float(np.trace(cm) / total) if total else 0.0
    return {"accuracy": round(acc, 4), "error_rate": round(1 - acc, 4), "per_class": per_class,
            "confusion_matrix": cm.tolist()}


# ---------------------------------------------------------------------------------------------------------
# The whole job

def train(ws: Any, options: TrainOptions, *, progress: ProgressFn | None = None,
          bars: bool = False, should_stop: StopFn | None = None) -> TrainResult:
    """Train on `ws.data_dir` and write export.pkl, report.json, confusion.png, history.csv to `ws.models_dir`.

    Uses the train/ and valid/ folders when the data folder has them, else a seeded per-class random split.
    Images are checked through smarthub.imaging, hashed, decoded and resized once into the image cache;
    stage 1 reads the embeddings cache shared with review. Launched distributed (see model/distributed.py),
    every rank trains on the same split and only rank 0 writes (`TrainResult.wrote`).
    Raises DatasetError (no/too few images, unreadable images — run `smarthub verify`), ModelError
    (weights, device), SmartHubError (cannot write), TrainingStopped (`should_stop()` turned true: nothing
    written). On any error the current model files are left as they were.
    """
    from dataclasses import replace

    from smarthub.dataset import check_trainable, dataset_fingerprint, outside_note, scan_dataset
    from smarthub.fileops import class_names
    from smarthub.model import distributed
    from smarthub.model.archs import check_weights_available, resolve_arch
    from smarthub.model.devices import resolve_device
    from smarthub.model.embeddings import hash_items
    from smarthub.model.imagecache import resized_copies

    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")  # the run's id (model/runs.py)
    device = distributed.rank_device(resolve_device(options.device))
    options = replace(options, device=device)
    outside: list[Path] = []
    items = scan_dataset(ws.data_dir, outside=outside)
    empty = sorted(set(class_names(ws)) - {it.label for it in items})
    notes = [n for n in (outside_note(outside, ws.data_dir), empty_classes_note(empty)) if n]
    try:
        check_trainable(items)
    except DatasetError as e:
        raise DatasetError("; ".join([str(e), *notes])) from e
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    split_layout = any(it.split for it in items)
    is_valid = ([it.split == "valid" for it in items] if split_layout
                else split_items(items, valid_pct=options.valid_pct, seed=options.seed))
    with distributed.main_process_first(device):  # rank 0 fills the caches, the other ranks read them
        check_images_cached(ws, items, progress=progress)
        hashed = hash_items(ws, items)
        if hashed.skipped:
            gone = [path for path, _ in hashed.skipped if not path.exists()]
            if gone:
                raise_moved(gone)
            path, reason = hashed.skipped[0]
            raise DatasetError(f"{path}: {reason}; scan again (the data folder changed during training)")
        shas = hashed.shas
        _report(progress, "resizing images")
        cached = resized_copies(ws.cache_dir, items, shas, size_px=options.size_px,
                                progress=lambda d, t: _report(progress, "resizing images", d, t))
        _report(progress, "building")
        learn = build_learner(cached, is_valid, options, work_dir=ws.models_dir)
        head_data = (_cached_head_data(ws, learn, cached, shas, is_valid, options, spec, progress)
                     if options.pretrained else None)
    extra_cbs = [distributed.trainer_callback(device)] if distributed.is_distributed() else []
    result = fit(learn, options, head_data=head_data, progress=progress, bars=bars, should_stop=should_stop,
                 cbs=extra_cbs, probe=options.probe and not distributed.is_distributed(), started=started)
    used_device = str(next(learn.model.parameters()).device)
    if not distributed.is_main_process():
        return TrainResult(export_path=ws.export_path, report_path=ws.report_path, report={},
                           seconds=round(time.monotonic() - started, 2), wrote=False)

    _report(progress, "evaluating")
    probs, targets = valid_predictions(learn)
    vocab = [str(v) for v in learn.dls.vocab]
    metrics = classification_report(targets, probs.argmax(axis=1), vocab)

    _report(progress, "saving")
    n_valid = sum(is_valid)
    report = {
        "arch": spec.name,
        "vocab": vocab,
        "size_px": options.size_px,
        "recipe": options.recipe,
        "epochs": options.epochs,
        "epochs_run": sum(1 for h in result.history if h.get("stage") != "head"),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "head_valid_accuracy": None if result.head_accuracy is None else round(result.head_accuracy, 4),
        "frozen_blocks": result.frozen_blocks,
        "finetune_decision": result.decision,
        "probe": result.probe,
        "budget_s": options.budget_s,
        "budget_plan": result.plan,
        "batch_size": options.batch_size,
        "valid_pct": options.valid_pct,
        "seed": options.seed,
        "pretrained": options.pretrained,
        "weights_file": spec.weights_file if options.pretrained else None,
        "lr": options.lr,
        "num_workers": options.num_workers,
        "device": used_device,
        "mixed_precision": used_device.startswith("cuda"),
        "processes": distributed.world_size(),
        "split": "folders" if split_layout else "random",
        "n_train": len(items) - n_valid,
        "n_valid": n_valid,
        "class_counts": _counts(items, is_valid),
        "valid_accuracy": metrics["accuracy"],
        "error_rate": metrics["error_rate"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "history": result.history,
        "valid_sha256": sorted({s for s, v in zip(shas, is_valid) if v}),
        "data_dir": str(ws.data_dir),
        "dataset_fingerprint": dataset_fingerprint(items, ws.data_dir),
        "versions": library_versions(),
        "options": asdict(options),
        "started_at": started_at,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": notes,
    }
    report["seconds"] = round(time.monotonic() - started, 2)
    portable_learner(learn)
    write_artifacts(ws, learn, report, valid_items=[it for it, v in zip(items, is_valid) if v],  # dls.valid order
                    valid_shas=[s for s, v in zip(shas, is_valid) if v],
                    valid_preds=[vocab[i] for i in np.asarray(probs).argmax(axis=1)])
    _report(progress, "done")
    return TrainResult(export_path=ws.export_path, report_path=ws.report_path, report=report,
                       seconds=report["seconds"])


def valid_predictions(learn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, targets) on the validation set, in this process only (fastai's get_preds would gather
    across ranks after a distributed fit, and rank 0 evaluates alone)."""
    import torch

    learn.model.eval()
    probs, targets = [], []
    with torch.inference_mode():
        for xb, yb in learn.dls.valid:
            probs.append(torch.softmax(learn.model(xb).float(), dim=1).cpu().numpy())
            targets.append(yb.cpu().numpy())
    return np.concatenate(probs), np.concatenate(targets)


def _cached_head_data(ws: Any, learn: Any, cached: Sequence[ImageItem], shas: Sequence[str],
                      is_valid: Sequence[bool], options: TrainOptions, spec: Any,
                      progress: ProgressFn | None) -> HeadData:
    """Stage-1 input from the embeddings cache shared with review (torchvision archs: the cache's extractor
    is the Learner's body + average pooling); timm archs compute it through the Learner."""
    from smarthub.model.embeddings import embed_items

    if spec.is_timm:
        return head_data_from_learner(learn)
    _report(progress, "embedding")
    feats, failed = embed_items(ws, [it.path for it in cached], list(shas), arch=spec.name, size_px=options.size_px,
                                pretrained=True, progress=lambda what, d, t: _report(progress, "embedding", d, t))
    if failed:
        path, reason = failed[0]
        raise DatasetError(f"{path}: {reason}; delete the image cache folder {ws.cache_dir} and train again")
    o2i = {str(v): i for i, v in enumerate(learn.dls.vocab)}
    parts = []
    for want_valid in (False, True):
        idx = [i for i, v in enumerate(is_valid) if v == want_valid]
        parts += [np.stack([feats[shas[i]] for i in idx]), np.array([o2i[cached[i].label] for i in idx])]
    return HeadData(*parts)


def portable_learner(learn: Any) -> None:
    """Make the Learner what a plain `load_learner` expects: full precision, on the CPU, no smarthub callbacks."""
    if hasattr(learn, "mixed_precision"):
        learn.to_fp32()
    learn.model.cpu()
    learn.dls.cpu()


def _note(progress: ProgressFn | None, message: str) -> None:
    """A one-line decision the person should read (stage 'note', metrics {'message': ...})."""
    if progress is not None:
        progress(TrainProgress("note", 0, 0, 0, 0, {"message": message}))


def _report(progress: ProgressFn | None, stage: str, batch: int = 0, batches: int = 0) -> None:
    if progress is not None:
        progress(TrainProgress(stage, 0, 0, batch, batches, {}))


def _counts(items: Sequence[ImageItem], is_valid: Sequence[bool]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for item, v in zip(items, is_valid):
        c = counts.setdefault(item.label, {"train": 0, "valid": 0})
        c["valid" if v else "train"] += 1
    return dict(sorted(counts.items()))


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model file depends on."""
    import fastai
    import torch
    import torchvision

    import smarthub

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "fastai": fastai.__version__, "smarthub": smarthub.__version__}


def check_images_cached(ws: Any, items: Sequence[ImageItem], *, progress: ProgressFn | None = None) -> None:
    """Fully decode every image not already verified (cache keyed by path, size and mtime).

    Raises DatasetError naming the unreadable files and telling the user to run `smarthub verify`.
    """
    from smarthub.atomicio import atomic_write_json
    from smarthub.dataset import check_image

    cache_path = ws.cache_dir / "train" / _CHECK_CACHE_NAME
    try:
        import json

        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list[int]] = {}
    bad: list[str] = []
    gone: list[Path] = []  # moved or removed since the scan (another process relabelled or renamed a class)
    for i, item in enumerate(items, 1):
        key = str(item.path)
        try:
            st = item.path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            gone.append(item.path)
            continue
        except OSError as e:
            bad.append(f"{item.path} ({e.strerror or e})")
            continue
        if cache.get(key) != stamp:
            try:
                check_image(item.path)
            except ImageError as e:
                if item.path.exists():
                    bad.append(str(e))
                else:
                    gone.append(item.path)
                continue
        fresh[key] = stamp
        if progress is not None and (i % 50 == 0 or i == len(items)):
            progress(TrainProgress("checking images", 0, 0, i, len(items), {}))
    if fresh != cache:
        try:
            atomic_write_json(cache_path, fresh)
        except SmartHubError:
            pass  # the cache only saves time; training goes on without it
    if gone:
        raise_moved(gone)
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DatasetError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:3])}{more}; run `smarthub verify "
                           f"--quarantine` to move them to the trash, then train again")


def empty_classes_note(empty: Sequence[str]) -> str | None:
    """The one line naming the class folders training skipped because they hold no image."""
    if not empty:
        return None
    shown = ", ".join(repr(c) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return (f"{len(empty)} class folder{'s' if len(empty) != 1 else ''} without images skipped (not a class of "
            f"this model): {shown}")


def raise_moved(gone: Sequence[Path]) -> None:
    """The data changed under a starting run (e.g. `classes rename` in another shell): not a broken image."""
    raise DatasetError(f"{len(gone)} image{'s' if len(gone) != 1 else ''} moved or removed while training started "
                       f"(e.g. {gone[0]}): another command changed the data folder; run train again")


def write_artifacts(ws: Any, learn: Any, report: dict, *, valid_items: Sequence[ImageItem],
                    valid_shas: Sequence[str], valid_preds: Sequence[str]) -> None:
    """Record the run in models/runs/<run id>/ (export.pkl, history.csv, confusion.png, report.json with the
    validation images) and promote it by `report["options"]["promote"]` (model/runs.py).

    Sets report["run_id"] and report["promotion"] (RunOutcome.to_dict(): promoted, message, comparison).
    """
    from smarthub.model import runs

    report["valid_images"] = runs.valid_image_records([it.path for it in valid_items],
                                                      [it.label for it in valid_items], valid_preds,
                                                      data_dir=ws.data_dir, shas=valid_shas)
    outcome = runs.record_run(ws, report, save_export=lambda tmp: learn.export(Path(tmp).absolute()),
                              history_csv=history_csv(report["history"]),
                              confusion_png=confusion_png(report["confusion_matrix"], report["vocab"]),
                              policy=report["options"].get("promote", "if-better"))
    report["promotion"] = outcome.to_dict()


def history_csv(history: Sequence[dict]) -> str:
    """The per-epoch history as CSV text."""
    buf = io.StringIO()
    cols = ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "stage"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return buf.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]], vocab: Sequence[str]) -> bytes:
    """Render the confusion matrix (rows = actual, columns = predicted) as PNG bytes (matplotlib Agg)."""
    from matplotlib.figure import Figure

    cm = np.asarray(matrix)
    n = len(vocab)
    side = min(20.0, max(4.0, 0.6 * n + 2.5))
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels=list(vocab), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=list(vocab))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix (validation set)")
    threshold = cm.max() / 2 if cm.size else 0
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Inference

def load_classifier(path: Path, *, device: str = "auto") -> Any:
    """Load an exported fastai learner onto `device` (auto, cpu, cuda, cuda:N, mps; see model/devices.py).

    Models exported by smarthub's first version load too (model/compat.py maps their old names).
    export.pkl is a pickle: loading runs code from the file, so load only files you trust.
    Raises ModelError: missing file (run `smarthub train` first), corrupt file, not a fastai learner, or a
    device the machine does not have.
    """
    import pickle
    import warnings

    import torch
    from fastai.learner import Learner

    from smarthub.model.compat import PICKLE_MODULE
    from smarthub.model.devices import resolve_device

    path = Path(path)
    target = resolve_device(device)
    if not path.is_file():
        raise ModelError(f"no model at {path}: run `smarthub train` first")
    notice = trust.check_pickle(path, what="classifier")  # refuses a pickle smarthub did not write (unless --trust)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # what fastai's load_learner does, with the type checked before the learner is touched
            learn = torch.load(path, map_location="cpu", weights_only=False, pickle_module=PICKLE_MODULE)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, TypeError, KeyError,
            AttributeError, ImportError, IndexError) as e:
        raise ModelError(f"{path} is not a readable fastai model ({type(e).__name__}: {e}); "
                         f"train again with `smarthub train`") from e
    if not isinstance(learn, Learner) or getattr(learn, "dls", None) is None:
        raise ModelError(f"{path} does not hold a fastai learner (found {type(learn).__name__}); "
                         f"train again with `smarthub train`")
    trust.announce(notice)
    if hasattr(learn, "channels_last"):
        learn = learn.to_contiguous(to_fp32=True)
    elif hasattr(learn, "mixed_precision"):
        learn = learn.to_fp32()
    learn.dls.to(torch.device(target))
    learn.model.to(torch.device(target))
    return learn


def predict_probs(learner: Any, images: Sequence[Path | Any], *, batch_size: int = 64) -> np.ndarray:
    """Class probabilities [N, n_classes] in `learner.dls.vocab` order for images (paths or PIL images).

    Every image is opened through smarthub.imaging (EXIF orientation, pixel limit, alpha on white) and handed
    to the learner's own pipeline (`dls.test_dl` + `get_preds`) batch by batch. The first unreadable image
    raises ImageError naming it (use `dataset.verify_images` first to get a per-image report).
    """
    from PIL import Image

    from smarthub.imaging import as_rgb, open_rgb

    images = list(images)
    n_classes = len(learner.dls.vocab)
    out = [np.zeros((0, n_classes), dtype=np.float32)]
    with _PREDICT_LOCK:
        for start in range(0, len(images), batch_size):
            chunk = [as_rgb(x) if isinstance(x, Image.Image) else open_rgb(Path(x))
                     for x in images[start:start + batch_size]]
            dl = learner.dls.test_dl(chunk, bs=batch_size, num_workers=0)
            with learner.no_bar():
                probs, _ = learner.get_preds(dl=dl)
            out.append(probs.float().cpu().numpy())
    return np.concatenate(out)
