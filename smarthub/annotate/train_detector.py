"""Train a detector on corrected Labelme files: split, train, measure on validation, tune thresholds.

`train_detector(labelme_dir, models_dir, options)` writes one run folder `models/detectors/<run>/`:
`weights.pt` (Ultralytics) or `detector.pt` (torchvision checkpoint), `run.json` (classes, split
counts, per-class P/R/AP50/AP50-95 on the validation split, tuned per-class thresholds, options),
`split.json` and `pr_curves.png`. The run is written in a staged folder and put in place only when
complete: a failure or Stop leaves nothing behind and earlier runs untouched.

Over 400 lines on purpose: one job (split, Ultralytics or torchvision training, validation metrics, tuned
thresholds, the run folder); its options live in annotate/options.py and its search in tune_detector.py.
"""
from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub import staging, trust
from smarthub.annotate.detect import (
    RUN_FILE,
    RUN_FORMAT,
    SMARTHUB_ARCHS,
    DetectorOptions,
    _check_ultralytics_pickle,
    _torch_load,
    build_torchvision_model,
    coco_weights_file,
    import_ultralytics,
    load_detector,
    save_detector_checkpoint,
    torch_checkpoint_dir,
)
from smarthub.annotate.detset import DetItem, DetSet, check_not_nested, scan_labelme_dir
from smarthub.annotate.evaluate import coco_map
from smarthub.annotate.export import dataset_split, flat_stem, yolo_lines
from smarthub.annotate.options import DetectorTrainOptions, duration_words
from smarthub.annotate.preannotate import load_for_detection
from smarthub.annotate.split import SPLITS
from smarthub.annotate.starts import DetectorStart, backbone_yaml, choose_start
from smarthub.annotate.thresholds import (ScoredImage, ThresholdChoice, choose_shared_threshold, choose_threshold,
                                          match_scores, pr_points, threshold_at, threshold_rule)
from smarthub.atomicio import atomic_write_json, atomic_write_with
from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.imaging import open_rgb
from smarthub.model.archs import expected_weights_file
from smarthub.model.devices import resolve_device
from smarthub.optionspec import default
from smarthub.outputs import staged_output
from smarthub.staging import link_or_copy, sha256_file

DETECTORS_DIRNAME = "detectors"
LATEST_FILE = "latest.json"
EVAL_CONF = 0.001  # predictions kept for measuring and tuning (COCO's habit)
DEFAULT_BUDGET: str = default(DetectorTrainOptions, "budget")  # the time budget when --epochs is not given
DEFAULT_PATIENCE: int = default(DetectorTrainOptions, "patience")  # epochs without a better validation mAP
TORCHVISION_DEFAULT_EPOCHS = 30  # the torchvision backend has no per-epoch validation: a fixed count
LOG_FILE = "train.log"  # Ultralytics' own output, kept in the run folder
EPOCHS_FILE = "epochs.csv"  # Ultralytics' per-epoch losses and validation figures, kept in the run folder
MAX_EPOCHS = 300  # the cap under a time budget (Ultralytics' time= re-plans the epochs to fit the budget)


class TrainingStopped(SmartHubError):
    """Stop was pressed: nothing was written and the previous detector stays."""


@dataclass
class TrainProgress:
    """One progress report: stage ('start', 'split', 'train', 'epoch', 'evaluate', 'done'), epoch and batch
    counters; an 'epoch' report carries the epoch's mean training loss and validation mAP50; 'start' its text."""

    stage: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    loss: float | None = None
    map50: float | None = None
    text: str = ""

    def line(self) -> str:
        """One line for a log or a terminal."""
        if self.stage == "epoch":
            loss = "-" if self.loss is None else f"{self.loss:.3f}"
            m = "-" if self.map50 is None else f"{self.map50:.3f}"
            return f"epoch {self.epoch}/{self.epochs}: loss {loss}, validation mAP50 {m}"
        return self.text or self.stage


