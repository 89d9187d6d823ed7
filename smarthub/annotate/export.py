"""Corrected Labelme files → a YOLO or COCO detection dataset, and a YOLO dataset → Labelme files.

Images are copied (never moved). The split is `split.stable_split`: stratified, seeded and stored in
`<labelme dir>/.smarthub/split.json`, so an image keeps its split when the dataset grows. The export is
written into a staged folder and put in place whole (`outputs.staged_output`): a non-empty output is
refused unless `overwrite`, and then replaced only when smarthub exported it (its `.smarthub-export` marker)
and it holds nothing else; a crash leaves the old export or the new one, never a mix.
YOLO labels are `class cx cy w h` normalised by the EXIF-corrected size the Labelme file records.
Class names are sorted alphabetically so class ids are stable across exports.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.annotate.detset import DetItem, DetSet, check_not_nested, iter_images, scan_labelme_dir
from smarthub.annotate.labelme import LabelmeFile, Shape, save_labelme
from smarthub.annotate.options import ExportOptions
from smarthub.annotate.split import (  # noqa: F401
    SPLIT_FILE,
    SPLITS,
    SplitRecord,
    check_split,
    parse_split,
    split_counts,
    stable_split,
)
from smarthub.atomicio import atomic_write_json, atomic_write_text
from smarthub.errors import DatasetError, ImageError, SmartHubError
from smarthub.imaging import check_image
from smarthub.outputs import check_replaceable, recover_output, staged_output

FORMATS = ("yolo", "coco")


@dataclass
class ExportReport:
    """What an export wrote: images per split, background images, boxes, class names."""

    out_dir: Path
    fmt: str = ExportOptions.fmt
    names: list[str] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    backgrounds: int = 0
    boxes: int = 0
    split_file: Path | None = None
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (Labelme file, zero-area boxes left out)
    notes: list[str] = field(default_factory=list)

    @property
    def data_yaml(self) -> Path:
        return self.out_dir / "data.yaml"

    def summary(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.images.items())
        return (f"{self.fmt.upper()} dataset in {self.out_dir}: {sum(self.images.values())} images ({per}; "
                f"{self.backgrounds} without boxes kept as background), {self.boxes} boxes, {len(self.names)} "
                f"classes: {', '.join(self.names)}\nsplit kept in {self.split_file}"
                + "".join(f"\n{line}" for line in self.notes + self.dropped_lines()))

    def dropped_lines(self) -> list[str]:
        """One line on the boxes left out because nothing of them is inside the image (zero width or height)."""
        if not self.dropped:
            return []
        files = ", ".join(f"{name} ({n})" for name, n in self.dropped[:5])
        more = f" and {len(self.dropped) - 5} more files" if len(self.dropped) > 5 else ""
        return [f"{sum(n for _, n in self.dropped)} zero-area boxes left out (nothing of them inside the image): "
                f"{files}{more}"]


def split_file_of(labelme_dir: Path) -> Path:
    """Where the stable split of a Labelme folder is kept."""
    return Path(labelme_dir) / ".smarthub" / SPLIT_FILE


def dataset_split(dataset: DetSet, *, split: tuple[float, float, float], seed: int) -> SplitRecord:
    """The stable, stratified split of a scanned folder (stored beside it)."""
    items = {it.key: it.labels for it in dataset.items}
    return stable_split(items, split_file_of(dataset.root), fractions=split, seed=seed)


def flat_stem(key: str) -> str:
    """'nested/img1.png' → 'nested__img1' (file names in the flat export folders)."""
    return "__".join(Path(key).with_suffix("").parts)


def clipped_boxes(item: DetItem) -> tuple[list[tuple[str, tuple[float, float, float, float]]], int]:
    """(boxes clipped to the image, number dropped because nothing of them is left: zero width or height)."""
    w, h = item.width, item.height
    kept, dropped = [], 0
    for label, (x1, y1, x2, y2) in item.boxes:
        x1, x2 = max(0.0, min(x1, w)), max(0.0, min(x2, w))
        y1, y2 = max(0.0, min(y1, h)), max(0.0, min(y2, h))
        if x2 <= x1 or y2 <= y1:
            dropped += 1
            continue
        kept.append((label, (x1, y1, x2, y2)))
    return kept, dropped


def yolo_lines(item: DetItem, class_ids: dict[str, int]) -> list[str]:
    """`class cx cy w h` lines (normalised, clipped) for the boxes of one image (zero-area boxes left out)."""
    w, h = item.width, item.height
    return [f"{class_ids[label]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} "
            f"{(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}" for label, (x1, y1, x2, y2) in clipped_boxes(item)[0]]


def check_output(src: Path, out: Path, *, overwrite: bool) -> list[str]:
    """Refuse an output inside the input (or around it), a non-empty output without `overwrite`, and with it
    a folder smarthub did not export (`outputs.check_replaceable`: a data or models folder, a stranger's file).
    What an interrupted export left is repaired first; returns the notes saying so."""
    check_not_nested(src, out)
    notes = recover_output(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"output {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"output folder {out} is not empty: choose a new folder or pass --overwrite "
                               f"(replaces it whole)")
        check_replaceable(out)
    return notes


def _write_yolo(staged: Path, dataset: DetSet, record: SplitRecord, names: list[str], report: ExportReport) -> None:
    class_ids = {n: i for i, n in enumerate(names)}
    for item in dataset.items:
        split = record.assignments[item.key]
        stem = flat_stem(item.key)
        img_dst = staged / "images" / split / f"{stem}{item.image.suffix.lower()}"
        img_dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item.image, img_dst)
        lines = yolo_lines(item, class_ids)
        atomic_write_text(staged / "labels" / split / f"{stem}.txt", "".join(x + "\n" for x in lines))
        report.boxes += len(lines)
    used = [s for s in SPLITS if report.images.get(s)]
    yaml = ["# written by smarthub export-yolo; paths are relative to this file",
            "train: images/train", "val: images/val" if "val" in used else "val: images/train"]
    if "test" in used:
        yaml.append("test: images/test")
    yaml.append(f"nc: {len(names)}")
    yaml.append("names:")
    yaml += [f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names)]
    atomic_write_text(staged / "data.yaml", "\n".join(yaml) + "\n")


def coco_dict(items: list[DetItem], names: list[str]) -> dict:
    """A COCO detection dict (images, annotations, categories with ids from 1) for `items`."""
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, annotations = [], []
    for img_id, item in enumerate(items, start=1):
        images.append({"id": img_id, "file_name": f"{flat_stem(item.key)}{item.image.suffix.lower()}",
                       "width": item.width, "height": item.height})
        for label, (x1, y1, x2, y2) in clipped_boxes(item)[0]:
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": cat[label],
                                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in cat.items()]}


def _write_coco(staged: Path, dataset: DetSet, record: SplitRecord, names: list[str], report: ExportReport) -> None:
    for split in SPLITS:
        items = [it for it in dataset.items if record.assignments[it.key] == split]
        if not items:
            continue
        folder = staged / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        for item in items:
            shutil.copy2(item.image, folder / f"{flat_stem(item.key)}{item.image.suffix.lower()}")
        coco = coco_dict(items, names)
        report.boxes += len(coco["annotations"])
        atomic_write_json(staged / "annotations" / f"instances_{split}.json", coco)


def export_dataset(labelme_dir: Path, out_dir: Path, *, fmt: str = ExportOptions.fmt,
                   split: tuple[float, float, float] = ExportOptions.split, seed: int = ExportOptions.seed,
                   overwrite: bool = False) -> ExportReport:
    """Write a YOLO (images/, labels/, data.yaml) or COCO (images/, annotations/instances_<split>.json)
    dataset from the Labelme folder `labelme_dir`, replacing `out_dir` whole.

    Nested files are flattened to `sub__name`. Raises DatasetError (one line) for a bad input file,
    a folder without any box, a non-empty output without `overwrite`, or an output inside the input.
    """
    labelme_dir, out_dir = Path(labelme_dir), Path(out_dir)
    if fmt not in FORMATS:
        raise SmartHubError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    split = check_split(tuple(split))
    if not labelme_dir.is_dir():
        raise DatasetError(f"Labelme folder not found: {labelme_dir}")
    notes = check_output(labelme_dir, out_dir, overwrite=overwrite)
    dataset = scan_labelme_dir(labelme_dir)
    names = dataset.names
    if not names:
        raise DatasetError(f"no boxes in any Labelme file under {labelme_dir} ({len(dataset.items)} images): "
                           f"annotate or correct some images first")
    record = dataset_split(dataset, split=split, seed=seed)
    kept = {it.key: clipped_boxes(it) for it in dataset.items}
    if not any(boxes for boxes, _ in kept.values()):
        raise DatasetError(f"no box with an area inside its image in any Labelme file under {labelme_dir} "
                           f"({len(dataset.items)} images): correct some images first")
    report = ExportReport(out_dir=out_dir, fmt=fmt, names=names, backgrounds=sum(not b for b, _ in kept.values()),
                          images=record.counts([it.key for it in dataset.items]), split_file=split_file_of(labelme_dir),
                          dropped=[((it.json_path.name if it.json_path else it.key), kept[it.key][1])
                                   for it in dataset.items if kept[it.key][1]], notes=[*dataset.notes, *notes])
    try:
        with staged_output(out_dir, kind=f"{fmt}-export", overwrite=overwrite, notes=report.notes) as staged:
            (_write_yolo if fmt == "yolo" else _write_coco)(staged, dataset, record, names, report)
    except OSError as e:
        raise DatasetError(f"cannot write the export {out_dir}: {e.strerror or e}; the previous one is intact") from e
    return report


def export_yolo(labelme_dir: Path, out_dir: Path, *, split: tuple[float, float, float] = ExportOptions.split,
                seed: int = ExportOptions.seed, overwrite: bool = False) -> ExportReport:
    """`export_dataset` in YOLO format."""
    return export_dataset(labelme_dir, out_dir, fmt="yolo", split=split, seed=seed, overwrite=overwrite)


# ---------------------------------------------------------------- YOLO → Labelme


@dataclass
class ImportReport:
    """What `import_yolo` wrote."""

    out_dir: Path
    images: int = 0
    boxes: int = 0
    backgrounds: int = 0
    converted: int = 0  # segmentation (polygon) lines turned into their polygon's bounding box
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.images} Labelme files written to {self.out_dir} ({self.boxes} boxes, "
                 f"{self.backgrounds} images without boxes)"]
        if self.converted:
            lines.append(f"{self.converted} segmentation (polygon) lines converted to their polygon's bounding box")
        return "\n".join(lines + self.notes)


def _yaml_error(e: Exception) -> str:
    """A YAML error in one line: where and what, never the text of the file."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or type(e).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML ({where}{' '.join(str(problem).split())})"


def contained_file(path: Path, root: Path, *, what: str) -> Path:
    """`path`, when it is a regular file that (links followed) stays inside `root`; never reads it.

    Raises:
        DatasetError: a link leaving `root`, or not a regular file.
    """
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(root).resolve()):
        raise DatasetError(f"{path}: the {what} is a link to a file outside {root}; copy the file into the "
                           f"dataset instead (smarthub reads nothing outside the folder it was given)")
    if not resolved.is_file():
        raise DatasetError(f"{path}: the {what} is not a regular file")
    return path


