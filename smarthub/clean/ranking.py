"""Label-issue ranking as pure functions, arrays in and decisions out: no files, no models.

Out-of-sample probabilities from embeddings: a K-fold cross-validated logistic-regression head combined
with the labels of each image's nearest neighbours (never its own), then a prune-and-refit round without the
images that round flagged; near duplicates and outliers from the
same neighbour search (`neighbours.nearest`); the queue size from cleanlab's `find_label_issues` and the
order from cleanlab's label quality. `review.py` feeds them and caches.

Labels a person checked (`trusted`) are active label cleaning's feedback (Bernhardt et al. 2022, Nature
Communications 13:1161; cleanlab's ActiveLab, Goh & Mueller 2023): full weight in the heads and the neighbour
votes, never pruned; `rerank_probs` re-ranks with them in milliseconds over the last fit's heads.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smarthub.clean.neighbours import nearest
from smarthub.clean.options import ReviewOptions
from smarthub.clean.signals import Evidence, kind_of
from smarthub.model.options import TrainOptions

HEAD_C = 3.0  # inverse L2 regularisation of the linear head on unit-norm embeddings
# A fold's head learns from at most this many images (a random stratified share beyond): a linear head on
# frozen features has learnt what it can by then, and it keeps a million embeddings within minutes.
HEAD_MAX_TRAIN_ROWS = 10_000
KNN_K = 10  # neighbours whose labels vote (bench/review_quality.py)
HEAD_WEIGHT = 0.5  # share of the head in the combined probabilities; the rest is neighbour agreement
# Prune-and-refit rounds: the heads are fitted again without the images the previous round flagged, and only
# unflagged neighbours vote (cleanlab's CleanLearning idea, kept out-of-sample). One round found 5-7 more planted
# errors per 100 moved to the most similar class and lost ≤ 1.3 on uniform noise (bench/RESULTS.md, Review).
REFIT_ROUNDS = 1
DUPLICATE_MIN_SIMILARITY = 0.97  # cosine similarity of embeddings above which two images are near duplicates
# A trusted label (an image a person kept or relabelled) counts this many times in the heads' fits and in its
# neighbours' votes; trusted images are in every fold's fit and never pruned (bench/review_effort.py).
TRUSTED_WEIGHT = 5.0


def _logreg() -> Any:
    from sklearn.linear_model import LogisticRegression

    # C measured on planted Fashion-MNIST noise (bench/RESULTS.md, Review): 3 found the most errors out-of-sample
    return LogisticRegression(C=HEAD_C, max_iter=2000)


def normalise_rows(feats: np.ndarray) -> np.ndarray:
    """L2-normalise each embedding (cosine geometry)."""
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.maximum(norms, 1e-12)


def fit_linear_head(feats: np.ndarray, labels: np.ndarray, *, sample_weight: np.ndarray | None = None) -> Any:
    """Logistic regression on L2-normalised embeddings (needs at least two classes in `labels`).

    BLAS runs on one thread: L-BFGS on thin matrices gains nothing from more, and a second OpenBLAS thread
    spinning against other work on the cores made a 5-fold fit 25× slower here (bench/RESULTS.md, Review).
    """
    from threadpoolctl import threadpool_limits

    head = _logreg()
    with threadpool_limits(limits=1, user_api="blas"):
        head.fit(normalise_rows(feats), labels, sample_weight=sample_weight)
    return head


def head_probs(head: Any, feats: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities [N, n_classes] in vocab order; classes the head never saw get 0."""
    out = np.zeros((len(feats), n_classes), dtype=np.float64)
    for start in range(0, len(feats), 65_536):  # chunks: scikit-learn copies its input to float64
        chunk = normalise_rows(np.asarray(feats[start:start + 65_536], dtype=np.float32))
        out[start:start + len(chunk), head.classes_] = head.predict_proba(chunk)
    return out


