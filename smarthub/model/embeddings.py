"""Image embeddings from a pretrained body, cached per image sha256, and a file → sha256 index.

The cache lives in `data/.smarthub/cache/review/`: one .npz per (arch, size) holding the sha256s and
their embeddings (float16), and `shas.json` mapping each file's (inode, size, mtime) to its sha256 so a
rescan of 20,000 images hashes only what changed (a relabel moves a file by hard link: same inode).

Over 400 lines on purpose: one cache format (layout, keys, invalidation) and the code that fills and reads it:
split, its invariants would live in two places.
"""
from __future__ import annotations

import importlib.util
import io
import os
import re
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import atomic_write_json, atomic_write_with, read_json
from smarthub.dataset import (
    IMAGE_SUFFIXES,
    SPLIT_NAMES,
    ImageItem,
    has_split_layout,
    leaves_folder,
    sha256_file,
    validate_label,
)
from smarthub.errors import DatasetError, ImageError, LabelError, ModelError, SmartHubError
from smarthub.imaging import open_rgb
from smarthub.model import archs, embedders
from smarthub.model.archs import TORCHVISION_ARCHS, resolve_arch
from smarthub.workspace import Workspace

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CACHE_SUBDIR = "review"
_CACHE_LOCK = threading.Lock()

Progress = Callable[[str, int, int], None]


@dataclass
class HashedItems:
    """Dataset items with their sha256, and the files that could not be read (path, reason)."""

    items: list[ImageItem]
    shas: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def review_cache_dir(ws: Workspace) -> Path:
    return ws.cache_dir / CACHE_SUBDIR


# ---------------------------------------------------------------- sha256 index (I/O)

