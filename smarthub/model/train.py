"""Train a classifier on the class folders: fastai DataBlock → vision_learner → fine_tune → export + report.

The middle is reusable on its own (the review module runs K-fold fine-tunes with it):
`build_learner(items, is_valid, options, work_dir=...)` then `fit(learner, options)`.
`train(ws, options)` is the whole job: scan, check, split, fit, evaluate, write the artefacts atomically.
`load_classifier` / `predict_probs` are the inference half.
"""
from __future__ import annotations

import csv
import io
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub import trust
from smarthub.dataset import ImageItem
from smarthub.errors import DatasetError, ImageError, ModelError, SmartHubError

# Measured in bench/train_speed.py: on this 2-core CPU, DataLoader worker processes compete with
# torch's compute threads and slow training down, so images are loaded in the main process by default.
DEFAULT_NUM_WORKERS = 0
_CHECK_CACHE_NAME = "verified-images.json"
# get_preds swaps callbacks and data loaders on the learner: one prediction at a time (the app is threaded)
_PREDICT_LOCK = threading.Lock()


@dataclass
class TrainOptions:
    """Everything that decides a training run (all of it is recorded in report.json)."""

    arch: str = "resnet18"
    epochs: int = 4
    size_px: int = 224
    batch_size: int = 32
    valid_pct: float = 0.2
    seed: int = 42
    pretrained: bool = True
    num_workers: int = DEFAULT_NUM_WORKERS
    lr: float | None = None
    freeze_epochs: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SmartHubError(f"epochs must be at least 1 (got {self.epochs})")
        if self.freeze_epochs < 0:
            raise SmartHubError(f"freeze_epochs must be 0 or more (got {self.freeze_epochs})")
        if not 16 <= self.size_px <= 2048:
            raise SmartHubError(f"image size must be between 16 and 2048 px (got {self.size_px})")
        if self.batch_size < 2:
            raise SmartHubError(f"batch size must be at least 2 (got {self.batch_size})")
        if not 0.0 < self.valid_pct < 1.0:
            raise SmartHubError(f"valid_pct must be between 0 and 1, e.g. 0.2 (got {self.valid_pct})")
        if self.num_workers < 0:
            raise SmartHubError(f"num_workers must be 0 or more (got {self.num_workers})")
        if self.lr is not None and not 0.0 < self.lr < 10.0:
            raise SmartHubError(f"learning rate must be a small positive number, e.g. 0.002 (got {self.lr})")


@dataclass(frozen=True)
class TrainProgress:
    """A progress report: stage ('checking images', 'building', 'frozen', 'training', 'evaluating', 'saving',
    'done'), epoch (1-based over all stages, 0 outside training) of `epochs`, batch of `batches`, and the
    metrics so far (train_loss while in an epoch; train/valid loss, error_rate, accuracy at an epoch's end)."""

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


# ---------------------------------------------------------------------------------------------------------
# Pickled into export.pkl: module-level, importable functions only.

def load_rgb(x: object):  # noqa: ANN201 (fastai infers test-time types from these annotations)
    """Open an image (ImageItem, path, or PIL image) with its EXIF orientation applied, as an RGB PILImage.

    Raises ImageError naming the file when it cannot be decoded.
    """
    from fastai.vision.core import PILImage
    from PIL import Image

    from smarthub.imaging import as_rgb, open_rgb

    if isinstance(x, Image.Image):
        return PILImage.create(as_rgb(x))
    return PILImage.create(open_rgb(x.path if isinstance(x, ImageItem) else Path(x)))


