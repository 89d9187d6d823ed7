"""Per-class confidence thresholds from scored predictions on a validation split (pure functions).

`match_scores` turns one image's predictions of one class into (score, is true positive) pairs with
COCO's greedy rule at an IoU; `choose_threshold` picks, from all such pairs of a class, the lowest
score to keep that maximises F1, or the one that costs a person the least time to correct (a kept true box
is verified, a kept false one deleted, a missed one drawn: evaluate.ActionCosts), or the one with the best
recall among those reaching a precision. `choose_shared_threshold` picks one threshold for every class by
the least correction time, matching boxes whatever their label: a box on an object of another class is a
relabel, not a false box plus a drawing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from smarthub.annotate.evaluate import DEFAULT_COSTS as c
from smarthub.annotate.evaluate import iou_matrix
from smarthub.errors import SmartHubError

DEFAULT_CONF = 0.25  # used for a class the validation split cannot tune (no truth or no prediction)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen confidence for one class and what it gives on the validation split."""

    conf: float
    precision: float | None
    recall: float | None
    f1: float | None
    tuned: bool = True  # False: no truth, prediction or true positive in validation; DEFAULT_CONF used
    reached: bool = True  # False: --min-precision was not reached; the most precise point was taken

    def to_json(self) -> dict:
        return {"conf": self.conf, "precision": self.precision, "recall": self.recall, "f1": self.f1,
                "tuned": self.tuned, "reached_min_precision": self.reached}


def greedy_matches(pred_xyxy: np.ndarray, pred_scores: np.ndarray, truth_xyxy: np.ndarray, *,
                   iou: float = 0.5) -> list[tuple[int, int]]:
    """(prediction index, truth index or -1) by descending score: each prediction takes the free truth box it
    overlaps most if IoU >= `iou` (COCO's greedy rule)."""
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    truth = np.asarray(truth_xyxy, dtype=np.float64).reshape(-1, 4)
    if not len(truth):
        return [(int(i), -1) for i in order]
    m = iou_matrix(np.asarray(pred_xyxy, dtype=np.float64).reshape(-1, 4)[order], truth)
    free = np.ones(len(truth), dtype=bool)
    out = []
    for row, i in zip(m, order):
        cand = np.where(free, row, -1.0)
        j = int(cand.argmax())
        if cand[j] >= iou:
            free[j] = False
            out.append((int(i), j))
        else:
            out.append((int(i), -1))
    return out


def match_scores(pred_xyxy: np.ndarray, pred_scores: np.ndarray, truth_xyxy: np.ndarray, *,
                 iou: float = 0.5) -> list[tuple[float, bool]]:
    """(score, true positive) for each prediction of one class in one image (`greedy_matches`), by score."""
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    return [(float(scores[i]), j >= 0) for i, j in greedy_matches(pred_xyxy, scores, truth_xyxy, iou=iou)]


