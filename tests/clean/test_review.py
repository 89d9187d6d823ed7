"""Label-issue ranking on planted noise (real Fashion-MNIST images, real MobileNetV2 weights), refresh, keep."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import helpers
from clean_setup import CLASSES, IMAGE_PX, PER_CLASS, fast_options
from helpers import make_image, write_fashion_folders
from smarthub import fileops
from smarthub.clean import ranking
from smarthub.clean import review
from smarthub.cli import main
from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.workspace import Workspace

# Recall of the planted errors in the top k (k = number planted), fast method, this exact set-up.
# Measured over seeds 0-7 (bench/RESULTS.md, Review): worst 0.867 (26 of 30), mean 0.90. Bound = 0.75
# (23 of 30): three errors of margin below the worst seed, for BLAS / library-version jitter.
MIN_RECALL = 0.75






def recall_at_k(suspects: list[review.Suspect], planted_paths: set[Path]) -> float:
    k = len(planted_paths)
    return len({s.path for s in suspects[:k]} & planted_paths) / k


def in_sample_suspects(ws: Workspace) -> list[review.Suspect]:
    """The in-sample baseline with the same MobileNetV2 (1 frozen + 1 unfrozen epoch)."""
    from smarthub.model.options import TrainOptions

    return helpers.in_sample_suspects(ws, TrainOptions(arch="mobilenet_v2", size_px=IMAGE_PX, epochs=1, num_workers=0))


def test_fast_review_finds_planted_errors_and_beats_in_sample(planted):
    ws, moved = planted
    result = review.review(ws, fast_options(show_all=True))
    assert result.n_images == PER_CLASS * len(CLASSES)
    assert result.vocab == sorted(CLASSES)
    assert all(s.split == "valid" for s in result.suspects)  # every image scored out-of-sample
    scores = [s.score for s in result.suspects]
    assert scores == sorted(scores)  # worst first
    oos = recall_at_k(result.suspects, moved)
    assert oos >= MIN_RECALL
    # In-sample ranking (a fine-tune on all images scoring its own training images) finds fewer.
    # Measured on seeds 0-3: in-sample 0.77 / 0.53 / 0.60 / 0.53 against 0.90 out-of-sample each time.
    assert oos > recall_at_k(in_sample_suspects(ws), moved)
    for s in result.suspects:
        if s.kind == "wrong":
            assert s.predicted != s.given
        elif s.kind == "unsure":
            assert s.predicted == s.given


def test_second_review_reuses_cached_probabilities(planted):
    ws, _ = planted
    first = review.review(ws, fast_options())
    second = review.review(ws, fast_options())
    assert any("reused from the cache" in n for n in second.notes)
    assert [s.path for s in second.suspects] == [s.path for s in first.suspects]


def test_refresh_after_relabel_trash_undo_and_a_new_image(planted, tmp_path):
    src_ws, moved = planted
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(src_ws.data_dir, ws.data_dir)  # the cache travels with it: no inference needed
    result = review.review(ws, fast_options(show_all=True))
    worst = result.suspects[0]
    op = fileops.relabel(ws, [worst.path], worst.predicted)
    after = review.refresh(ws, result)
    assert not any("new" in n for n in after.notes)  # nothing scored again
    new_path = ws.data_dir / op.moves[0].dst
    entry = next(e for e in after.entries if e.path == new_path)
    assert entry.label == worst.predicted
    assert new_path not in {s.path for s in after.suspects if s.kind == "wrong"}
    second = after.suspects[0]
    fileops.trash(ws, [second.path])
    after = review.refresh(ws, after)
    assert second.path not in {s.path for s in after.suspects}
    assert after.n_images == result.n_images - 1
    fileops.undo(ws)
    after = review.refresh(ws, after)
    assert after.n_images == result.n_images
    # a new image (a trouser filed as a bag) is scored on its own
    newcomer = write_fashion_folders(tmp_path / "extra", per_class=1, classes=("trouser",), size_px=IMAGE_PX,
                                     offset=5000)[0]
    shutil.copy(newcomer, ws.data_dir / "bag" / "new-trouser.png")
    after = review.refresh(ws, after)
    assert any("1 new" in n for n in after.notes)
    hit = next(s for s in after.suspects if s.path.name == "new-trouser.png")
    assert (hit.kind, hit.predicted) == ("wrong", "trouser")


def test_keep_hides_until_content_changes(planted, tmp_path):
    src_ws, _ = planted
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(src_ws.data_dir, ws.data_dir)
    result = review.review(ws, fast_options(show_all=True))
    target = result.suspects[0].path
    [sha] = review.keep(ws, target)
    assert review.kept(ws) == {sha}
    assert json.loads(ws.keep_path.read_text())["kept"][sha]["path"] == target.relative_to(ws.data_dir).as_posix()
    after = review.refresh(ws, result)
    assert target not in {s.path for s in after.suspects}
    assert after.n_kept == 1
    assert target not in {s.path for s in review.review(ws, fast_options(show_all=True)).suspects}
    # new content at the same path: the keep mark no longer applies
    other = next(s.path for s in result.suspects if s.path.parent == target.parent and s.path != target)
    target.write_bytes(other.read_bytes())
    after = review.refresh(ws, after)
    assert target in {s.path for s in after.suspects}
    assert review.unkeep(ws, target) == []  # its current content was never kept


def test_keep_rejects_paths_outside_or_missing(small_ws, tmp_path):
    outside = make_image(tmp_path / "elsewhere.jpg")
    with pytest.raises(SmartHubError, match="not inside the data folder"):
        review.keep(small_ws, outside)
    with pytest.raises(SmartHubError, match=r"^cat/gone.jpg does not exist in the data folder"):
        review.keep(small_ws, small_ws.data_dir / "cat" / "gone.jpg")


@pytest.mark.parametrize("suffix", [".csv", ".json"], ids=["csv", "json"])
def test_write_suspects(planted, tmp_path, suffix):
    ws, _ = planted
    result = review.review(ws, fast_options(limit=5))
    assert len(result.suspects) == 5
    out = review.write_suspects(result.suspects, tmp_path / f"s{suffix}", base=ws.data_dir)
    text = out.read_text()
    first = result.suspects[0].path.relative_to(ws.data_dir).as_posix()
    if suffix == ".json":
        rows = json.loads(text)
        assert [r["path"] for r in rows][0] == first and len(rows) == 5
    else:
        lines = text.splitlines()
        assert lines[0].startswith("path,given,predicted") and lines[1].startswith(first) and len(lines) == 6


def test_write_suspects_refuses_other_suffix(tmp_path):
    with pytest.raises(SmartHubError, match="csv or .json"):
        review.write_suspects([], tmp_path / "s.txt")


def test_near_duplicate_across_classes_and_corrupt_image_are_reported(planted, tmp_path):
    src_ws, _ = planted
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(src_ws.data_dir, ws.data_dir)
    # the same sneaker, re-encoded as JPEG, filed as a bag
    from PIL import Image

    sneaker = sorted((ws.data_dir / "sneaker").iterdir())[0]
    Image.open(sneaker).convert("RGB").save(ws.data_dir / "bag" / "dup.jpg", quality=90)
    (ws.data_dir / "trouser" / "broken.png").write_bytes(b"not an image at all")
    result = review.review(ws, fast_options(include={"duplicate"}))
    assert [(p.name, "not an image" in r) for p, r in result.skipped] == [("broken.png", True)]
    # reported again, never retried, by refresh and by a review served from the cache
    assert [p.name for p, _ in review.refresh(ws, result).skipped] == ["broken.png"]
    assert [p.name for p, _ in review.review(ws, fast_options()).skipped] == ["broken.png"]
    kinds = {s.path.name: s for s in result.suspects}
    assert kinds["dup.jpg"].kind in ("duplicate", "wrong")
    assert kinds["dup.jpg"].duplicate_of == sneaker or kinds[sneaker.name].duplicate_of is not None


@pytest.mark.parametrize("setup, options, error, match", [
    ("empty", {}, DatasetError, "no images"),
    ("one_class", {}, DatasetError, "only one class"),
    ("lonely", {}, DatasetError, "class 'dog' has only one image"),
    ("two_each", {}, DatasetError, "only 4 different images for 5 folds: use --folds 4"),
    ("small", {"embedder": "no_such_net"}, SmartHubError, "--embedder 'no_such_net': unknown architecture"),
    ("small", {"embedder": "resnet18"}, ModelError, r"pick another embedder: --embedder mobilenet_v2 \(its weights"),
    ("small", {"method": "model"}, ModelError, "run `smarthub train`"),
    ("small", {"method": "magic"}, SmartHubError, "unknown review method"),
    ("small", {"folds": 1}, SmartHubError, "folds"),
    ("small", {"threshold": 1.5}, SmartHubError, "threshold"),
], ids=["empty", "one-class", "class-of-one", "fewer-than-folds", "no-such-embedder", "embedder-offline", "no-model", "bad-method",
        "bad-folds", "bad-threshold"])
def test_bad_input(ws, setup, options, error, match, capsys):
    per_class = {"one_class": {"cat": 3}, "small": {"cat": 3, "dog": 3}, "lonely": {"cat": 3, "dog": 1},
                 "two_each": {"cat": 2, "dog": 2}}.get(setup, {})
    for c, (label, n) in enumerate(per_class.items()):
        for i in range(n):
            make_image(ws.data_dir / label / f"{i}.jpg", pattern=10 * c + i)
    embedder = options.pop("embedder", None)
    with pytest.raises(error, match=match):
        opts = fast_options(**options)
        if embedder:
            opts = dataclasses.replace(opts, train=dataclasses.replace(opts.train, arch=embedder))
        review.review(ws, opts)
    if setup in ("lonely", "two_each") or embedder:  # the CLI: one line on stderr, exit 2
        argv = ["review", "--data", str(ws.data_dir), "--models", str(ws.models_dir)]
        argv += ["--embedder", embedder] if embedder else []
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_deleted_behind_our_back_is_skipped(small_ws):
    from smarthub.dataset import scan_dataset
    from smarthub.model.embeddings import hash_items

    items = scan_dataset(small_ws.data_dir)
    items[0].path.unlink()
    hashed = hash_items(small_ws, items)
    assert len(hashed.items) == len(items) - 1
    assert hashed.skipped[0][0] == items[0].path and "deleted" in hashed.skipped[0][1]


def test_classes_smaller_than_folds_are_handled():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 10 + [1] * 10 + [2] * 2 + [3])
    feats = rng.normal(size=(len(labels), 8)) + labels[:, None]
    probs = ranking.cross_val_probs(feats, labels, n_classes=4, folds=5)
    assert probs.shape == (len(labels), 4)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_model_method_in_sample_split_and_vocab_mismatch(tmp_path):
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    write_fashion_folders(ws.data_dir, per_class=10, classes=("trouser", "bag"), size_px=32)
    train(ws, TrainOptions(arch="mobilenet_v2", epochs=1, size_px=32, batch_size=8, num_workers=0))
    opts = review.ReviewOptions(method="model", train=TrainOptions(arch="mobilenet_v2", size_px=32))
    result = review.review(ws, opts)
    splits = {result.split_by_sha[e.sha256] for e in result.entries}
    assert splits == {"train", "valid"}  # the seeded split recovered from report.json
    n_valid = sum(1 for e in result.entries if result.split_by_sha[e.sha256] == "valid")
    assert n_valid == json.loads(ws.report_path.read_text())["n_valid"]
    write_fashion_folders(ws.data_dir, per_class=3, classes=("sneaker",), size_px=32)
    with pytest.raises(ModelError, match="folders the model does not know: sneaker"):
        review.review(ws, opts)


def test_finetune_method_scores_every_image_out_of_sample(tmp_path):
    """The thorough way end to end on tiny data (2 folds, 1 epoch): every image gets held-out probabilities."""
    from smarthub.model.options import TrainOptions

    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    write_fashion_folders(ws.data_dir, per_class=8, classes=("trouser", "bag"), size_px=32)
    opts = review.ReviewOptions(method="finetune", folds=2, train=TrainOptions(
        arch="mobilenet_v2", size_px=32, epochs=1, batch_size=8, num_workers=0))
    result = review.review(ws, opts)
    assert result.method == "finetune" and len(result.probs_by_sha) == 16
    probs = np.stack(list(result.probs_by_sha.values()))
    assert probs.shape == (16, 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert all(s.split == "valid" for s in result.suspects)


def test_cli_review_and_keep(planted, tmp_path, capsys):
    ws, _ = planted
    out = tmp_path / "suspects.csv"
    code = main(["review", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--arch", "mobilenet_v2",
                 "--size", str(IMAGE_PX), "--out", str(out), "--limit", "7"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "label errors among 300 images" in printed and f"7 images written worst first to {out}" in printed
    assert len(out.read_text().splitlines()) == 8
    first = out.read_text().splitlines()[1].split(",")[0]
    review_argv = ["review", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--arch", "mobilenet_v2",
                   "--size", str(IMAGE_PX), "--out", str(out), "--limit", "7"]

    def listed() -> list[str]:
        assert main(review_argv) == 0
        return [line.split(",")[0] for line in out.read_text().splitlines()[1:]]

    assert main(["keep", "--data", str(ws.data_dir), str(ws.data_dir / first)]) == 0
    assert "1 image kept" in capsys.readouterr().out
    assert first not in listed()  # a trusted label: not a suspect
    assert "1 kept" in capsys.readouterr().out
    assert main(["history", "--data", str(ws.data_dir)]) == 0
    keep_row = capsys.readouterr().out.splitlines()[-1].split()
    assert (keep_row[2], keep_row[4], keep_row[5]) == ("keep", "1", "committed")
    assert main(["undo", "--data", str(ws.data_dir)]) == 0  # the last action was the keep: undone
    assert f"undid operation {keep_row[0]}" in capsys.readouterr().out
    assert review.kept(ws) == set() and listed()[0] == first  # not kept again: the worst suspect again
    assert "0 kept" in capsys.readouterr().out
    assert main(["keep", "--data", str(ws.data_dir), str(ws.data_dir / first)]) == 0
    assert main(["keep", "--undo", "--data", str(ws.data_dir), str(ws.data_dir / first)]) == 0
    assert review.kept(ws) == set()


def test_cli_subprocess_errors_cleanly(ws):
    proc = subprocess.run([sys.executable, "-m", "smarthub", "review", "--data", str(ws.data_dir),
                           "--models", str(ws.models_dir), "--arch", "mobilenet_v2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no images") and "Traceback" not in proc.stderr


def test_keep_file_survives_a_failed_write(small_ws, monkeypatch):
    import os

    first = small_ws.data_dir / "cat" / "cat0.jpg"
    review.keep(small_ws, first)
    before = small_ws.keep_path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SmartHubError, match="No space left"):
        review.keep(small_ws, small_ws.data_dir / "dog" / "dog0.jpg")
    monkeypatch.undo()
    assert small_ws.keep_path.read_bytes() == before
    assert [p.name for p in small_ws.meta_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_excluded_images_never_train_a_head():
    """`exclude` keeps images out of every fold's head: moving their embeddings changes no other image's scores
    (the folds depend on the labels only), while without `exclude` it does."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 20)
    feats = rng.normal(size=(len(labels), 16)) + 2.0 * np.eye(3, 16)[labels]
    excluded = np.zeros(len(labels), dtype=bool)
    excluded[[0, 21, 45]] = True
    moved = feats.copy()
    moved[excluded] = rng.normal(size=(3, 16)) * 5.0
    before = ranking.cross_val_probs(feats, labels, n_classes=3, folds=5, exclude=excluded)
    after = ranking.cross_val_probs(moved, labels, n_classes=3, folds=5, exclude=excluded)
    assert np.allclose(before[~excluded], after[~excluded])
    plain_before = ranking.cross_val_probs(feats, labels, n_classes=3, folds=5)
    plain_after = ranking.cross_val_probs(moved, labels, n_classes=3, folds=5)
    assert not np.allclose(plain_before[~excluded], plain_after[~excluded])


