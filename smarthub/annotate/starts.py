"""Where a detector's training starts: COCO YOLO weights, an ImageNet backbone under a YOLO head, or nothing.

`choose_start(spec)` looks offline-first: COCO YOLO weights (`yolov8n.pt`, `yolo11n.pt`) in Ultralytics'
weights folder or the torch cache; else a YOLOv8 neck and Detect head on an ImageNet-pretrained torchvision
backbone whose weights are in the torch cache (Ultralytics' `TorchVision` YAML module, `split=True`, with
`Index` modules picking the last block at strides 8, 16 and 32); else `yolov8n.yaml` from scratch, said on
one line. `backbone_yaml(start, nc)` writes the model YAML for a backbone start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smarthub.errors import ModelError, SmartHubError
from smarthub.model.archs import checkpoints_dir

AUTO = "auto"
SCRATCH_YAML = "yolov8n.yaml"
COCO_YOLO_FILES = ("yolo11n.pt", "yolov8n.pt")  # looked for in this order by `auto`
# ImageNet backbones `auto` tries, in this order (the first whose weights file is cached wins); only
# mobilenet_v2 is measured (bench/RESULTS.md), the others are built the same way.
AUTO_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet18")
BACKBONE_TRUNCATE = 2  # drop the classifier end of the unwrapped model (as Ultralytics' yolo11-cls-resnet18.yaml)
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class NeckInput:
    """One backbone map feeding the neck: `Index` position in the split output (0 is the input image),
    the torchvision block it comes from, its stride and channels."""

    index: int
    block: int
    stride: int
    channels: int


@dataclass(frozen=True)
class DetectorStart:
    """The start of a training run. kind: 'coco' (YOLO weights), 'backbone' (ImageNet torchvision backbone
    under a YOLOv8 neck and head), 'scratch' (a YOLO YAML, random weights), 'weights' (a local .pt file),
    'torchvision' (a torchvision detector, see train_detector.train_torchvision)."""

    kind: str
    model: str  # what Ultralytics gets (a .pt path or a .yaml name); for 'backbone' the YAML is written later
    weights_file: Path | None = None
    backbone: str | None = None
    backbone_weights: str | None = None  # torchvision weights enum name, e.g. IMAGENET1K_V1
    truncate: int = BACKBONE_TRUNCATE
    neck: tuple[NeckInput, ...] = field(default_factory=tuple)
    message: str = ""

    def describe(self) -> str:
        """One line: what the run starts from."""
        if self.kind == "backbone":
            feeds = ", ".join(f"block {n.block} (stride {n.stride}, {n.channels} ch)" for n in self.neck)
            return (f"start: YOLOv8n neck and head on {self.backbone} {self.backbone_weights} "
                    f"({self.weights_file.name if self.weights_file else '?'}); neck fed by {feeds}")
        if self.kind == "coco":
            return f"start: COCO YOLO weights {self.weights_file}"
        if self.kind == "weights":
            return f"start: weights {self.weights_file}"
        if self.kind == "torchvision":
            return f"start: torchvision detector {self.model}"
        return f"start: {self.model} from scratch" + (f" ({self.message})" if self.message else "")

    def to_json(self) -> dict[str, Any]:
        """What run.json records."""
        return {"kind": self.kind, "model": self.model if self.kind != "backbone" else "yolov8n neck+head",
                "weights_file": self.weights_file.name if self.weights_file else None,
                "backbone": self.backbone, "backbone_weights": self.backbone_weights,
                "neck_from": [{"block": n.block, "index": n.index, "stride": n.stride, "channels": n.channels}
                              for n in self.neck]}


# ---------------------------------------------------------------- the chooser


def weights_search_dirs() -> list[Path]:
    """Where COCO YOLO weights are looked for: Ultralytics' weights folder (from its settings file, read
    without importing Ultralytics) and the torch cache."""
    import json
    import os

    env = os.environ.get("YOLO_CONFIG_DIR")
    base = Path(env).expanduser() if env else Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser()
    dirs = []
    for settings in (base / "Ultralytics" / "settings.json", base / "settings.json"):
        try:
            wd = json.loads(settings.read_text(encoding="utf-8")).get("weights_dir")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(wd, str) and Path(wd) not in dirs:
            dirs.append(Path(wd))
    dirs.append(checkpoints_dir())
    return dirs


def _backbone_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def backbone_weights(name: str, cache: Path) -> tuple[str, Path, bool]:
    """(weights enum name, file in `cache`, cached?) for torchvision model `name`: the first of its ImageNet
    weights whose file is cached, else IMAGENET1K_V1 (the file smarthub's classifier uses too) or its default."""
    from torchvision.models import get_model_weights

    enum = list(get_model_weights(name))
    for w in enum:
        f = cache / w.url.rsplit("/", 1)[-1]
        if f.is_file():
            return w.name, f, True
    default = next((w for w in enum if w.name == "IMAGENET1K_V1"), get_model_weights(name).DEFAULT)
    return default.name, cache / default.url.rsplit("/", 1)[-1], False


def probe_neck(name: str, *, truncate: int = BACKBONE_TRUNCATE, size_px: int = 256) -> tuple[NeckInput, ...]:
    """The last block at each of strides 8, 16, 32 of torchvision model `name` unwrapped as Ultralytics'
    TorchVision module does (no weights needed: a forward pass of an untrained copy)."""
    import torch
    from torch import nn
    from torchvision.models import get_model

    model = get_model(name, weights=None)
    layers = list(model.children())
    if isinstance(layers[0], nn.Sequential):
        layers = [*layers[0].children(), *layers[1:]]
    layers = layers[:-truncate] if truncate else layers
    found: dict[int, NeckInput] = {}
    x = torch.zeros(1, 3, size_px, size_px)
    with torch.no_grad():
        for block, layer in enumerate(layers):
            x = layer.eval()(x)
            if x.ndim != 4:
                break
            stride = size_px // x.shape[-1]
            if stride in STRIDES:
                found[stride] = NeckInput(index=block + 1, block=block, stride=stride, channels=int(x.shape[1]))
    missing = [s for s in STRIDES if s not in found]
    if missing:
        raise ModelError(f"backbone {name} has no feature map at stride {missing}: choose a CNN backbone "
                         f"such as mobilenet_v2")
    return tuple(found[s] for s in STRIDES)


def _backbone_start(name: str, cache: Path, *, required: bool) -> DetectorStart | None:
    enum, path, cached = backbone_weights(name, cache)
    if not cached:
        if not required:
            return None
        raise ModelError(f"ImageNet weights for backbone {name} are not in the torch cache (expected {path}): "
                         f"copy the file there with `smarthub weights add {path.name}`, or use --model "
                         f"{SCRATCH_YAML} to train from scratch")
    return DetectorStart("backbone", model=f"{name}-yolov8n.yaml", weights_file=path, backbone=name,
                         backbone_weights=enum, neck=probe_neck(name))


def choose_start(spec: str = AUTO, *, search_dirs: list[Path] | None = None,
                 torch_cache: Path | None = None) -> DetectorStart:
    """The start for `--model spec`.

    spec: 'auto' (best start found offline), a COCO YOLO file name ('yolov8n.pt') looked for in
    `search_dirs`, a path to a .pt file, a YOLO .yaml (from scratch), or a torchvision classification model
    name ('mobilenet_v2': its ImageNet weights from `torch_cache` under a YOLOv8 neck and head).
    Raises ModelError (weights not cached: names the file and `smarthub weights add`) and SmartHubError
    (a name torchvision does not have).
    """
    from smarthub.annotate.detect import SMARTHUB_ARCHS, TORCHVISION_ARCHS

    dirs = list(search_dirs) if search_dirs is not None else weights_search_dirs()
    cache = Path(torch_cache) if torch_cache is not None else checkpoints_dir()
    spec = str(spec).strip()
    if spec == AUTO:
        for name in COCO_YOLO_FILES:
            for d in dirs:
                if (Path(d) / name).is_file():
                    return DetectorStart("coco", model=str(Path(d) / name), weights_file=Path(d) / name)
        for name in AUTO_BACKBONES:
            start = _backbone_start(name, cache, required=False)
            if start is not None:
                return start
        return DetectorStart("scratch", model=SCRATCH_YAML, message=(
            f"no pretrained weights found: neither {' nor '.join(COCO_YOLO_FILES)} in "
            f"{', '.join(str(d) for d in dirs)} nor ImageNet weights of {', '.join(AUTO_BACKBONES)} in {cache}; "
            f"add one with `smarthub weights add FILE` for a much better detector"))
    if spec in TORCHVISION_ARCHS or spec in SMARTHUB_ARCHS:
        return DetectorStart("torchvision", model=spec)
    suffix = Path(spec).suffix.lower()
    if suffix in (".yaml", ".yml"):
        return DetectorStart("scratch", model=spec, message="as asked")
    if suffix == ".pt":
        path = Path(spec).expanduser()
        if path.is_file():
            kind = "coco" if path.name in COCO_YOLO_FILES else "weights"
            return DetectorStart(kind, model=str(path), weights_file=path)
        if path.name == spec:  # a bare file name: look in the weights folders
            for d in dirs:
                if (Path(d) / spec).is_file():
                    return DetectorStart("coco" if spec in COCO_YOLO_FILES else "weights",
                                         model=str(Path(d) / spec), weights_file=Path(d) / spec)
        where = ", ".join(str(d) for d in dirs)
        raise ModelError(f"weights {spec} not found (looked in {where or 'no folder'}); offline they cannot be "
                         f"downloaded: copy the file there with `smarthub weights add {path.name}`, or use "
                         f"--model auto")
    if suffix:
        raise SmartHubError(f"--model {spec!r}: give auto, a YOLO .pt or .yaml, a torchvision backbone name "
                            f"(e.g. mobilenet_v2) or a torchvision detector name")
    names = _backbone_names()
    if spec not in names:
        close = [n for n in names if spec.lower()[:5] in n][:6]
        raise SmartHubError(f"torchvision has no backbone {spec!r}" + (f" (close: {', '.join(close)})" if close
                                                                      else "") + "; e.g. mobilenet_v2")
    start = _backbone_start(spec, cache, required=True)
    if start is None:  # required=True raises instead
        raise ModelError(f"no ImageNet weights for backbone {spec}")
    return start


# ---------------------------------------------------------------- the YOLO model of a backbone start


def backbone_yaml(start: DetectorStart, nc: int) -> str:
    """The Ultralytics model YAML of a backbone start: TorchVision (split) -> Index x3 -> YOLOv8n neck, Detect."""
    if start.kind != "backbone" or len(start.neck) != 3:
        raise SmartHubError(f"backbone_yaml needs a backbone start, got {start.kind}")
    p3, p4, p5 = start.neck
    c_last = max(n.channels for n in start.neck)
    return f"""# written by smarthub: YOLOv8n neck and Detect head on torchvision {start.backbone} ({start.backbone_weights})
nc: {nc}
depth_multiple: 0.33
width_multiple: 0.25
backbone:
  - [-1, 1, TorchVision, [{c_last}, {start.backbone}, {start.backbone_weights}, True, {start.truncate}, True]]  # 0
  - [0, 1, Index, [{p3.channels}, {p3.index}]]  # 1 stride 8 (block {p3.block})
  - [0, 1, Index, [{p4.channels}, {p4.index}]]  # 2 stride 16 (block {p4.block})
  - [0, 1, Index, [{p5.channels}, {p5.index}]]  # 3 stride 32 (block {p5.block})
  - [-1, 1, SPPF, [1024, 5]]  # 4
head:
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 2], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]  # 7
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [[-1, 1], 1, Concat, [1]]
  - [-1, 3, C2f, [256]]  # 10 (P3/8)
  - [-1, 1, Conv, [256, 3, 2]]
  - [[-1, 7], 1, Concat, [1]]
  - [-1, 3, C2f, [512]]  # 13 (P4/16)
  - [-1, 1, Conv, [512, 3, 2]]
  - [[-1, 4], 1, Concat, [1]]
  - [-1, 3, C2f, [1024]]  # 16 (P5/32)
  - [[10, 13, 16], 1, Detect, [nc]]
"""