def scan_stat(data_dir: Path, *, known: dict[str, Path] | None = None,
              outside: list[Path] | None = None, only: Collection[str] | None = None) -> list[tuple[ImageItem, str]]:
    """`dataset.scan_dataset` semantics (same items, same order, links leading outside the data folder skipped
    and listed in `outside`) in one os.scandir pass, with each file's (device, inode, size, mtime) key, so a
    refresh of 20,000 images stays interactive. `known` maps path strings to Path objects of a previous scan,
    which are reused (building 20,000 Paths is the slow part). `only`: list just these class folders (names)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data folder {data_dir} does not exist; create it with one sub-folder per class")
    roots = [(data_dir / s, s) for s in SPLIT_NAMES] if has_split_layout(data_dir) else [(data_dir, "")]
    out: list[tuple[ImageItem, str]] = []
    contained = _Contained(data_dir.resolve(), outside if outside is not None else [])
    for root, split in roots:
        with os.scandir(root) as it:
            class_dirs = sorted((d for d in it if not d.name.startswith(".") and d.is_dir()), key=lambda d: d.name)
        for class_dir in class_dirs:
            if only is not None and class_dir.name not in only:
                continue
            try:
                label = validate_label(class_dir.name)
            except LabelError:
                continue
            if contained.leaves(class_dir.path):
                continue
            found: list[tuple[str, str]] = []
            _walk(class_dir.path, found, contained)
            for path_str, key in sorted(found, key=lambda f: f[0].split(os.sep)):  # Path order
                path = known.get(path_str) if known else None
                out.append((ImageItem(path=path or Path(path_str), label=label, split=split), key))
    return out


@dataclass
class _Contained:
    """The resolved data folder, and the links leading outside it met so far (`dataset.leaves_folder`)."""

    root: Path
    outside: list[Path]

    def leaves(self, path: str) -> bool:
        if leaves_folder(path, self.root):
            self.outside.append(Path(path))
            return True
        return False


def _walk(folder: str, found: list[tuple[str, str]], contained: _Contained) -> None:
    try:
        it = os.scandir(folder)
    except OSError:
        return  # vanished meanwhile
    with it:
        for d in it:
            if d.name.startswith("."):
                continue
            try:
                if d.is_symlink() and contained.leaves(d.path):
                    continue
                if d.is_dir(follow_symlinks=False):  # like Path.rglob: never into linked folders
                    _walk(d.path, found, contained)
                elif os.path.splitext(d.name)[1].lower() in IMAGE_SUFFIXES and d.is_file():
                    st = d.stat()
                    found.append((d.path, f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"))
            except OSError:
                continue  # deleted between listing and stat: not part of the dataset any more


def load_sha_index(ws: Workspace) -> dict[str, str]:
    """(device:inode:size:mtime) → sha256 from the cache; a corrupt index counts as empty."""
    index_path = review_cache_dir(ws) / "shas.json"
    if not index_path.exists():
        return {}
    try:
        raw = read_json(index_path, what="sha256 index")
    except SmartHubError:
        return {}
    index = raw.get("index", {}) if isinstance(raw, dict) else {}
    return index if isinstance(index, dict) else {}


def hash_scanned(ws: Workspace, scanned: Sequence[tuple[ImageItem, str]], *,
                 progress: Progress | None = None) -> HashedItems:
    """sha256 of every scanned item, hashing only files whose key is not in the index."""
    index = load_sha_index(ws)
    out = HashedItems(items=[], shas=[])
    fresh: dict[str, str] = {}
    for i, (item, key) in enumerate(scanned):
        sha = index.get(key)
        if sha is None:
            try:
                sha = sha256_file(item.path)
            except OSError as e:
                out.skipped.append((item.path, f"unreadable ({e.strerror or e}); deleted or moved meanwhile?"))
                continue
            if progress is not None:
                progress("hashing", i + 1, len(scanned))
        fresh[key] = sha
        out.items.append(item)
        out.shas.append(sha)
    if fresh != index:
        atomic_write_json(review_cache_dir(ws) / "shas.json", {"version": 1, "index": fresh})
    return out


def hash_items(ws: Workspace, items: Sequence[ImageItem], *, progress: Progress | None = None) -> HashedItems:
    """sha256 of every item (e.g. from `scan_dataset`), reusing the index for unchanged files.

    A file deleted behind our back is skipped with the reason, never fatal.
    """
    scanned, gone = [], []
    for item in items:
        try:
            st = item.path.stat()
        except OSError as e:
            gone.append((item.path, f"unreadable ({e.strerror or e}); deleted or moved meanwhile?"))
            continue
        scanned.append((item, f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"))
    out = hash_scanned(ws, scanned, progress=progress)
    out.skipped = gone + out.skipped
    return out


# ---------------------------------------------------------------- feature extractor

OPEN_CLIP_PREFIX = embedders.OPEN_CLIP_PREFIX  # open_clip:MODEL[:PRETRAINED] or open_clip:hf-hub:ORG/REPO
DINOV2_NAMES = tuple(embedders.DINOV2_TIMM)  # dinov2_vits14 ...: DINOv2's weights, loaded by timm


def check_embedder(name: str) -> str:
    """The embedder name, stripped, if smarthub knows how to build it here (weights are checked when loading).

    Accepts a torchvision or timm architecture, `open_clip:MODEL[:PRETRAINED]` or `open_clip:hf-hub:ORG/REPO` when
    open_clip is installed, or a DINOv2 name (dinov2_vits14 ...) when timm is. Raises SmartHubError naming the flag
    and the alternatives otherwise.
    """
    name = (name or "").strip()
    if name.startswith(OPEN_CLIP_PREFIX):
        if importlib.util.find_spec("open_clip") is None:
            raise SmartHubError(f"--embedder {name}: open_clip is not installed (`pip install open_clip_torch`); "
                                f"or use {cached_alternatives()}")
        return name

    if name in TORCHVISION_ARCHS:  # known without importing torchvision
        return name
    if name in DINOV2_NAMES and importlib.util.find_spec("timm") is None:
        raise SmartHubError(f"--embedder {name}: DINOv2 is loaded by timm, which is not installed (`pip install timm`); "
                            f"or use {cached_alternatives()}")
    try:
        resolved = resolve_arch(embedders.hub_name(name)).name
    except SmartHubError as e:
        raise SmartHubError(f"--embedder {name!r}: {e}") from e
    return name if name in DINOV2_NAMES else resolved


def cached_alternatives() -> str:
    """'--embedder A (or B)' for the embedders that load here without a download (strongest first)."""
    names = embedders.available()
    if not names:
        return ("--embedder with weights you add: `smarthub weights add FILE` (torchvision) or `smarthub weights "
                "download NAME` online (none cached)")
    if len(names) == 1:
        return f"--embedder {names[0]} (its weights are cached)"
    return f"--embedder NAME with cached weights: {', '.join(names)}"


def load_extractor(arch: str, *, pretrained: bool = True, size_px: int | None = None) -> tuple[Any, tuple]:
    """(torch module mapping a normalised batch to one embedding per image, (mean, std)).

    `arch` is a torchvision or timm architecture (through `smarthub.model.archs.feature_extractor`), a DINOv2
    name (timm), or `open_clip:MODEL[:PRETRAINED]` / `open_clip:hf-hub:ORG/REPO` (when open_clip is installed).
    Vision transformers are set to take `size_px` images (their position embeddings resampled, as timm does).

    Raises:
        ModelError: unknown arch, its pretrained weights cannot be had (offline), or its checkpoint is corrupt
            or of another model's shape: one line with the fix.
    """
    if arch.startswith(OPEN_CLIP_PREFIX):
        return _open_clip_extractor(arch.removeprefix(OPEN_CLIP_PREFIX), size_px=size_px)
    try:
        module, stats = archs.feature_extractor(embedders.hub_name(arch), pretrained=pretrained)
    except ModelError as e:
        if isinstance(e.__cause__, FileNotFoundError):  # the hub library found no cached file (and is offline)
            raise ModelError(f"--embedder {arch}: its weights are not in the Hugging Face cache "
                             f"{embedders.hub_cache_dir()}{_download_hint(arch)}") from e
        raise ModelError(f"--embedder {arch}: {_first_line(e)}{_download_hint(arch)}") from e
    except _checkpoint_errors() as e:  # a corrupt safetensors file
        raise ModelError(f"--embedder {arch}: its cached checkpoint is unreadable ({_first_line(e)}); "
                         f"delete it and download it again{_download_hint(arch)}") from e
    except KeyError as e:  # timm's checkpoint filters index the tensors they expect
        raise ModelError(f"--embedder {arch}: its cached checkpoint is another model's (no tensor {e}); "
                         f"delete it and download it again{_download_hint(arch)}") from e
    if size_px is not None and hasattr(module, "set_input_size"):  # timm ViTs: DINOv2 is trained at 518 px
        module.set_input_size(img_size=(size_px, size_px))
    module.eval()
    return module, tuple(stats) if stats is not None else IMAGENET_STATS


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    try:
        from safetensors import SafetensorError
    except ImportError:  # safetensors comes with timm and open_clip; without it no such file is read
        return ()
    return (SafetensorError,)


def _download_hint(arch: str) -> str:
    """'; get it with `smarthub weights download …`' (offline: how to copy it) for a recommended embedder."""
    for rec in embedders.RECOMMENDED:
        if rec.name == arch:
            if embedders.offline():
                return f"; offline here: {embedders.offline_fix(rec)}"
            return f"; get it with `smarthub weights download {arch}`"
    return ""


def _open_clip_extractor(spec: str, *, size_px: int | None) -> tuple[Any, tuple]:
    import open_clip  # an optional package: check_embedder tells the user when it is missing
    import torch

    if spec.startswith(embedders.HF_PREFIX):  # the config and the weights both come from the hub repository
        model_name, tag = spec, None
    else:
        model_name, _, tag = spec.partition(":")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=tag or None)
    except (OSError, RuntimeError, ValueError, KeyError, *_checkpoint_errors()) as e:
        hint = _download_hint(OPEN_CLIP_PREFIX + spec)
        raise ModelError(f"--embedder open_clip:{spec}: not available here ({_first_line(e)}){hint}") from e
    expected = getattr(model.visual, "image_size", None)
    expected = expected[0] if isinstance(expected, (tuple, list)) else expected
    if size_px is not None and isinstance(expected, int) and expected != size_px:
        raise ModelError(f"--embedder open_clip:{spec} takes {expected} px images: use --size {expected}")
    norm = next((t for t in getattr(preprocess, "transforms", []) if hasattr(t, "mean") and hasattr(t, "std")), None)
    stats = (tuple(norm.mean), tuple(norm.std)) if norm is not None else IMAGENET_STATS

    class _Image(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: Any) -> Any:
            return self.model.encode_image(x)

    return _Image().eval(), stats


def load_image_array(path: Path, size_px: int) -> np.ndarray:
    """Decode an image to an RGB uint8 array of size_px × size_px (squished, EXIF-rotated).

    Raises:
        ImageError: missing or undecodable file, with the reason.
    """
    from PIL import Image

    img = open_rgb(path, max_side_px=size_px * 2)  # JPEGs decode at reduced scale; the resize below is exact
    return np.asarray(img.resize((size_px, size_px), Image.BILINEAR), dtype=np.uint8)


def _load_batch(paths: Sequence[Path], size_px: int) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    arrays, ok, bad = [], [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(load_image_array(p, size_px))
            ok.append(i)
        except ImageError as e:
            bad.append((p, e.reason))
    batch = np.stack(arrays) if arrays else np.zeros((0, size_px, size_px, 3), np.uint8)
    return batch, ok, bad


def to_tensor(batch: np.ndarray, stats: tuple) -> Any:
    """uint8 [B,H,W,3] → normalised float tensor [B,3,H,W]."""
    import torch

    mean = torch.tensor(stats[0], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(stats[1], dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - mean) / std


def compute_embeddings(
    paths: Sequence[Path], extractor: Any, stats: tuple, *, size_px: int, batch_size: int = 64,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[int], list[tuple[Path, str]]]:
    """Embed images in batches, decoding the next batch in a thread while the model runs.

    Returns (embeddings [n_ok, D] float32, indices into `paths` that succeeded, failures (path, reason)).
    """
    import torch

    chunks = [list(range(i, min(i + batch_size, len(paths)))) for i in range(0, len(paths), batch_size)]
    feats, ok_idx, failed = [], [], []
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode():
        pending = pool.submit(_load_batch, [paths[i] for i in chunks[0]], size_px) if chunks else None
        for n, chunk in enumerate(chunks):
            batch, ok, bad = pending.result()
            if n + 1 < len(chunks):
                pending = pool.submit(_load_batch, [paths[i] for i in chunks[n + 1]], size_px)
            failed.extend(bad)
            if len(ok):
                out = extractor(to_tensor(batch, stats))
                feats.append(out.reshape(out.shape[0], -1).float().numpy())
                ok_idx.extend(chunk[i] for i in ok)
            if progress is not None:
                progress("embedding", min((n + 1) * batch_size, len(paths)), len(paths))
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), ok_idx, failed


# ---------------------------------------------------------------- embedding cache (I/O)

def _cache_file(ws: Workspace, arch: str, size_px: int, pretrained: bool) -> Path:
    """The cache is keyed by embedder name + input size (+ scratch) and, inside, by image sha256."""
    tag = "" if pretrained else "-scratch"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", arch)
    return review_cache_dir(ws) / f"emb-{safe}-{size_px}{tag}.npz"


def load_embedding_cache(ws: Workspace, arch: str, size_px: int, pretrained: bool = True) -> dict[str, np.ndarray]:
    """sha256 → embedding (float32) from the cache; an unreadable cache counts as empty."""
    path = _cache_file(ws, arch, size_px, pretrained)
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            shas, feats = z["shas"], z["feats"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return {}  # rebuilt on the next pass
    return dict(zip((str(s) for s in shas), feats))


def save_embedding_cache(ws: Workspace, arch: str, size_px: int, cache: dict[str, np.ndarray],
                         pretrained: bool = True) -> None:
    """Write the whole cache atomically (float16 to halve the size)."""
    if not cache:
        return
    shas = np.array(sorted(cache))
    feats = np.stack([cache[s] for s in shas]).astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, shas=shas, feats=feats)
    atomic_write_with(_cache_file(ws, arch, size_px, pretrained), lambda f: f.write(buf.getvalue()))


def embed_items(
    ws: Workspace, paths: Sequence[Path], shas: Sequence[str], *, arch: str, size_px: int,
    pretrained: bool = True, batch_size: int = 64, progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], list[tuple[Path, str]]]:
    """Embeddings for the given images (sha256 → vector), computing only those not cached yet.

    Returns (embeddings of every image that could be read, failures (path, reason)).
    """
    with _CACHE_LOCK:
        cache = load_embedding_cache(ws, arch, size_px, pretrained)
    todo = [i for i, s in enumerate(shas) if s not in cache]
    failed: list[tuple[Path, str]] = []
    if todo:
        extractor, stats = load_extractor(arch, pretrained=pretrained, size_px=size_px)
        feats, ok, failed = compute_embeddings(
            [paths[i] for i in todo], extractor, stats, size_px=size_px, batch_size=batch_size, progress=progress
        )
        for row, j in enumerate(ok):
            cache[shas[todo[j]]] = feats[row].astype(np.float16).astype(np.float32)
        with _CACHE_LOCK:
            merged = load_embedding_cache(ws, arch, size_px, pretrained)
            merged.update(cache)
            save_embedding_cache(ws, arch, size_px, merged, pretrained)
    return {s: cache[s] for s in shas if s in cache}, failed
