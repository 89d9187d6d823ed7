"""Detections record and detector backends (torchvision by name or checkpoint, Ultralytics YOLO).

Importing this module is cheap: torch, torchvision and ultralytics are imported inside the
functions that need them. Ultralytics (AGPL-3.0) is only imported by the YOLO backend.

Over 400 lines on purpose: the Detections record and three detector backends (torchvision by name, smarthub
checkpoint, Ultralytics) behind one interface, ~100 lines each.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smarthub import trust
from smarthub.annotate.options import SMARTHUB_ARCHS, TORCHVISION_ARCHS, DetectOptions  # noqa: F401 (re-exported)
from smarthub.errors import ModelError, SmartHubError
from smarthub.model.devices import resolve_device

if TYPE_CHECKING:
    from PIL import Image

# torchvision detection models with COCO weights that `load_detector` accepts by name.
# built here, not by torchvision: Faster R-CNN on an ImageNet MobileNetV2 backbone, whose weights can be had
# offline (see DESIGN.md), so a detector can be fine-tuned from pretrained features without COCO weights.
CHECKPOINT_FORMAT = "smarthub-detector"
CHECKPOINT_VERSION = 1
YOLO_SUFFIXES = frozenset({".pt", ".onnx"})
_NOT_A_CLASS = frozenset({"__background__", "N/A"})


@dataclass
class Detections:
    """A batch of boxes for one image: arrays of equal length N.

    xyxy: float [N, 4] in pixels of the image given to the detector; confidence: float [N];
    class_id: int [N] (index into the detector's class names); labels: the N label strings;
    data: extra per-box arrays (e.g. classifier label and score), each of length N.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    labels: list[str]
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float64)
        if self.xyxy.size == 0:
            self.xyxy = self.xyxy.reshape(0, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        self.class_id = np.asarray(self.class_id).reshape(-1)
        self.labels = [str(x) for x in self.labels]
        n = len(self.confidence)
        if self.xyxy.ndim != 2 or self.xyxy.shape != (n, 4):
            raise SmartHubError(f"Detections: xyxy must have shape ({n}, 4), got {self.xyxy.shape}")
        if self.class_id.size and not np.issubdtype(self.class_id.dtype, np.integer):
            if not np.all(np.mod(self.class_id, 1) == 0):
                raise SmartHubError("Detections: class_id must be integers")
        self.class_id = self.class_id.astype(np.int64)
        if len(self.class_id) != n or len(self.labels) != n:
            raise SmartHubError(f"Detections: {n} boxes but {len(self.class_id)} class ids and {len(self.labels)} labels")
        if not (np.all(np.isfinite(self.xyxy)) and np.all(np.isfinite(self.confidence))):
            raise SmartHubError("Detections: boxes and confidences must be finite")
        if np.any(self.xyxy[:, 0] > self.xyxy[:, 2]) or np.any(self.xyxy[:, 1] > self.xyxy[:, 3]):
            raise SmartHubError("Detections: every box needs x1 <= x2 and y1 <= y2")
        for key, value in list(self.data.items()):
            value = np.asarray(value)
            if len(value) != n:
                raise SmartHubError(f"Detections: data[{key!r}] has {len(value)} entries for {n} boxes")
            self.data[key] = value

    @classmethod
    def empty(cls) -> Detections:
        """No boxes."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64), [])

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: Any) -> Detections:
        """Select boxes with a boolean mask, an index array, a slice or an int."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        idx = np.arange(len(self))[index]
        return Detections(
            self.xyxy[idx], self.confidence[idx], self.class_id[idx], [self.labels[i] for i in idx],
            {k: v[idx] for k, v in self.data.items()},
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """The same boxes with x multiplied by `sx` and y by `sy` (for a resized image)."""
        xyxy = self.xyxy * np.array([sx, sy, sx, sy], dtype=np.float64)
        return Detections(xyxy, self.confidence.copy(), self.class_id.copy(), list(self.labels), dict(self.data))


DetectorOptions = DetectOptions  # the record lives in annotate/options.py (one source of its defaults)


def one_box_per_object(xyxy: np.ndarray, scores: np.ndarray, *, iou: float) -> np.ndarray:
    """Indices (best first) of the boxes class-agnostic NMS keeps: of boxes overlapping at IoU >= `iou`, whatever
    their labels, the best-scored (torchvision.ops.nms). A person corrects one box per object; a second box
    under another label on it is one more delete."""
    import torch
    from torchvision.ops import nms

    keep = nms(torch.as_tensor(np.asarray(xyxy, dtype=np.float32)).reshape(-1, 4),
               torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1), iou)
    return keep.numpy()


def parse_label_map(text: str) -> dict[str, str]:
    """'person=worker,car=vehicle' -> {'person': 'worker', 'car': 'vehicle'}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, sep, dst = part.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise SmartHubError(f"--label-map entry {part!r} must look like NAME=LABEL")
        out[src.strip()] = dst.strip()
    return out


class Detector:
    """One interface over every backend: `detect(images) -> list[Detections]`.

    Subclasses implement `forward(images)` (model inference, all boxes the model returns, in
    the pixels of each given image); `detect` adds the confidence / class / max-det filters
    and the label map.
    """

    name: str = "detector"
    class_names: list[str] = []
    max_side_px: int | None = None  # the model shrinks larger images to this side anyway: annotate pre-scales
    min_side_px: int | None = None  # ... and images whose short side exceeds this (torchvision min_size)

    def __init__(self, options: DetectorOptions) -> None:
        self.options = options

    def forward(self, images: Sequence[Image.Image]) -> list[Detections]:
        raise NotImplementedError

    def detect(self, images: Sequence[Image.Image]) -> list[Detections]:
        """Detect boxes on RGB PIL images (already EXIF-transposed by the caller)."""
        out: list[Detections] = []
        step = self.options.batch
        for start in range(0, len(images), step):
            for det in self.forward(images[start:start + step]):
                out.append(self.postprocess(det))
        return out

    def postprocess(self, det: Detections) -> Detections:
        """Apply class-agnostic NMS (`one_box_per_object`), conf, classes, max_det and the label map to raw
        detections."""
        opts = self.options
        if opts.one_box_per_object and len(det) > 1:
            det = det[one_box_per_object(det.xyxy, det.confidence, iou=opts.iou)]
        if opts.class_conf:
            keep = det.confidence >= np.array([opts.class_conf.get(lab, opts.conf) for lab in det.labels])
        else:
            keep = det.confidence >= opts.conf
        if opts.classes:
            wanted = set(opts.classes)
            keep &= np.array([lab in wanted for lab in det.labels], dtype=bool)
        det = det[keep]
        order = np.argsort(-det.confidence, kind="stable")[: opts.max_det]
        det = det[order]
        if opts.label_map:
            det.labels = [opts.label_map.get(lab, lab) for lab in det.labels]
        return det

    def check_names(self) -> None:
        """Refuse a label map or class filter naming classes this model does not have."""
        known = [n for n in self.class_names if n not in _NOT_A_CLASS]
        for what, names in (("--label-map", list(self.options.label_map)), ("--classes", self.options.classes or [])):
            unknown = [n for n in names if n not in known]
            if unknown:
                shown = ", ".join(known[:100]) + (" ..." if len(known) > 100 else "")
                raise SmartHubError(f"{what} names unknown classes {unknown} for model {self.name}; known: {shown}")

    def provenance(self) -> dict[str, Any]:
        """Model name and thresholds, written into every Labelme file."""
        o = self.options
        prov: dict[str, Any] = {"model": self.name, "conf": o.conf, "iou": o.iou, "max_det": o.max_det,
                                "nms": "one box per object" if o.one_box_per_object else "per class"}
        if o.imgsz:
            prov["imgsz"] = o.imgsz
        if o.label_map:
            prov["label_map"] = dict(o.label_map)
        if o.class_conf:
            prov["class_conf"] = {k: round(v, 4) for k, v in sorted(o.class_conf.items())}
        return prov


# ---------------------------------------------------------------- torchvision


def coco_weights_file(arch: str) -> tuple[str, str]:
    """(file name, url) of the COCO weights torchvision uses for `arch`."""
    from torchvision.models import get_model_weights

    url = get_model_weights(arch).DEFAULT.url
    return url.rsplit("/", 1)[-1], url


def torch_checkpoint_dir() -> Path:
    """Where torchvision looks for downloaded weights: $TORCH_HOME/hub/checkpoints."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


class TorchvisionDetector(Detector):
    """A torchvision detection model (COCO weights or a smarthub checkpoint)."""

    def __init__(self, model: Any, class_names: list[str], name: str, options: DetectorOptions) -> None:
        super().__init__(options)
        import torch

        self.model = model.eval().to(options.device)
        self.class_names = list(class_names)
        self.name = name
        self._torch = torch
        self._configure()
        self.check_names()

    def _configure(self) -> None:
        """Push conf / iou / max_det / imgsz into the model so it does not waste work."""
        m, o = self.model, self.options
        heads = getattr(m, "roi_heads", m)
        if hasattr(heads, "score_thresh"):
            heads.score_thresh = o.backend_conf
        if hasattr(heads, "nms_thresh"):
            heads.nms_thresh = o.iou
        if hasattr(heads, "detections_per_img"):
            heads.detections_per_img = o.max_det
        t = getattr(m, "transform", None)
        if t is not None and o.imgsz and not getattr(t, "fixed_size", None):
            t.min_size, t.max_size = (o.imgsz,), o.imgsz
        if t is not None and not getattr(t, "fixed_size", None):
            self.max_side_px = int(t.max_size)
            self.min_side_px = int(min(t.min_size))

    def forward(self, images: Sequence[Image.Image]) -> list[Detections]:
        torch = self._torch
        from torchvision.transforms.functional import pil_to_tensor

        tensors = [pil_to_tensor(im.convert("RGB")).to(self.options.device, torch.float32).div_(255) for im in images]
        with torch.inference_mode():
            outputs = self.model(tensors)
        dets = []
        for out in outputs:
            cls = out["labels"].cpu().numpy().astype(np.int64)
            labels = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in cls]
            dets.append(Detections(out["boxes"].cpu().numpy(), out["scores"].cpu().numpy(), cls, labels))
        return dets


