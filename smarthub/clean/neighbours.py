"""Nearest neighbours in embedding space (cosine), exact for small sets and approximate (faiss) for large ones.

One pass gives every signal that needs neighbours: label agreement, near duplicates and outliers.
Exact search is a chunked matrix product (O(n²) work, O(n·chunk) memory); above `EXACT_MAX_ROWS` rows
the search runs on a faiss inverted-file index over PCA-reduced vectors (O(n·√n) work), which keeps a
million embeddings within minutes on two cores (bench/RESULTS.md, "Review queue and ranking").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Above this many rows the exact search costs more than the approximate index (measured: bench/review_quality.py
# --timing; exact 20k ≈ the IVF index at 20k, and exact grows with n² while IVF grows with n^1.5).
EXACT_MAX_ROWS = 20_000
PCA_DIMS = 64  # the approximate index searches PCA-reduced vectors; candidates are re-scored in full
NPROBE = 8  # inverted lists visited per query (of 4·√n)
_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class Neighbours:
    """For each row, its k nearest other rows (`index`, -1 where fewer exist) and their cosine `similarity`."""

    index: np.ndarray  # [n, k] int64
    similarity: np.ndarray  # [n, k] float32, descending per row
    exact: bool


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Float32 copy of `x` with every row scaled to length 1."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def nearest(feats: np.ndarray, *, k: int = 10, exact: bool | None = None, seed: int = 0) -> Neighbours:
    """The k nearest other rows of every row by cosine similarity (the row itself excluded).

    exact: None chooses by size (exact up to EXACT_MAX_ROWS rows, faiss IVF beyond); True/False forces it.
    """
    x = unit_rows(feats)
    n = len(x)
    k = int(max(0, min(k, n - 1)))
    if k == 0:
        return Neighbours(np.full((n, 0), -1, np.int64), np.zeros((n, 0), np.float32), True)
    use_exact = n <= EXACT_MAX_ROWS if exact is None else exact
    if use_exact:
        idx, sim = _exact(x, k)
    else:
        idx, sim = _approximate(x, k, seed=seed)
    return Neighbours(idx, sim, use_exact)


def _exact(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(n, start + _CHUNK_ROWS)
        s = x[start:stop] @ x.T
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        sim[start:stop] = np.take_along_axis(vals, order, axis=1)
    return idx, sim


def _approximate(x: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss: PCA to PCA_DIMS, inverted lists (4·√n of them, NPROBE visited), 2k+1 candidates re-scored in the
    full space. k-means learns the lists from at most 10 points per list (plenty for assigning neighbours)."""
    import faiss

    n, d = x.shape
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, size=min(n, 50_000), replace=False)]
    dims = min(PCA_DIMS, d)
    pca = faiss.PCAMatrix(d, dims)
    pca.train(np.ascontiguousarray(sample))
    reduced = unit_rows(_apply_chunked(pca, x))
    nlist = int(max(16, min(65_536, 4 * np.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dims)
    index = faiss.IndexIVFFlat(quantizer, dims, nlist, faiss.METRIC_INNER_PRODUCT)
    train_rows = reduced[rng.choice(n, size=min(n, max(10 * nlist, 10_000)), replace=False)]
    index.cp.min_points_per_centroid = 5  # 10 per list is our choice: no "provide more points" warning
    index.train(train_rows)
    index.add(reduced)
    index.nprobe = NPROBE
    extra = 2 * k + 1  # candidates in the reduced space, re-scored in the full space
    _, cand = index.search(reduced, extra)
    idx = np.full((n, k), -1, np.int64)
    sim = np.full((n, k), -np.inf, np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(n, start + _CHUNK_ROWS)
        c = cand[start:stop]
        valid = (c >= 0) & (c != np.arange(start, stop)[:, None])
        safe = np.where(valid, c, 0)
        s = np.einsum("nd,nkd->nk", x[start:stop], x[safe])
        s[~valid] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        idx[start:stop] = np.where(np.take_along_axis(valid, order, axis=1), np.take_along_axis(c, order, axis=1), -1)
        sim[start:stop] = np.take_along_axis(s, order, axis=1)
    sim[idx < 0] = 0.0
    return idx, sim


def _apply_chunked(transform: object, x: np.ndarray) -> np.ndarray:
    parts = [transform.apply(np.ascontiguousarray(x[i:i + 100_000])) for i in range(0, len(x), 100_000)]  # type: ignore[attr-defined]
    return np.concatenate(parts).astype(np.float32)


def query(base: np.ndarray, queries: np.ndarray, *, k: int = 10) -> Neighbours:
    """The k nearest rows of `base` to each row of `queries` (exact; for the few images added after a review)."""
    b, q = unit_rows(base), unit_rows(queries)
    k = int(max(0, min(k, len(b))))
    idx = np.empty((len(q), k), np.int64)
    sim = np.empty((len(q), k), np.float32)
    for start in range(0, len(q), _CHUNK_ROWS):
        s = q[start:start + _CHUNK_ROWS] @ b.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k else np.zeros((len(s), 0), np.int64)
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        idx[start:start + len(s)] = np.take_along_axis(part, order, axis=1)
        sim[start:start + len(s)] = np.take_along_axis(vals, order, axis=1)
    return Neighbours(idx, sim, True)
