"""Which images to correct next (planted truth), and the scored boxes behind a live threshold: the filter, the
rewrite that never touches a person's edits, the sidecar and the ranking file the CLI writes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_detect import SquareDetector

from smarthub.annotate.detect import DetectorOptions
from smarthub.annotate.labelme import load_labelme, save_labelme
from smarthub.annotate.next_images import (RANKING_HEADER, box_uncertainty, image_uncertainty, rank_images,
                                           rank_scored, ranking_path, write_ranking)
from smarthub.annotate.preannotate import annotate_folder
from smarthub.annotate.scored import (Thresholds, filter_shapes, load_scored, scored_path, write_at_thresholds)
from smarthub.cli import main
from smarthub.errors import AnnotationError, SmartHubError

RED, BLUE = (220, 30, 30), (30, 30, 220)


# ------------------------------------------------------------------ the ranking (pure, planted truth)


@pytest.mark.parametrize("score,threshold,expected", [
    (0.5, 0.5, 1.0), (0.625, 0.5, 0.5), (0.375, 0.5, 0.5), (0.75, 0.5, 0.0), (0.99, 0.5, 0.0), (0.05, 0.3, 0.0),
], ids=["at", "half-above", "half-below", "band-edge", "sure", "far-below"])
def test_box_uncertainty_peaks_at_the_class_threshold(score: float, threshold: float, expected: float) -> None:
    assert box_uncertainty(np.array([score]), np.array([threshold]))[0] == pytest.approx(expected)


def test_image_uncertainty_sums_doubtful_boxes_and_counts_an_empty_image() -> None:
    scores = [np.array([0.5, 0.5]), np.array([0.5, 0.99]), np.array([0.99]), np.zeros(0)]
    t = [np.full(len(s), 0.5) for s in scores]
    assert image_uncertainty(scores, t).tolist() == pytest.approx([2.0, 1.0, 0.0, 1.0])
    with pytest.raises(SmartHubError, match="2 scores but 1 thresholds"):
        box_uncertainty(np.array([0.1, 0.2]), np.array([0.5]))


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uncertainty, embeddings, is_copy): ten near-copies of one very doubtful image, twenty distinct others."""
    rng = np.random.default_rng(seed)
    distinct = rng.normal(size=(20, 32))
    copies = rng.normal(size=(1, 32)) + rng.normal(scale=0.01, size=(10, 32))
    emb = np.vstack([distinct[:7], copies, distinct[7:]])  # the copies sit in the middle of the list
    u = np.concatenate([rng.uniform(0.2, 1.0, 7), 3.0 + rng.uniform(0, 0.01, 10), rng.uniform(0.2, 1.0, 13)])
    is_copy = np.r_[np.zeros(7, bool), np.ones(10, bool), np.zeros(13, bool)]
    return u, emb, is_copy


