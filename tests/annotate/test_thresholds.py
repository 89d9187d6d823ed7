"""Per-class threshold tuning on planted validation scores (pure functions)."""
from __future__ import annotations

import numpy as np
import pytest

from smarthub.annotate.thresholds import (DEFAULT_CONF, ScoredImage, agnostic_matches, choose_shared_threshold,
                                          choose_threshold, match_scores, pr_points, threshold_at)
from smarthub.errors import SmartHubError

# 10 truth boxes; predictions by score: hits down to 0.6, then a miss, more hits, then only misses
PLANTED = [(0.95, True), (0.9, True), (0.85, True), (0.8, True), (0.7, True), (0.6, True), (0.55, False),
           (0.5, True), (0.45, True), (0.4, False), (0.3, False), (0.2, False), (0.1, False), (0.05, True)]


def test_best_f1() -> None:
    c = choose_threshold(PLANTED, 10)
    # keep >= 0.45: 8 hits of 9 kept, recall 8/10: F1 = 2*(8/9)*(0.8)/(8/9+0.8) = 0.842, the best
    assert c.conf == 0.45 and c.precision == pytest.approx(8 / 9) and c.recall == pytest.approx(0.8)
    assert c.f1 == pytest.approx(2 * (8 / 9) * 0.8 / (8 / 9 + 0.8)) and c.tuned and c.reached


@pytest.mark.parametrize("min_precision,conf,precision,reached", [
    (1.0, 0.6, 1.0, True),            # all hits down to 0.6: the lowest threshold with no miss
    (0.85, 0.45, 8 / 9, True),        # precision 8/9 reaches 0.85 with more recall
    (0.5, 0.05, 9 / 14, True),        # everything kept: precision 9/14 = 0.64 >= 0.5
], ids=["perfect", "high", "low"])
def test_min_precision(min_precision: float, conf: float, precision: float, reached: bool) -> None:
    c = choose_threshold(PLANTED, 10, min_precision=min_precision)
    assert (c.conf, c.reached) == (conf, reached) and c.precision == pytest.approx(precision)


def test_unreachable_precision_takes_the_most_precise_point() -> None:
    c = choose_threshold([(0.9, False), (0.8, True), (0.7, False)], 2, min_precision=0.9)
    assert not c.reached and c.conf == 0.8 and c.precision == pytest.approx(0.5)


@pytest.mark.parametrize("pairs,n_truth,precision", [([], 3, None), ([(0.9, False)], 0, None),
                                                      ([(0.9, False), (0.4, False)], 2, 0.0)],
                         ids=["no-prediction", "no-truth", "no-hit"])
def test_untunable_classes_get_the_default(pairs, n_truth: int, precision) -> None:
    c = choose_threshold(pairs, n_truth)
    assert not c.tuned and c.conf == DEFAULT_CONF and c.precision == precision


def test_bad_min_precision() -> None:
    with pytest.raises(SmartHubError, match=r"--min-precision must be in \(0, 1\]"):
        choose_threshold(PLANTED, 10, min_precision=1.5)


def test_equal_scores_form_one_threshold() -> None:
    thresholds, precision, recall = pr_points([(0.5, True), (0.5, False), (0.4, True)], 2)
    assert list(thresholds) == [0.5, 0.4] and list(precision) == [0.5, pytest.approx(2 / 3)] and list(recall) == [0.5, 1.0]


def test_match_scores_greedy_by_score() -> None:
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
    pred = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 31, 30], [50, 50, 60, 60]])
    scores = np.array([0.3, 0.9, 0.5, 0.8])
    # 0.9 takes the first truth box (IoU 0.81), so the exact box at 0.3 is a duplicate: a miss
    assert match_scores(pred, scores, truth) == [(0.9, True), (0.8, False), (0.5, True), (0.3, False)]
    assert match_scores(pred, scores, truth, iou=0.95) == [(0.9, False), (0.8, False), (0.5, False), (0.3, True)]
    assert match_scores(pred[:1], scores[:1], np.zeros((0, 4))) == [(0.3, False)]


@pytest.mark.parametrize("pairs, n_truth, objective, conf", [
    (PLANTED, 10, "time", 0.45),  # 9 kept (1.6 s each) + 2 drawn (7 s): 28.4 s, the least; F1 agrees
    ([(0.9, True), (0.8, False), (0.7, False), (0.6, True)], 2, "f1", 0.9),  # F1 ties at 0.667: fewer boxes
    ([(0.9, True), (0.8, False), (0.7, False), (0.6, True)], 2, "time", 0.6),  # 4 x 1.6 s < 1.6 s + 7 s drawn
], ids=["planted", "f1-tie", "time-keeps-more"])
def test_objective_time_prices_a_missed_box_above_a_false_one(pairs, n_truth: int, objective: str,
                                                               conf: float) -> None:
    assert choose_threshold(pairs, n_truth, objective=objective).conf == conf


