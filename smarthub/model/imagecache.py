"""Each training image decoded and resized once: a pre-resized copy per (sha256, size) for repeated epochs.

`data/.smarthub/cache/images/<size>px/<label>/<sha256>.png` holds the image exactly as the embedder sees it
(`embeddings.load_image_array`: EXIF applied, flattened to RGB, squished to size × size) as a lossless PNG,
written atomically but without fsync (it is a cache: an empty file left by a power cut is made again).
The Learner trains on these copies, so the head fitted on embeddings and the network fine-tuned from it
see the same pixels, and the labels come from the folder name (fastai's `parent_label`, nothing of
smarthub's in the pickle). A copy already made under another label (a relabelled image) is hard-linked.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from smarthub.atomicio import atomic_write_with
from smarthub.dataset import ImageItem
from smarthub.errors import DatasetError, ImageError

IMAGES_SUBDIR = "images"


def cached_image_path(cache_dir: Path, *, label: str, sha256: str, size_px: int) -> Path:
    """Where the pre-resized copy of an image lives."""
    return Path(cache_dir) / IMAGES_SUBDIR / f"{size_px}px" / label / f"{sha256}.png"


def _write_copy(item: ImageItem, target: Path, size_px: int) -> None:
    from PIL import Image

    from smarthub.model.embeddings import load_image_array

    others = [p for p in target.parent.parent.glob(f"*/{target.name}") if p != target and _present(p)]
    target.parent.mkdir(parents=True, exist_ok=True)
    if others:
        try:
            os.link(others[0], target)
            return
        except OSError:
            pass  # another file system or no hard links: decode again below
    buf = io.BytesIO()
    Image.fromarray(load_image_array(item.path, size_px)).save(buf, format="PNG", compress_level=1)
    atomic_write_with(target, lambda f: f.write(buf.getvalue()), durable=False)  # a cache: made again if lost


def _present(path: Path) -> bool:
    """A usable copy is there: a file that is not empty (copies are written without fsync, and a power cut can
    leave an empty file behind the atomic rename; it is made again)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def resized_copies(cache_dir: Path, items: Sequence[ImageItem], shas: Sequence[str], *, size_px: int,
                   progress: Callable[[int, int], object] | None = None) -> list[ImageItem]:
    """ImageItems pointing at pre-resized copies (made when missing), in the order of `items`.

    Raises DatasetError naming the images that could not be decoded.
    """
    targets = [cached_image_path(cache_dir, label=it.label, sha256=s, size_px=size_px) for it, s in zip(items, shas)]
    todo = [i for i, t in enumerate(targets) if not _present(t)]
    bad: list[str] = []

    def make(i: int) -> None:
        try:
            _write_copy(items[i], targets[i], size_px)
        except ImageError as e:
            bad.append(str(e))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for n, _ in enumerate(pool.map(make, todo), 1):
            if progress is not None and (n % 50 == 0 or n == len(todo)):
                progress(n, len(todo))
    if bad:
        raise DatasetError(f"{len(bad)} unreadable image(s): {'; '.join(sorted(bad)[:3])}; run `smarthub verify "
                           f"--quarantine` to move them to the trash, then train again")
    return [ImageItem(path=t, label=it.label, split=it.split) for it, t in zip(items, targets)]