def fold_assignment(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Stratified fold index per image; classes with fewer images than folds are spread as far as they go
    (at most as many folds as the largest class has images, which scikit-learn requires)."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = int(min(folds, len(labels), np.bincount(labels).max()))
    fold = np.zeros(len(labels), dtype=int)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for k, (_, test) in enumerate(skf.split(np.zeros(len(labels)), labels)):
            fold[test] = k
    return fold


def cross_val_probs(feats: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = ReviewOptions.folds,
                    seed: int = TrainOptions.seed, max_train_rows: int = HEAD_MAX_TRAIN_ROWS,
                    exclude: np.ndarray | None = None, trusted: np.ndarray | None = None,
                    trusted_weight: float = TRUSTED_WEIGHT) -> np.ndarray:
    """Out-of-sample probabilities: each image scored by a linear head fit on the other folds.

    An image whose class has no other image in its training folds gets 0 for that class
    (it is then ranked as doubtful, which a class of one image is). Each fold's head learns from at most
    `max_train_rows` images (a seeded random share), so the cost stays linear in the number of images.
    `exclude` (a mask) keeps images out of every head's training, though they are still scored.
    `trusted` (a mask: labels a person checked) puts those images in every fold's training with weight
    `trusted_weight`, excluded or not; they are never suspects, so their own scores need not be out-of-sample.
    """
    fold = fold_assignment(labels, folds=folds, seed=seed)
    probs = np.zeros((len(labels), n_classes), dtype=np.float64)
    rng = np.random.default_rng(seed)
    sure = np.zeros(len(labels), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    for k in np.unique(fold):
        test = fold == k
        train = np.flatnonzero((fold != k) & (True if exclude is None else ~exclude) & ~sure)
        if len(train) + sure.sum() > max_train_rows:
            keep = max(0, max_train_rows - int(sure.sum()))
            train = rng.choice(train, size=min(keep, len(train)), replace=False)
        train = np.sort(np.concatenate([train, np.flatnonzero(sure)]))
        if len(np.unique(labels[train])) < 2:
            probs[test] = np.bincount(labels[train], minlength=n_classes) / max(1, len(train))
            continue
        weight = np.where(sure[train], trusted_weight, 1.0) if sure.any() else None
        head = fit_linear_head(feats[train], labels[train], sample_weight=weight)
        probs[test] = head_probs(head, feats[test], n_classes)
    return probs


def neighbour_label_probs(index: np.ndarray, similarity: np.ndarray, labels: np.ndarray, *,
                          n_classes: int, smoothing: float = 1.0,
                          voter_weight: np.ndarray | None = None) -> np.ndarray:
    """Each image's neighbours' labels as a distribution over classes (out-of-sample: never its own label).

    Votes are weighted by cosine similarity (negative similarity counts 0), times `voter_weight` of the
    neighbour when given (trusted labels count more), and smoothed towards the class
    frequencies with `smoothing` votes, so an image with few or far neighbours is not certain.
    index/similarity: [n, k] from `neighbours.nearest` (or `neighbours.query` against the rows `labels`
    describes), -1 where there is no neighbour.
    """
    n = len(index)
    prior = np.bincount(labels, minlength=n_classes).astype(np.float64)
    prior /= max(1.0, prior.sum())
    votes = np.zeros((n, n_classes), dtype=np.float64)
    valid = index >= 0
    safe = np.where(valid, index, 0)
    weights = np.where(valid, np.clip(similarity, 0.0, None), 0.0).astype(np.float64)
    if voter_weight is not None:
        weights = weights * np.asarray(voter_weight, dtype=np.float64)[safe]
    neighbour_labels = labels[safe]
    rows = np.repeat(np.arange(n), index.shape[1])
    np.add.at(votes, (rows, neighbour_labels.ravel()), weights.ravel())
    votes += smoothing * prior
    return votes / votes.sum(axis=1, keepdims=True)


def combine_probs(head: np.ndarray, knn: np.ndarray, *, head_weight: float = HEAD_WEIGHT) -> np.ndarray:
    """Weighted mean of the head's and the neighbours' class probabilities (rows sum to 1)."""
    return head_weight * head + (1.0 - head_weight) * knn


def estimated_issues(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's `find_label_issues` (confident learning, prune by noise rate): the default review queue."""
    return label_issue_scores(labels, probs)[1]


def duplicates_from_neighbours(index: np.ndarray, similarity: np.ndarray, *,
                               min_similarity: float = DUPLICATE_MIN_SIMILARITY) -> np.ndarray:
    """For each row, its nearest other row if their cosine similarity ≥ min_similarity, else -1."""
    out = np.full(len(index), -1, dtype=np.int64)
    if index.shape[1] == 0:
        return out
    hit = (index[:, 0] >= 0) & (similarity[:, 0] >= min_similarity)
    out[hit] = index[hit, 0]
    return out


def outliers_from_neighbours(similarity: np.ndarray, *, max_fraction: float = 0.02) -> np.ndarray:
    """Images unlike the rest: mean similarity to their neighbours below the lower Tukey fence (≤ 2 %).

    The same k-nearest-neighbour distance cleanlab's OutOfDistribution scores by, from the shared search.
    """
    mask = np.zeros(len(similarity), dtype=bool)
    if len(similarity) <= 20 or similarity.shape[1] == 0:
        return mask
    scores = similarity.mean(axis=1)
    q1, q3 = np.percentile(scores, [25, 75])
    fence = q1 - 1.5 * (q3 - q1)
    cap = np.sort(scores)[max(0, int(max_fraction * len(scores)) - 1)]
    return (scores < fence) & (scores <= cap)


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


def triage(labels: np.ndarray, probs: np.ndarray, *, threshold: float, duplicate: np.ndarray,
           outlier: np.ndarray, quality: Sequence[tuple[str, ...]] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (kind per image, '' when nothing is wrong; cleanlab label quality, lower worse; label-issue mask).

    The issue mask (cleanlab `find_label_issues`) sizes the default queue; the order within it is by quality
    (measured to find more planted errors in the top k than putting the flags first).
    Kind: the flagging signal of lowest precedence (`signals.SIGNALS`: wrong > duplicate > unsure > outlier >
    quality).
    """
    quality_score, issues = label_issue_scores(labels, probs)
    ev = Evidence(labels=labels, probs=probs, issues=issues, threshold=threshold, duplicate=duplicate,
                  outlier=outlier, quality=quality)
    return kind_of(ev), quality_score, issues


@dataclass(frozen=True)
class LabelProbs:
    """The default scorer's output: combined probabilities, the heads' part, and the images its last prune round
    flagged (they do not vote as neighbours). `rerank_probs` updates `probs` from the other two in milliseconds."""

    probs: np.ndarray
    head: np.ndarray
    flagged: np.ndarray


def default_label_probs(feats: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = ReviewOptions.folds,
                        seed: int = TrainOptions.seed, neighbours: Any = None, refit_rounds: int = REFIT_ROUNDS,
                        trusted: np.ndarray | None = None, trusted_weight: float = TRUSTED_WEIGHT) -> np.ndarray:
    """smarthub's default out-of-sample probabilities: the cross-validated head and neighbour agreement combined,
    then `refit_rounds` prune-and-refit rounds (heads and neighbour votes without the images flagged so far).

    `neighbours` (a `neighbours.Neighbours` over the same rows) is computed when not given. `trusted` (a mask of
    labels a person checked: kept or relabelled) is active label cleaning's feedback: those images are in every
    head's fit and their neighbour votes count `trusted_weight` times, and they are never pruned.
    """
    return default_label_parts(feats, labels, n_classes=n_classes, folds=folds, seed=seed, neighbours=neighbours,
                               refit_rounds=refit_rounds, trusted=trusted, trusted_weight=trusted_weight).probs


def default_label_parts(feats: np.ndarray, labels: np.ndarray, *, n_classes: int, folds: int = ReviewOptions.folds,
                        seed: int = TrainOptions.seed, neighbours: Any = None, refit_rounds: int = REFIT_ROUNDS,
                        trusted: np.ndarray | None = None, trusted_weight: float = TRUSTED_WEIGHT) -> LabelProbs:
    """`default_label_probs` with its parts (for `rerank_probs`)."""
    nb = neighbours if neighbours is not None else nearest(feats, k=KNN_K, seed=seed)
    sure = np.zeros(len(labels), dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)
    flagged = np.zeros(len(labels), dtype=bool)
    for round_ in range(refit_rounds + 1):
        head = cross_val_probs(feats, labels, n_classes=n_classes, folds=folds, seed=seed, exclude=flagged,
                               trusted=sure, trusted_weight=trusted_weight)
        probs = _with_votes(head, nb.index, nb.similarity, labels, n_classes=n_classes, trusted=sure,
                            flagged=flagged, trusted_weight=trusted_weight)
        if round_ == refit_rounds:
            break
        was = flagged
        flagged = estimated_issues(labels, probs) & ~sure
        if not flagged.any() or len(np.unique(labels[~flagged])) < len(np.unique(labels)):
            flagged = was
            break  # nothing to prune, or pruning would remove a whole class: keep this round
    return LabelProbs(probs, head, flagged)


def _with_votes(head: np.ndarray, index: np.ndarray, similarity: np.ndarray, labels: np.ndarray, *,
                n_classes: int, trusted: np.ndarray, flagged: np.ndarray, trusted_weight: float) -> np.ndarray:
    voter = np.where(trusted, trusted_weight, 1.0) if trusted.any() else None
    index = np.where(flagged[np.maximum(index, 0)], -1, index)  # flagged images do not vote
    knn = neighbour_label_probs(index, similarity, labels, n_classes=n_classes, voter_weight=voter)
    return combine_probs(head, knn)


def rerank_probs(parts: LabelProbs, index: np.ndarray, similarity: np.ndarray, labels: np.ndarray, *,
                 n_classes: int, trusted: np.ndarray, trusted_weight: float = TRUSTED_WEIGHT) -> np.ndarray:
    """The re-rank after a page of decisions, in milliseconds: the heads of the last full ranking, with the
    neighbour votes counted again under the current labels, trusted labels (kept or relabelled by a person)
    voting `trusted_weight` times and never pruned. `default_label_parts(trusted=...)` is the full refit."""
    sure = np.asarray(trusted, dtype=bool)
    return _with_votes(parts.head, index, similarity, labels, n_classes=n_classes, trusted=sure,
                       flagged=parts.flagged & ~sure, trusted_weight=trusted_weight)
