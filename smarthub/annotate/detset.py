"""A Labelme folder read as a detection dataset: every image, its boxes, background negatives.

Strict on purpose (what trains a detector or is exported must not silently lose or leak images):
a broken JSON, an imagePath outside the folder or not an image, a missing image, or two files
naming one image stop the scan with one line naming the file. Images without a Labelme file are
background negatives (no objects), counted in the report.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.annotate.labelme import (
    SILVER_FLAG,
    LabelmeFile,
    contained_image_path,
    load_labelme,
    non_box_shapes,
    shape_boxes,
)
from smarthub.dataset import IMAGE_SUFFIXES
from smarthub.errors import AnnotationError, DatasetError, ImageError
from smarthub.imaging import check_image

Box = tuple[str, tuple[float, float, float, float]]


@dataclass
class DetItem:
    """One image of the dataset: `key` is its path relative to the root (POSIX), boxes in its EXIF frame."""

    key: str
    image: Path
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    json_path: Path | None = None
    silver: bool = False

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(label for label, _ in self.boxes)


@dataclass
class DetSet:
    """The scanned folder: items sorted by key, class names sorted, and counts for the report."""

    root: Path
    items: list[DetItem]
    notes: list[str] = field(default_factory=list)  # shapes read as boxes or dropped (see `shape_notes`)

    @property
    def names(self) -> list[str]:
        return sorted({label for it in self.items for label, _ in it.boxes})

    @property
    def backgrounds(self) -> int:
        return sum(1 for it in self.items if not it.boxes)

    def images_per_class(self) -> dict[str, int]:
        c: Counter[str] = Counter(label for it in self.items for label in it.labels)
        return dict(sorted(c.items()))


def check_not_nested(src: Path, out: Path, *, what: str = "output folder") -> None:
    """Refuse an output folder inside the input folder, or the input inside the output."""
    s, o = Path(src).resolve(), Path(out).resolve()
    if o == s or o.is_relative_to(s):
        raise DatasetError(f"{what} {out} is inside the input folder {src}: choose a folder outside it")
    if s.is_relative_to(o):
        raise DatasetError(f"{what} {out} contains the input folder {src}: choose another folder")


@dataclass
class ShapeTally:
    """Shapes that are not rectangles, over a folder: polygons read as boxes, other shapes dropped."""

    boxed: int = 0
    boxed_files: list[Path] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_files: list[Path] = field(default_factory=list)

    def add(self, path: Path, lf: LabelmeFile) -> None:
        boxed, dropped = non_box_shapes(lf)
        if boxed:
            self.boxed += boxed
            self.boxed_files.append(path)
        if dropped:
            self.dropped.update(dropped)
            self.dropped_files.append(path)

    def notes(self) -> list[str]:
        """One line per kind of change, naming how many shapes, in how many files, and the first file."""
        out = []
        if self.boxed:
            out.append(f"{self.boxed} polygon{'s' if self.boxed != 1 else ''} in {len(self.boxed_files)} Labelme "
                       f"file{'s' if len(self.boxed_files) != 1 else ''} read as {'their' if self.boxed != 1 else 'its'} "
                       f"bounding box (e.g. {self.boxed_files[0]})")
        if self.dropped:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.dropped.items()))
            out.append(f"{kinds} shape{'s' if sum(self.dropped.values()) != 1 else ''} in {len(self.dropped_files)} "
                       f"Labelme file{'s' if len(self.dropped_files) != 1 else ''} dropped: a detector learns boxes "
                       f"(rectangles or polygons) only (e.g. {self.dropped_files[0]})")
        return out


def iter_images(images_dir: Path, *, exclude: Path | None = None) -> Iterator[Path]:
    """Image files under `images_dir` (recursive, sorted, skipping dot folders and `exclude`)."""
    exclude = exclude.resolve() if exclude else None
    for root, dirs, files in os.walk(images_dir):
        root_p = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_p / d).resolve() != exclude)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield root_p / name


def _oriented_size(path: Path) -> tuple[int, int]:
    return check_image(path)


def scan_labelme_dir(root: Path, *, silver_only: bool = False) -> DetSet:
    """Read every Labelme file and image under `root` (recursive, dot folders skipped).

    `silver_only`: keep only files whose flags mark them silver (see preannotate's silver flags),
    and no background images. Raises DatasetError (one line) on the first problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Labelme folder not found: {root}")
    rroot = root.resolve()
    claimed: dict[Path, Path] = {}
    tally = ShapeTally()
    items: list[DetItem] = []
    problems: list[str] = []
    for jpath in sorted(root.rglob("*.json")):
        rel = jpath.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        try:
            lf = load_labelme(jpath)
            image = contained_image_path(jpath, lf, rroot)
        except AnnotationError as e:
            problems.append(str(e))
            continue
        if not image.is_file():
            problems.append(f"{jpath}: its image {lf.image_path!r} is missing; put it back beside the JSON "
                            f"or remove the JSON")
            continue
        if image in claimed:
            problems.append(f"{jpath} and {claimed[image]} both describe {image.name}; keep one")
            continue
        claimed[image] = jpath
        silver = bool(lf.flags.get(SILVER_FLAG))
        if silver_only and not silver:
            continue
        tally.add(jpath, lf)
        boxes = [(label, xyxy) for label, xyxy, _ in shape_boxes(lf)]
        items.append(DetItem(key=image.relative_to(rroot).as_posix(), image=image, width=lf.image_width,
                             height=lf.image_height, boxes=boxes, json_path=jpath, silver=silver))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise DatasetError(problems[0] + more)
    if not silver_only:
        for image in iter_images(root):
            resolved = image.resolve()
            if resolved in claimed:
                continue
            try:
                w, h = _oriented_size(image)
            except ImageError as e:
                raise DatasetError(f"{image} has no Labelme file and cannot be read as a background "
                                   f"image: {e.reason}; fix or remove it") from e
            items.append(DetItem(key=resolved.relative_to(rroot).as_posix(), image=resolved, width=w, height=h))
    items.sort(key=lambda it: it.key)
    return DetSet(root=root, items=items, notes=tally.notes())
