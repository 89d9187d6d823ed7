"""Every box the detector found down to a low floor, kept with its score, so thresholds can move afterwards.

`annotate` runs the detector once at `DEFAULT_FLOOR` and records all boxes in the batch's bookkeeping folder
(`<labelme root>/.smarthub/scored_boxes.json`); the Labelme files hold only the boxes at the chosen thresholds.
Moving a threshold filters these records in memory (`filter_shapes`) and `write_at_thresholds` rewrites the
Labelme files from them, never a file a person edited (labelme.edit_state).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smarthub.annotate.detect import load_detector, read_run
from smarthub.annotate.labelme import (
    LabelmeFile,
    Shape,
    edit_state,
    load_labelme,
    mark_silver,
    parse_shape,
    relative_image_path,
    save_labelme,
    shape_to_dict,
    shapes_hash,
    stamp_file,
)
from smarthub.annotate.options import DetectOptions
from smarthub.atomicio import atomic_write_json, read_json
from smarthub.errors import AnnotationError, SmartHubError
from smarthub.workspace import META_DIRNAME

if TYPE_CHECKING:
    from smarthub.annotate.detect import Detector, DetectorOptions

DEFAULT_FLOOR = 0.05
SCORED_FILE = "scored_boxes.json"
SCORED_FORMAT = "smarthub-scored-boxes"


@dataclass(frozen=True)
class Thresholds:
    """A confidence threshold for every class, and per-class ones (a run's tuned thresholds, or sliders)."""

    conf: float = DetectOptions.conf
    per_class: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, v in [("conf", self.conf), *self.per_class.items()]:
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise SmartHubError(f"threshold {name} must be between 0 and 1, got {v!r}")

    def of(self, label: str) -> float:
        return float(self.per_class.get(label, self.conf))

    def of_shape(self, shape: Shape) -> float:
        """The threshold of a box: by the detector's class when a classifier renamed it, else its label."""
        key = shape.extra.get("detector_label")
        return self.of(key if isinstance(key, str) else shape.label)

    @property
    def lowest(self) -> float:
        return min([self.conf, *self.per_class.values()])

    def to_json(self) -> dict[str, Any]:
        return {"conf": self.conf, "per_class": dict(sorted(self.per_class.items()))}

    @classmethod
    def from_json(cls, obj: Any) -> Thresholds:
        if not isinstance(obj, dict) or not isinstance(obj.get("per_class", {}), dict):
            raise AnnotationError(f"thresholds must be {{'conf': x, 'per_class': {{...}}}}, got {obj!r}"[:200])
        return cls(float(obj.get("conf", DetectOptions.conf)),
                   {str(k): float(v) for k, v in obj.get("per_class", {}).items()})


@dataclass
class ScoredImage:
    """One image's boxes down to the floor (Labelme shapes with `score`), in its EXIF-corrected frame."""

    image: str  # relative to the images folder (POSIX)
    json: str  # the Labelme file, relative to the Labelme root (POSIX)
    width: int
    height: int
    shapes: list[Shape] = field(default_factory=list)

    @property
    def scores(self) -> np.ndarray:
        return np.array([score_of(s) for s in self.shapes], dtype=np.float64)


@dataclass
class ScoredBatch:
    """A pre-annotated batch: where its images and Labelme files are, and every scored box."""

    images_dir: Path
    root: Path  # the Labelme root (the images folder, or --out)
    floor: float
    thresholds: Thresholds  # what annotate chose (tuned per class, or --conf)
    tuned: bool  # the per-class thresholds came from the detector run
    provenance: dict[str, Any] = field(default_factory=dict)
    images: list[ScoredImage] = field(default_factory=list)

    def json_path(self, item: ScoredImage) -> Path:
        return self.root / item.json

    def image_path(self, item: ScoredImage) -> Path:
        return self.images_dir / item.image


# ------------------------------------------------------------------ pure


def score_of(shape: Shape) -> float:
    s = shape.extra.get("score")
    return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else 1.0


def filter_shapes(shapes: list[Shape], thresholds: Thresholds) -> list[Shape]:
    """The shapes scored at or above their class threshold (a shape without a score is always kept)."""
    return [s for s in shapes if score_of(s) >= thresholds.of_shape(s) - 1e-12]


def least_confident(shapes: list[Shape]) -> float | None:
    """The lowest score among `shapes` (None when there is none)."""
    return min((score_of(s) for s in shapes), default=None)


def labelme_at(batch: ScoredBatch, item: ScoredImage, thresholds: Thresholds, *,
               existing: LabelmeFile | None = None) -> LabelmeFile:
    """The Labelme file of one image at `thresholds` (imageData and flags of `existing` are kept), stamped."""
    json_path = batch.json_path(item)
    lf = LabelmeFile(image_path=relative_image_path(json_path, batch.image_path(item)), image_height=item.height,
                     image_width=item.width, shapes=[copy.deepcopy(s) for s in filter_shapes(item.shapes, thresholds)])
    if existing is not None:
        lf.image_data, lf.flags = existing.image_data, dict(existing.flags)
    silver = batch.provenance.get("silver_min_conf")
    if isinstance(silver, (int, float)):
        mark_silver(lf, float(silver))
    return stamp_file(lf, provenance_at(batch.provenance, thresholds))


def provenance_at(provenance: dict[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """The provenance of a Labelme file written at `thresholds`."""
    out = {k: v for k, v in provenance.items() if k not in ("conf", "class_conf")}
    out["conf"] = thresholds.conf
    if thresholds.per_class:
        out["class_conf"] = {k: round(v, 4) for k, v in sorted(thresholds.per_class.items())}
    return out


# ------------------------------------------------------------------ the detector at the floor


def scoring_detector(spec: str | Path, options: DetectorOptions, *,
                     floor: float = DEFAULT_FLOOR) -> tuple[Detector, Thresholds, bool]:
    """(the detector keeping every box down to `floor`, the thresholds annotate would use, tuned?).

    The thresholds are the run folder's tuned per-class ones unless `options.run_thresholds` is False
    (the user gave --conf), else `options.conf` (and `options.class_conf`).
    """
    if not 0.0 < floor <= 1.0:
        raise SmartHubError(f"the score floor must be in (0, 1], got {floor}")
    per_class = dict(options.class_conf)
    tuned = False
    if options.run_thresholds and Path(spec).is_dir():
        run = read_run(Path(spec))
        tuned_conf = {str(k): float(v["conf"]) for k, v in (run.get("thresholds") or {}).items()
                      if isinstance(v, dict) and "conf" in v}
        tuned = bool(tuned_conf)
        per_class = {**tuned_conf, **per_class}
    thresholds = Thresholds(options.conf, per_class)
    low = min(floor, thresholds.lowest)
    detector = load_detector(spec, dataclasses.replace(options, conf=low, class_conf={}, run_thresholds=False))
    return detector, thresholds, tuned


# ------------------------------------------------------------------ I/O edges


def scored_path(root: Path) -> Path:
    return Path(root) / META_DIRNAME / SCORED_FILE


def save_scored(batch: ScoredBatch) -> Path:
    """Write the batch's scored boxes atomically into its bookkeeping folder; returns the path."""
    obj = {"format": SCORED_FORMAT, "version": 1, "images_dir": str(batch.images_dir.resolve()),
           "floor": batch.floor, "thresholds": batch.thresholds.to_json(), "tuned": batch.tuned,
           "provenance": batch.provenance,
           "images": [{"image": it.image, "json": it.json, "width": it.width, "height": it.height,
                       "shapes": [shape_to_dict(s) for s in it.shapes]} for it in batch.images]}
    path = scored_path(batch.root)
    try:
        atomic_write_json(path, obj)
    except SmartHubError as e:
        raise AnnotationError(str(e)) from e
    return path


def load_scored(root: Path) -> ScoredBatch:
    """The scored boxes of the batch whose Labelme files are under `root`; AnnotationError when absent or bad."""
    path = scored_path(root)
    if not path.is_file():
        raise AnnotationError(f"no scored boxes in {path.parent}: pre-annotate {root} first")
    try:
        obj = read_json(path, what="scored-boxes file")
    except SmartHubError as e:
        raise AnnotationError(str(e)) from e
    if not isinstance(obj, dict) or obj.get("format") != SCORED_FORMAT or not isinstance(obj.get("images"), list):
        raise AnnotationError(f"{path} is not a smarthub scored-boxes file")
    try:
        images = [ScoredImage(image=str(d["image"]), json=str(d["json"]), width=int(d["width"]),
                              height=int(d["height"]),
                              shapes=[parse_shape(s, where=f"{path}: images[{i}].shapes[{k}]")
                                      for k, s in enumerate(d["shapes"])])
                  for i, d in enumerate(obj["images"])]
    except (KeyError, TypeError, ValueError) as e:
        raise AnnotationError(f"{path}: an image record is incomplete ({e})") from e
    return ScoredBatch(images_dir=Path(obj.get("images_dir") or root), root=Path(root),
                       floor=float(obj.get("floor", DEFAULT_FLOOR)),
                       thresholds=Thresholds.from_json(obj.get("thresholds") or {}), tuned=bool(obj.get("tuned")),
                       provenance=dict(obj.get("provenance") or {}), images=images)


@dataclass
class RewriteReport:
    """What `write_at_thresholds` did: files rewritten, already right, and kept because a person edited them."""

    thresholds: Thresholds
    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)
    boxes_per_label: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        t = self.thresholds
        at = f"conf {t.conf:.2f}" + ("; " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.per_class.items()))
                                     if t.per_class else "")
        lines = [f"at {at}: {len(self.written)} Labelme files rewritten, {len(self.unchanged)} unchanged, "
                 f"{len(self.kept)} kept (a person edited them); {sum(self.boxes_per_label.values())} boxes"]
        lines += [f"kept {p}: {r}" for p, r in self.kept]
        return "\n".join(lines)