def item_label(x: ImageItem) -> str:
    """The label of a training item."""
    return x.label


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
    """An untrained fastai Learner over `items` (validation = items flagged in `is_valid`).

    The vocab is every label in `items`, sorted. Metrics: error_rate, accuracy.
    Raises DatasetError (empty split, a validation class unseen in training) or ModelError (weights).
    """
    from fastai.data.block import CategoryBlock, DataBlock, TransformBlock
    from fastai.data.transforms import IndexSplitter, IntToFloatTensor
    from fastai.metrics import accuracy, error_rate
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
    from fastai.vision.learner import vision_learner

    from smarthub.model.archs import check_weights_available, resolve_arch

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
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    set_seed(options.seed)
    vocab = sorted({it.label for it in items})
    block = DataBlock(
        blocks=(TransformBlock(type_tfms=load_rgb, batch_tfms=IntToFloatTensor), CategoryBlock(vocab=vocab)),
        get_y=item_label,
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(options.size_px, method=ResizeMethod.Squish),
        batch_tfms=aug_transforms(),
    )
    bs = max(2, min(options.batch_size, n_train))
    dls = block.dataloaders(items, bs=bs, num_workers=options.num_workers, device="cpu")
    try:
        learn = vision_learner(dls, spec.model_fn, pretrained=options.pretrained,
                               metrics=[error_rate, accuracy], path=Path(work_dir))
    except (OSError, RuntimeError) as e:
        raise ModelError(f"cannot build {spec.name} (pretrained={options.pretrained}): {e}; if the weights "
                         f"file is damaged replace it with `smarthub weights add FILE`, or use --no-pretrained") from e
    learn.smarthub_pretrained = options.pretrained
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
            progress(TrainProgress(self.stage, len(history) + 1, n_stages_epochs, self.iter + 1, self.n_iter,
                                   {"train_loss": float(self.learn.smooth_loss)}))

        def after_epoch(self) -> None:
            rec = self.learn.recorder
            names = [n for n in rec.metric_names[1:] if n != "time"]
            values = dict(zip(names, (float(v) if v is not None else float("nan") for v in rec.final_record)))
            row = {"epoch": len(history) + 1, **values,
                   "time": round(time.monotonic() - self.epoch_start, 3), "stage": self.stage}
            history.append(row)
            if progress is not None:
                progress(TrainProgress(self.stage, row["epoch"], n_stages_epochs, self.train_batches,
                                       self.train_batches,
                                       {k: v for k, v in row.items() if k not in ("epoch", "stage")}))

    return _SmartHubProgress()


def _no_log(*_args: Any) -> None:
    """fastai's Recorder logger when progress is reported by smarthub instead."""


def fit(learner: Any, options: TrainOptions, *, progress: ProgressFn | None = None,
        bars: bool = False, should_stop: StopFn | None = None) -> list[dict]:
    """Train `learner`: fastai's fine_tune (freeze_epochs frozen, then epochs unfrozen) when pretrained,
    fit_one_cycle otherwise. fastai's own progress bars only when `bars`.

    Returns the per-epoch history: dicts with epoch, train_loss, valid_loss, error_rate, accuracy, time, stage.
    Raises TrainingStopped when `should_stop()` turned true (polled after every batch).
    """
    from contextlib import nullcontext

    pretrained = getattr(learner, "smarthub_pretrained", options.pretrained)
    freeze = options.freeze_epochs if pretrained else 0
    history: list[dict] = []
    cb = _make_progress_callback(progress, silence_logger=not bars, n_stages_epochs=freeze + options.epochs,
                                 history=history, should_stop=should_stop)
    with learner.no_bar() if not bars else nullcontext():
        if pretrained:
            base_lr = options.lr or 2e-3
            learner.freeze()
            if freeze:
                cb.stage = "frozen"
                learner.fit_one_cycle(freeze, slice(base_lr), pct_start=0.99, cbs=[cb])
                _raise_if_stopped(cb, history)
            cb.stage = "training"
            learner.unfreeze()
            learner.fit_one_cycle(options.epochs, slice(base_lr / 200, base_lr / 2), pct_start=0.3, div=5.0,
                                  cbs=[cb])
        else:
            cb.stage = "training"
            learner.fit_one_cycle(options.epochs, options.lr or 1e-3, cbs=[cb])
    _raise_if_stopped(cb, history)
    return history


