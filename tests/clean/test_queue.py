"""The default review queue: the estimated label errors, found among planted ones, and no larger than needed."""
from __future__ import annotations


from clean_setup import PER_CLASS, CLASSES, fast_options
from smarthub.clean import review
from smarthub.cli import main

# Measured on this set-up (5 classes x 60 Fashion-MNIST images, 64 px, 30 planted, seed 0): the queue held
# 30 images, 25 of them planted. Bounds keep a margin of 4 errors for library-version jitter.
MIN_QUEUE_RECALL = 0.7
MAX_QUEUE_FACTOR = 2.0


def test_default_queue_holds_the_estimated_errors_and_stays_small(planted):
    ws, moved = planted
    result = review.review(ws, fast_options())
    queue = {s.path for s in result.suspects}
    assert len(queue) == result.estimated_issues  # nothing kept: the queue is the estimate
    assert len(queue) <= MAX_QUEUE_FACTOR * len(moved)
    assert len(queue & moved) / len(moved) >= MIN_QUEUE_RECALL
    assert all("issue" in s.tags for s in result.suspects)
    scores = [s.score for s in result.suspects]
    assert scores == sorted(scores)  # worst first
    assert result.headline() == f"estimated {len(queue)} label errors among {PER_CLASS * len(CLASSES)} images"


def test_filters_add_their_images_and_all_lists_everything(planted):
    ws, _ = planted
    base = review.review(ws, fast_options())
    unsure = review.review(ws, fast_options(include={"unsure"}))
    extra = [s for s in unsure.suspects if "issue" not in s.tags]
    assert extra and all("unsure" in s.tags for s in extra)
    # the count is every image the filter flags, in the queue already or not
    assert sum("unsure" in s.tags for s in unsure.suspects) == base.filter_counts["unsure"]
    everything = review.requeue(ws, base, show_all=True)
    assert len(everything.suspects) == base.n_images
    in_queue = {s.path for s in base.suspects}
    assert [s.path for s in everything.suspects if s.path in in_queue] == [s.path for s in base.suspects]


def test_cli_prints_the_estimate_and_the_filter_counts(planted, capsys):
    ws, _ = planted
    code = main(["review", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--embedder",
                 "mobilenet_v2", "--size", "64", "--include", "unsure"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "label errors among 300 images" in printed
    assert "listed" in printed and "unsure" in printed and "[on]" in printed and "blurry 0" in printed
