"""Train a detector on corrected Labelme files: split, train, measure on validation, tune thresholds.

`train_detector(labelme_dir, models_dir, options)` writes one run folder `models/detectors/<run>/`:
`weights.pt` (Ultralytics) or `detector.pt` (torchvision checkpoint), `run.json` (classes, split
counts, per-class P/R/AP50/AP50-95 on the validation split, tuned per-class thresholds, options),
`split.json` and `pr_curves.png`. The run is written in a staged folder and put in place only when
complete: a failure or Stop leaves nothing behind and earlier runs untouched.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.annotate.detset import DetItem, DetSet, check_not_nested, scan_labelme_dir
from smarthub.annotate.split import SPLITS, check_split
from smarthub.annotate.thresholds import ThresholdChoice, choose_threshold, match_scores

DETECTORS_DIRNAME = "detectors"
LATEST_FILE = "latest.json"
EVAL_CONF = 0.001  # predictions kept for measuring and tuning (COCO's habit)


class TrainingStopped(SmartHubError):
    """Stop was pressed: nothing was written and the previous detector stays."""


@dataclass
class DetectorTrainOptions:
    """`smarthub train-detector` flags of the same names."""

    model: str = "yolov8n.yaml"  # Ultralytics .yaml/.pt, or a torchvision detector name
    epochs: int = 30
    imgsz: int = 320
    batch: int = 8
    device: str = "auto"
    split: tuple[float, float, float] = (0.8, 0.2, 0.0)
    seed: int = 0
    min_precision: float | None = None
    silver_dir: Path | None = None
    name: str | None = None
    lr: float = 0.005  # torchvision backend only (Ultralytics picks its own)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise SmartHubError("--epochs and --batch must be at least 1")
        if self.imgsz < 32:
            raise SmartHubError(f"--imgsz must be at least 32, got {self.imgsz}")
        self.split = check_split(tuple(self.split))
        if self.min_precision is not None and not 0.0 < self.min_precision <= 1.0:
            raise SmartHubError(f"--min-precision must be in (0, 1], got {self.min_precision}")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")
                                      or self.name in (".", "..")):
            raise SmartHubError(f"--name {self.name!r} must be a plain folder name")

    @property
    def backend(self) -> str:
        from smarthub.annotate.detect import SMARTHUB_ARCHS, TORCHVISION_ARCHS

        return "torchvision" if self.model in TORCHVISION_ARCHS + SMARTHUB_ARCHS else "ultralytics"


@dataclass
class TrainProgress:
    """One progress report: stage ('split', 'train', 'evaluate', 'done'), epoch and batch counters."""

    stage: str
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0


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

    def summary(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        split = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        bg = ", ".join(f"{k} {v}" for k, v in self.backgrounds.items() if v)
        lines = [f"detector run {self.run_dir} ({self.backend}, {self.seconds:.0f} s)",
                 f"images: {split}" + (f" (background without boxes: {bg})" if bg else "")
                 + (f"; {self.silver} silver images added to train" if self.silver else ""),
                 f"validation: mAP50 {f(self.map50)}, mAP50-95 {f(self.map50_95)}",
                 f"{'class':<20} {'truth':>6} {'AP50':>6} {'AP50-95':>7} {'conf':>6} {'P':>6} {'R':>6}"]
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    known = {_sha256(it.image) for it in dataset.items}
    kept = []
    for it in silver.items:
        if _sha256(it.image) in known:
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


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_yolo_tree(folder: Path, splits: dict[str, list[DetItem]], names: list[str]) -> Path:
    """A YOLO dataset (images linked, labels written) for Ultralytics; returns its data.yaml."""
    import json

    from smarthub.annotate.export import flat_stem, yolo_lines

    ids = {n: i for i, n in enumerate(names)}
    for split, items in splits.items():
        for it in items:
            stem = flat_stem(it.key)
            _link_or_copy(it.image, folder / "images" / split / f"{stem}{it.image.suffix.lower()}")
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


def train_ultralytics(data_yaml: Path, work: Path, options: DetectorTrainOptions, device: str, config_dir: Path,
                      report: Callable[[TrainProgress], None]) -> Path:
    """Train with Ultralytics; returns the last weights. `report` may raise TrainingStopped."""
    from smarthub.annotate.detect import import_ultralytics

    YOLO = import_ultralytics(config_dir)
    try:
        model = YOLO(options.model)
    except (OSError, RuntimeError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise ModelError(f"cannot load Ultralytics model {options.model!r} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}); offline, use a .yaml such as "
                         f"yolov8n.yaml (trains from scratch) or a local .pt file") from e
    if getattr(model, "task", "detect") != "detect":
        raise ModelError(f"{options.model} is a YOLO {model.task} model, not a detector")
    state = {"batch": 0}

    def on_epoch_start(trainer: Any) -> None:
        state["batch"] = 0

    def on_batch_end(trainer: Any) -> None:
        state["batch"] += 1
        report(TrainProgress("train", trainer.epoch + 1, trainer.epochs, state["batch"], len(trainer.train_loader)))

    model.add_callback("on_train_epoch_start", on_epoch_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.train(data=str(data_yaml), epochs=options.epochs, imgsz=options.imgsz, batch=options.batch, workers=0,
                device=_ultralytics_device(device), plots=False, val=False, amp=False, project=str(work),
                name="ultralytics", exist_ok=True, verbose=False, seed=options.seed, deterministic=True)
    weights = work / "ultralytics" / "weights"
    for name in ("last.pt", "best.pt"):
        if (weights / name).is_file():
            return weights / name
    raise ModelError(f"Ultralytics finished without writing weights under {weights}")


def _torchvision_kwargs(arch: str, imgsz: int) -> dict[str, Any]:
    return {"min_size": imgsz, "max_size": imgsz} if arch.startswith(("fasterrcnn", "retinanet", "fcos")) else {}


def _pretrained_init(model: Any, arch: str) -> str | None:
    """Load cached pretrained weights into every layer whose shape fits: COCO for torchvision detectors,
    ImageNet MobileNetV2 for the backbone of fasterrcnn_mobilenet_v2. Returns what was loaded, or None."""
    from smarthub.annotate.detect import SMARTHUB_ARCHS, _torch_load, coco_weights_file, torch_checkpoint_dir

    if arch in SMARTHUB_ARCHS:
        from smarthub.model.archs import expected_weights_file

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

    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint
    from smarthub.imaging import open_rgb

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
    for epoch in range(options.epochs):
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
            report(TrainProgress("train", epoch + 1, options.epochs, b + 1, batches))
    path = save_detector_checkpoint(out, model.cpu(), arch=options.model, labels=labels, model_kwargs=kwargs)
    return path, pretrained


# ---------------------------------------------------------------- validation


def predict_items(detector: Any, items: list[DetItem]) -> list[Any]:
    """Detections of `detector` on each item, in the item's full EXIF-corrected frame."""
    from smarthub.annotate.preannotate import load_for_detection

    out = []
    for it in items:
        im, (w, h) = load_for_detection(it.image, max_side_px=detector.max_side_px, min_side_px=detector.min_side_px)
        det = detector.detect([im])[0]
        out.append(det.scaled(w / im.width, h / im.height))
    return out


