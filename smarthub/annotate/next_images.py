"""Which images of a pre-annotated batch a person should correct next (active learning for detection).

Pure functions in the middle (arrays in, an order out), I/O at the edges.

- **Uncertainty** (Brust, Käding & Denzler 2018, "Active Learning for Deep Object Detection", VISAPP: a
  per-box margin score summed over the image's boxes). Here the margin is around the box's own class
  threshold, since that is the decision a person checks: a box scored `s` against threshold `t` is uncertain
  by `u = max(0, 1 - |s - t| / band)` (1 at the threshold, 0 at `band` or more away). An image scores the sum
  over its boxes down to the detector's floor, so an image with several doubtful boxes comes before one with
  a single one. An image with no box at all, even at the floor, scores `EMPTY_UNCERTAINTY` (as one box at its
  threshold: the detector saw nothing there, every box is to be drawn).
- **Diversity** (Sener & Savarese 2018, "Active Learning for Convolutional Neural Networks: A Core-Set
  Approach", ICLR: greedy k-center). Farthest-first over L2-normalised image embeddings, from the most typical
  image (nearest the mean), so near-copies land at the end of the list.
- **Both** (default): uncertainty-weighted farthest-first. Each pick maximises `w_i * d_i`, where `d_i` is the
  distance to the nearest image already picked (normalised by the largest) and `w_i = 0.1 + 0.9 u_i / max u`;
  the first pick is the most uncertain image. A near-copy of a picked image has `d ~ 0`, so twenty near-copies
  of one doubtful frame yield one pick at the top and nineteen at the bottom.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smarthub.annotate.scored import ScoredBatch, Thresholds, filter_shapes, least_confident
from smarthub.atomicio import atomic_write_with
from smarthub.dataset import sha256_file
from smarthub.errors import AnnotationError, ImageError, ModelError, SmartHubError
from smarthub.model.embeddings import embed_items, load_image_array
from smarthub.workspace import META_DIRNAME, Workspace

ORDERS = ("both", "uncertainty", "diversity", "none")
DEFAULT_ORDER = "both"
MARGIN_BAND = 0.25  # score units either side of a class threshold within which a box is doubtful
EMPTY_UNCERTAINTY = 1.0
MIN_WEIGHT = 0.1  # an image with no doubtful box still counts for its novelty, ten times less
MAX_GREEDY = 2000  # greedy picks beyond this rank by their last distances (cost stays O(n * MAX_GREEDY * dim))
RANKING_FILE = "next_images.csv"
RANKING_HEADER = ("rank", "image", "uncertainty", "boxes", "doubtful_boxes", "least_confident")


def check_order(order: str) -> str:
    """The order name, or SmartHubError naming the choices."""
    if order not in ORDERS:
        raise SmartHubError(f"--order must be one of {', '.join(ORDERS)}, got {order!r}")
    return order


# ------------------------------------------------------------------ pure


def box_uncertainty(scores: np.ndarray, thresholds: np.ndarray, *, band: float = MARGIN_BAND) -> np.ndarray:
    """Per-box uncertainty in [0, 1]: 1 at the box's class threshold, falling linearly to 0 at `band` away."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if s.shape != t.shape:
        raise SmartHubError(f"box_uncertainty: {len(s)} scores but {len(t)} thresholds")
    return np.clip(1.0 - np.abs(s - t) / band, 0.0, 1.0)


def image_uncertainty(scores: Sequence[np.ndarray], thresholds: Sequence[np.ndarray], *,
                      band: float = MARGIN_BAND, empty: float = EMPTY_UNCERTAINTY) -> np.ndarray:
    """Per-image uncertainty: the sum of its boxes' uncertainties (`empty` for an image without any box)."""
    return np.array([float(box_uncertainty(s, t, band=band).sum()) if len(s) else empty
                     for s, t in zip(scores, thresholds)], dtype=np.float64)


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)  # distances are shift-invariant; centring makes cosine meaningful
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def _farthest_first(x: np.ndarray, weight: np.ndarray, first: int, *, max_greedy: int) -> np.ndarray:
    """Greedy picks maximising weight * distance to the nearest pick; the rest by their last scores."""
    n = len(x)
    picked = np.zeros(n, dtype=bool)
    order = [first]
    picked[first] = True
    dist = np.linalg.norm(x - x[first], axis=1)
    while len(order) < min(n, max_greedy):
        scale = dist.max()
        score = weight * (dist / scale if scale > 0 else dist)
        score[picked] = -np.inf
        # ties (e.g. all remaining are copies: score 0) go to the heavier weight, then the lower index
        best = np.flatnonzero(score == score.max())
        j = int(best[np.argmax(weight[best])])
        order.append(j)
        picked[j] = True
        dist = np.minimum(dist, np.linalg.norm(x - x[j], axis=1))
    rest = np.flatnonzero(~picked)
    if len(rest):
        order.extend(rest[np.lexsort((-weight[rest], -(weight[rest] * dist[rest])))].tolist())
    return np.asarray(order, dtype=np.int64)


