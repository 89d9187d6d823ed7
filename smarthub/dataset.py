"""Scan class folders into ImageItem records, enforce the label rules, verify images."""
from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.errors import DatasetError, ImageError, LabelError
from smarthub.staging import sha256_file  # noqa: F401 (re-exported: the dataset's file hash)
from smarthub.imaging import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, check_image, is_image_file  # noqa: F401 (re-exported)

MAX_LABEL_CHARS = 100
MAX_LABEL_BYTES = 255  # the longest folder name on common file systems
# Above this many pixels an image is refused as a likely decompression bomb (Pillow warns at ~89M).
SPLIT_NAMES = ("train", "valid")


@dataclass(frozen=True)
class ImageItem:
    """One image of the dataset: its path, its label (folder name) and its split ('' when none)."""

    path: Path
    label: str
    split: str = ""


@dataclass
class VerifyReport:
    """Outcome of verifying a set of images: counts and each problem with its reason."""

    checked: int = 0
    ok: int = 0
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def bad_paths(self) -> list[Path]:
        return [p for p, _ in self.problems]


def validate_label(label: str) -> str:
    """Return `label` (NFC-normalised) if it is a valid class/folder name, else raise LabelError.

    Rules: non-empty, at most 100 characters and 255 UTF-8 bytes (a folder name), no path separators, not '.' or '..',
    no leading dot, no control characters, no leading/trailing whitespace. Unicode is fine.
    """
    if not isinstance(label, str) or label == "":
        raise LabelError("label is empty: give a class name such as 'tilapia'")
    label = unicodedata.normalize("NFC", label)
    shown = repr(label) if len(label) <= 60 else repr(label[:60] + "…")
    if label.strip() != label or not label.strip():
        raise LabelError(f"label {shown} starts or ends with whitespace")
    if len(label) > MAX_LABEL_CHARS:
        raise LabelError(f"label {shown} is {len(label)} characters long; the limit is {MAX_LABEL_CHARS}")
    if len(label.encode("utf-8")) > MAX_LABEL_BYTES:
        raise LabelError(f"label {shown} takes {len(label.encode('utf-8'))} bytes in UTF-8; folder names are "
                         f"limited to {MAX_LABEL_BYTES} bytes — use a shorter label")
    if "/" in label or "\\" in label or "\x00" in label:
        raise LabelError(f"label {shown} contains a path separator; labels are single folder names")
    if label in (".", "..") or label.startswith("."):
        raise LabelError(f"label {shown} starts with a dot; such folders are reserved for bookkeeping")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in label):
        raise LabelError(f"label {shown} contains control characters")
    return label


def check_label_case(label: str, existing: Iterable[str]) -> str:
    """Return `label` unless it differs only in case from an existing class (on a case-insensitive file system
    the two are one folder); the exact name of an existing class is fine.

    Raises:
        LabelError: "… did you mean 'fish'?" naming the existing class.
    """
    existing = [unicodedata.normalize("NFC", e) for e in existing]
    if label in existing:
        return label
    folded = label.casefold()
    twins = [e for e in existing if e.casefold() == folded]
    if twins:
        raise LabelError(f"label {label!r} differs only in case from the existing class {twins[0]!r}: did you mean "
                         f"{twins[0]!r}? (on a case-insensitive file system they would be one folder)")
    return label


def has_split_layout(data_dir: Path) -> bool:
    """True when `data_dir` holds `train/` and `valid/`, each with class folders inside."""
    return all((data_dir / s).is_dir() for s in SPLIT_NAMES) and any(
        p.is_dir() and not p.name.startswith(".") for p in (data_dir / "train").iterdir()
    )


def folder_classes(data_dir: Path) -> list[str]:
    """Class folder names of the data folder (train/valid layouts: the union), without reading images; a folder
    holding nothing but hidden entries is no class."""
    if not data_dir.is_dir():
        return []
    roots = [data_dir / s for s in SPLIT_NAMES] if has_split_layout(data_dir) else [data_dir]
    return sorted({p.name for r in roots for p in r.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and any(not c.name.startswith(".") for c in p.iterdir())})


def leaves_folder(path: Path | str, root: Path) -> bool:
    """True when `path` is a link whose target (all links followed) lies outside `root` (a resolved folder)."""
    if not os.path.islink(path):
        return False
    return not Path(os.path.realpath(path)).is_relative_to(root)