def test_bad_objective() -> None:
    with pytest.raises(SmartHubError, match="threshold objective must be one of time, f1, got 'fast'"):
        choose_threshold(PLANTED, 10, objective="fast")


# ------------------------------------------------------------------ one threshold for every class


def _image(pred: list[tuple[str, tuple, float]], truth: list[tuple[str, tuple]]) -> ScoredImage:
    return ScoredImage([p[0] for p in pred], np.array([p[1] for p in pred], dtype=float).reshape(-1, 4),
                       np.array([p[2] for p in pred], dtype=float), [t[0] for t in truth],
                       np.array([t[1] for t in truth], dtype=float).reshape(-1, 4))


def _planted_scenes(seed: int) -> list[ScoredImage]:
    """Random scenes: exact boxes (IoU 1) under the right or the wrong label and false boxes far from any object,
    so that evaluate.correction_effort prices each box as the shared rule does (no adjust band)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(12):
        truth = [(str(rng.choice(["fish", "fruit"])), (40.0 * k, 0.0, 40.0 * k + 30, 30.0)) for k in range(3)]
        pred = [(lab if rng.random() < 0.7 else {"fish": "fruit", "fruit": "fish"}[lab], box, float(rng.random()))
                for lab, box in truth if rng.random() < 0.9]
        pred += [(str(rng.choice(["fish", "fruit"])), (200.0 + 40 * k, 100.0, 230.0 + 40 * k, 130.0),
                  float(rng.random()) * 0.8) for k in range(int(rng.integers(0, 4)))]
        images.append(_image(pred, truth))
    return images


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_threshold_is_the_least_time_as_a_person_corrects(seed: int) -> None:
    """Brute force over every threshold, each priced box by box by evaluate.correction_effort (the bench's and
    evaluate-annotations' pricing): the shared rule's choice costs the least, and no higher threshold ties."""
    from smarthub.annotate.evaluate import correction_effort

    images = _planted_scenes(seed)

    def seconds(conf: float) -> float:
        total = 0.0
        for im in images:
            pred = [(lab, tuple(xy), s) for lab, xy, s in zip(im.pred_labels, im.pred_xyxy, im.pred_scores) if s >= conf]
            total += correction_effort(pred, [(lab, tuple(xy), None) for lab, xy in
                                              zip(im.truth_labels, im.truth_xyxy)]).seconds()
        return total

    candidates = sorted({float(s) for im in images for s in im.pred_scores}, reverse=True)
    best = min(seconds(t) for t in candidates)
    c = choose_shared_threshold(images)
    assert c.tuned and seconds(c.conf) == pytest.approx(best)
    assert all(seconds(t) > best + 1e-9 for t in candidates if t > c.conf)


def test_a_box_under_the_wrong_label_is_a_relabel_not_a_miss() -> None:
    """One fish boxed as fruit at 0.3, one right fruit at 0.9 and a false box at 0.5: per class, the fruit box at
    0.3 is a false fruit (the fish drawn, 7 s), so fruit keeps 0.9 only; shared, keeping everything down to 0.3
    costs a verify, a relabel and a delete (4.8 s) against a delete and a drawing (8.6 s) at 0.9."""
    im = _image([("fruit", (0, 0, 10, 10), 0.3), ("fruit", (20, 0, 30, 10), 0.9), ("fish", (50, 50, 60, 60), 0.5)],
                [("fish", (0, 0, 10, 10)), ("fruit", (20, 0, 30, 10))])
    assert choose_shared_threshold([im]).conf == 0.3
    fruit = match_scores(im.pred_xyxy[:2], im.pred_scores[:2], im.truth_xyxy[1:])
    assert choose_threshold(fruit, 1, objective="time").conf == 0.9
    assert agnostic_matches(im) == [(0.9, True, True), (0.5, False, False), (0.3, True, False)]


@pytest.mark.parametrize("images,precision", [([], None), ([_image([("fish", (0, 0, 9, 9), 0.9)], [])], None),
                                              ([_image([("fish", (0, 0, 9, 9), 0.9)], [("fish", (50, 50, 59, 59))])],
                                               0.0)], ids=["nothing", "no-truth", "no-hit"])
def test_shared_threshold_untunable_gets_the_default(images, precision) -> None:
    c = choose_shared_threshold(images)
    assert not c.tuned and c.conf == DEFAULT_CONF and c.precision == precision


def test_threshold_at_reports_one_class_at_a_given_threshold() -> None:
    c = threshold_at(PLANTED, 10, 0.45)
    assert (c.conf, c.precision, c.recall) == (0.45, pytest.approx(8 / 9), pytest.approx(0.8))
    assert threshold_at([], 0, 0.3).precision is None and not threshold_at([], 0, 0.3).tuned