def test_prune_and_refit_round_refits_and_never_prunes_a_whole_class(monkeypatch):
    rng = np.random.default_rng(2)
    true = np.repeat(np.arange(4), 25)
    feats = rng.normal(size=(len(true), 32)) + 1.5 * np.eye(4, 32)[true]
    noisy = true.copy()
    moved = rng.choice(len(true), size=10, replace=False)
    noisy[moved] = (true[moved] + 1) % 4
    once = ranking.default_label_probs(feats, noisy, n_classes=4, refit_rounds=0)
    refit = ranking.default_label_probs(feats, noisy, n_classes=4, refit_rounds=1)
    assert np.allclose(refit.sum(axis=1), 1.0)
    assert not np.allclose(once, refit)  # the flagged images were pruned and the heads fitted again
    # when the flags cover a whole class (here: the one image of class 4), pruning would remove the class:
    # the first round stands
    lone = np.append(noisy, 4)
    lone_feats = np.vstack([feats, rng.normal(size=(1, 32))])
    monkeypatch.setattr(ranking, "estimated_issues", lambda labels, probs: labels == 4)
    assert np.allclose(ranking.default_label_probs(lone_feats, lone, n_classes=5, refit_rounds=1),
                       ranking.default_label_probs(lone_feats, lone, n_classes=5, refit_rounds=0))