def pr_points(pairs: list[tuple[float, bool]], n_truth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, precision, recall) keeping every prediction scored >= each threshold (descending)."""
    if not pairs:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    hits = np.array([h for _, h in pairs], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    kept = np.arange(1, len(scores) + 1)
    last = np.r_[scores[1:] != scores[:-1], True]  # a threshold keeps all predictions with equal scores
    precision = tp / kept
    recall = tp / n_truth if n_truth else np.zeros_like(tp)
    return scores[last], precision[last], recall[last]


OBJECTIVES = ("time", "f1")


def choose_threshold(pairs: list[tuple[float, bool]], n_truth: int, *, min_precision: float | None = None,
                     default: float = DEFAULT_CONF, objective: str = "f1") -> ThresholdChoice:
    """The confidence threshold of one class from its validation (score, hit) pairs and truth count.

    objective 'f1': maximises F1; 'time': minimises the estimated correction time (kept hits verified, kept
    misses deleted, missed truth drawn, priced by evaluate.DEFAULT_COSTS; a loose box's adjustment is not
    seen at IoU 0.5 and is priced as a verification). Ties: the higher threshold, fewer boxes. With
    `min_precision`, the lowest threshold whose precision reaches it (most recall); when none does, the most
    precise point (`reached=False`).
    """
    if objective not in OBJECTIVES:
        raise SmartHubError(f"threshold objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if min_precision is not None and not 0.0 < min_precision <= 1.0:
        raise SmartHubError(f"--min-precision must be in (0, 1], got {min_precision}")
    thresholds, precision, recall = pr_points(pairs, n_truth)
    if not len(thresholds) or n_truth == 0:
        return ThresholdChoice(default, None, None, None, tuned=False)
    if not any(hit for _, hit in pairs):  # nothing found: no threshold is better than another
        return ThresholdChoice(default, 0.0, 0.0, 0.0, tuned=False)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    reached = True
    if min_precision is None and objective == "time":
        tp = recall * n_truth
        fp = tp / np.maximum(precision, 1e-12) - tp
        seconds = tp * c.verify_s + fp * c.delete_s + (n_truth - tp) * c.draw_s
        best = int(np.flatnonzero(seconds <= seconds.min() + 1e-9)[0])
    elif min_precision is None:
        best = int(np.flatnonzero(f1 == f1.max())[0])
    else:
        ok = np.flatnonzero(precision >= min_precision - 1e-12)
        if len(ok):
            best = int(ok[recall[ok] == recall[ok].max()][0])
        else:
            best, reached = int(np.argmax(precision)), False
    return ThresholdChoice(float(thresholds[best]), float(precision[best]), float(recall[best]), float(f1[best]),
                           reached=reached)


@dataclass(frozen=True)
class ScoredImage:
    """One validation image: every predicted box (label, xyxy, score) and every truth box (label, xyxy)."""

    pred_labels: list[str]
    pred_xyxy: np.ndarray
    pred_scores: np.ndarray
    truth_labels: list[str]
    truth_xyxy: np.ndarray


def agnostic_matches(image: ScoredImage, *, iou: float = 0.5) -> list[tuple[float, bool, bool]]:
    """(score, on an object, with its label) for each box of one image: `greedy_matches` over every box and every
    truth box whatever their labels (a box on a fish called fruit is on an object, under the wrong label)."""
    scores = np.asarray(image.pred_scores, dtype=np.float64).reshape(-1)
    return [(float(scores[i]), j >= 0, j >= 0 and image.pred_labels[i] == image.truth_labels[j])
            for i, j in greedy_matches(image.pred_xyxy, scores, image.truth_xyxy, iou=iou)]


def choose_shared_threshold(images: list[ScoredImage], *, default: float = DEFAULT_CONF) -> ThresholdChoice:
    """One confidence threshold for every class: the least estimated correction time on these images.

    Every box kept is priced as a person spends it (evaluate.DEFAULT_COSTS): on an object with its label,
    verified; on an object under another label, relabelled; on nothing, deleted; every object without a kept
    box, drawn. Pooling the classes gives the choice every validation box instead of one class's few, and
    prices a right box with the wrong name as the relabel it is. Ties: the higher threshold.
    Precision and recall in the result count a box on an object as found, whatever its label.
    """
    matches = [m for im in images for m in agnostic_matches(im)]
    n_truth = sum(len(im.truth_labels) for im in images)
    if not n_truth or not any(hit for _, hit, _ in matches):
        return ThresholdChoice(default, None if not n_truth else 0.0, None if not n_truth else 0.0,
                               None if not n_truth else 0.0, tuned=False)
    matches.sort(key=lambda m: -m[0])
    scores = np.array([m[0] for m in matches])
    hit = np.cumsum([m[1] for m in matches])
    named = np.cumsum([m[2] for m in matches])
    kept = np.arange(1, len(matches) + 1)
    last = np.r_[scores[1:] != scores[:-1], True]
    seconds = (named * c.verify_s + (hit - named) * c.relabel_s + (kept - hit) * c.delete_s
               + (n_truth - hit) * c.draw_s)[last]
    best = int(np.flatnonzero(seconds <= seconds.min() + 1e-9)[0])
    precision, recall = (hit / kept)[last][best], (hit / n_truth)[last][best]
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ThresholdChoice(float(scores[last][best]), float(precision), float(recall), float(f1))


def threshold_rule(objective: str, min_precision: float | None = None) -> str:
    """The rule that chose a run's thresholds, in words (run.json and the run's summary)."""
    if min_precision is not None:
        return f"each class: the most recall with precision >= {min_precision:g} on validation"
    return {"time": "one for every class: the least estimated correction time on validation (a box under the "
                    "wrong label priced as a relabel)",
            "time-per-class": "each class: the least estimated correction time on validation",
            "f1": "each class: the best F1 on validation"}[objective]


def threshold_at(pairs: list[tuple[float, bool]], n_truth: int, conf: float) -> ThresholdChoice:
    """What a given threshold gives one class on its validation (score, hit) pairs (for the run's report)."""
    kept = [hit for s, hit in pairs if s >= conf]
    tp = sum(kept)
    precision = tp / len(kept) if kept else None
    recall = tp / n_truth if n_truth else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else 0.0) \
        if precision is not None and recall is not None else None
    return ThresholdChoice(conf, precision, recall, f1, tuned=bool(n_truth))