@dataclass
class ClassMetrics:
    """Validation figures of one class: truth boxes, AP, and P/R at the tuned threshold."""

    label: str
    truth: int
    ap50: float | None
    ap50_95: float | None
    threshold: ThresholdChoice


@dataclass
class DetectorRun:
    """What `train_detector` wrote."""

    run_dir: Path
    backend: str
    names: list[str]
    counts: dict[str, int]
    backgrounds: dict[str, int]
    silver: int
    metrics: list[ClassMetrics] = field(default_factory=list)
    map50: float | None = None
    map50_95: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    start: DetectorStart | None = None
    length: TrainLength | None = None
    threshold_rule: str = ""

    def summary(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        split = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        bg = ", ".join(f"{k} {v}" for k, v in self.backgrounds.items() if v)
        lines = [f"detector run {self.run_dir} ({self.backend}, {self.seconds:.0f} s)"]
        if self.start is not None:
            lines.append(self.start.describe())
        if self.length is not None:
            best = f", weights of epoch {self.length.best_epoch}" if self.length.best_epoch else ""
            lines.append(f"trained {self.length.epochs} epochs ({self.length.reason}{best})")
        lines += [f"images: {split}" + (f" (background without boxes: {bg})" if bg else "")
                  + (f"; {self.silver} silver images added to train" if self.silver else ""),
                  f"validation: mAP50 {f(self.map50)}, mAP50-95 {f(self.map50_95)}"]
        if self.threshold_rule:
            lines.append(f"thresholds (conf): {self.threshold_rule}")
        lines += [f"{'class':<20} {'truth':>6} {'AP50':>6} {'AP50-95':>7} {'conf':>6} {'P':>6} {'R':>6}"]
        for m in self.metrics:
            t = m.threshold
            conf = f"{t.conf:.3f}" + ("" if t.tuned else "*")
            lines.append(f"{m.label:<20} {m.truth:>6} {f(m.ap50):>6} {f(m.ap50_95):>7} {conf:>6} "
                         f"{f(t.precision):>6} {f(t.recall):>6}")
        if any(not m.threshold.tuned for m in self.metrics):
            lines.append("* not tuned (no box of that class found in validation): default threshold")
        lines += self.notes
        return "\n".join(lines)


# ---------------------------------------------------------------- runs on disk


def detectors_dir(models_dir: Path) -> Path:
    return Path(models_dir) / DETECTORS_DIRNAME


def latest_run(models_dir: Path) -> Path | None:
    """The last run that finished (models/detectors/latest.json), or None."""
    import json

    path = detectors_dir(models_dir) / LATEST_FILE
    try:
        name = json.loads(path.read_text(encoding="utf-8"))["run"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    run = detectors_dir(models_dir) / str(name)
    return run if run.is_dir() and "/" not in str(name) else None


def list_runs(models_dir: Path) -> list[Path]:
    """Finished run folders, newest name first."""
    root = detectors_dir(models_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and (p / "run.json").is_file()), key=lambda p: p.name, reverse=True)


# ---------------------------------------------------------------- dataset


def check_trainable(dataset: DetSet) -> None:
    """Refuse a folder without boxes and a class present in one image only (one line each)."""
    if not dataset.names:
        raise DatasetError(f"no boxes in any Labelme file under {dataset.root} ({len(dataset.items)} images): "
                           f"correct some pre-annotations (or draw boxes) first")
    single = [(label, n) for label, n in dataset.images_per_class().items() if n < 2]
    if single:
        label = single[0][0]
        where = next(it.key for it in dataset.items if label in it.labels)
        raise DatasetError(f"class {label!r} is in one image only ({where}): a detector cannot be trained and "
                           f"validated on it; label it in more images or remove those boxes")


def silver_items(silver_dir: Path, dataset: DetSet) -> tuple[list[DetItem], list[str]]:
    """Silver-flagged images of `silver_dir` that are not (by content) in the corrected dataset."""
    check_not_nested(dataset.root, silver_dir, what="silver folder")
    silver = scan_labelme_dir(silver_dir, silver_only=True)
    notes = []
    known = {sha256_file(it.image) for it in dataset.items}
    kept = []
    for it in silver.items:
        if sha256_file(it.image) in known:
            continue
        unknown = sorted(it.labels - set(dataset.names))
        if unknown:
            raise DatasetError(f"{it.json_path}: silver boxes of classes {unknown} that the corrected files do not "
                               f"have; correct or remove them")
        kept.append(DetItem(key=f"silver/{it.key}", image=it.image, width=it.width, height=it.height,
                            boxes=it.boxes, json_path=it.json_path, silver=True))
    skipped = len(silver.items) - len(kept)
    if skipped:
        notes.append(f"{skipped} silver images are also among the corrected files: left out of the silver set")
    if not silver.items:
        notes.append(f"no silver-flagged Labelme files under {silver_dir}")
    return kept, notes


def write_yolo_tree(folder: Path, splits: dict[str, list[DetItem]], names: list[str]) -> Path:
    """A YOLO dataset (images linked, labels written) for Ultralytics; returns its data.yaml."""
    import json

    ids = {n: i for i, n in enumerate(names)}
    for split, items in splits.items():
        for it in items:
            stem = flat_stem(it.key)
            link_or_copy(it.image, folder / "images" / split / f"{stem}{it.image.suffix.lower()}", symbolic=True)
            label = folder / "labels" / split / f"{stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(x + "\n" for x in yolo_lines(it, ids)), encoding="utf-8")
    val = "images/val" if splits.get("val") else "images/train"
    lines = [f"path: {folder.resolve()}", "train: images/train", f"val: {val}", f"nc: {len(names)}", "names:"]
    lines += [f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names)]
    (folder / "data.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "data.yaml"


# ---------------------------------------------------------------- backends


def _ultralytics_device(device: str) -> str:
    return device.split(":", 1)[1] if device.startswith("cuda:") else device


@dataclass
class TrainLength:
    """How a training run ended: epochs run, the epoch whose weights were kept, and why it stopped."""

    epochs: int
    best_epoch: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _ultralytics_output_to(log_path: Path) -> Iterator[Callable[[TrainProgress], None]]:
    """Send Ultralytics' logger, prints and progress bars to `log_path` instead of the terminal; yields a
    wrapper that runs a progress callback with the terminal's streams back (its lines are the user's)."""
    import logging
    import sys

    log_path.parent.mkdir(parents=True, exist_ok=True)
    out, err = sys.stdout, sys.stderr
    with open(log_path, "a", encoding="utf-8") as f:
        logger = logging.getLogger("ultralytics")
        saved = logger.handlers[:]
        handler = logging.StreamHandler(f)
        logger.handlers = [handler]

        def outside(report: Callable[[TrainProgress], None]) -> Callable[[TrainProgress], None]:
            def run(p: TrainProgress) -> None:
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                    report(p)
            return run

        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield outside
        finally:
            logger.handlers = saved
            handler.close()


def fold_imagenet_normalisation(trainer: Any) -> None:
    """Make a torchvision backbone (Ultralytics' TorchVision module, layer 0) take Ultralytics' 0-1 pixels as the
    ImageNet-normalised input its weights expect: divide its first convolution by the ImageNet std and shift
    the BatchNorm after it by the mean's response (exact away from the zero-padded border). Matters where
    BatchNorm runs on its running statistics: a frozen backbone, and validation in the first epochs."""
    import torch
    from torch import nn

    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    for model in (trainer.model, getattr(getattr(trainer, "ema", None), "ema", None)):
        if model is None:
            continue
        backbone = model.model[0]
        convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        if not convs or not bns or convs[0].in_channels != 3 or bns[0].num_features != convs[0].out_channels:
            return
        conv, bn = convs[0], bns[0]
        with torch.no_grad():
            w = conv.weight / std.to(conv.weight)[None, :, None, None]
            conv.weight.copy_(w)
            bn.running_mean += (w * mean.to(w)[None, :, None, None]).sum(dim=(1, 2, 3))


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def train_ultralytics(data_yaml: Path, work: Path, options: DetectorTrainOptions, device: str, config_dir: Path,
                      report: Callable[[TrainProgress], None], *, start: DetectorStart | None = None,
                      log_path: Path | None = None) -> tuple[Path, TrainLength]:
    """Train with Ultralytics from `start`; returns (the best weights, how training ended).

    Ultralytics' own output goes to `log_path`; `report` gets a 'train' report per batch (it may raise
    TrainingStopped) and an 'epoch' report with loss and validation mAP50 per epoch.
    """
    start = start or choose_start(options.model)
    with _ultralytics_output_to(log_path or work / LOG_FILE) as outside:
        report = outside(report)
        YOLO = import_ultralytics(config_dir)
        spec = start.model
        if start.kind == "backbone":
            nc = sum(1 for line in data_yaml.read_text(encoding="utf-8").splitlines() if line.startswith("  "))
            spec = str(work / start.model)
            Path(spec).write_text(backbone_yaml(start, nc), encoding="utf-8")
        try:
            model = YOLO(spec)
        except (OSError, RuntimeError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise ModelError(f"cannot load Ultralytics model {spec!r} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''}); offline, use --model auto, a "
                             f"torchvision backbone with cached weights, a .yaml such as yolov8n.yaml (trains "
                             f"from scratch) or a local .pt file") from e
        if getattr(model, "task", "detect") != "detect":
            raise ModelError(f"{options.model} is a YOLO {model.task} model, not a detector")
        state = {"batch": 0}

        def on_epoch_start(trainer: Any) -> None:
            state["batch"] = 0

        def on_batch_end(trainer: Any) -> None:
            state["batch"] += 1
            report(TrainProgress("train", trainer.epoch + 1, trainer.epochs, state["batch"],
                                 len(trainer.train_loader)))

        def on_train_epoch_end(trainer: Any) -> None:
            state["trained"] = trainer.epoch + 1

        def on_fit_epoch_end(trainer: Any) -> None:
            if trainer.epoch + 1 != state.get("trained"):  # Ultralytics' final check of best.pt calls it at epoch+1
                return
            loss = sum(float(v) for v in (trainer.tloss or {}).values()) if isinstance(trainer.tloss, dict) \
                else _float(getattr(trainer.tloss, "sum", lambda: None)())
            report(TrainProgress("epoch", trainer.epoch + 1, trainer.epochs, loss=loss,
                                 map50=_float((trainer.metrics or {}).get("metrics/mAP50(B)"))))

        if start.kind == "backbone":
            model.add_callback("on_pretrain_routine_end", fold_imagenet_normalisation)
        model.add_callback("on_train_epoch_start", on_epoch_start)
        model.add_callback("on_train_batch_end", on_batch_end)
        model.add_callback("on_train_epoch_end", on_train_epoch_end)
        model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
        # nbs = batch: an optimizer step per batch. Ultralytics' default (64) accumulates 64 images per step, which
        # on 50 training images is one step per epoch: 20 epochs were 20 steps and learnt nothing (RESULTS.md)
        # Otherwise Ultralytics' defaults: freezing the backbone measured worse (bench/RESULTS.md, detection loop)
        args: dict[str, Any] = {"nbs": options.batch, **options.ultralytics_args}
        length: dict[str, Any] = {"epochs": options.epochs} if options.epochs is not None else \
            {"epochs": MAX_EPOCHS, "time": options.budget_s / 3600}
        model.train(data=str(data_yaml), imgsz=options.imgsz, batch=options.batch, workers=0,
                    device=_ultralytics_device(device), plots=False, val=True, amp=False, project=str(work),
                    name="ultralytics", exist_ok=True, verbose=False, seed=options.seed, deterministic=True,
                    patience=options.patience or MAX_EPOCHS * 10, **length, **args)
        trainer = model.trainer
    weights = work / "ultralytics" / "weights"
    ran = int(getattr(trainer, "epoch", 0)) + 1
    stopper = getattr(trainer, "stopper", None)
    best = getattr(stopper, "best_epoch", None)
    if options.patience and stopper is not None and getattr(stopper, "possible_stop", False) and \
            ran - (best or 0) >= options.patience and ran < int(getattr(trainer, "epochs", ran)):
        reason = f"stopped early: no better validation mAP for {options.patience} epochs"
    elif options.epochs is not None:
        reason = f"{ran} epochs as asked" if ran >= options.epochs else f"stopped early after {ran} epochs"
    else:
        reason = f"time budget of {duration_words(options.budget_s)} used"
    info = TrainLength(epochs=ran, best_epoch=None if best is None else int(best), reason=reason)
    for name in ("best.pt", "last.pt"):
        if (weights / name).is_file():
            return weights / name, info
    raise ModelError(f"Ultralytics finished without writing weights under {weights}")


def _torchvision_kwargs(arch: str, imgsz: int) -> dict[str, Any]:
    return {"min_size": imgsz, "max_size": imgsz} if arch.startswith(("fasterrcnn", "retinanet", "fcos")) else {}


def _pretrained_init(model: Any, arch: str) -> str | None:
    """Load cached pretrained weights into every layer whose shape fits: COCO for torchvision detectors,
    ImageNet MobileNetV2 for the backbone of fasterrcnn_mobilenet_v2. Returns what was loaded, or None."""
    if arch in SMARTHUB_ARCHS:
        local = torch_checkpoint_dir() / str(expected_weights_file("mobilenet_v2"))
        if not local.is_file():
            return None
        state = {k: v for k, v in _torch_load(local, weights_only=True).items() if k.startswith("features.")}
        model.backbone[0].load_state_dict({k[len("features."):]: v for k, v in state.items()})
        return "ImageNet (backbone)"
    local = torch_checkpoint_dir() / coco_weights_file(arch)[0]
    if not local.is_file():
        return None
    state = _torch_load(local, weights_only=True)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fitting, strict=False)
    return "COCO"


def train_torchvision(items: list[DetItem], names: list[str], out: Path, options: DetectorTrainOptions,
                      device: str, report: Callable[[TrainProgress], None]) -> tuple[Path, str | None]:
    """Fine-tune (COCO weights, or ImageNet backbone weights, when cached) or train from scratch a torchvision
    detector; returns (checkpoint, what pretrained weights were used). `report` may raise TrainingStopped."""
    import random

    import torch
    from torchvision.transforms.functional import pil_to_tensor

    labels = ["__background__", *names]
    ids = {n: i for i, n in enumerate(labels)}
    kwargs = _torchvision_kwargs(options.model, options.imgsz)
    model = build_torchvision_model(options.model, len(labels), **kwargs)
    pretrained = _pretrained_init(model, options.model)
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=options.lr, momentum=0.9, weight_decay=1e-4)

    def sample(it: DetItem) -> tuple[Any, dict[str, Any]]:
        im = open_rgb(it.image, max_side_px=options.imgsz)
        sx, sy = im.width / it.width, im.height / it.height
        boxes = torch.tensor([[x1 * sx, y1 * sy, x2 * sx, y2 * sy] for _, (x1, y1, x2, y2) in it.boxes],
                             dtype=torch.float32).reshape(-1, 4)
        t = pil_to_tensor(im).float().div_(255)
        if rng.random() < 0.5:  # horizontal flip
            t = t.flip(-1)
            boxes[:, [0, 2]] = im.width - boxes[:, [2, 0]]
        cls = torch.tensor([ids[label] for label, _ in it.boxes], dtype=torch.int64)
        return t.to(device), {"boxes": boxes.to(device), "labels": cls.to(device)}

    order = list(items)
    batches = (len(order) + options.batch - 1) // options.batch
    epochs = options.epochs or TORCHVISION_DEFAULT_EPOCHS
    deadline = time.monotonic() + options.budget_s if options.epochs is None else None
    for epoch in range(epochs):
        if deadline is not None and time.monotonic() > deadline:
            break
        rng.shuffle(order)
        for b in range(batches):
            chunk = [sample(it) for it in order[b * options.batch:(b + 1) * options.batch]]
            losses = model([c[0] for c in chunk], [c[1] for c in chunk])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged (loss {float(loss)}) at epoch {epoch + 1}: try a lower --lr")
            opt.zero_grad()
            loss.backward()
            opt.step()
            report(TrainProgress("train", epoch + 1, epochs, b + 1, batches))
    path = save_detector_checkpoint(out, model.cpu(), arch=options.model, labels=labels, model_kwargs=kwargs)
    return path, pretrained