def rank_images(uncertainty: np.ndarray, embeddings: np.ndarray | None = None, *, order: str = DEFAULT_ORDER,
                max_greedy: int = MAX_GREEDY) -> np.ndarray:
    """The order (indices, best first) in which to correct images.

    `uncertainty`: one score per image (higher = more to learn; see `image_uncertainty`). `embeddings`:
    [n, d] image embeddings, needed by 'diversity' and 'both'. 'none' keeps the given order.
    """
    check_order(order)
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    n = len(u)
    if order == "none" or n == 0:
        return np.arange(n, dtype=np.int64)
    if order == "uncertainty":
        return np.argsort(-u, kind="stable").astype(np.int64)
    if embeddings is None:
        raise SmartHubError(f"--order {order} needs image embeddings")
    x = np.asarray(embeddings, dtype=np.float64).reshape(n, -1)
    x = _unit_rows(x)
    if order == "diversity":
        first = int(np.argmin(np.linalg.norm(x - x.mean(axis=0), axis=1)))
        return _farthest_first(x, np.ones(n), first, max_greedy=max_greedy)
    top = u.max()
    weight = MIN_WEIGHT + (1 - MIN_WEIGHT) * (u / top if top > 0 else np.zeros(n))
    return _farthest_first(x, weight, int(np.argmax(u)), max_greedy=max_greedy)


# ------------------------------------------------------------------ the ranking file (I/O edge)


@dataclass(frozen=True)
class RankedImage:
    """One row of the ranking: the image (relative to the batch folder) and why it is where it is."""

    rank: int
    image: str
    uncertainty: float
    boxes: int
    doubtful_boxes: int  # boxes within MARGIN_BAND of their class threshold
    least_confident: float | None  # the lowest score among the boxes kept at the thresholds


def ranking_csv(rows: Sequence[RankedImage]) -> str:
    """The ranking as CSV text (header first)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RANKING_HEADER)
    for r in rows:
        w.writerow([r.rank, r.image, f"{r.uncertainty:.4f}", r.boxes, r.doubtful_boxes,
                    "" if r.least_confident is None else f"{r.least_confident:.4f}"])
    return buf.getvalue()


def save_ranking(path: Path, rows: Sequence[RankedImage]) -> Path:
    """Write the ranking CSV atomically."""
    text = ranking_csv(rows).encode("utf-8")
    atomic_write_with(Path(path), lambda f: f.write(text))
    return Path(path)


def load_ranking(path: Path) -> list[str]:
    """The image column of a ranking file, best first."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            return [row["image"] for row in csv.DictReader(f)]
    except (OSError, KeyError, csv.Error) as e:
        raise AnnotationError(f"cannot read the ranking {path}: {e}") from e


# ------------------------------------------------------------------ a scored batch (edges)

EMBEDDER = "mobilenet_v2"  # torchvision ImageNet weights, in the torch cache offline (`smarthub weights add`)
EMBED_SIZE_PX = 64
THUMB_SIDE_PX = 8  # the fallback embedding: an 8 x 8 colour thumbnail