def build_fasterrcnn_mobilenet_v2(num_classes: int, *, min_size: int = 320, max_size: int = 320,
                                  backbone_weights: bool = False) -> Any:
    """Faster R-CNN on MobileNetV2 features (stride 32) reduced to 256 channels, with a light box head.

    `backbone_weights`: start from torchvision's ImageNet MobileNetV2 file (must be in the torch cache).
    """
    from torch import nn
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    features = mobilenet_v2(weights="IMAGENET1K_V1" if backbone_weights else None).features
    backbone = nn.Sequential(features, nn.Conv2d(1280, 256, 1), nn.ReLU(inplace=True))
    backbone.out_channels = 256
    anchors = AnchorGenerator(sizes=((24, 48, 96, 192),), aspect_ratios=((0.5, 1.0, 2.0),))
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=pool,
                      box_head=TwoMLPHead(256 * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes),
                      min_size=min_size, max_size=max_size)


def build_torchvision_model(arch: str, num_classes: int, **model_kwargs: Any) -> Any:
    """An untrained torchvision detection model (no weights, no download)."""
    from torchvision.models import get_model

    if arch in SMARTHUB_ARCHS:
        try:
            return build_fasterrcnn_mobilenet_v2(num_classes, **model_kwargs)
        except TypeError as e:
            raise ModelError(f"cannot build detector {arch!r}: {e}") from e
    try:
        return get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes, **model_kwargs)
    except (ValueError, TypeError) as e:
        raise ModelError(f"cannot build torchvision detector {arch!r}: {e}") from e