# ---------------------------------------------------------------- validation


def predict_items(detector: Any, items: list[DetItem]) -> list[Any]:
    """Detections of `detector` on each item, in the item's full EXIF-corrected frame."""
    out = []
    for it in items:
        im, (w, h) = load_for_detection(it.image, max_side_px=detector.max_side_px, min_side_px=detector.min_side_px)
        det = detector.detect([im])[0]
        out.append(det.scaled(w / im.width, h / im.height))
    return out


def validation_metrics(items: list[DetItem], dets: list[Any], names: list[str], *,
                       min_precision: float | None, objective: str = "f1") -> tuple[list[ClassMetrics], float | None, float | None,
                                                             dict[str, list[tuple[float, bool]]]]:
    """Per-class AP (faster-coco-eval) and tuned thresholds from validation predictions.

    objective 'time': one threshold for every class (thresholds.choose_shared_threshold); 'time-per-class' and
    'f1': each class its own (thresholds.choose_threshold); `min_precision` wins over both.
    """
    pairs: dict[str, list[tuple[float, bool]]] = {n: [] for n in names}
    truth: dict[str, int] = {n: 0 for n in names}
    coco_pairs, scored = [], []
    for it, det in zip(items, dets):
        for label in names:
            mask = np.array([lab == label for lab in det.labels], dtype=bool)
            t = [xyxy for lab, xyxy in it.boxes if lab == label]
            truth[label] += len(t)
            pairs[label] += match_scores(det.xyxy[mask], det.confidence[mask], np.array(t).reshape(-1, 4))
        pred_boxes = [(lab, tuple(float(v) for v in xyxy), float(s))
                      for lab, xyxy, s in zip(det.labels, det.xyxy, det.confidence) if lab in truth]
        coco_pairs.append((pred_boxes, [(lab, xyxy, None) for lab, xyxy in it.boxes], it.width, it.height))
        scored.append(ScoredImage([b[0] for b in pred_boxes], np.array([b[1] for b in pred_boxes]).reshape(-1, 4),
                                  np.array([b[2] for b in pred_boxes]), [lab for lab, _ in it.boxes],
                                  np.array([xyxy for _, xyxy in it.boxes]).reshape(-1, 4)))
    map50, map50_95, per_label = coco_map(coco_pairs, names)
    if min_precision is None and objective == "time":
        shared = choose_shared_threshold(scored)
        chosen = {n: threshold_at(pairs[n], truth[n], shared.conf) if shared.tuned else shared for n in names}
    else:
        per_class = "time" if objective == "time-per-class" else objective
        chosen = {n: choose_threshold(pairs[n], truth[n], min_precision=min_precision, objective=per_class)
                  for n in names}
    metrics = [ClassMetrics(n, truth[n], *per_label.get(n, (None, None)), threshold=chosen[n]) for n in names]
    return metrics, map50, map50_95, pairs


