"""Close the loop: corrected Labelme files → a YOLO detection dataset (images, labels, data.yaml).

Images are copied (never moved). Labels are `class cx cy w h` normalised by the EXIF-corrected
image size the Labelme file records (Ultralytics reads images EXIF-corrected too). Class names
are sorted alphabetically so the class ids are stable across exports.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.errors import AnnotationError, DatasetError, SmartHubError
from smarthub.annotate.labelme import LabelmeFile, image_path_of, load_labelme, shape_boxes

SPLITS = ("train", "val", "test")


@dataclass
class YoloExportReport:
    """What `export_yolo` wrote: images per split, boxes, class names, failures."""

    out_dir: Path
    names: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    boxes: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def data_yaml(self) -> Path:
        return self.out_dir / "data.yaml"

    def summary(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.images.items())
        lines = [f"YOLO dataset in {self.out_dir}: {sum(self.images.values())} images ({per}), {self.boxes} boxes, "
                 f"{len(self.names)} classes: {', '.join(self.names)}"]
        lines += [f"failed  {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


def parse_split(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' → (0.8, 0.1, 0.1); fractions must be >= 0 and sum to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError as e:
        raise SmartHubError(f"--split {text!r} must be three numbers like 0.8,0.1,0.1") from e
    if len(parts) != 3:
        raise SmartHubError(f"--split {text!r} must be three numbers like 0.8,0.1,0.1")
    return check_split(parts)


def check_split(split: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
        raise SmartHubError(f"split {split} must be three fractions >= 0 summing to 1, train > 0")
    return tuple(float(f) for f in split)  # type: ignore[return-value]


def split_counts(n: int, split: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of n items go to train/val/test: rounded, val gets one when asked for and n >= 2."""
    n_val = round(n * split[1])
    n_test = round(n * split[2])
    if split[1] > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if split[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n_val + n_test >= n and n > 0:  # train keeps at least one
        if n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def yolo_lines(lf: LabelmeFile, class_ids: dict[str, int]) -> list[str]:
    """`class cx cy w h` lines (normalised, clipped) for the boxes of one Labelme file."""
    w, h = lf.image_width, lf.image_height
    lines = []
    for label, (x1, y1, x2, y2), _ in shape_boxes(lf):
        x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
        y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
        if x2 <= x1 or y2 <= y1:
            continue
        lines.append(f"{class_ids[label]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
                     f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return lines


def export_yolo(labelme_dir: Path, out_dir: Path, *, split: tuple[float, float, float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> YoloExportReport:
    """Write a YOLO dataset from the Labelme files under `labelme_dir`.

    Layout: out/images/<split>/<name>, out/labels/<split>/<name>.txt, out/data.yaml. Nested files
    are flattened to `sub__name`. A file that fails to load or whose image is missing is reported
    in `failed`. Raises DatasetError when no usable file is found.
    """
    from smarthub.atomicio import atomic_write_text

    labelme_dir, out_dir = Path(labelme_dir), Path(out_dir)
    split = check_split(tuple(split))  # type: ignore[arg-type]
    if not labelme_dir.is_dir():
        raise DatasetError(f"Labelme folder not found: {labelme_dir}")
    report = YoloExportReport(out_dir=out_dir)
    items: list[tuple[Path, LabelmeFile, Path, str]] = []
    for jpath in sorted(labelme_dir.rglob("*.json")):
        rel = jpath.relative_to(labelme_dir)
        if any(part.startswith(".") for part in rel.parts) or out_dir.resolve() in jpath.resolve().parents:
            continue
        try:
            lf = load_labelme(jpath)
        except AnnotationError as e:
            report.failed.append((jpath, str(e)))
            continue
        image = image_path_of(jpath, lf)
        if not image.is_file():
            report.failed.append((jpath, f"image {lf.image_path} not found"))
            continue
        stem = "__".join(rel.with_suffix("").parts)
        items.append((jpath, lf, image, stem))
    if not items:
        raise DatasetError(f"no usable Labelme files under {labelme_dir}")
    report.names = sorted({b[0] for _, lf, _, _ in items for b in shape_boxes(lf)})
    class_ids = {n: i for i, n in enumerate(report.names)}
    random.Random(seed).shuffle(items)
    counts = split_counts(len(items), split)
    start = 0
    for name, count in zip(SPLITS, counts):
        report.images[name] = 0
        for jpath, lf, image, stem in items[start:start + count]:
            img_dst = out_dir / "images" / name / f"{stem}{image.suffix.lower()}"
            try:
                img_dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(image, img_dst)
                lines = yolo_lines(lf, class_ids)
                atomic_write_text(out_dir / "labels" / name / f"{stem}.txt", "".join(x + "\n" for x in lines))
            except (OSError, SmartHubError) as e:
                report.failed.append((jpath, str(e)))
                continue
            report.images[name] += 1
            report.boxes += len(lines)
        start += count
    yaml = ["# written by smarthub export-yolo; paths are relative to this file",
            "train: images/train", "val: images/val" if counts[1] else "val: images/train"]
    if counts[2]:
        yaml.append("test: images/test")
    yaml.append(f"nc: {len(report.names)}")
    yaml.append("names:")
    yaml += [f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(report.names)]
    atomic_write_text(out_dir / "data.yaml", "\n".join(yaml) + "\n")
    return report
