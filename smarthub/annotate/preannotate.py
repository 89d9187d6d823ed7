"""Pre-annotation: a folder of images → detector (+ optional crop classifier) → Labelme JSON files.

Images stream through in batches (bounded memory); every image is EXIF-transposed before detection
and boxes are written in that frame. A JSON a person edited is never overwritten unless asked.

Over 400 lines on purpose: the streaming batch loop, the Labelme write rules (a person's edits are never
overwritten) and the zip are one job sharing its private records.
"""
from __future__ import annotations

import copy
import math
import os
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smarthub.annotate.detect import Detections
from smarthub.annotate.detset import iter_images
from smarthub.annotate.evaluate import iou_matrix
from smarthub.annotate.labelme import (
    LabelmeFile,
    Shape,
    detections_to_labelme,
    edit_state,
    load_labelme,
    mark_silver,
    relative_image_path,
    save_labelme,
    stamp_file,
)
from smarthub.annotate.scored import ScoredBatch, ScoredImage, Thresholds, filter_shapes, provenance_at, save_scored
from smarthub.atomicio import discard_temp
from smarthub.dataset import IMAGE_SUFFIXES
from smarthub.errors import AnnotationError, DatasetError, ImageError, ModelError, SmartHubError
from smarthub.imaging import (
    draft_target,
    encode_jpeg,
    encode_png,
    exif_orientation,
    flatten_to_rgb,
    open_image,
    pillow_open,
)
from smarthub.model.inference import load_classifier, predict_probs

if TYPE_CHECKING:
    from PIL import Image

    from smarthub.annotate.detect import Detections, Detector

DEFAULT_MAX_SIDE_PX = 2048  # cap for detectors that do not say what input size they use
MERGE_DUPLICATE_IOU = 0.5