def save_pr_curves(path: Path, pairs: dict[str, list[tuple[float, bool]]], metrics: list[ClassMetrics]) -> None:
    """Precision-recall curve of each class on validation, the tuned point marked (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for m in metrics:
        _, p, r = pr_points(pairs[m.label], m.truth)
        if len(p):
            line, = ax.plot(r, p, label=f"{m.label} (AP50 {m.ap50:.2f})" if m.ap50 is not None else m.label)
            if m.threshold.tuned:
                ax.plot([m.threshold.recall], [m.threshold.precision], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title="validation PR curves (dot: tuned threshold)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize=8)
    try:
        atomic_write_with(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- the job


def check_start_weights(path: Path) -> None:
    """A local .pt to fine-tune from is a pickle that YOLO() unpickles: refuse a file that is no PyTorch checkpoint,
    then apply the trust check (trust.py) before anything loads it."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # a torch zip archive, or a legacy pickle
        raise ModelError(f"cannot load Ultralytics model {str(path)!r}: not a PyTorch checkpoint; offline, use a "
                         f".yaml such as yolov8n.yaml (trains from scratch) or a local .pt file")
    trust.announce(_check_ultralytics_pickle(path))


def pretrained_words(start: DetectorStart) -> str | None:
    """run.json's `pretrained`: what the detector's weights started from (None: from scratch)."""
    return {"coco": "COCO", "backbone": f"ImageNet ({start.backbone} backbone)",
            "weights": "given weights"}.get(start.kind)