def validation_metrics(items: list[DetItem], dets: list[Any], names: list[str], *,
                       min_precision: float | None) -> tuple[list[ClassMetrics], float | None, float | None,
                                                             dict[str, list[tuple[float, bool]]]]:
    """Per-class AP (faster-coco-eval) and tuned thresholds from validation predictions."""
    from smarthub.annotate.evaluate import coco_map

    pairs: dict[str, list[tuple[float, bool]]] = {n: [] for n in names}
    truth: dict[str, int] = {n: 0 for n in names}
    coco_pairs = []
    for it, det in zip(items, dets):
        for label in names:
            mask = np.array([lab == label for lab in det.labels], dtype=bool)
            t = [xyxy for lab, xyxy in it.boxes if lab == label]
            truth[label] += len(t)
            pairs[label] += match_scores(det.xyxy[mask], det.confidence[mask], np.array(t).reshape(-1, 4))
        pred_boxes = [(lab, tuple(float(v) for v in xyxy), float(s))
                      for lab, xyxy, s in zip(det.labels, det.xyxy, det.confidence) if lab in truth]
        coco_pairs.append((pred_boxes, [(lab, xyxy, None) for lab, xyxy in it.boxes], it.width, it.height))
    map50, map50_95, per_label = coco_map(coco_pairs, names)
    metrics = [ClassMetrics(n, truth[n], *per_label.get(n, (None, None)),
                            threshold=choose_threshold(pairs[n], truth[n], min_precision=min_precision))
               for n in names]
    return metrics, map50, map50_95, pairs


