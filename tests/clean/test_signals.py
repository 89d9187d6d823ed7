"""The review-signal registry (clean/signals.py): one line there reaches the ranking, the queue's tags and counts,
`--include`, the CLI help, the app's filter boxes and kind menu."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from smarthub.clean import options, review, signals
from smarthub.clean.records import Entry
from smarthub.cli import build_parser
from smarthub.errors import SmartHubError
from smarthub.workspace import Workspace

gr = pytest.importorskip("gradio")

from smarthub.ui import tab_clean  # noqa: E402

VOCAB = ["cat", "dog", "fish"]
PER_CLASS = 20
CLOSE = {3, 17, 25, 41, 58}  # planted: images whose two most probable classes are within 0.04 of each other


def review_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return " ".join(sub.choices["review"].format_help().split())  # argparse wraps lines: compare words


def planted_result(ws: Workspace) -> review.ReviewResult:
    """A review of 60 images with known probabilities: confident and right, except the planted close calls."""
    rng = np.random.default_rng(0)
    entries, probs = [], {}
    for n in range(PER_CLASS * len(VOCAB)):
        label = n // PER_CLASS
        p = rng.dirichlet(np.ones(len(VOCAB)) * 0.3) * 0.1
        p[label] += 0.9
        if n in CLOSE:  # the given class and the next one nearly tied
            p = np.full(len(VOCAB), 0.02)
            p[label], p[(label + 1) % len(VOCAB)] = 0.50, 0.48
            p /= p.sum()
        sha = f"{n:064x}"
        entries.append(Entry(path=ws.data_dir / VOCAB[label] / f"{n}.jpg", label=VOCAB[label], sha256=sha))
        probs[sha] = p
    return review.ReviewResult(suspects=[], vocab=VOCAB, n_images=len(entries), method="fast", seconds=0.0,
                               probs_by_sha=probs, entries=entries, options=review.ReviewOptions())


def close_call(ev: signals.Evidence) -> np.ndarray:
    top2 = np.sort(ev.probs, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < 0.05


TOY = signals.Signal("close_call", "the two most probable classes are nearly tied", close_call, precedence=5)


def test_every_filter_is_in_the_cli_help_and_the_app_boxes_with_its_description() -> None:
    text = review_help()
    boxes = [value for _, value in tab_clean.filter_choices(None)]
    for s in signals.SIGNALS:
        if s.filter:
            assert f"{s.name} ({s.description}" in text and s.name in boxes
        if s.group:  # a member is named beside its group in the help; its group's box stands for it
            assert s.name in text and s.group in boxes and s.name not in boxes
    assert tab_clean.kind_choices() == [tab_clean.ALL, "wrong", "unsure", "duplicate", "outlier", "quality"]
    assert signals.FILTERS == ("unsure", "duplicate", "outlier", "quality")
    assert signals.expand_filters(["quality"]) == frozenset(signals.QUALITY_ISSUES)


def test_a_signal_added_to_the_registry_reaches_queue_cli_help_and_app(ws, monkeypatch) -> None:
    monkeypatch.setattr(signals, "SIGNALS", (*signals.SIGNALS, TOY))
    planted = planted_result(ws)
    base = review.requeue(ws, planted)
    flagged = {int(s.path.stem) for s in base.suspects if "close_call" in s.tags}
    assert base.filter_counts["close_call"] == len(CLOSE)  # counted whether or not the queue shows them
    shown = review.requeue(ws, planted, include=["close_call"])
    tagged = {int(s.path.stem) for s in shown.suspects if "close_call" in s.tags}
    assert tagged == CLOSE and flagged <= CLOSE
    kinds = {int(s.path.stem): s.kind for s in shown.suspects}
    assert all(kinds[n] in ("unsure", "wrong") for n in CLOSE)  # p(given) 0.5 < 0.6: unsure outranks the toy
    assert "close_call (the two most probable classes are nearly tied)" in review_help()
    assert ("close_call (5)", "close_call") in tab_clean.filter_choices(shown)
    assert tab_clean.kind_choices()[-1] == "close_call"
    with pytest.raises(SmartHubError, match="unknown filter 'nearly' for --include: use .*close_call"):
        review.requeue(ws, planted, include=["nearly"])


def test_the_toy_kind_applies_where_no_stronger_signal_flags(ws, monkeypatch) -> None:
    monkeypatch.setattr(signals, "SIGNALS", (*signals.SIGNALS, TOY))
    planted = replace(planted_result(ws), options=review.ReviewOptions(threshold=0.3))  # 0.5 is not unsure now
    low = review.requeue(ws, planted, include=["close_call"])
    close = {int(s.path.stem): s for s in low.suspects if int(s.path.stem) in CLOSE}
    assert set(close) == CLOSE
    plain = [s for s in close.values() if "issue" not in s.tags]  # cleanlab's flag makes an image 'unsure'
    assert plain and all(s.kind == "close_call" for s in plain)
    assert all(s.kind == "unsure" for s in close.values() if "issue" in s.tags)
    ev = signals.Evidence(labels=np.array([0, 1]), probs=np.array([[0.51, 0.49], [0.1, 0.9]]),
                          issues=np.zeros(2, bool), threshold=0.3, duplicate=np.zeros(2, bool),
                          outlier=np.zeros(2, bool))
    assert signals.kind_of(ev).tolist() == ["close_call", ""]
    assert signals.tag_masks(ev)["close_call"].tolist() == [True, False]


@pytest.mark.parametrize("include, expected", [
    (["unsure", " duplicate "], {"unsure", "duplicate"}),
    (["quality"], set(signals.QUALITY_ISSUES)),
    (["blurry", ""], {"blurry"}),
    (["wrong"], None),
    (["issue"], None),
], ids=["filters", "group", "one-member", "kind-not-filter", "not-a-signal"])
def test_expand_filters(include, expected) -> None:
    if expected is None:
        with pytest.raises(SmartHubError, match=f"unknown filter {include[0]!r} for --include: use unsure, "):
            options.expand_filters(include)  # the option's error names --include (the registry's does not)
        with pytest.raises(signals.UnknownFilterError, match=f"unknown filter {include[0]!r}: use unsure, "):
            signals.expand_filters(include)
    else:
        assert signals.expand_filters(include) == frozenset(expected)


def test_the_help_text_needs_no_numpy(tmp_path: Path) -> None:
    """The CLI builds its --include help from the registry without importing numpy (start-up time)."""
    import subprocess
    import sys

    code = "import sys, smarthub.cli as c; c.build_parser(); print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "False"