@dataclass
class AnnotateReport:
    """What `annotate_folder` did: written JSON paths, skipped and failed images with reasons."""

    images: int = 0
    boxes_per_label: dict[str, int] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    images_dir: Path | None = None
    out_dir: Path | None = None
    scored: ScoredBatch | None = None  # every box down to the detector's floor, when thresholds were given

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_label.values())

    def summary(self) -> str:
        """A few human-readable lines."""
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.images} images, {len(self.written)} Labelme files written, {len(self.skipped)} skipped, "
                 f"{len(self.failed)} failed in {self.seconds:.1f} s ({rate:.1f} images/s)",
                 f"{self.boxes} boxes" + (": " + ", ".join(f"{k} {v}" for k, v in
                                                            sorted(self.boxes_per_label.items())) if self.boxes else "")]
        if self.scored is not None and self.scored.images and not any(it.shapes for it in self.scored.images):
            lines.append(f"no box in any image, even scored >= {self.scored.floor}: is this detector made for "
                         f"these images (its classes, its input size)?")
        lines += [f"skipped {p}: {r}" for p, r in self.skipped]
        lines += [f"failed  {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


# ------------------------------------------------------------------ images


def detection_scale(size: tuple[int, int], *, max_side_px: int | None, min_side_px: int | None = None) -> float:
    """The downscale factor (<= 1) the detector would apply anyway (torchvision's rule:
    min(min_side / short side, max_side / long side)), so shrinking first loses nothing."""
    factors = [1.0]
    if min_side_px:
        factors.append(min_side_px / min(size))
    if max_side_px:
        factors.append(max_side_px / max(size))
    return min(factors)


def load_for_detection(path: Path, *, max_side_px: int | None,
                       min_side_px: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, EXIF-transpose and downscale an image to the size the detector would shrink it to anyway.

    Returns (RGB image to detect on, (width, height) of the full EXIF-corrected image).
    JPEGs are decoded at reduced scale (draft), so a 10000 x 8000 photo never sits in memory whole.
    """
    from PIL import Image

    def draft(size: tuple[int, int]) -> tuple[int, int] | None:
        s = detection_scale(size, max_side_px=max_side_px, min_side_px=min_side_px)
        return draft_target(size, s) if s < 1.0 else None

    opened = open_image(path, draft_for=draft)
    out, full = flatten_to_rgb(opened.image), opened.size
    s = detection_scale(out.size, max_side_px=max_side_px, min_side_px=min_side_px)
    if s < 1.0:
        out = out.resize((max(1, round(out.width * s)), max(1, round(out.height * s))), Image.Resampling.BILINEAR)
    return out, full


def _embedded_bytes(path: Path) -> bytes:
    """Image bytes for imageData: the file itself, or the EXIF-transposed image re-encoded (as labelme does)."""
    with pillow_open()(path) as stored:
        if exif_orientation(stored) == 1 and stored.format in ("JPEG", "PNG"):
            return path.read_bytes()
    out = open_image(path).image
    if "A" in out.mode or "transparency" in out.info:
        return encode_png(out)
    return encode_jpeg(flatten_to_rgb(out), quality=95) if out.mode != "RGB" else encode_jpeg(out, quality=95)


# ------------------------------------------------------------------ ROI classifier


class CropClassifier:
    """Labels detection crops with a smarthub (fastai) image classifier."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.learner = _load_learner(self.path)
        self.vocab = [str(v) for v in self.learner.dls.vocab]

    def classify(self, crops: list[Image.Image]) -> tuple[list[str], np.ndarray]:
        """(labels, scores) of the most probable class for each crop."""
        if not crops:
            return [], np.zeros(0)
        probs = np.asarray(predict_probs(self.learner, crops))
        idx = probs.argmax(1)
        return [self.vocab[i] for i in idx], probs[np.arange(len(idx)), idx]


def _load_learner(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"classifier {path} not found: train one with {{train}} or give --classifier PATH")
    return load_classifier(path)


def classify_boxes(classifier: CropClassifier, image: Image.Image, det: Detections) -> Detections:
    """Relabel each box by classifying its crop; keep the detector's label and both scores."""
    if not len(det):
        det.data.update(detector_label=np.array([], dtype=object), detector_score=np.zeros(0),
                        classifier_score=np.zeros(0))
        return det
    crops = []
    for x1, y1, x2, y2 in det.xyxy:
        l, t = int(math.floor(x1)), int(math.floor(y1))
        r, b = max(int(math.ceil(x2)), l + 1), max(int(math.ceil(y2)), t + 1)
        crops.append(image.crop((l, t, r, b)))
    labels, scores = classifier.classify(crops)
    data = dict(det.data, detector_label=np.array(det.labels, dtype=object), detector_score=det.confidence.copy(),
                classifier_score=np.asarray(scores, dtype=np.float64))

    return Detections(det.xyxy, det.confidence, det.class_id, labels, data)


# ------------------------------------------------------------------ planning


@dataclass
class _Job:
    image: Path
    json_path: Path
    existing: LabelmeFile | None = None  # set when merging into a person's file


def _plan(image: Path, json_path: Path, *, overwrite: bool, merge: bool) -> tuple[_Job | None, str | None]:
    """Decide what to do with one image: (job, None) or (None, reason to skip)."""
    if not json_path.exists():
        return _Job(image, json_path), None
    if overwrite:
        return _Job(image, json_path), None
    try:
        lf = load_labelme(json_path)
    except AnnotationError as e:
        return None, f"existing {json_path.name} is not a valid Labelme file, left alone (--overwrite replaces it): {e}"
    state = edit_state(lf)
    if state == "ours":
        return _Job(image, json_path), None
    if merge:
        return _Job(image, json_path, existing=lf), None
    who = "edited by a person" if state == "edited" else "not written by smarthub"
    return None, f"{json_path.name} was {who}; kept (use --merge to add boxes or --overwrite to replace)"


def _probe_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".smarthub-probe-", suffix=".tmp", dir=folder)
        os.close(fd)
        discard_temp(Path(tmp))
    except OSError as e:
        raise AnnotationError(f"output folder {folder} is not writable ({e.strerror or e}); "
                              f"choose another with --out") from e


def merge_shapes(person: list[Shape], ours: list[Shape], *, duplicate_iou: float = MERGE_DUPLICATE_IOU) -> list[Shape]:
    """The person's shapes plus ours that do not duplicate one of them (IoU >= duplicate_iou, any label)."""
    kept = list(person)
    boxes = np.array([s.xyxy for s in person], dtype=np.float64).reshape(-1, 4)
    for s in ours:
        b = np.array(s.xyxy, dtype=np.float64)
        if len(boxes) and iou_matrix(b[None], boxes).max() >= duplicate_iou:
            continue
        kept.append(s)
        boxes = np.vstack([boxes, b[None]])
    return kept


# ------------------------------------------------------------------ the job


def annotate_folder(images_dir: Path, detector: Detector, *, out_dir: Path | None = None, overwrite: bool = False,
                    merge: bool = False, embed_image: bool = False, classifier: Path | None = None,
                    progress: Callable[[int, int], None] | None = None,
                    max_side_px: int | None = None, silver_min_conf: float | None = None,
                    thresholds: Thresholds | None = None, thresholds_tuned: bool = False) -> AnnotateReport:
    """Pre-annotate every image under `images_dir` with `detector`; write Labelme JSON files.

    JSON goes next to each image, or into the mirrored tree under `out_dir`. Files a person edited
    are skipped unless `overwrite` (replace) or `merge` (keep theirs, add ours). Undecodable images
    are reported in `failed`, never fatal. `progress(done, total)` is called from this thread after
    each image. `max_side_px` overrides the size images are shrunk to before detection (default:
    what the detector would shrink them to anyway). `silver_min_conf`: flag boxes scored at least this
    (and images whose boxes all are) as silver in their Labelme flags. `thresholds`: the detector keeps every
    box down to its own (low) conf, the Labelme files get those passing `thresholds`, and all of them are
    recorded with their scores in `<root>/.smarthub/scored_boxes.json` (`report.scored`; see annotate.scored);
    `thresholds_tuned` says they are a detector run's tuned ones.
    Raises AnnotationError when the output folder is not writable and DatasetError when `images_dir` is not a folder.
    """
    t0 = time.perf_counter()
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"images folder not found: {images_dir}")
    if overwrite and merge:
        raise SmartHubError("choose one of --overwrite and --merge")
    if silver_min_conf is not None and not 0.0 < silver_min_conf <= 1.0:
        raise SmartHubError(f"--silver-min-conf must be in (0, 1], got {silver_min_conf}")
    images = list(iter_images(images_dir, exclude=Path(out_dir) if out_dir is not None else None))
    if not images:
        raise DatasetError(f"no images under {images_dir} ({', '.join(sorted(IMAGE_SUFFIXES))}): nothing to annotate")
    root = Path(out_dir) if out_dir is not None else images_dir
    _probe_writable(root)
    crop_classifier = CropClassifier(Path(classifier)) if classifier is not None else None
    max_side = max_side_px or getattr(detector, "max_side_px", None) or DEFAULT_MAX_SIDE_PX
    sides = (max_side, None if max_side_px else getattr(detector, "min_side_px", None))
    provenance = detector.provenance()
    if crop_classifier is not None:
        provenance["classifier"] = crop_classifier.path.name
    if silver_min_conf is not None:
        provenance["silver_min_conf"] = silver_min_conf
    if thresholds is not None:
        provenance = {**provenance_at(provenance, thresholds), "floor": detector.options.conf}
    scored: list[ScoredImage] = []

    report = AnnotateReport(images=len(images), images_dir=images_dir, out_dir=Path(out_dir) if out_dir else None)
    counts: Counter[str] = Counter()
    done = 0
    total = len(images)
    seen_json: set[Path] = set()
    batch_size = max(1, getattr(getattr(detector, "options", None), "batch", 4))

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    plans: list[_Job] = []  # paths only: deciding first keeps memory bounded and skips cost nothing
    for image in images:
        json_path = (root / image.relative_to(images_dir)).with_suffix(".json")
        if json_path in seen_json:
            report.skipped.append((image, f"another image already writes {json_path.name}"))
            tick()
            continue
        seen_json.add(json_path)
        job, reason = _plan(image, json_path, overwrite=overwrite, merge=merge)
        if job is None:
            report.skipped.append((image, reason or "skipped"))
            tick()
        else:
            plans.append(job)

    chunks = [plans[k:k + batch_size] for k in range(0, len(plans), batch_size)]
    writes: list[tuple[_Job, list[Shape], Future[Path]]] = []

    def settle(*, wait: bool) -> None:
        """Record finished JSON writes (all of them when `wait`; never more than two batches queued)."""
        while writes and (wait or writes[0][2].done() or len(writes) > 2 * batch_size):
            job, ours, fut = writes.pop(0)
            try:
                fut.result()
            except AnnotationError as e:
                report.failed.append((job.image, str(e)))
            else:
                report.written.append(job.json_path)
                counts.update(s.label for s in ours)
            tick()

    # decode the next batch while the detector runs on this one; write JSON in the background too
    with ThreadPoolExecutor(1, thread_name_prefix="smarthub-decode") as loader, \
            ThreadPoolExecutor(1, thread_name_prefix="smarthub-write") as writer:
        pending = loader.submit(_load_batch, chunks[0], sides) if chunks else None
        for k in range(len(chunks)):
            if pending is None:
                break
            loaded, failures = pending.result()
            pending = loader.submit(_load_batch, chunks[k + 1], sides) if k + 1 < len(chunks) else None
            for job, reason in failures:
                report.failed.append((job.image, reason))
                tick()
            if loaded:
                dets = detector.detect([im for _, im, _ in loaded])
                for (job, im, size), det in zip(loaded, dets):
                    try:
                        lf, ours = _to_labelme(job, im, size, det, crop_classifier, provenance, embed_image,
                                               silver_min_conf, thresholds=thresholds,
                                               scored=None if thresholds is None else (scored, root, images_dir))
                    except (AnnotationError, ImageError, OSError) as e:
                        report.failed.append((job.image, str(e)))
                        tick()
                        continue
                    writes.append((job, ours, writer.submit(save_labelme, job.json_path, lf)))
            settle(wait=False)
        settle(wait=True)
    report.written.sort()
    report.boxes_per_label = dict(sorted(counts.items()))
    if thresholds is not None:
        report.scored = ScoredBatch(images_dir=images_dir, root=root, floor=float(detector.options.conf),
                                    thresholds=thresholds, tuned=thresholds_tuned, provenance=provenance,
                                    images=sorted(scored, key=lambda it: it.image))
        save_scored(report.scored)
    report.seconds = time.perf_counter() - t0
    return report


