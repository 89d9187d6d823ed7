"""Per-class threshold tuning on planted validation scores (pure functions)."""
from __future__ import annotations

import numpy as np
import pytest

from smarthub.annotate.thresholds import DEFAULT_CONF, choose_threshold, match_scores, pr_points
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