def test_uncertainty_order_puts_the_most_uncertain_first() -> None:
    u, emb, is_copy = planted()
    order = rank_images(u, emb, order="uncertainty")
    assert is_copy[order[:10]].all()  # alone, uncertainty fills the top with the near-copies
    assert np.all(np.diff(u[order]) <= 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_copies_do_not_fill_the_top(seed: int) -> None:
    u, emb, is_copy = planted(seed)
    both = rank_images(u, emb, order="both")
    assert is_copy[both[0]]  # the most uncertain image comes first ...
    assert is_copy[both[:21]].sum() == 1  # ... and none of its copies until every distinct image is listed
    assert sorted(both.tolist()) == list(range(30))
    diverse = rank_images(u, emb, order="diversity")
    assert is_copy[diverse[:21]].sum() == 1 and sorted(diverse.tolist()) == list(range(30))
    # among the distinct images, `both` still prefers the uncertain: its first half is more doubtful than its second
    picked = [i for i in both if not is_copy[i]]
    assert u[picked[:10]].mean() > u[picked[10:]].mean()


def test_order_none_and_bad_orders() -> None:
    u, emb, _ = planted()
    assert rank_images(u, emb, order="none").tolist() == list(range(30))
    assert rank_images(np.zeros(0), np.zeros((0, 4))).tolist() == []
    with pytest.raises(SmartHubError, match="--order must be one of both, uncertainty, diversity, none"):
        rank_images(u, emb, order="random")
    with pytest.raises(SmartHubError, match="--order diversity needs image embeddings"):
        rank_images(u, None, order="diversity")


# ------------------------------------------------------------------ scored boxes and the live threshold


def half_filled(size: int, colour: tuple[int, int, int] = BLUE) -> Image.Image:
    """A square with every other column grey: SquareDetector scores it ~0.5 (the fraction filled)."""
    arr = np.full((size, size, 3), colour, np.uint8)
    arr[:, 1::2] = (120, 120, 120)
    return Image.fromarray(arr)


def batch(folder: Path, n: int = 3) -> Path:
    """n scenes, each a full red square (score 1.0) and a half-filled blue one (score ~0.5)."""
    folder.mkdir(parents=True)
    for i in range(n):
        im = Image.new("RGB", (96, 64), (120, 120, 120))
        im.paste(RED, (4 + i, 4, 30 + i, 30))
        im.paste(half_filled(21), (50, 20 + i))
        im.save(folder / f"s{i}.png")
    return folder


def test_detector_runs_once_and_thresholds_move_afterwards(tmp_path: Path) -> None:
    d = batch(tmp_path / "b")
    det = SquareDetector(DetectorOptions(conf=0.05))
    report = annotate_folder(d, det, thresholds=Thresholds(0.7))
    assert det.calls == 3 and report.boxes_per_label == {"red": 3}  # the files hold the boxes at 0.7
    scored = load_scored(d)
    assert scored_path(d).is_file() and scored.floor == 0.05 and len(scored.images) == 3
    assert [sorted(s.label for s in it.shapes) for it in scored.images] == [["blue", "red"]] * 3  # all kept
    blue = [s for it in scored.images for s in it.shapes if s.label == "blue"][0]
    assert 0.4 < blue.extra["score"] < 0.6
    assert load_labelme(d / "s0.json").stamp["conf"] == 0.7

    # a person corrects s1 in Labelme: it must never be overwritten
    edited = load_labelme(d / "s1.json")
    edited.shapes[0].label = "cherry"
    save_labelme(d / "s1.json", edited)
    before = (d / "s1.json").read_bytes()

    rw = write_at_thresholds(scored, Thresholds(0.3))
    assert det.calls == 3  # the detector did not run again
    assert sorted(p.name for p in rw.written) == ["s0.json", "s2.json"]
    assert [(p.name, why) for p, why in rw.kept] == [("s1.json", "edited by a person")]
    assert (d / "s1.json").read_bytes() == before
    assert sorted(s.label for s in load_labelme(d / "s0.json").shapes) == ["blue", "red"]
    assert rw.boxes_per_label == {"blue": 2, "cherry": 1, "red": 2}
    assert load_labelme(d / "s0.json").stamp["conf"] == 0.3
    again = write_at_thresholds(scored, Thresholds(0.3))
    assert not again.written and len(again.unchanged) == 2  # nothing to do: files untouched

    per_class = write_at_thresholds(scored, Thresholds(0.3, {"blue": 0.9}))  # a tuned per-class threshold wins
    assert sorted(s.label for s in load_labelme(d / "s2.json").shapes) == ["red"]
    assert load_labelme(d / "s2.json").stamp["class_conf"] == {"blue": 0.9} and len(per_class.written) == 2


def test_filter_and_threshold_records() -> None:
    from smarthub.annotate.labelme import Shape

    shapes = [Shape("cat", [[0, 0], [1, 1]], extra={"score": 0.4}),
              Shape("dog", [[0, 0], [1, 1]], extra={"score": 0.4}),
              Shape("cats", [[0, 0], [1, 1]], extra={"score": 0.4, "detector_label": "cat"}),
              Shape("drawn", [[0, 0], [1, 1]])]  # no score: a person drew it, always kept
    kept = filter_shapes(shapes, Thresholds(0.5, {"cat": 0.3}))
    assert [s.label for s in kept] == ["cat", "cats", "drawn"]
    with pytest.raises(SmartHubError, match="threshold dog must be between 0 and 1"):
        Thresholds(0.5, {"dog": 1.5})


def test_missing_or_broken_sidecar_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no scored boxes in .*pre-annotate"):
        load_scored(tmp_path)
    scored_path(tmp_path).parent.mkdir()
    scored_path(tmp_path).write_text(json.dumps({"format": "other"}))
    with pytest.raises(AnnotationError, match="is not a smarthub scored-boxes file"):
        load_scored(tmp_path)


def test_ranking_of_a_scored_batch(tmp_path: Path) -> None:
    d = tmp_path / "b"
    d.mkdir()
    # s_doubt: a box right at the threshold; s_sure: a full square far above it; s_none: nothing at all
    Image.new("RGB", (96, 64), (120, 120, 120)).save(d / "s_none.png")
    im = Image.new("RGB", (96, 64), (120, 120, 120))
    im.paste(RED, (4, 4, 30, 30))
    im.save(d / "s_sure.png")
    im = Image.new("RGB", (96, 64), (120, 120, 120))
    im.paste(half_filled(21), (50, 20))
    im.paste(half_filled(15, RED), (10, 10))
    im.save(d / "s_doubt.png")
    report = annotate_folder(d, SquareDetector(DetectorOptions(conf=0.05)), thresholds=Thresholds(0.5))
    rows = rank_scored(report.scored, Thresholds(0.5), order="uncertainty")
    assert [r.image for r in rows] == ["s_doubt.png", "s_none.png", "s_sure.png"]
    assert rows[0].doubtful_boxes == 2 and rows[2].least_confident == pytest.approx(1.0)
    ranking = write_ranking(report.scored, Thresholds(0.5), order="both")
    path = ranking.path
    assert path == ranking_path(d) == d / ".smarthub" / "next_images.csv" and "mobilenet_v2" in ranking.note
    assert ranking.embeddings.shape == (3, 1280)
    with path.open() as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == RANKING_HEADER and sorted(r[1] for r in table[1:]) == sorted(p.name for p in d.glob("*.png"))


# ------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detector run folder (run.json with tuned thresholds) around an untrained torchvision checkpoint."""
    import torch

    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("models") / "detectors" / "r1"
    run.mkdir(parents=True)
    kw = {"min_size": 64, "max_size": 64}
    save_detector_checkpoint(run / "weights.pt", build_torchvision_model("fasterrcnn_mobilenet_v3_large_320_fpn", 3,
                                                                         **kw),
                             arch="fasterrcnn_mobilenet_v3_large_320_fpn", labels=["__background__", "red", "blue"],
                             model_kwargs=kw)
    (run / "run.json").write_text(json.dumps({"format": "smarthub-detector-run", "weights": "weights.pt",
                                              "thresholds": {"red": {"conf": 0.4}, "blue": {"conf": 0.35}}}))
    return run


@pytest.mark.parametrize("order", ["uncertainty", "both", "none"])
def test_cli_writes_scored_boxes_and_the_ranking(tmp_path: Path, run_folder: Path, order: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = batch(tmp_path / "batches" / "b1", n=4)
    code = main(["annotate", str(d), "--model", str(run_folder), "--order", order, "--max-det", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"next images to correct ({order}" in out and str(ranking_path(d)) in out
    with ranking_path(d).open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["image"] for r in rows) == [f"s{i}.png" for i in range(4)]
    if order == "none":
        assert [r["image"] for r in rows] == [f"s{i}.png" for i in range(4)]
    if order == "uncertainty":
        u = [float(r["uncertainty"]) for r in rows]
        assert u == sorted(u, reverse=True)
    scored = load_scored(d)
    assert scored.tuned and scored.thresholds.per_class == {"red": 0.4, "blue": 0.35}
    for it in scored.images:  # the files hold exactly the scored boxes that pass the tuned thresholds
        lf = load_labelme(d / it.json)
        assert len(lf.shapes) == len(filter_shapes(it.shapes, scored.thresholds)) <= len(it.shapes)
        assert all(s.extra["score"] >= 0.05 for s in it.shapes)


def test_cli_bad_order_and_floor(tmp_path: Path, run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = batch(tmp_path / "b", n=1)
    with pytest.raises(SystemExit) as e:
        main(["annotate", str(d), "--model", str(run_folder), "--order", "random"])
    assert e.value.code == 2 and "invalid choice: 'random'" in capsys.readouterr().err
    assert main(["annotate", str(d), "--model", str(run_folder), "--floor", "0"]) == 2
    assert "the score floor must be in (0, 1], got 0.0" in capsys.readouterr().err
    assert not list(d.glob("*.json"))  # nothing half-written


def test_empty_batch_and_a_batch_with_no_box_at_any_threshold(tmp_path: Path, run_folder: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from smarthub.errors import DatasetError

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="no images under .*empty .*nothing to annotate"):
        annotate_folder(empty, SquareDetector(), thresholds=Thresholds(0.5))
    assert main(["annotate", str(empty), "--model", str(run_folder)]) == 2
    assert "nothing to annotate" in capsys.readouterr().err
    assert not (empty / ".smarthub").exists()  # nothing half-written
    grey = tmp_path / "grey"
    grey.mkdir()
    Image.new("RGB", (64, 48), (120, 120, 120)).save(grey / "g.png")
    report = annotate_folder(grey, SquareDetector(DetectorOptions(conf=0.05)), thresholds=Thresholds(0.5))
    assert "no box in any image, even scored >= 0.05: is this detector made for these images" in report.summary()
    assert load_labelme(grey / "g.json").shapes == []  # still a valid (empty) Labelme file


def test_cli_warns_on_one_line_when_the_batch_is_a_class_folder(tmp_path: Path, run_folder: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SMARTHUB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SMARTHUB_BATCHES", raising=False)
    batch(tmp_path / "data" / "unlabelled", n=1)
    assert main(["annotate", str(tmp_path / "data" / "unlabelled"), "--model", str(run_folder), "--order", "none"]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(err) == 1 and "where every folder is a class" in err[0] and str(tmp_path / "batches") in err[0]
    batch(tmp_path / "batches" / "b1", n=1)
    assert main(["annotate", str(tmp_path / "batches" / "b1"), "--model", str(run_folder), "--order", "none"]) == 0
    assert "warning:" not in capsys.readouterr().err