def _load_batch(batch: list[_Job], sides: tuple[int, int | None]
                ) -> tuple[list[tuple[_Job, Image.Image, tuple[int, int]]], list[tuple[_Job, str]]]:
    """Decode one batch: (loaded images, failures with reasons)."""
    loaded, failures = [], []
    for job in batch:
        try:
            im, full = load_for_detection(job.image, max_side_px=sides[0], min_side_px=sides[1])
        except ImageError as e:
            failures.append((job, e.reason))
        else:
            loaded.append((job, im, full))
    return loaded, failures


def _to_labelme(job: _Job, im: Image.Image, size: tuple[int, int], det: Detections,
                crop_classifier: CropClassifier | None, provenance: dict[str, Any],
                embed_image: bool, silver_min_conf: float | None = None, *, thresholds: Thresholds | None = None,
                scored: tuple[list[ScoredImage], Path, Path] | None = None) -> tuple[LabelmeFile, list[Shape]]:
    """Detections on the (maybe downscaled) image → the Labelme file to write and the shapes we add.

    With `thresholds`, every box is appended to `scored` = (records, Labelme root, images folder) and only
    those passing `thresholds` go into the file."""
    w, h = size
    if crop_classifier is not None:
        det = classify_boxes(crop_classifier, im, det)
    det = det.scaled(w / im.width, h / im.height)
    lf = detections_to_labelme(det, image_path=relative_image_path(job.json_path, job.image), width=w, height=h,
                               provenance=provenance, image_data=_embedded_bytes(job.image) if embed_image else None)
    if thresholds is not None and scored is not None:
        records, root, images_dir = scored
        records.append(ScoredImage(image=job.image.relative_to(images_dir).as_posix(),
                                   json=job.json_path.relative_to(root).as_posix(), width=w, height=h,
                                   shapes=list(lf.shapes)))
        lf.shapes = [copy.deepcopy(s) for s in filter_shapes(lf.shapes, thresholds)]
        stamp_file(lf, provenance)
    if job.existing is None:
        if silver_min_conf is not None:
            stamp_file(mark_silver(lf, silver_min_conf), provenance)  # the stamp hashes the flags too
        return lf, lf.shapes
    merged = job.existing
    before = len(merged.shapes)
    merged.shapes = merge_shapes(merged.shapes, lf.shapes)
    if silver_min_conf is not None:
        mark_silver(merged, silver_min_conf)
    stamp_file(merged, provenance, merged=True)
    return merged, merged.shapes[before:]