def save_detector_checkpoint(path: Path, model: Any, *, arch: str, labels: list[str],
                             model_kwargs: dict[str, Any] | None = None) -> Path:
    """Save a fine-tuned torchvision detector as a smarthub checkpoint (atomic).

    labels[i] is the name of class id i; labels[0] must be '__background__'.
    """
    import torch

    if not labels or labels[0] != "__background__":
        raise SmartHubError("detector checkpoint labels must start with '__background__'")
    ckpt = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch, "num_classes": len(labels),
            "labels": list(labels), "model_kwargs": dict(model_kwargs or {}),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    trust.save_model(Path(path), lambda tmp: torch.save(ckpt, tmp))
    return Path(path)


def _load_coco_model(arch: str, options: DetectorOptions) -> TorchvisionDetector:
    import torch
    from torchvision.models import get_model_weights

    weights = get_model_weights(arch).DEFAULT
    filename, url = coco_weights_file(arch)
    local = torch_checkpoint_dir() / filename
    if not local.exists():
        try:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # torch prints "Downloading: ..." even without progress
                torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True)
        except (OSError, RuntimeError) as e:  # offline: URLError is an OSError
            raise ModelError(
                f"COCO weights for {arch} are not in the torch cache (expected {local}) and cannot be downloaded "
                f"({type(e).__name__}); fetch {url} elsewhere and run `smarthub weights add FILE` "
                f"(or pass the file itself: --model FILE)") from e
    state = _torch_load(local, weights_only=True)
    model = build_torchvision_model(arch, len(weights.meta["categories"]))
    model.load_state_dict(state)
    return TorchvisionDetector(model, list(weights.meta["categories"]), arch, options)


