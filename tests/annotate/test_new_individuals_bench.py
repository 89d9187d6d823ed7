"""The pricing helpers behind bench/new_individuals.py's figures (threshold rules, misses, the floor), on planted
boxes whose correction a person would make by hand."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "new_individuals.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("new_individuals_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FISH = ("fish", (10.0, 10.0, 50.0, 40.0), None)
FRUIT = ("fruit", (100.0, 60.0, 140.0, 100.0), None)


def test_agnostic_nms_keeps_the_best_box_of_an_object_whatever_its_label(bench):
    pred = [("fish", (10.0, 10.0, 50.0, 40.0), 0.3), ("fruit", (11.0, 10.0, 50.0, 41.0), 0.6),
            ("fruit", (100.0, 60.0, 140.0, 100.0), 0.2)]
    kept = bench.agnostic_nms(pred, 0.7)
    assert [(b[0], b[2]) for b in kept] == [("fruit", 0.6), ("fruit", 0.2)]


def test_floor_prices_a_wrongly_named_low_box_as_a_relabel_and_ignores_false_boxes(bench):
    images = [([("fruit", (11.0, 10.0, 50.0, 41.0), 0.02), ("fish", (150.0, 0.0, 190.0, 30.0), 0.9)],
               [FISH, FRUIT])]
    e = bench.floor(images)
    assert (e["relabel"], e["draw"], e["delete"], e["verify"]) == (1, 1, 0, 0)


def test_misses_say_why_a_box_is_left_to_draw(bench):
    images = [([("fruit", (11.0, 10.0, 50.0, 41.0), 0.1), ("fruit", (100.0, 60.0, 140.0, 100.0), 0.04)],
               [FISH, FRUIT, ("fish", (150.0, 100.0, 190.0, 140.0), None)])]
    out = bench.misses(images, {"fish": 0.2, "fruit": 0.2}, None)
    assert out == {"fish: best box has the wrong label": 1, "fish: no box at IoU>=0.5": 1,
                   "fruit: right box below threshold: <0.05": 1}


def test_the_default_shared_rule_keeps_a_box_that_only_names_the_wrong_class(bench):
    # validation: every fish is found only as 'fruit' at 0.3; true fruit boxes at 0.8; no false box.
    val = [([("fruit", (11.0, 10.0, 50.0, 41.0), 0.3), ("fruit", (100.0, 60.0, 140.0, 100.0), 0.8)],
            [FISH, FRUIT]) for _ in range(4)]
    rules = bench.rules(val)
    per_class, _ = rules["time-per-class"]
    assert per_class["fruit"] == pytest.approx(0.8)  # per class, the 0.3 boxes are false fruit
    assert rules["time"] == (pytest.approx(0.3), None)  # `--tune time`, train_detector's default
    pooled, nms = rules["time, agnostic NMS"]
    assert pooled == pytest.approx(0.3) and nms == 0.7
    e_class = bench.price(val, per_class, None)
    e_pooled = bench.price(val, pooled, nms)
    assert (e_class["draw"], e_pooled["draw"], e_pooled["relabel"]) == (4, 0, 4)
    assert e_pooled["seconds"] < e_class["seconds"]