def save_pr_curves(path: Path, pairs: dict[str, list[tuple[float, bool]]], metrics: list[ClassMetrics]) -> None:
    """Precision-recall curve of each class on validation, the tuned point marked (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smarthub.annotate.thresholds import pr_points
    from smarthub.atomicio import atomic_write_with

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
    from smarthub import trust
    from smarthub.annotate.detect import _check_ultralytics_pickle

    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # a torch zip archive, or a legacy pickle
        raise ModelError(f"cannot load Ultralytics model {str(path)!r}: not a PyTorch checkpoint; offline, use a "
                         f".yaml such as yolov8n.yaml (trains from scratch) or a local .pt file")
    trust.announce(_check_ultralytics_pickle(path))


def train_detector(labelme_dir: Path, models_dir: Path, options: DetectorTrainOptions | None = None, *,
                   progress: Callable[[TrainProgress], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> DetectorRun:
    """Build the dataset from `labelme_dir`, train, measure and tune on validation; write a run folder.

    Raises DatasetError (bad input, one line), ModelError (backend), TrainingStopped (should_stop()
    turned true: nothing written, earlier runs untouched).
    """
    from smarthub import fileops
    from smarthub.annotate.detect import RUN_FILE, RUN_FORMAT, DetectorOptions, load_detector
    from smarthub.annotate.export import dataset_split
    from smarthub.atomicio import atomic_save_torch, atomic_write_json
    from smarthub.model.devices import resolve_device
    from smarthub.outputs import staged_output

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

    def report(p: TrainProgress) -> None:
        if should_stop is not None and should_stop():
            raise TrainingStopped(f"training stopped at epoch {p.epoch}/{p.epochs}: nothing was written, "
                                  f"the previous detector stays")
        say(p)

    say(TrainProgress("split"))
    dataset = scan_labelme_dir(labelme_dir)
    check_trainable(dataset)
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
            last = train_ultralytics(data_yaml, work, options, device, runs / ".cache" / "ultralytics", report)
            # through atomic_save_torch: the run's weights are recorded as written by smarthub (trust.py)
            atomic_save_torch(staged / "weights.pt", lambda tmp: shutil.copyfile(last, tmp))
            weights_name, pretrained = "weights.pt", ("Ultralytics weights" if options.model.endswith(".pt") else None)
        else:
            _, pretrained = train_torchvision(train_items, names, staged / "detector.pt", options, device, report)
            weights_name = "detector.pt"
        fileops.discard_folder(work)
        report(TrainProgress("evaluate"))
        detector = load_detector(staged / weights_name, DetectorOptions(
            conf=EVAL_CONF, max_det=100, imgsz=options.imgsz, device=device,
            config_dir=runs / ".cache" / "ultralytics"))
        dets = predict_items(detector, splits["val"])
        metrics, map50, map50_95, pairs = validation_metrics(splits["val"], dets, names,
                                                             min_precision=options.min_precision)
        save_pr_curves(staged / "pr_curves.png", pairs, metrics)
        atomic_write_json(staged / "split.json", record.to_json())
        run = DetectorRun(run_dir=final, backend=options.backend, names=names,
                          counts={s: len(v) for s, v in splits.items()},
                          backgrounds={s: sum(not it.boxes for it in v) for s, v in splits.items()},
                          silver=len(silver), metrics=metrics, map50=map50, map50_95=map50_95, notes=notes)
        opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
        atomic_write_json(staged / RUN_FILE, {
            "format": RUN_FORMAT, "version": 1, "weights": weights_name, "backend": options.backend,
            "model": options.model, "pretrained": pretrained, "names": names, "imgsz": options.imgsz,
            "device": device, "labelme_dir": str(labelme_dir.resolve()), "options": opts,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "split": {"counts": run.counts, "backgrounds": run.backgrounds, "silver": len(silver)},
            "validation": {"map50": map50, "map50_95": map50_95,
                           "classes": {m.label: {"truth": m.truth, "ap50": m.ap50, "ap50_95": m.ap50_95,
                                                 "precision": m.threshold.precision, "recall": m.threshold.recall}
                                       for m in metrics}},
            "thresholds": {m.label: m.threshold.to_json() for m in metrics},
            "min_precision": options.min_precision})
    atomic_write_json(runs / LATEST_FILE, {"run": name})
    run.seconds = time.monotonic() - started
    say(TrainProgress("done", options.epochs, options.epochs))
    return run