def _raise_if_stopped(cb: Any, history: list[dict]) -> None:
    if cb.stopped:
        raise TrainingStopped(f"training stopped after {len(history)} complete epoch"
                              f"{'s' * (len(history) != 1)}; nothing was written, the previous model is unchanged")


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
    Raises DatasetError (no/too few images, unreadable images — run `smarthub verify`), ModelError
    (weights), SmartHubError (cannot write), TrainingStopped (`should_stop()` turned true: nothing written).
    """
    from smarthub.model.archs import check_weights_available, resolve_arch
    from smarthub.dataset import check_trainable, dataset_fingerprint, scan_dataset

    started = time.monotonic()
    items = scan_dataset(ws.data_dir)
    check_trainable(items)
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    split_layout = any(it.split for it in items)
    is_valid = ([it.split == "valid" for it in items] if split_layout
                else split_items(items, valid_pct=options.valid_pct, seed=options.seed))
    check_images_cached(ws, items, progress=progress)

    _report(progress, "building")
    learn = build_learner(items, is_valid, options, work_dir=ws.models_dir)
    history = fit(learn, options, progress=progress, bars=bars, should_stop=should_stop)

    _report(progress, "evaluating")
    with learn.no_bar():
        probs, targets = learn.get_preds(dl=learn.dls.valid)
    vocab = [str(v) for v in learn.dls.vocab]
    metrics = classification_report(targets.numpy(), probs.numpy().argmax(axis=1), vocab)

    _report(progress, "saving")
    n_valid = sum(is_valid)
    report = {
        "arch": spec.name,
        "vocab": vocab,
        "size_px": options.size_px,
        "epochs": options.epochs,
        "freeze_epochs": options.freeze_epochs if options.pretrained else 0,
        "batch_size": options.batch_size,
        "valid_pct": options.valid_pct,
        "seed": options.seed,
        "pretrained": options.pretrained,
        "weights_file": spec.weights_file if options.pretrained else None,
        "lr": options.lr,
        "num_workers": options.num_workers,
        "split": "folders" if split_layout else "random",
        "n_train": len(items) - n_valid,
        "n_valid": n_valid,
        "class_counts": _counts(items, is_valid),
        "valid_accuracy": metrics["accuracy"],
        "error_rate": metrics["error_rate"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "history": history,
        "data_dir": str(ws.data_dir),
        "dataset_fingerprint": dataset_fingerprint(items, ws.data_dir),
        "versions": library_versions(),
        "options": asdict(options),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report["seconds"] = round(time.monotonic() - started, 2)
    write_artifacts(ws, learn, report)
    _report(progress, "done")
    return TrainResult(export_path=ws.export_path, report_path=ws.report_path, report=report,
                       seconds=report["seconds"])


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
    for i, item in enumerate(items, 1):
        key = str(item.path)
        try:
            st = item.path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except OSError as e:
            bad.append(f"{item.path} ({e.strerror or e})")
            continue
        if cache.get(key) != stamp:
            try:
                check_image(item.path)
            except ImageError as e:
                bad.append(str(e))
                continue
        fresh[key] = stamp
        if progress is not None and (i % 50 == 0 or i == len(items)):
            progress(TrainProgress("checking images", 0, 0, i, len(items), {}))
    if fresh != cache:
        try:
            atomic_write_json(cache_path, fresh)
        except SmartHubError:
            pass  # the cache only saves time; training goes on without it
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DatasetError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:3])}{more}; run `smarthub verify "
                           f"--quarantine` to move them to the trash, then train again")


def write_artifacts(ws: Any, learn: Any, report: dict) -> None:
    """Write export.pkl, history.csv, confusion.png and report.json, each atomically (report last)."""
    from smarthub.atomicio import atomic_save_torch, atomic_write_json, atomic_write_text, atomic_write_with

    atomic_save_torch(ws.export_path, lambda tmp: learn.export(Path(tmp).absolute()))
    atomic_write_text(ws.history_path, history_csv(report["history"]))
    png = confusion_png(report["confusion_matrix"], report["vocab"])
    atomic_write_with(ws.confusion_path, lambda f: f.write(png))
    atomic_write_json(ws.report_path, report)


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

def load_classifier(path: Path) -> Any:
    """Load an exported fastai learner on the CPU.

    export.pkl is a pickle: loading runs code from the file, so load only files you trust.
    Raises ModelError: missing file (run `smarthub train` first), corrupt file, or not a fastai learner.
    """
    import pickle
    import warnings

    import torch
    from fastai.learner import Learner

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no model at {path}: run `smarthub train` first")
    notice = trust.check_pickle(path, what="classifier")  # refuses a pickle smarthub did not write (unless --trust)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # what fastai's load_learner does, with the type checked before the learner is touched
            learn = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, TypeError, KeyError,
            AttributeError, ImportError, IndexError) as e:
        raise ModelError(f"{path} is not a readable fastai model ({type(e).__name__}: {e}); "
                         f"train again with `smarthub train`") from e
    if not isinstance(learn, Learner) or getattr(learn, "dls", None) is None:
        raise ModelError(f"{path} does not hold a fastai learner (found {type(learn).__name__}); "
                         f"train again with `smarthub train`")
    trust.announce(notice)
    learn.dls.cpu()
    if hasattr(learn, "channels_last"):
        learn = learn.to_contiguous(to_fp32=True)
    elif hasattr(learn, "mixed_precision"):
        learn = learn.to_fp32()
    return learn


def predict_probs(learner: Any, paths: Sequence[Path | Any], *, batch_size: int = 64) -> np.ndarray:
    """Class probabilities [N, n_classes] in `learner.dls.vocab` order for images (paths or PIL images).

    Batched through `dls.test_dl` + `get_preds`. The first unreadable image raises ImageError naming it
    (use `dataset.verify_images` first to get a per-image report).
    """
    paths = list(paths)
    n_classes = len(learner.dls.vocab)
    if not paths:
        return np.zeros((0, n_classes), dtype=np.float32)
    with _PREDICT_LOCK:
        dl = learner.dls.test_dl(paths, bs=batch_size, num_workers=0)
        with learner.no_bar():
            probs, _ = learner.get_preds(dl=dl)
    return probs.numpy()
