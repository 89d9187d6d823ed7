"""Active label cleaning: a person's keeps and relabels are trusted labels that the ranking learns from."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clean_setup import fast_options
from helpers import load_fashion_mnist
from smarthub import fileops
from smarthub.clean import ranking, review, session
from smarthub.clean.keep import decisions, trusted_shas
from smarthub.clean.records import Entry
from smarthub.errors import FileOpError
from smarthub.workspace import Workspace


def clusters(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, true labels, noisy labels): 3 overlapping clusters, 16 of class 0 systematically filed as 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 1.2
    true = np.repeat(np.arange(3), 60)
    x = centres[true] + rng.normal(size=(len(true), 16))
    noisy = true.copy()
    wrong = rng.choice(np.flatnonzero(true == 0), size=16, replace=False)
    noisy[wrong] = 1
    return x.astype(np.float32), true, noisy


def test_trusted_labels_weigh_more_than_corrected_ones():
    x, true, noisy = clusters()
    wrong = np.flatnonzero(true != noisy)
    fixed, left = wrong[:8], wrong[8:]
    labels = noisy.copy()
    labels[fixed] = true[fixed]  # a person relabelled half of the errors
    trusted = np.zeros(len(labels), bool)
    trusted[fixed] = True
    trusted[np.flatnonzero(true == noisy)[:30]] = True  # and kept 30 right ones
    plain = ranking.default_label_probs(x, labels, n_classes=3)
    learnt = ranking.default_label_probs(x, labels, n_classes=3, trusted=trusted)
    # the errors left look worse (lower probability of their wrong label) once the decisions count fully
    assert learnt[left, labels[left]].mean() < plain[left, labels[left]].mean() - 0.01
    # no trusted label: exactly the default
    none = ranking.default_label_probs(x, labels, n_classes=3, trusted=np.zeros(len(labels), bool))
    assert np.array_equal(none, plain)


def test_trusted_rows_are_in_every_fold_and_never_pruned():
    x, true, noisy = clusters(1)
    lone = np.flatnonzero(true == 2)[0]
    labels = noisy.copy()
    labels[lone] = 0  # a person says this class-2-looking image is class 0
    trusted = np.zeros(len(labels), bool)
    trusted[lone] = True
    plain = ranking.cross_val_probs(x, labels, n_classes=3)
    learnt = ranking.cross_val_probs(x, labels, n_classes=3, trusted=trusted, trusted_weight=50.0)
    # in its own fold's fit with weight 50: the head now believes its label
    assert learnt[lone, 0] > plain[lone, 0] + 0.2
    votes = ranking.neighbour_label_probs(np.array([[lone]]), np.array([[0.9]], np.float32), labels, n_classes=3,
                                          voter_weight=np.where(trusted, 50.0, 1.0))
    assert votes[0, 0] > 0.95


def tiny_ws(tmp_path: Path) -> Workspace:
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    for c, label in enumerate(("cat", "dog")):
        (ws.data_dir / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i + 100 * c, 30, 200 - 50 * c)).save(ws.data_dir / label / f"{label}{i}.png")
    return ws


def entries_of(ws: Workspace) -> list[Entry]:
    from smarthub.dataset import scan_dataset, sha256_file

    return [Entry(i.path, i.label, sha256_file(i.path)) for i in scan_dataset(ws.data_dir)]


def test_decisions_latest_wins_and_moves_end_trust(tmp_path):
    ws = tiny_ws(tmp_path)
    [kept_sha] = review.keep(ws, ws.data_dir / "cat/cat0.png")
    marks = json.loads(ws.keep_path.read_text())
    assert marks["kept"][kept_sha]["label"] == "cat"
    marks["kept"][kept_sha]["at"] = "2026-01-01T00:00:00+00:00"  # kept a while ago (times are compared)
    ws.keep_path.write_text(json.dumps(marks))
    assert trusted_shas(entries_of(ws), decisions(ws)) == {kept_sha}
    fileops.relabel(ws, [ws.data_dir / "cat/cat0.png"], "dog")  # a later relabel wins over the keep
    d = decisions(ws)[kept_sha]
    assert (d.how, d.label) == ("relabel", "dog")
    assert trusted_shas(entries_of(ws), decisions(ws)) == {kept_sha}
    op = fileops.relabel(ws, [ws.data_dir / "dog/dog1.png"], "cat")
    relabelled = op.moves[0].sha256
    assert trusted_shas(entries_of(ws), decisions(ws)) == {kept_sha, relabelled}
    fileops.undo(ws, op.op_id)  # undone: no longer a decision
    assert relabelled not in decisions(ws)
    # moved by hand to another class: the decided label no longer holds, so it is a suspect again
    (ws.data_dir / "dog/cat0.png").rename(ws.data_dir / "cat/cat0.png")
    assert trusted_shas(entries_of(ws), decisions(ws)) == set()
    review.keep(ws, ws.data_dir / "cat/cat0.png")  # kept again under its new label: trusted again
    assert trusted_shas(entries_of(ws), decisions(ws)) == {kept_sha}


def test_journaled_keeps_and_relabels_are_ordered_by_the_journal_not_the_clock(tmp_path):
    ws = tiny_ws(tmp_path)
    [sha] = review.keep(ws, ws.data_dir / "cat/cat0.png")
    fileops.relabel(ws, [ws.data_dir / "cat/cat0.png"], "dog")  # within the same second as the keep, usually
    assert (decisions(ws)[sha].how, decisions(ws)[sha].label) == ("relabel", "dog")
    review.keep(ws, ws.data_dir / "dog/cat0.png")  # kept under its new class: the later keep wins
    assert (decisions(ws)[sha].how, decisions(ws)[sha].label, decisions(ws)[sha].tied) == ("keep", "dog", "")
    assert trusted_shas(entries_of(ws), decisions(ws)) == {sha}
    fileops.undo(ws)  # that keep undone: the first keep's record is back, and the relabel after it wins again
    assert (decisions(ws)[sha].how, decisions(ws)[sha].label) == ("relabel", "dog")
    fileops.undo(ws)  # the relabel undone: the first keep (as cat) decides, and cat is its label again
    assert (decisions(ws)[sha].how, decisions(ws)[sha].label) == ("keep", "cat")
    assert trusted_shas(entries_of(ws), decisions(ws)) == {sha}
    fileops.undo(ws)  # the keep undone: no decision left
    assert sha not in decisions(ws) and trusted_shas(entries_of(ws), decisions(ws)) == set()


@pytest.mark.parametrize("how, message", [
    ("relabelled", r"^cat/cat1.png no longer exists: relabel \S+ moved it to dog/cat1.png$"),
    ("deleted by hand", r"^cat/cat1.png does not exist in the data folder "),
], ids=["moved-by-a-relabel", "deleted-by-hand"])
def test_keep_of_a_moved_image_is_one_clear_line_and_changes_nothing(tmp_path, capsys, how, message):
    from smarthub.cli import main

    ws = tiny_ws(tmp_path)
    if how == "relabelled":
        fileops.relabel(ws, [ws.data_dir / "cat/cat1.png"], "dog")
    else:
        (ws.data_dir / "cat/cat1.png").unlink()
    journal = ws.journal_path.read_bytes() if ws.journal_path.exists() else b""
    with pytest.raises(FileOpError, match=message):
        review.keep(ws, [ws.data_dir / "cat/cat0.png", ws.data_dir / "cat/cat1.png"])  # one good, one gone
    assert main(["keep", "--data", str(ws.data_dir), str(ws.data_dir / "cat/cat1.png")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: cat/cat1.png ")
    assert review.kept(ws) == set() and not ws.keep_path.exists()  # nothing changed: not even the good one
    assert (ws.journal_path.read_bytes() if ws.journal_path.exists() else b"") == journal


@pytest.fixture
def planted_copy(planted, tmp_path):
    src, moved = planted
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(src.data_dir, ws.data_dir)
    return ws, {ws.data_dir / p.relative_to(src.data_dir) for p in moved}


def true_class(path: Path) -> str:
    from helpers import FASHION_CLASSES

    _, labels = load_fashion_mnist("train")
    return FASHION_CLASSES[int(labels[int(path.stem[2:])])]


def test_review_learns_from_decisions_and_counts_fixes(planted_copy, monkeypatch):
    ws, moved = planted_copy
    first = review.review(ws, fast_options())
    assert first.n_fixed == 0 and first.trusted == frozenset()
    errors = [s for s in first.suspects if s.path in moved][:3]
    right = [s for s in first.suspects if s.path not in moved][:2]
    for s in errors:
        fileops.relabel(ws, [s.path], true_class(s.path))
    review.keep(ws, [s.path for s in right])
    # re-rank: cached embeddings only (an embedding pass would be a bug here)
    monkeypatch.setattr(review.scorers, "embeddings", lambda *a, **k: pytest.fail("relearn embedded images"))
    again = review.relearn(ws, first)
    assert again.n_fixed == 3 and again.n_kept == 2 and len(again.trusted) == 5
    assert again.ranked_with == again.trusted  # the probabilities were fitted with the decisions
    assert not {s.sha256 for s in again.suspects} & again.trusted
    assert again.headline() == (f"estimated {again.estimated_issues + 3} label errors among {again.n_images} "
                                f"images: 3 fixed by you, about {again.estimated_issues} left")
    # the probabilities changed for images nobody decided on: their trusted neighbours now vote more
    undecided = [e.sha256 for e in again.entries if e.sha256 not in again.trusted]
    assert any(not np.allclose(again.probs_by_sha[s], first.probs_by_sha[s]) for s in undecided)
    monkeypatch.undo()
    # the CLI's way: a new `review` run fits the heads again with the same trusted labels
    cli = review.review(ws, fast_options())
    assert cli.ranked_with == again.trusted and cli.n_fixed == 3
    assert not {s.sha256 for s in cli.suspects} & cli.trusted


def test_session_reranks_after_a_page_of_decisions(planted_copy):
    ws, moved = planted_copy
    sess = session.CleanSession(page_size=4)
    sess.load(ws, review.review(ws, fast_options()))
    first = sess.result
    for _ in range(3):
        s = sess.suspects[0]
        rel = s.path.relative_to(ws.data_dir)
        out = session.after_decisions(ws, sess, session.keep(ws, sess, rel) if s.path not in moved
                                      else session.relabel(ws, sess, rel, true_class(s.path)))
        assert out.ok and "re-ranked" not in out.message
    assert sess.result is first
    s = sess.suspects[0]
    out = session.after_decisions(ws, sess, session.accept_predicted(ws, sess, s.path.relative_to(ws.data_dir))
                                  if s.suggested != s.given else session.keep(ws, sess, s.path.relative_to(ws.data_dir)))
    assert out.ok and "re-ranked with your 4 checked labels" in out.message
    assert sess.result is not first and sess.since_rank == 0 and len(sess.result.trusted) == 4
    assert sess.pos == 0 and sess.counts["kept"] + sess.counts["relabelled"] == 4


def test_suggestion_is_another_class_and_written(planted_copy, tmp_path):
    ws, moved = planted_copy
    result = review.review(ws, fast_options(show_all=True))
    assert all(s.suggested and s.suggested != s.given and 0 < s.p_suggested <= 1 for s in result.suspects)
    hits = [s for s in result.suspects[:20] if s.path in moved]
    assert sum(s.suggested == true_class(s.path) for s in hits) >= len(hits) // 2
    out = review.write_suspects(result.suspects[:3], tmp_path / "s.csv", base=ws.data_dir)
    header = out.read_text().splitlines()[0].split(",")
    assert "suggested" in header and "p_suggested" in header


def test_health_counts_classes_pairs_losses_and_imbalance():
    from smarthub.clean.health import health

    vocab = ["fish", "mammal"]
    labels = np.array([0] * 3 + [1] * 12)
    probs = np.tile([0.1, 0.9], (15, 1))
    probs[:3] = [0.8, 0.2]
    probs[0] = [0.3, 0.7]  # a fish that looks like a mammal
    probs[3] = [0.95, 0.05]  # a mammal that looks like a fish: the highest loss
    issues = np.zeros(15, bool)
    issues[[0, 3]] = True
    h = health(labels, probs, issues, vocab)
    assert [(c.label, c.n_images, c.estimated_errors) for c in h.classes] == [("fish", 3, 1), ("mammal", 12, 1)]
    assert h.confused == [("fish", "mammal", 1), ("mammal", "fish", 1)]
    assert h.top_losses[0][0] == 3 and h.top_losses[0][1] == pytest.approx(-np.log(0.05))
    assert h.imbalance.startswith("fish has 3 images, mammal 12 (4.0×)")
    assert health(np.array([0, 1]), np.eye(2), np.zeros(2, bool), vocab).imbalance == ""


def test_cli_review_uses_decisions_and_prints_health(planted_copy, capsys):
    from smarthub.cli import main

    ws, moved = planted_copy
    data = ["--data", str(ws.data_dir)]
    wrong = sorted(moved)[0]
    assert main(["relabel", *data, str(wrong), true_class(wrong)]) == 0
    right = next(p for p in sorted(ws.data_dir.glob("bag/*.png")) if p not in moved)
    assert main(["keep", *data, str(right)]) == 0
    capsys.readouterr()
    assert main(["review", *data, "--models", str(ws.models_dir), "--arch", "mobilenet_v2", "--size", "64", "--summary"]) == 0
    printed = capsys.readouterr().out
    assert ": 1 fixed by you, about " in printed and "(1 kept, 1 relabelled by you: trusted labels;" in printed
    assert "health (fast review ranked by mobilenet_v2 at 64 px):" in printed
    assert "most confused (given → likely): " in printed and "highest losses (-log p(given)): " in printed
    assert any(line.startswith("#") and "suggested" in line for line in printed.splitlines())


def _ranking(r: review.ReviewResult) -> list[tuple]:
    return [(s.path, s.given, s.kind, round(s.score, 12), s.suggested) for s in r.suspects]


def test_the_quick_rescan_ranks_exactly_as_the_full_one(planted_copy, monkeypatch):
    """relearn re-lists only the class folders a page of decisions changed: same entries, same ranking."""
    ws, moved = planted_copy
    first = review.review(ws, fast_options(show_all=True))
    errors = [s for s in first.suspects if s.path in moved][:3]
    right = [s for s in first.suspects if s.path not in moved][:3]
    for s in errors:  # relabels between existing classes, a delete and keeps: one page of decisions
        fileops.relabel(ws, [s.path], true_class(s.path))
    fileops.trash(ws, [right[0].path])
    review.keep(ws, [s.path for s in right[1:]])
    full = review.relearn(ws, replace(first, folders={}))  # no folder stamps: every file read again
    with monkeypatch.context() as m:  # the quick way reads no file and hashes nothing
        m.setattr(review, "hash_scanned", lambda *a, **k: pytest.fail("relearn read every file"))
        quick = review.relearn(ws, first)
    assert quick.entries == full.entries and quick.n_images == full.n_images == first.n_images - 1
    assert _ranking(quick) == _ranking(full) and len(quick.suspects) == first.n_images - 1 - 5
    assert (quick.estimated_issues, quick.n_fixed, quick.n_kept, quick.trusted) == \
        (full.estimated_issues, full.n_fixed, full.n_kept, full.trusted)
    assert all(np.array_equal(quick.probs_by_sha[e.sha256], full.probs_by_sha[e.sha256]) for e in full.entries)
    assert quick.folders == full.folders  # the next page starts from the same stamps
    # changes by hand: a copy added to a class folder (new content) is found and scored; a file removed is gone
    newcomer = ws.data_dir / right[1].given / "copy-by-hand.png"
    with Image.open(right[1].path) as im:  # one pixel changed: new content
        copy = im.copy()
    copy.putpixel((0, 0), 255 if copy.mode == "L" else (255,) * len(copy.getbands()))
    copy.save(newcomer)
    (ws.data_dir / right[2].given / right[2].path.name).unlink()
    after = review.relearn(ws, quick)
    assert any(e.path == newcomer for e in after.entries) and right[2].path not in {e.path for e in after.entries}
    assert after.n_images == quick.n_images
    again = review.relearn(ws, after)  # nothing changed since: the quick way, the same ranking
    assert _ranking(again) == _ranking(after) and again.entries == after.entries