def _load_checkpoint(path: Path, ckpt: dict[str, Any], options: DetectorOptions) -> TorchvisionDetector:
    missing = [k for k in ("arch", "num_classes", "labels", "state_dict") if k not in ckpt]
    if missing:
        raise ModelError(f"{path} is not a smarthub detector checkpoint (missing {missing})")
    arch, labels = ckpt["arch"], list(ckpt["labels"])
    if len(labels) != ckpt["num_classes"]:
        raise ModelError(f"{path}: {len(labels)} labels for num_classes={ckpt['num_classes']}")
    model = build_torchvision_model(arch, ckpt["num_classes"], **dict(ckpt.get("model_kwargs") or {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise ModelError(f"{path}: weights do not fit {arch}: {str(e).splitlines()[0]}") from e
    return TorchvisionDetector(model, labels, path.name, options)


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        kind = "it cannot be unpickled safely" if isinstance(e, pickle.UnpicklingError) else str(e).splitlines()[0][:200]
        raise ModelError(f"{path} is not a detector weights file torch can read ({type(e).__name__}: {kind})") from e


def _check_ultralytics_pickle(path: Path) -> str:
    """Ultralytics checkpoints pickle whole model objects, so `torch.load(weights_only=True)` refuses them:
    try it first (a plain tensor file passes), else the file must be one smarthub wrote (or --trust)."""
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError):
        return trust.check_pickle(path, what="Ultralytics detector")
    return f"loaded detector {path} (checked with weights_only=True: holds only tensors)"


def _is_ultralytics_pt(path: Path) -> bool:
    """True when a torch zip pickle references ultralytics classes (checked without unpickling)."""
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith("data.pkl"):
                    return b"ultralytics" in zf.read(name)
    except (zipfile.BadZipFile, OSError):
        return False
    return False


# ---------------------------------------------------------------- ultralytics


class YoloDetector(Detector):
    """Ultralytics YOLO weights (.pt or .onnx); needs the optional extra smarthub[yolo]."""

    def __init__(self, path: Path, options: DetectorOptions) -> None:
        super().__init__(options)
        yolo_cls = import_ultralytics(options.config_dir)
        if path.suffix.lower() == ".onnx":
            import_onnxruntime(options.config_dir)
        try:
            self.model = yolo_cls(str(path), task="detect")
        except (OSError, RuntimeError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise ModelError(f"{path} could not be loaded as Ultralytics YOLO weights: {e}") from e
        task = getattr(self.model, "task", "detect")
        if task != "detect":
            raise ModelError(f"{path} is a YOLO {task} model, not a detector")
        names = self.model.names or {}
        if isinstance(names, dict):
            self.class_names = [str(names[i]) for i in sorted(names)]
        else:
            self.class_names = [str(n) for n in names]
        self.name = path.name
        self.max_side_px = options.imgsz or 640
        self.check_names()

    def forward(self, images: Sequence[Image.Image]) -> list[Detections]:
        o = self.options
        kwargs: dict[str, Any] = {"conf": o.backend_conf, "iou": o.iou, "max_det": o.max_det,
                                  "device": o.device, "verbose": False, "save": False}
        if o.imgsz:
            kwargs["imgsz"] = o.imgsz
        results = self.model.predict([im.convert("RGB") for im in images], **kwargs)
        dets = []
        for r in results:
            b = r.boxes
            cls = b.cls.cpu().numpy().astype(np.int64)
            labels = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c) for c in cls]
            dets.append(Detections(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), cls, labels))
        return dets


