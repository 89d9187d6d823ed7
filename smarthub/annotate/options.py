"""The one source of the detector jobs' defaults: `DetectOptions` (annotate), `DetectorTrainOptions`
(train-detector) and `ExportOptions` (export-yolo), read by the CLI, the Annotate tab and the demo.

One split default for export-yolo and train-detector (DEFAULT_SPLIT): both record each image's split in the
Labelme folder's split file, and whichever ran first fixed it for the other, so they must agree. It is
train-detector's 0.8/0.2/0 (no test images held out of a small first batch); `--split 0.8,0.1,0.1` asks for a
test split. Kept free of heavy imports so `smarthub --help` can read it (smarthub/optionspec.py).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smarthub.annotate.split import check_split, parse_split
from smarthub.durations import parse_duration
from smarthub.errors import OptionError
from smarthub.model.devices import DEFAULT_DEVICE, DEVICE_CHOICES
from smarthub.optionspec import check, option

# torchvision's COCO detectors annotate can run (their weights download once), and smarthub's own
TORCHVISION_ARCHS = (
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "retinanet_resnet50_fpn_v2",
    "ssdlite320_mobilenet_v3_large",
    "fcos_resnet50_fpn",
)
SMARTHUB_ARCHS = ("fasterrcnn_mobilenet_v2",)

DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"  # annotate's detector when none is given (COCO weights)
DEFAULT_SPLIT = (0.8, 0.2, 0.0)  # train, val, test fractions for new images (export-yolo and train-detector)
TUNE_CHOICES = ("time", "time-per-class", "f1")


def parse_tune(text: str) -> str | int:
    """--tune: 'time', 'time-per-class', 'f1' or a number of tuning trials (checked by the record)."""
    text = text.strip()
    if text in TUNE_CHOICES:
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tune takes {', '.join(TUNE_CHOICES)} or a number of trials (got {text!r})") \
            from None
EXPORT_FORMATS = ("yolo", "coco")
DEVICE_HELP = f"{DEVICE_CHOICES}: auto takes the best one present"


def _split(value: str | tuple[float, ...]) -> tuple[float, float, float]:
    """A split given as '0.8,0.2,0' (the command line) or as fractions, checked (SmartHubError: one line)."""
    return parse_split(value) if isinstance(value, str) else check_split(tuple(value))


@dataclass(frozen=True)
class DetectOptions:
    """Inference options shared by every detector backend (`smarthub annotate`, the Annotate tab)."""

    conf: float = option(0.25, range=(0.0, 1.0), ui=(0.01, 0.99, 0.01), cli=False, label="confidence threshold",
                         help="minimum detection confidence for every class (default: a run folder's tuned "
                              "per-class thresholds, else 0.25)")
    iou: float = option(0.7, ui=(0.1, 0.95, 0.05), label="NMS IoU", help="NMS IoU threshold")
    one_box_per_object: bool = option(True, flag="--nms-per-class", label="one box per object",
                                      help="keep boxes of different classes that overlap at IoU >= --iou (default: "
                                           "of such boxes only the best-scored stays, whatever its label)")
    imgsz: int | None = option(None, range=(16, None), help="detector input size in pixels")
    max_det: int = option(300, range=(1, None), help="at most this many boxes per image")
    classes: list[str] | None = field(default=None)  # keep only these model class names (before the label map)
    label_map: dict[str, str] = field(default_factory=dict)  # model class name -> output label
    batch: int = option(4, range=(1, None), help="images per detector call")
    device: str = option(DEFAULT_DEVICE, help=DEVICE_HELP)
    config_dir: Path | None = field(default=None)  # where Ultralytics may keep its settings.json
    class_conf: dict[str, float] = field(default_factory=dict)  # per model class; `conf` for the others
    run_thresholds: bool = field(default=True)  # a run folder's tuned thresholds replace `conf` (False: --conf given)

    def __post_init__(self) -> None:
        check(self)
        if not 0.0 < self.iou <= 1.0:
            raise OptionError(f"{{iou}} must be in (0, 1], got {self.iou}", field="iou", owner=DetectOptions)
        if any(not 0.0 <= v <= 1.0 for v in self.class_conf.values()):
            raise OptionError(f"per-class thresholds must be between 0 and 1, got {self.class_conf}",
                              field="class_conf", owner=DetectOptions)

    @property
    def backend_conf(self) -> float:
        """The lowest threshold of any class: what the model itself may filter at."""
        return min([self.conf, *self.class_conf.values()])


@dataclass(frozen=True)
class DetectorTrainOptions:
    """`smarthub train-detector` flags of the same names (the app's Annotate tab uses these defaults too).

    model: 'auto' (the best pretrained start found offline, see starts.choose_start), a YOLO .pt/.yaml, a
    torchvision backbone name (ImageNet weights under a YOLOv8 neck and head) or a torchvision detector name.
    Training length: `epochs` when given (an epoch cap), else up to `budget` of wall-clock time; either way
    it stops early when the validation mAP has not improved for `patience` epochs (0: never).
    `budget_s` is `budget` in seconds (set here).
    """

    model: str = option("auto", metavar="SPEC", label="start from",
                        help="auto (default: COCO yolov8n.pt/yolo11n.pt when cached, else a YOLOv8 head on a cached "
                             "ImageNet torchvision backbone, else yolov8n.yaml from scratch), a YOLO .pt/.yaml, a "
                             "torchvision backbone name (e.g. mobilenet_v2), or a torchvision detector name")
    epochs: int | None = option(None, range=(1, None), ui=(0, 300, 1), label="epochs",
                                help="train at most this many epochs (wins over --budget)")
    budget: str | float = option("10m", metavar="DURATION", label="time budget",
                                 help="time for training, e.g. 90s, 5m, 1h; it stops earlier when the validation "
                                      "mAP stops improving")
    patience: int = option(10, range=(0, None), label="patience (epochs)",
                           help="stop after this many epochs without a better validation mAP (0: never early)")
    imgsz: int = option(320, range=(32, None), ui=(64, 1280, 32), label="image size (px)",
                        help="training image size in pixels")
    batch: int = option(8, range=(1, None), help="images per batch")
    device: str = option(DEFAULT_DEVICE, help=DEVICE_HELP)
    split: tuple[float, float, float] = option(DEFAULT_SPLIT, parse=str, metavar="TRAIN,VAL,TEST",
                                               help="train,val,test fractions for new images")
    seed: int = option(0, help="split and training seed")
    min_precision: float | None = option(None, metavar="P",
                                         help="per-class threshold: the most recall reaching precision P (instead "
                                              "of --tune)")
    tune: str | int = option("time", parse=parse_tune, metavar="time|time-per-class|f1|N",
                             help="thresholds: one for every class with the least estimated correction time on "
                                  "validation, a box under the wrong label priced as a relabel (default); "
                                  "time-per-class or f1: each class its own; a number N: first N trials of "
                                  "Ultralytics' genetic search for the learning rate, augmentation strength and "
                                  "image size (sharing --budget with the final run), then thresholds by time")
    silver_dir: Path | None = option(None, flag="--silver", metavar="DIR", parse=Path,
                                     help="add silver-flagged Labelme files of DIR to training")
    name: str | None = option(None, help="run folder name (default: the time)")
    lr: float = option(0.005, cli=False, help="torchvision backend only (Ultralytics picks its own)")
    ultralytics_args: dict[str, Any] = field(default_factory=dict)  # extra YOLO.train() arguments (bench, experts)

    def __post_init__(self) -> None:
        check(self)
        if isinstance(self.tune, int) and not isinstance(self.tune, bool) and self.tune < 1:
            raise OptionError(f"{{tune}} needs a number of trials of 1 or more (got {self.tune})", field="tune",
                              owner=DetectorTrainOptions)
        if isinstance(self.tune, bool) or not (self.tune in TUNE_CHOICES or isinstance(self.tune, int)):
            raise OptionError(f"{{tune}} takes {', '.join(TUNE_CHOICES)} or a number of trials (got {self.tune!r})",
                              field="tune", owner=DetectorTrainOptions)
        object.__setattr__(self, "budget_s", parse_duration(self.budget, field="budget", owner=DetectorTrainOptions))
        object.__setattr__(self, "split", _split(self.split))
        if self.min_precision is not None and not 0.0 < self.min_precision <= 1.0:
            raise OptionError(f"{{min_precision}} must be in (0, 1], got {self.min_precision}", field="min_precision",
                              owner=DetectorTrainOptions)
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")
                                      or self.name in (".", "..")):
            raise OptionError(f"{{name}} {self.name!r} must be a plain folder name", field="name",
                              owner=DetectorTrainOptions)

    @property
    def tune_trials(self) -> int | None:
        """`--tune N`: the number of hyper-parameter trials (None: no search)."""
        return self.tune if isinstance(self.tune, int) else None

    @property
    def threshold_objective(self) -> str:
        """What the thresholds minimise or maximise: 'time', 'time-per-class' or 'f1' (a search's final run: 'time')."""
        return self.tune if isinstance(self.tune, str) else TUNE_CHOICES[0]

    @property
    def backend(self) -> str:
        return "torchvision" if self.model in TORCHVISION_ARCHS + SMARTHUB_ARCHS else "ultralytics"

    def length(self) -> str:
        """How long training may run, in words."""
        stop = f", stopping early after {self.patience} epochs without a better validation mAP" if self.patience \
            else ""
        if self.epochs is not None:
            return f"at most {self.epochs} epochs{stop}"
        return f"at most {duration_words(self.budget_s)}{stop}"  # type: ignore[attr-defined]


def duration_words(seconds: float) -> str:
    """Seconds in words: "90 s", "5 min"."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.3g} min"


@dataclass(frozen=True)
class ExportOptions:
    """`smarthub export-yolo`: a YOLO or COCO dataset from Labelme files."""

    fmt: str = option("yolo", flag="--format", choices=EXPORT_FORMATS, label="format", help="yolo or coco JSON")
    split: tuple[float, float, float] = option(DEFAULT_SPLIT, parse=str, metavar="TRAIN,VAL,TEST",
                                               help="train,val,test fractions for new images")
    seed: int = option(0, help="split seed for new images")
    overwrite: bool = option(False, help="replace a non-empty OUT whole")

    def __post_init__(self) -> None:
        check(self)
        object.__setattr__(self, "split", _split(self.split))