def zip_outputs(source: AnnotateReport | Path, *, zip_path: Path | None = None) -> Path:
    """Zip the Labelme files of a report (or every *.json under a folder) for download.

    Archive names are relative to the output root; the zip goes to a fresh temp folder unless
    `zip_path` is given. Returns the zip's path.
    """
    if isinstance(source, AnnotateReport):
        root = source.out_dir or source.images_dir or Path(".")
        files = list(source.written)
    else:
        root = Path(source)
        if not root.is_dir():
            raise AnnotationError(f"no such folder to zip: {root}")
        files = [p for p in sorted(root.rglob("*.json")) if not any(part.startswith(".") for part in
                                                                     p.relative_to(root).parts)]
    return zip_files(root, files, zip_path=zip_path)


def zip_files(root: Path, files: list[Path], *, zip_path: Path | None = None) -> Path:
    """Zip Labelme files under `root` (archive names relative to it); a fresh temp folder unless `zip_path`."""
    if zip_path is None:
        zip_path = Path(tempfile.mkdtemp(prefix="smarthub-annotations-")) / "annotations.zip"
    zip_path = Path(zip_path)
    try:
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, arcname=Path(f).resolve().relative_to(Path(root).resolve()).as_posix())
    except OSError as e:
        raise AnnotationError(f"cannot write {zip_path}: {e.strerror or e}") from e
    return zip_path