def write_at_thresholds(batch: ScoredBatch, thresholds: Thresholds) -> RewriteReport:
    """Rewrite the batch's Labelme files with the scored boxes at `thresholds`.

    A file a person edited (or merged, or that smarthub did not write) is never touched; a file already
    holding exactly these boxes is left as is. Each write is atomic.
    """
    from collections import Counter

    report = RewriteReport(thresholds=thresholds)
    counts: Counter[str] = Counter()
    for item in batch.images:
        path = batch.json_path(item)
        existing = None
        if path.exists():
            try:
                existing = load_labelme(path)
            except AnnotationError as e:
                report.kept.append((path, f"not a valid Labelme file, left alone: {e}"))
                continue
            state = edit_state(existing)
            if state != "ours":
                report.kept.append((path, "edited by a person" if state == "edited" else "not written by smarthub"))
                counts.update(s.label for s in existing.shapes)
                continue
        lf = labelme_at(batch, item, thresholds, existing=existing)
        counts.update(s.label for s in lf.shapes)
        if existing is not None and shapes_hash(existing.shapes) == shapes_hash(lf.shapes) and \
                existing.stamp == lf.stamp:
            report.unchanged.append(path)
            continue
        save_labelme(path, lf)
        report.written.append(path)
    report.boxes_per_label = dict(sorted(counts.items()))
    return report