def run_record(run: DetectorRun, options: DetectorTrainOptions, *, weights_name: str, pretrained: str | None,
               device: str, labelme_dir: Path) -> dict[str, Any]:
    """The run.json of a detector run folder (train_detector's runs and a search's kept trial alike)."""
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    return {
        "format": RUN_FORMAT, "version": 1, "weights": weights_name, "backend": run.backend,
        "model": options.model, "pretrained": pretrained,
        "start": run.start.to_json() if run.start is not None else None,
        "training": run.length.to_json() if run.length is not None else None, "names": run.names,
        "imgsz": options.imgsz, "device": device, "labelme_dir": str(Path(labelme_dir).resolve()), "options": opts,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": {"counts": run.counts, "backgrounds": run.backgrounds, "silver": run.silver},
        "validation": {"map50": run.map50, "map50_95": run.map50_95,
                       "classes": {m.label: {"truth": m.truth, "ap50": m.ap50, "ap50_95": m.ap50_95,
                                             "precision": m.threshold.precision, "recall": m.threshold.recall}
                                   for m in run.metrics}},
        "thresholds": {m.label: m.threshold.to_json() for m in run.metrics},
        "threshold_rule": run.threshold_rule,
        "min_precision": options.min_precision}


def train_detector(labelme_dir: Path, models_dir: Path, options: DetectorTrainOptions | None = None, *,
                   progress: Callable[[TrainProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, promote: bool = True) -> DetectorRun:
    """Build the dataset from `labelme_dir`, train, measure and tune on validation; write a run folder (and make
    it the one in use, latest.json, unless `promote` is False: tune_detector decides then).

    Raises DatasetError (bad input, one line), ModelError (backend), TrainingStopped (should_stop()
    turned true: nothing written, earlier runs untouched).
    """
    started = time.monotonic()
    options = options or DetectorTrainOptions()
    labelme_dir, models_dir = Path(labelme_dir), Path(models_dir)
    if not labelme_dir.is_dir():
        raise DatasetError(f"Labelme folder not found: {labelme_dir}")
    runs = detectors_dir(models_dir)
    check_not_nested(labelme_dir, runs, what="models folder")
    start_from = Path(options.model)
    if options.backend == "ultralytics" and start_from.suffix.lower() in (".pt", ".pth") and start_from.is_file():
        check_start_weights(start_from)
    device = resolve_device(options.device)
    say = progress or (lambda _p: None)
    start = choose_start(options.model) if options.backend == "ultralytics" else DetectorStart("torchvision",
                                                                                                options.model)

    def report(p: TrainProgress) -> None:
        if should_stop is not None and should_stop():
            raise TrainingStopped(f"training stopped at epoch {p.epoch}/{p.epochs}: nothing was written, "
                                  f"the previous detector stays")
        say(p)

    say(TrainProgress("split"))
    dataset = scan_labelme_dir(labelme_dir)
    check_trainable(dataset)
    say(TrainProgress("start", text=f"{start.describe()}; {options.length()}"))
    record = dataset_split(dataset, split=options.split, seed=options.seed)
    names = dataset.names
    splits = {s: [it for it in dataset.items if record.assignments[it.key] == s] for s in SPLITS}
    silver, notes = silver_items(options.silver_dir, dataset) if options.silver_dir else ([], [])
    notes = [*dataset.notes, *notes]  # polygons read as boxes, other shapes dropped (detset)
    if not splits["val"]:
        notes.append("the validation split is empty (too few images): thresholds are not tuned")
    name = options.name or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    final = runs / name
    if final.exists():
        raise SmartHubError(f"detector run {final} exists already: choose another --name")
    # staged under a lock that dies with this process: the next run of the name removes what a killed one left
    with staged_output(final, kind=None, notes=notes) as staged:
        work = staged / "work"
        train_items = splits["train"] + silver
        if options.backend == "ultralytics":
            data_yaml = write_yolo_tree(work / "dataset", {"train": train_items, "val": splits["val"]}, names)
            last, length = train_ultralytics(data_yaml, work, options, device, runs / ".cache" / "ultralytics",
                                             report, start=start, log_path=staged / LOG_FILE)
            # through save_model: the run's weights are recorded as written by smarthub
            trust.save_model(staged / "weights.pt", lambda tmp: shutil.copyfile(last, tmp))
            results = work / "ultralytics" / "results.csv"
            if results.is_file():
                shutil.copyfile(results, staged / EPOCHS_FILE)
            weights_name = "weights.pt"
            pretrained = pretrained_words(start)
        else:
            _, pretrained = train_torchvision(train_items, names, staged / "detector.pt", options, device, report)
            weights_name = "detector.pt"
            length = TrainLength(epochs=options.epochs or TORCHVISION_DEFAULT_EPOCHS, best_epoch=None,
                                 reason="fixed epoch count (torchvision backend)")
        staging.discard(work)
        report(TrainProgress("evaluate"))
        detector = load_detector(staged / weights_name, DetectorOptions(
            conf=EVAL_CONF, max_det=100, imgsz=options.imgsz, device=device,
            config_dir=runs / ".cache" / "ultralytics"))
        dets = predict_items(detector, splits["val"])
        metrics, map50, map50_95, pairs = validation_metrics(splits["val"], dets, names,
                                                             min_precision=options.min_precision,
                                                             objective=options.threshold_objective)
        save_pr_curves(staged / "pr_curves.png", pairs, metrics)
        atomic_write_json(staged / "split.json", record.to_json())
        run = DetectorRun(run_dir=final, backend=options.backend, names=names,
                          counts={s: len(v) for s, v in splits.items()},
                          backgrounds={s: sum(not it.boxes for it in v) for s, v in splits.items()},
                          silver=len(silver), metrics=metrics, map50=map50, map50_95=map50_95, notes=notes,
                          start=start, length=length,
                          threshold_rule=threshold_rule(options.threshold_objective, options.min_precision))
        atomic_write_json(staged / RUN_FILE, run_record(run, options, weights_name=weights_name, pretrained=pretrained,
                                                        device=device, labelme_dir=labelme_dir))
    if promote:
        atomic_write_json(runs / LATEST_FILE, {"run": name})
    run.seconds = time.monotonic() - started
    say(TrainProgress("done", length.epochs, length.epochs))
    return run
