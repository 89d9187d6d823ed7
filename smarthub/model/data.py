"""The data floor of training: the split, the fastai Learner over it, and the checks before a run.

`split_items` (seeded, per class) → `build_learner(items, is_valid, options, work_dir=...)` (an untrained
Learner; model/fit.py trains it). `check_images_cached` decodes every image once (a cache keyed by path, size
and mtime); `empty_classes_note`, `raise_moved` and `class_split_counts` are the run's messages and counts.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import atomic_write_json
from smarthub.dataset import ImageItem, check_image, sha256_file
from smarthub.errors import DatasetError, ImageError, ModelError, SmartHubError
from smarthub.model.archs import check_weights_available, resolve_arch
from smarthub.model.devices import resolve_device, uses_mixed_precision
from smarthub.model.imagecache import resized_copies
from smarthub.model.options import TrainOptions
from smarthub.model.progress import ProgressFn, TrainProgress

__all__ = ["build_learner", "check_images_cached", "class_split_counts", "empty_classes_note", "raise_moved",
           "split_items"]

_CHECK_CACHE_NAME = "verified-images.json"


def split_items(items: Sequence[ImageItem], *, valid_pct: float, seed: int) -> list[bool]:
    """Seeded, per-class random split: is_valid flags.

    Each class keeps at least one training image and gives round(valid_pct * n) to validation
    (so small classes are represented on both sides as far as possible).
    """
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_label.setdefault(item.label, []).append(i)
    is_valid = [False] * len(items)
    for label in sorted(by_label):
        idx = by_label[label]
        n_valid = min(len(idx) - 1, max(1 if len(idx) >= 3 else 0, int(round(valid_pct * len(idx)))))
        for j in rng.permutation(len(idx))[:n_valid]:
            is_valid[idx[j]] = True
    if not any(is_valid):  # tiny data: still validate on one image of the largest class
        largest = max(by_label.values(), key=len)
        is_valid[largest[int(rng.integers(len(largest)))]] = True
    return is_valid


def build_learner(items: Sequence[ImageItem], is_valid: Sequence[bool], options: TrainOptions, *,
                  work_dir: Path) -> Any:
    """An untrained fastai Learner over `items` (validation = items flagged in `is_valid`) on `options.device`.

    The DataBlock pickles only fastai names: items are image paths whose folder is the label (`parent_label`);
    items that do not sit in a folder named after their label are read through pre-resized copies in
    `work_dir`. Pretrained: the head is pool → flatten → Linear (stage 1 fits it, see `fit`); from scratch:
    fastai's default head. The vocab is every label in `items`, sorted. Metrics: error_rate, accuracy.
    Mixed precision on CUDA. Raises DatasetError (empty split, a validation class unseen in training),
    ModelError (weights, device).
    """
    import torch
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, parent_label
    from fastai.metrics import accuracy, error_rate
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    items = list(items)
    if len(items) != len(is_valid):
        raise SmartHubError(f"{len(items)} items but {len(is_valid)} is_valid flags")
    valid_idx = [i for i, v in enumerate(is_valid) if v]
    n_train = len(items) - len(valid_idx)
    if not valid_idx:
        raise DatasetError("the validation set is empty: add images or raise --valid-pct")
    if n_train < 2:
        raise DatasetError(f"only {n_train} training image(s): add images or lower --valid-pct")
    train_labels = {it.label for it, v in zip(items, is_valid) if not v}
    unseen = sorted({it.label for it, v in zip(items, is_valid) if v} - train_labels)
    if unseen:
        raise DatasetError(f"classes {', '.join(map(repr, unseen))} have validation images but no training "
                           f"images: add training images for them")
    device = resolve_device(options.device)
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    if any(Path(it.path).parent.name != it.label for it in items):
        items = resized_copies(Path(work_dir) / "cache", items, [sha256_file(it.path) for it in items],
                               size_px=options.size_px)
    set_seed(options.seed)
    vocab = sorted({it.label for it in items})
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=vocab)),
        get_y=parent_label,
        splitter=IndexSplitter(valid_idx),
        item_tfms=Resize(options.size_px, method=ResizeMethod.Squish),
        batch_tfms=aug_transforms(mult=options.aug_strength) if options.aug_strength > 0 else None,
    )
    bs = max(2, min(options.batch_size, n_train))
    dls = block.dataloaders([Path(it.path) for it in items], bs=bs, num_workers=options.num_workers,
                            device=torch.device(device))
    # pretrained: a head that is exactly a linear layer on the pooled body features (stage 1 fits it)
    head_args = dict(concat_pool=False, lin_ftrs=[], ps=0.0, first_bn=False) if options.pretrained else {}
    try:
        learn = vision_learner(dls, spec.model_fn, pretrained=options.pretrained, metrics=[error_rate, accuracy],
                               path=Path(work_dir), **head_args)
    except (OSError, RuntimeError) as e:
        raise ModelError(f"cannot build {spec.name} (pretrained={options.pretrained}): {e}; if the weights "
                         f"file is damaged replace it with `smarthub weights add FILE`, or use --no-pretrained") from e
    if uses_mixed_precision(device):
        learn = learn.to_fp16()
    return learn


def class_split_counts(items: Sequence[ImageItem], is_valid: Sequence[bool]) -> dict[str, dict[str, int]]:
    """Per class, how many images went to training and to validation (classes sorted)."""
    counts: dict[str, dict[str, int]] = {}
    for item, v in zip(items, is_valid):
        c = counts.setdefault(item.label, {"train": 0, "valid": 0})
        c["valid" if v else "train"] += 1
    return dict(sorted(counts.items()))


def check_images_cached(ws: Any, items: Sequence[ImageItem], *, progress: ProgressFn | None = None) -> None:
    """Fully decode every image not already verified (cache keyed by path, size and mtime).

    Raises DatasetError naming the unreadable files and telling the user to run `smarthub verify`.
    """
    cache_path = ws.cache_dir / "train" / _CHECK_CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8")) if cache_path.is_file() else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    fresh: dict[str, list[int]] = {}
    bad: list[str] = []
    gone: list[Path] = []  # moved or removed since the scan (another process relabelled or renamed a class)
    for i, item in enumerate(items, 1):
        key = str(item.path)
        try:
            st = item.path.stat()
            stamp = [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            gone.append(item.path)
            continue
        except OSError as e:
            bad.append(f"{item.path} ({e.strerror or e})")
            continue
        if cache.get(key) != stamp:
            try:
                check_image(item.path)
            except ImageError as e:
                if item.path.exists():
                    bad.append(str(e))
                else:
                    gone.append(item.path)
                continue
        fresh[key] = stamp
        if progress is not None and (i % 50 == 0 or i == len(items)):
            progress(TrainProgress("checking images", 0, 0, i, len(items), {}))
    if fresh != cache:
        try:
            atomic_write_json(cache_path, fresh)
        except SmartHubError:
            pass  # the cache only saves time; training goes on without it
    if gone:
        raise_moved(gone)
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DatasetError(f"{len(bad)} unreadable image(s): {'; '.join(bad[:3])}{more}; run `smarthub verify "
                           f"--quarantine` to move them to the trash, then train again")


def empty_classes_note(empty: Sequence[str]) -> str | None:
    """The one line naming the class folders training skipped because they hold no image."""
    if not empty:
        return None
    shown = ", ".join(repr(c) for c in empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return (f"{len(empty)} class folder{'s' if len(empty) != 1 else ''} without images skipped (not a class of "
            f"this model): {shown}")


def raise_moved(gone: Sequence[Path]) -> None:
    """The data changed under a starting run (e.g. `classes rename` in another shell): not a broken image."""
    raise DatasetError(f"{len(gone)} image{'s' if len(gone) != 1 else ''} moved or removed while training started "
                       f"(e.g. {gone[0]}): another command changed the data folder; run train again")