def import_ultralytics(config_dir: Path | None = None) -> Any:
    """Import ultralytics offline-safe and return its YOLO class.

    Ultralytics writes settings.json into its config dir when imported and, when online, may send
    usage events; YOLO_OFFLINE=1 turns the network off and YOLO_CONFIG_DIR keeps the settings file
    where we say (both only set when the user has not set them).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if config_dir is not None:
        Path(config_dir).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise ModelError(f"YOLO weights need the optional Ultralytics backend: pip install smarthub[yolo] ({e})") from e
    return YOLO


def import_onnxruntime(cache_dir: Path | None = None) -> None:
    """Import onnxruntime (it runs .onnx YOLO weights) with the device-id files it writes on import kept
    in `cache_dir` instead of ~/.cache (it writes under $XDG_CACHE_HOME, respected when the user set it)."""
    import sys

    if "onnxruntime" in sys.modules:
        return
    redirect = cache_dir is not None and "XDG_CACHE_HOME" not in os.environ
    if redirect:
        os.environ["XDG_CACHE_HOME"] = str(cache_dir)
    try:
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ModelError(f".onnx weights need onnxruntime: pip install smarthub[yolo] ({e})") from e
    finally:
        if redirect:
            del os.environ["XDG_CACHE_HOME"]


# ---------------------------------------------------------------- entry point


def load_detector(spec: str | Path, options: DetectorOptions | None = None) -> Detector:
    """A detector from a torchvision model name, a smarthub checkpoint, or Ultralytics weights.

    Raises ModelError for missing/unreadable/non-detector weights and SmartHubError for a label
    map or class filter naming classes the model does not have.
    """
    options = options or DetectorOptions()
    if options.device == "auto":
        options = dataclasses.replace(options, device=resolve_device(options.device))
    text = str(spec)
    path = Path(spec)
    if text in TORCHVISION_ARCHS and not path.exists():
        return _load_coco_model(text, options)
    if not path.exists():
        raise ModelError(f"detector {text!r} not found: give a weights file or one of {', '.join(TORCHVISION_ARCHS)}")
    if path.is_dir():
        return load_run_detector(path, options)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return YoloDetector(path, options)
    for arch in TORCHVISION_ARCHS:  # a torchvision COCO weights file given by path
        if path.name == coco_weights_file(arch)[0]:
            import shutil

            dest = torch_checkpoint_dir() / path.name
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
            return _load_coco_model(arch, options)
    if suffix == ".pt" and _is_ultralytics_pt(path):
        notice = _check_ultralytics_pickle(path)  # before Ultralytics unpickles it (that runs the file's code)
        detector = YoloDetector(path, options)
        trust.announce(notice)
        return detector
    obj = _torch_load(path, weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT or (
            isinstance(obj, dict) and {"arch", "state_dict"} <= set(obj)):
        return _load_checkpoint(path, obj, options)
    kind = "a plain state_dict" if isinstance(obj, dict) else type(obj).__name__
    raise ModelError(f"{path} is not a detector: it holds {kind}, not a smarthub detector checkpoint "
                     f"(see detect.save_detector_checkpoint) or Ultralytics YOLO weights")


# ---------------------------------------------------------------- detector runs (smarthub train-detector)

RUN_FORMAT = "smarthub-detector-run"
RUN_FILE = "run.json"


def read_run(run_dir: Path) -> dict[str, Any]:
    """The run.json of a detector run folder; ModelError when the folder is not one."""
    import json

    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise ModelError(f"{run_dir} is a folder without {RUN_FILE}: give a detector run folder "
                         f"(models/detectors/<run>) or a weights file")
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path} cannot be read: {e}") from e
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT or not isinstance(run.get("weights"), str):
        raise ModelError(f"{path} is not a smarthub detector run (format {RUN_FORMAT!r} with a weights file)")
    return run


def load_run_detector(run_dir: Path, options: DetectorOptions) -> Detector:
    """The detector of a run folder written by `smarthub train-detector`, with its tuned per-class
    thresholds unless `options.run_thresholds` is False (the user gave --conf)."""
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    weights = (run_dir / run["weights"]).resolve()
    if not weights.is_relative_to(run_dir.resolve()) or not weights.is_file():
        raise ModelError(f"{run_dir / RUN_FILE}: weights {run['weights']!r} missing from the run folder")
    thresholds = run.get("thresholds") or {}
    if options.run_thresholds and thresholds:
        conf = {str(k): float(v["conf"]) for k, v in thresholds.items() if isinstance(v, dict) and "conf" in v}
        options = dataclasses.replace(options, class_conf={**conf, **options.class_conf})
    if options.imgsz is None and isinstance(run.get("imgsz"), int):
        options = dataclasses.replace(options, imgsz=run["imgsz"])
    detector = load_detector(weights, options)
    detector.name = run_dir.name
    return detector
