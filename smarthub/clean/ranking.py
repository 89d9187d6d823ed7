"""Label-issue ranking as pure functions, arrays in and decisions out: no files, no models.

Out-of-sample probabilities from embeddings (a K-fold cross-validated logistic-regression head),
near duplicates (nearest neighbour by cosine similarity), outliers (cleanlab's OutOfDistribution),
and the suspect order and kinds from cleanlab's label quality. `review.py` feeds them and caches.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

HEAD_C = 3.0  # inverse L2 regularisation of the linear head on unit-norm embeddings
DUPLICATE_MIN_SIMILARITY = 0.97  # cosine similarity of embeddings above which two images are near duplicates


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression

    # C measured on planted Fashion-MNIST noise (bench/RESULTS.md, Review): 3 found the most errors out-of-sample
    return LogisticRegression(C=HEAD_C, max_iter=2000)


def normalise_rows(feats: np.ndarray) -> np.ndarray:
    """L2-normalise each embedding (cosine geometry)."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-12)


def fit_linear_head(feats: np.ndarray, labels: np.ndarray) -> Any:
    """Logistic regression on L2-normalised embeddings (needs at least two classes in `labels`)."""
    head = _logreg()
    head.fit(normalise_rows(feats), labels)
    return head


def head_probs(head: Any, feats: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities [N, n_classes] in vocab order; classes the head never saw get 0."""
    out = np.zeros((len(feats), n_classes), dtype=np.float64)
    if len(feats):
        out[:, head.classes_] = head.predict_proba(normalise_rows(feats))
    return out


def fold_assignment(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Stratified fold index per image; classes with fewer images than folds are spread as far as they go."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = int(min(folds, len(labels)))
    fold = np.zeros(len(labels), dtype=int)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(skf.split(np.zeros(len(labels)), labels)):
            fold[test] = k
    return fold


def cross_val_probs(feats: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = 5,
                    seed: int = 42) -> np.ndarray:
    """Out-of-sample probabilities: each image scored by a linear head fit on the other folds.

    An image whose class has no other image in its training folds gets 0 for that class
    (it is then ranked as doubtful, which a class of one image is).
    """
    fold = fold_assignment(labels, folds=folds, seed=seed)
    probs = np.zeros((len(labels), n_classes), dtype=np.float64)
    for k in np.unique(fold):
        test, train = fold == k, fold != k
        if len(np.unique(labels[train])) < 2:
            probs[test] = np.bincount(labels[train], minlength=n_classes) / max(1, train.sum())
            continue
        probs[test] = head_probs(fit_linear_head(feats[train], labels[train]), feats[test], n_classes)
    return probs


def near_duplicates(feats: np.ndarray, *, min_similarity: float = DUPLICATE_MIN_SIMILARITY) -> np.ndarray:
    """For each row, the index of its nearest other row if their cosine similarity ≥ min_similarity, else -1.

    Uses sklearn NearestNeighbors (chunked, memory O(n)), never a dense n×n matrix.
    """
    from sklearn.neighbors import NearestNeighbors

    out = np.full(len(feats), -1, dtype=int)
    if len(feats) < 2:
        return out
    x = normalise_rows(feats.astype(np.float32))
    nn = NearestNeighbors(n_neighbors=2, metric="euclidean", algorithm="brute").fit(x)
    dist, idx = nn.kneighbors(x)
    # the first neighbour is usually the row itself; identical rows may swap, so take the first that is not
    other = np.where(idx[:, 0] == np.arange(len(x)), idx[:, 1], idx[:, 0])
    d_other = np.where(idx[:, 0] == np.arange(len(x)), dist[:, 1], dist[:, 0])
    similarity = 1.0 - d_other ** 2 / 2.0  # unit vectors: |a-b|² = 2 - 2 cos
    hit = similarity >= min_similarity
    out[hit] = other[hit]
    return out


def outlier_mask(feats: np.ndarray, *, max_fraction: float = 0.02) -> np.ndarray:
    """Images unlike the rest: cleanlab OutOfDistribution scores below the lower Tukey fence (≤ 2 %)."""
    mask = np.zeros(len(feats), dtype=bool)
    if len(feats) <= 20:
        return mask
    from cleanlab.outlier import OutOfDistribution

    k = min(10, len(feats) - 1)
    scores = OutOfDistribution(params={"k": k}).fit_score(features=normalise_rows(feats), verbose=False)
    q1, q3 = np.percentile(scores, [25, 75])
    fence = q1 - 1.5 * (q3 - q1)
    cap = np.sort(scores)[max(0, int(max_fraction * len(scores)) - 1)]
    mask = (scores < fence) & (scores <= cap)
    return mask


def label_issue_scores(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cleanlab label quality per image, lower worse; cleanlab's label-issue mask)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    probs = np.clip(probs, 1e-9, None)
    probs = probs / probs.sum(axis=1, keepdims=True)
    quality = get_label_quality_scores(labels, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "too few examples in class …" on tiny classes
        issues = find_label_issues(labels, probs, n_jobs=1)
    return quality, issues


def classify_suspects(labels: np.ndarray, probs: np.ndarray, *, threshold: float,
                      duplicate: np.ndarray, outlier: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (order of suspect indices worst first, kind per image or '' if not a suspect, quality).

    Order: cleanlab label quality ascending (measured to find more planted errors in the top k than
    putting cleanlab's `find_label_issues` flags first); the flags mark otherwise-confident images 'unsure'.
    """
    quality, issues = label_issue_scores(labels, probs)
    pred = probs.argmax(axis=1)
    p_given = probs[np.arange(len(labels)), labels]
    kind = np.full(len(labels), "", dtype=object)
    kind[outlier] = "outlier"
    kind[(p_given < threshold) | issues] = "unsure"
    kind[duplicate] = "duplicate"
    kind[pred != labels] = "wrong"
    idx = np.flatnonzero(kind != "")
    order = idx[np.argsort(quality[idx], kind="stable")]
    return order, kind, quality