def read_yolo_names(yolo_dir: Path) -> list[str]:
    """Class names from `data.yaml` (a list or an {id: name} mapping)."""
    import yaml

    path = Path(yolo_dir) / "data.yaml"
    if not path.exists():
        raise DatasetError(f"{path} not found: a YOLO dataset has a data.yaml naming its classes")
    contained_file(path, yolo_dir, what="data.yaml")
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}") from e
    except yaml.YAMLError as e:
        raise DatasetError(f"{path}: {_yaml_error(e)}") from e
    names = obj.get("names") if isinstance(obj, dict) else None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return [str(names[i]) for i in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise DatasetError(f"{path}: 'names' must be a list or a mapping of class ids to names")


def parse_yolo_line(line: str, *, names: list[str], width: int, height: int,
                    where: str) -> tuple[str, tuple[float, float, float, float], bool]:
    """One `class cx cy w h` line, or a segmentation line `class x1 y1 x2 y2 …` (its polygon's box)
    → (label, xyxy in pixels, converted from a polygon).

    Raises:
        DatasetError: "<file>:<line>: <reason>" for a wrong field count, a value that is not a finite number in
            [0, 1], an empty box or an unknown class id (the line's text is never repeated).
    """
    import math

    parts = line.split()
    if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
        raise DatasetError(f"{where}: {len(parts)} fields; a YOLO line is 'class cx cy w h' (5 fields) or a "
                           f"segmentation polygon 'class x1 y1 x2 y2 x3 y3 …' (an odd number, at least 7)")
    try:
        cid = int(parts[0])
    except ValueError:
        raise DatasetError(f"{where}: the class id (field 1) is not a whole number") from None
    if not 0 <= cid < len(names):
        raise DatasetError(f"{where}: class id {cid} is not in data.yaml ({len(names)} classes)")
    values = []
    for k, text in enumerate(parts[1:], start=2):
        try:
            v = float(text)
        except ValueError:
            raise DatasetError(f"{where}: field {k} is not a number") from None
        if not math.isfinite(v):
            raise DatasetError(f"{where}: field {k} is not a finite number (NaN or infinity)")
        if not 0.0 <= v <= 1.0:
            raise DatasetError(f"{where}: field {k} is {v:g}, outside [0, 1]: coordinates are normalised by the "
                               f"image size")
        values.append(v)
    if len(values) == 4:
        cx, cy, bw, bh = values
        if bw <= 0 or bh <= 0:
            raise DatasetError(f"{where}: the box has no area (width {bw:g}, height {bh:g})")
        x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
    else:
        xs, ys = values[0::2], values[1::2]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        if x2 <= x1 or y2 <= y1:
            raise DatasetError(f"{where}: the polygon has no area (its points lie on a line)")
    return names[cid], (x1 * width, y1 * height, x2 * width, y2 * height), len(values) != 4


def _read_label_lines(label_file: Path, yolo_dir: Path) -> list[str]:
    if not label_file.exists() and not label_file.is_symlink():
        return []
    contained_file(label_file, yolo_dir, what="label file")
    try:
        return label_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DatasetError(f"{label_file}: not UTF-8 text; a YOLO label file holds 'class cx cy w h' lines") from None
    except OSError as e:
        raise DatasetError(f"{label_file} cannot be read: {e.strerror or e}") from e


def import_yolo(yolo_dir: Path, out_dir: Path, *, overwrite: bool = False) -> ImportReport:
    """Copy the images of a YOLO dataset (images/<split>/…) into `out_dir/<split>/` with a Labelme file
    beside each. Segmentation lines become their polygon's box (counted in the report).

    Raises:
        DatasetError: a missing or bad data.yaml, a bad label line (file:line and why), an image or label file
            linked from outside the YOLO folder, or a non-empty output.
    """
    yolo_dir, out_dir = Path(yolo_dir), Path(out_dir)
    if not yolo_dir.is_dir():
        raise DatasetError(f"YOLO dataset folder not found: {yolo_dir}")
    notes = check_output(yolo_dir, out_dir, overwrite=overwrite)
    names = read_yolo_names(yolo_dir)
    images_root = yolo_dir / "images"
    images = list(iter_images(images_root)) if images_root.is_dir() else []
    if not images:
        raise DatasetError(f"no images under {images_root}")
    for image in images:  # refused before anything is read or written
        contained_file(image, yolo_dir, what="image")
    report = ImportReport(out_dir=out_dir, notes=notes)
    with staged_output(out_dir, kind="labelme-import", overwrite=overwrite, notes=report.notes) as staged:
        for image in images:
            rel = image.relative_to(images_root)
            label_file = (yolo_dir / "labels" / rel).with_suffix(".txt")
            lines = _read_label_lines(label_file, yolo_dir)
            try:
                width, height = check_image(image)
            except ImageError as e:
                raise DatasetError(f"{image}: {e.reason}") from e
            shapes = []
            for n, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                label, (x1, y1, x2, y2), converted = parse_yolo_line(line, names=names, width=width, height=height,
                                                                     where=f"{label_file}:{n}")
                report.converted += converted
                shapes.append(Shape(label=label, points=[[round(max(0.0, x1), 2), round(max(0.0, y1), 2)],
                                                         [round(min(width, x2), 2), round(min(height, y2), 2)]]))
            dst = staged / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, dst)
            save_labelme(dst.with_suffix(".json"), LabelmeFile(image_path=dst.name, image_height=height,
                                                              image_width=width, shapes=shapes))
            report.images += 1
            report.boxes += len(shapes)
            report.backgrounds += not shapes
    return report
