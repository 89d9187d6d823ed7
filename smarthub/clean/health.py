"""Dataset health from a review's probabilities, pure: estimated label errors per class, the most-confused class
pairs, the images with the highest loss, and a class-imbalance note (cleanlab's health summary and fastai's
`most_confused` / `top_losses`, from the out-of-sample probabilities the queue is ranked by)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

IMBALANCE_RATIO = 3.0  # largest / smallest class above which the summary warns


@dataclass(frozen=True)
class ClassHealth:
    """One class: images filed under it, how many of them are estimated errors, and that share."""

    label: str
    n_images: int
    estimated_errors: int

    @property
    def error_share(self) -> float:
        return self.estimated_errors / max(1, self.n_images)


@dataclass(frozen=True)
class Health:
    """classes worst share first; confused: (given, likely true class, count) among the estimated errors;
    top_losses: (row, loss = -log p(given)) highest first; imbalance: a note, '' when the classes are balanced."""

    classes: list[ClassHealth]
    confused: list[tuple[str, str, int]]
    top_losses: list[tuple[int, float]]
    imbalance: str


def health(labels: np.ndarray, probs: np.ndarray, issues: np.ndarray, vocab: list[str], *,
           n_pairs: int = 5, n_losses: int = 10) -> Health:
    """Health of a labelled set: labels [n], probs [n, classes] (rows in vocab order), issues: estimated-error mask."""
    labels = np.asarray(labels, dtype=int)
    issues = np.asarray(issues, dtype=bool)
    sizes = np.bincount(labels, minlength=len(vocab))
    errors = np.bincount(labels[issues], minlength=len(vocab))
    classes = sorted((ClassHealth(vocab[c], int(sizes[c]), int(errors[c])) for c in range(len(vocab)) if sizes[c]),
                     key=lambda h: (-h.error_share, h.label))
    others = probs.copy()
    rows = np.arange(len(labels))
    others[rows, labels] = -1.0
    likely = others.argmax(axis=1) if len(labels) else np.zeros(0, int)
    pairs = Counter((vocab[labels[i]], vocab[likely[i]]) for i in np.flatnonzero(issues))
    confused = [(g, t, n) for (g, t), n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:n_pairs]]
    loss = -np.log(np.clip(probs[rows, labels], 1e-12, None)) if len(labels) else np.zeros(0)
    top = [(int(i), float(loss[i])) for i in np.argsort(-loss, kind="stable")[:n_losses]]
    return Health(classes, confused, top, imbalance_note(sizes, vocab))


def imbalance_note(sizes: np.ndarray, vocab: list[str]) -> str:
    """'fish has 11 images, mammals 67 (6.1×): …' when the largest class is IMBALANCE_RATIO× the smallest."""
    present = [c for c in range(len(vocab)) if sizes[c]]
    if len(present) < 2:
        return ""
    small = min(present, key=lambda c: (sizes[c], vocab[c]))
    large = max(present, key=lambda c: (sizes[c], vocab[c]))
    ratio = sizes[large] / sizes[small]
    if ratio < IMBALANCE_RATIO:
        return ""
    return (f"{vocab[small]} has {sizes[small]} images, {vocab[large]} {sizes[large]} ({ratio:.1f}×): errors in small "
            f"classes are harder to estimate and the model learns them least; add images to {vocab[small]}")