def batch_embeddings(image_paths: Sequence[Path], root: Path) -> tuple[np.ndarray, str]:
    """(image embeddings [n, d], what made them) for the images of a batch.

    MobileNetV2 ImageNet features at 64 px (review's embedder), cached per sha256 in `<root>/.smarthub/cache`;
    when its weights are not cached, 8 x 8 colour thumbnails (said in the returned note). An image that
    cannot be read gets the mean embedding (it then looks like nothing in particular).
    """
    paths = [Path(p) for p in image_paths]
    if not paths:
        return np.zeros((0, 1)), "no images"
    try:
        shas = [sha256_file(p) for p in paths]
        ws = Workspace(data_dir=Path(root), models_dir=Path(root))  # the cache goes to <root>/.smarthub/cache
        found, _failed = embed_items(ws, paths, shas, arch=EMBEDDER, size_px=EMBED_SIZE_PX)
        rows = [found.get(s) for s in shas]
        note = f"{EMBEDDER} features at {EMBED_SIZE_PX} px"
    except (ModelError, OSError) as e:
        rows = []
        for p in paths:
            try:
                rows.append(load_image_array(p, THUMB_SIDE_PX).astype(np.float32).reshape(-1) / 255.0)
            except ImageError:
                rows.append(None)
        note = f"{THUMB_SIDE_PX}x{THUMB_SIDE_PX} thumbnails ({EMBEDDER} weights unavailable: {e})"[:300]
    good = [r for r in rows if r is not None]
    if not good:
        return np.zeros((len(paths), 1)), note
    mean = np.mean(good, axis=0)
    return np.stack([r if r is not None else mean for r in rows]).astype(np.float64), note


def rank_scored(scored: ScoredBatch, thresholds: Thresholds, *, order: str = DEFAULT_ORDER,
                embeddings: np.ndarray | None = None) -> list[RankedImage]:
    """The batch's images in the order to correct them, at `thresholds` (pure: embeddings are given)."""
    items = scored.images
    per_box_t = [np.array([thresholds.of_shape(s) for s in it.shapes], dtype=np.float64) for it in items]
    scores = [it.scores for it in items]
    u = image_uncertainty(scores, per_box_t)
    idx = rank_images(u, embeddings, order=order)
    rows = []
    for rank, i in enumerate(idx, start=1):
        it = items[i]
        kept = filter_shapes(it.shapes, thresholds)
        doubtful = int((box_uncertainty(scores[i], per_box_t[i]) > 0).sum())
        rows.append(RankedImage(rank=rank, image=it.image, uncertainty=float(u[i]), boxes=len(kept),
                                doubtful_boxes=doubtful, least_confident=least_confident(kept)))
    return rows


def ranking_path(root: Path) -> Path:
    return Path(root) / META_DIRNAME / RANKING_FILE


@dataclass
class Ranking:
    """The written ranking: its file, its rows (best first), the embeddings used and how they were made."""

    path: Path
    rows: list[RankedImage]
    embeddings: np.ndarray | None
    note: str = ""


def write_ranking(scored: ScoredBatch, thresholds: Thresholds, *, order: str = DEFAULT_ORDER,
                  embeddings: np.ndarray | None = None) -> Ranking:
    """Rank the batch and write `<root>/.smarthub/next_images.csv`.

    Embeddings are computed here (cached per image) when the order needs them and none are given.
    """
    check_order(order)
    note = ""
    if embeddings is None and order in ("both", "diversity"):
        embeddings, note = batch_embeddings([scored.image_path(it) for it in scored.images], scored.root)
    rows = rank_scored(scored, thresholds, order=order, embeddings=embeddings)
    return Ranking(save_ranking(ranking_path(scored.root), rows), rows, embeddings, note)


GALLERY_SORTS = {"name": "file name", "least_confident": "least confident box first (images without a box first)",
                 "next": "next to correct (uncertain and diverse first)"}


def gallery_order(scored: ScoredBatch, thresholds: Thresholds, *, by: str = "name",
                  embeddings: np.ndarray | None = None) -> list[int]:
    """Indices of `scored.images` in gallery order: by file name, by least confident kept box (an image with
    no box kept at `thresholds` counts as 0, i.e. first), or the 'both' ranking (needs `embeddings`)."""
    if by not in GALLERY_SORTS:
        raise SmartHubError(f"unknown gallery order {by!r}: one of {', '.join(GALLERY_SORTS)}")
    items = scored.images
    if by == "name":
        return sorted(range(len(items)), key=lambda i: items[i].image)
    if by == "least_confident":
        lows = [least_confident(filter_shapes(it.shapes, thresholds)) for it in items]
        return sorted(range(len(items)), key=lambda i: (lows[i] if lows[i] is not None else 0.0, items[i].image))
    per_box_t = [np.array([thresholds.of_shape(s) for s in it.shapes], dtype=np.float64) for it in items]
    u = image_uncertainty([it.scores for it in items], per_box_t)
    return rank_images(u, embeddings, order="both" if embeddings is not None else "uncertainty").tolist()