def outside_note(outside: Sequence[Path], data_dir: Path) -> str | None:
    """The one line that says which links leading outside the data folder a scan skipped (None when none)."""
    if not outside:
        return None
    shown = ", ".join(Path(os.path.relpath(p, data_dir)).as_posix() for p in outside[:3])
    more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
    return (f"{len(outside)} {'entry' if len(outside) == 1 else 'entries'} skipped: links leading outside the "
            f"data folder {data_dir} ({shown}{more}); smarthub reads only files inside it")


def scan_dataset(data_dir: Path, *, require_images: bool = False,
                 outside: list[Path] | None = None) -> list[ImageItem]:
    """List the images under `data_dir`, one class per sub-folder (or train/ and valid/ splits).

    Folders starting with a dot and folders whose names break the label rules are skipped, and so are links
    (files or class folders) whose target lies outside the data folder: never read, and listed in `outside`
    when it is given. Items come sorted by (split, label, file name) so the order is reproducible.

    Raises:
        DatasetError: the folder does not exist, or `require_images` and it holds no image.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data folder {data_dir} does not exist; create it with one sub-folder per class")
    root_resolved = data_dir.resolve()
    skipped: list[Path] = outside if outside is not None else []
    roots: list[tuple[Path, str]] = (
        [(data_dir / s, s) for s in SPLIT_NAMES] if has_split_layout(data_dir) else [(data_dir, "")]
    )
    items: list[ImageItem] = []
    for root, split in roots:
        for class_dir in sorted(root.iterdir()):
            if not class_dir.is_dir() or class_dir.name.startswith("."):
                continue
            try:
                label = validate_label(class_dir.name)
            except LabelError:
                continue
            if leaves_folder(class_dir, root_resolved):
                skipped.append(class_dir)
                continue
            for path in sorted(class_dir.rglob("*")):
                if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
                    continue
                if leaves_folder(path, root_resolved):
                    skipped.append(path)
                elif is_image_file(path):
                    items.append(ImageItem(path=path, label=label, split=split))
    if require_images and not items:
        raise DatasetError(
            f"no images found in {data_dir}: put images in one sub-folder per class, e.g. {data_dir}/cat/1.jpg"
        )
    return items


def class_counts(items: Iterable[ImageItem]) -> dict[str, int]:
    """Number of images per label, labels sorted."""
    counts = Counter(item.label for item in items)
    return dict(sorted(counts.items()))


def check_trainable(items: list[ImageItem], *, min_per_class: int = 2) -> None:
    """Raise DatasetError unless there are at least two classes with `min_per_class` images each."""
    if not items:
        raise DatasetError("no images to train on: add class folders with images (or run {bootstrap})")
    counts = class_counts(items)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DatasetError(f"only one class ({only!r}) found: a classifier needs at least two class folders")
    small = [f"{label!r} ({n})" for label, n in counts.items() if n < min_per_class]
    if small:
        raise DatasetError(
            f"classes with fewer than {min_per_class} images: {', '.join(small)}; add images or remove the folder"
        )


def dataset_fingerprint(items: Iterable[ImageItem], data_dir: Path) -> str:
    """A short hash of (relative path, label, size, mtime) of every item: changes when the data changes."""
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        try:
            st = item.path.stat()
            size, mtime = st.st_size, int(st.st_mtime)
        except OSError:
            size, mtime = -1, -1
        rel = item.path.relative_to(data_dir) if item.path.is_relative_to(data_dir) else item.path
        h.update(f"{rel.as_posix()}\t{item.label}\t{item.split}\t{size}\t{mtime}\n".encode())
    return h.hexdigest()[:16]


def verify_images(
    paths: Iterable[Path],
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Decode every image in `paths`; collect each failure with its reason (never raises per image)."""
    paths = list(paths)
    report = VerifyReport()
    for i, path in enumerate(paths, 1):
        report.checked += 1
        try:
            check_image(path, max_pixels=max_pixels)
            report.ok += 1
        except ImageError as e:
            report.problems.append((path, e.reason))
        if progress is not None:
            progress(i, len(paths))
    return report


def verify_dataset(data_dir: Path, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify every image file under `data_dir` (all classes and splits)."""
    return verify_images((item.path for item in scan_dataset(data_dir)), progress=progress)
