"""evaluate_annotations against planted truth, and the torchvision end to end: train → checkpoint → annotate → evaluate."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smarthub.cli import main
from smarthub.errors import DatasetError
from smarthub.annotate.evaluate import (ActionCosts, CorrectionEffort, correction_effort, evaluate_annotations,
                                       greedy_tp)
from smarthub.errors import SmartHubError
from smarthub.annotate.labelme import LabelmeFile, Shape, load_labelme, save_labelme

TRUTH = {  # image -> [(label, xyxy)]
    "a": [("cat", (10, 10, 50, 50)), ("dog", (60, 10, 100, 40))],
    "b": [("cat", (0, 0, 30, 30))],
    "sub/c": [("dog", (20, 20, 80, 80)), ("dog", (100, 100, 140, 150))],
}


def write_set(folder: Path, boxes: dict[str, list[tuple[str, tuple]]], *, scores: bool = False) -> Path:
    for key, items in boxes.items():
        shapes = [Shape(label=lab, points=[[x1, y1], [x2, y2]], extra={"score": 0.9 - 0.1 * i} if scores else {})
                  for i, (lab, (x1, y1, x2, y2)) in enumerate(items)]
        save_labelme(folder / f"{key}.json", LabelmeFile(image_path=f"{Path(key).name}.jpg", image_height=200,
                                                          image_width=200, shapes=shapes))
    return folder


def shifted(boxes, dx: float) -> dict:
    return {k: [(lab, (x1 + dx, y1, x2 + dx, y2)) for lab, (x1, y1, x2, y2) in v] for k, v in boxes.items()}


def test_truth_against_itself_is_perfect(tmp_path: Path) -> None:
    t = write_set(tmp_path / "t", TRUTH)
    r = evaluate_annotations(t, t)
    assert r.images == 3 and r.map50 == pytest.approx(1.0) and r.map50_95 == pytest.approx(1.0)
    assert all(s.precision == 1 and s.recall == 1 for s in r.labels.values())
    assert (r.effort.verify, r.effort.edits, r.effort.truth) == (5, 0, 5)
    assert r.effort.seconds() == pytest.approx(5 * 1.6) and r.effort.hand_seconds() == pytest.approx(35.0)


def test_shifted_copy_scores_lower(tmp_path: Path) -> None:
    t = write_set(tmp_path / "t", TRUTH)
    p = write_set(tmp_path / "p", shifted(TRUTH, 10), scores=True)  # IoU 0.5-0.6 for 4 boxes, 0.71 for one
    r = evaluate_annotations(p, t)
    assert r.map50 == pytest.approx(1.0) and 0.2 < r.map50_95 < 0.95
    assert (r.effort.adjust, r.effort.verify) == (4, 1)
    far = write_set(tmp_path / "far", shifted(TRUTH, 200), scores=True)
    r2 = evaluate_annotations(far, t)
    assert r2.map50 == 0 and r2.effort.delete == 5 and r2.effort.draw == 5
    assert r2.effort.ratio() == pytest.approx((5 * 1.6 + 5 * 7.0) / 35.0)  # worse than drawing by hand


def test_planted_corrections_are_counted(tmp_path: Path) -> None:
    pred = copy.deepcopy(TRUTH)
    pred["a"][1] = ("cat", pred["a"][1][1])             # person relabelled cat -> dog
    pred["b"].append(("cat", (150, 150, 190, 190)))     # person deleted a false box
    del pred["sub/c"][1]                                # person added a missed dog
    pred["sub/c"][0] = ("dog", (35, 20, 95, 80))        # person adjusted a loose box (IoU 0.6)
    t = write_set(tmp_path / "t", TRUTH)
    p = write_set(tmp_path / "p", pred, scores=True)
    r = evaluate_annotations(p, t)
    e = r.effort
    assert (e.verify, e.adjust, e.relabel, e.delete, e.draw, e.truth) == (2, 1, 1, 1, 1, 5)
    assert e.seconds() == pytest.approx(2 * 1.6 + 3.5 + 1.6 + 1.6 + 7.0) and e.ratio() == pytest.approx(16.9 / 35)
    cat, dog = r.labels["cat"], r.labels["dog"]
    assert (cat.truth, cat.predicted, cat.true_positives) == (2, 4, 2)
    assert (dog.truth, dog.predicted, dog.true_positives) == (3, 1, 1)
    assert cat.precision == 0.5 and cat.recall == 1.0 and dog.recall == pytest.approx(1 / 3)
    assert 0 < r.map50 < 1 and r.labels["dog"].ap50 < r.labels["cat"].ap50 + 1e-9
    text = r.summary()
    assert "verify (IoU >= 0.7, right label: one glance)" in text and "adjust (IoU 0.5-0.7: drag the edges)" in text
    assert "estimated time 17 s vs 35 s drawing all 5 boxes by hand (0.48x)" in text


BOX = (0.0, 0.0, 100.0, 100.0)


@pytest.mark.parametrize("pred, truth, counts", [
    ([("a", (0, 0, 100, 80), .9)], [("a", BOX, None)], dict(verify=1)),           # IoU 0.80
    ([("a", (0, 0, 100, 70), .9)], [("a", BOX, None)], dict(verify=1)),           # IoU 0.70: the edge verifies
    ([("a", (0, 0, 100, 69), .9)], [("a", BOX, None)], dict(adjust=1)),           # IoU 0.69
    ([("a", (0, 0, 100, 50), .9)], [("a", BOX, None)], dict(adjust=1)),           # IoU 0.50: the edge adjusts
    ([("a", (0, 0, 100, 49), .9)], [("a", BOX, None)], dict(delete=1, draw=1)),   # IoU 0.49: redrawn
    ([("b", (0, 0, 100, 90), .9)], [("a", BOX, None)], dict(relabel=1)),          # tight, wrong label
    ([("b", (0, 0, 100, 60), .9)], [("a", BOX, None)], dict(relabel=1, adjust=1)),  # loose and wrong
    ([("a", (300, 300, 350, 350), .9)], [], dict(delete=1)),                      # a box on nothing
    ([], [("a", BOX, None)], dict(draw=1)),                                       # a missed object
    ([("a", BOX, .9), ("a", (0, 0, 100, 95), .8)], [("a", BOX, None)], dict(verify=1, delete=1)),  # a duplicate
], ids=["0.80", "0.70", "0.69", "0.50", "0.49", "relabel", "relabel-loose", "false", "missed", "duplicate"])
def test_effort_bands(pred, truth, counts) -> None:
    e = correction_effort(pred, truth)
    want = {k: counts.get(k, 0) for k in ("verify", "adjust", "relabel", "delete", "draw")}
    assert {k: getattr(e, k) for k in want} == want and e.truth == len(truth)
    costs = ActionCosts()
    price = {"verify": 1.6, "adjust": 3.5, "relabel": 1.6, "delete": 1.6, "draw": 7.0}
    assert e.seconds(costs) == pytest.approx(sum(n * price[k] for k, n in want.items()))


def test_effort_costs_and_sums() -> None:
    e = CorrectionEffort(verify=10, draw=2, truth=12) + CorrectionEffort(adjust=1, truth=1)
    assert (e.verify, e.adjust, e.draw, e.truth) == (10, 1, 2, 13)
    assert e.seconds(ActionCosts(verify_s=1.0, draw_s=10.0, adjust_s=5.0)) == pytest.approx(35.0)
    assert CorrectionEffort().ratio() is None
    with pytest.raises(SmartHubError, match="action costs must be finite seconds >= 0"):
        ActionCosts(draw_s=-1.0)


def test_greedy_match_takes_highest_score_first() -> None:
    truth = [("x", (0, 0, 10, 10), None)]
    preds = [("x", (0, 0, 10, 9), 0.4), ("x", (0, 0, 10, 10), 0.9)]
    assert greedy_tp(preds, truth) == 1
    assert greedy_tp([], truth) == 0
    assert correction_effort([], truth).draw == 1


def test_missing_broken_and_unpaired_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = write_set(tmp_path / "t", TRUTH)
    p = write_set(tmp_path / "p", {"a": TRUTH["a"], "extra": TRUTH["b"]})
    (t / "broken.json").write_text('{"shapes": [1]}')
    r = evaluate_annotations(p, t)
    assert [x.name for x in r.missing_pred] == ["b.json", "c.json"] and [x.name for x in r.unpaired_pred] == ["extra.json"]
    assert len(r.failed) == 1 and "broken.json" in r.failed[0][1]
    assert r.labels["cat"].recall == 0.5
    with pytest.raises(DatasetError, match="folder not found"):
        evaluate_annotations(tmp_path / "nope", t)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no Labelme .json files"):
        evaluate_annotations(p, tmp_path / "empty")
    assert main(["evaluate-annotations", str(p), str(t)]) == 0
    out = capsys.readouterr().out
    assert "mAP50" in out and "cat" in out and "correction effort" in out


# ---------------------------------------------------------------- torchvision end to end

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def synth(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, list[tuple[str, tuple[int, ...]]]]:
    """A grey image with one or two non-overlapping coloured squares, and their boxes."""
    im = Image.new("RGB", (size, size), (128, 128, 128))
    boxes: list[tuple[str, tuple[int, ...]]] = []
    for name in rng.permutation(list(COLOURS))[: rng.integers(1, 3)]:
        s = int(rng.integers(14, 28))
        x, y = (int(v) for v in rng.integers(0, size - s, 2))
        if any(not (x + s <= b[0] or b[2] <= x or y + s <= b[1] or b[3] <= y) for _, b in boxes):
            continue
        im.paste(COLOURS[str(name)], (x, y, x + s, y + s))
        boxes.append((str(name), (x, y, x + s, y + s)))
    return im, boxes


def train_square_detector(path: Path, *, steps: int, seed: int = 0) -> Path:
    """Train fasterrcnn_mobilenet_v3_large_320_fpn from scratch (no weights) on synthetic squares; save a checkpoint."""
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    labels = ["__background__", *COLOURS]
    kw = dict(min_size=64, max_size=64, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
              rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=64,
              box_batch_size_per_image=64)
    model = build_torchvision_model("fasterrcnn_mobilenet_v3_large_320_fpn", len(labels), **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        imgs, targets = [], []
        for _ in range(4):
            im, boxes = synth(rng)
            imgs.append(pil_to_tensor(im).float() / 255)
            targets.append({"boxes": torch.tensor([b for _, b in boxes], dtype=torch.float32),
                            "labels": torch.tensor([labels.index(n) for n, _ in boxes])})
        loss = sum(model(imgs, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return save_detector_checkpoint(path, model, arch="fasterrcnn_mobilenet_v3_large_320_fpn", labels=labels,
                                    model_kwargs=kw)


@pytest.mark.slow
def test_torchvision_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.set_num_threads(1)  # 2 shared cores: one thread is faster than fighting
    ckpt = train_square_detector(tmp_path / "squares.pt", steps=25)
    rng = np.random.default_rng(123)
    imgs, truth = tmp_path / "batch", {}
    imgs.mkdir()
    for i in range(6):
        im, boxes = synth(rng)
        im.save(imgs / f"{i}.png")
        truth[str(i)] = boxes
    t = write_set(tmp_path / "truth", truth)
    assert main(["annotate", str(imgs), "--model", str(ckpt), "--conf", "0.05", "--out", str(tmp_path / "pred"),
                 "--max-det", "10"]) == 0
    assert "6 Labelme files written" in capsys.readouterr().out
    for i in range(6):
        lf = load_labelme(tmp_path / "pred" / f"{i}.json")
        assert (lf.image_width, lf.image_height) == (64, 64) and lf.stamp["model"] == "squares.pt"
    r = evaluate_annotations(tmp_path / "pred", t)
    print("\n" + r.summary())  # figures for the report (pytest -s)
    assert r.images == 6 and set(r.labels) >= {"red", "blue"}
    for v in (r.map50, r.map50_95):
        assert v is not None and 0.0 <= v <= 1.0
    assert r.map50_95 <= r.map50
    e = r.effort
    n_truth = sum(len(b) for b in truth.values())
    n_pred = sum(s.predicted for s in r.labels.values())
    assert n_truth - e.draw == n_pred - e.delete >= e.verify  # the same matched pairs seen from both sides
    perfect = evaluate_annotations(t, t)
    assert perfect.map50 == pytest.approx(1.0) and perfect.map50_95 == pytest.approx(1.0)


# ---------------------------------------------------------------- --iou, --json and swapped folders


def test_iou_option_changes_what_counts_as_found(tmp_path: Path) -> None:
    t = write_set(tmp_path / "t", TRUTH)
    p = write_set(tmp_path / "p", shifted(TRUTH, 5), scores=True)  # IoU 0.6-0.85 for every box
    loose, strict = evaluate_annotations(p, t, iou=0.5), evaluate_annotations(p, t, iou=0.9)
    assert loose.labels["cat"].true_positives == 2 and strict.labels["cat"].true_positives == 0
    assert loose.map50 == strict.map50  # the COCO figures do not depend on the option


def test_cli_json_and_swapped_folders_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from smarthub.annotate.labelme import stamp_file

    t = write_set(tmp_path / "t", TRUTH)
    p = tmp_path / "p"
    for key, items in TRUTH.items():  # predictions as smarthub writes them: scores and our stamp, unedited
        shapes = [Shape(label=lab, points=[[x1 + 3, y1], [x2 + 3, y2]], extra={"score": 0.8})
                  for lab, (x1, y1, x2, y2) in items]
        lf = LabelmeFile(image_path=f"{Path(key).name}.jpg", image_height=200, image_width=200, shapes=shapes)
        save_labelme(p / f"{key}.json", stamp_file(lf, {"model": "m"}))
    assert main(["evaluate-annotations", str(p), str(t), "--iou", "0.5", "--json"]) == 0
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert data["images"] == 3 and data["iou"] == 0.5 and data["labels"]["dog"]["truth"] == 3
    assert data["effort"]["verify"] == 5 and data["effort"]["hand_seconds"] == 35.0 and data["warnings"] == []
    assert data["effort"]["seconds"] == 8.0 and data["effort"]["costs_s"]["draw_s"] == 7.0 and out.err == ""
    # swapped: the truth folder given as predictions and the other way round
    assert main(["evaluate-annotations", str(t), str(p)]) == 0
    err = capsys.readouterr().err
    assert "warning: the prediction folder looks like ground truth" in err
    assert "warning: the truth folder looks like predictions" in err


def test_cli_bad_iou(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = write_set(tmp_path / "t", TRUTH)
    assert main(["evaluate-annotations", str(t), str(t), "--iou", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --iou must be in (0, 1], got 0.0"


def test_truth_shapes_that_are_not_rectangles_are_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A polygon in the truth counts as its bounding box and a point is dropped: both said, not silent."""
    t = write_set(tmp_path / "t", TRUTH)
    lf = load_labelme(t / "a.json")
    lf.shapes.append(Shape(label="cat", points=[[120, 120], [160, 130], [140, 170]], shape_type="polygon"))
    lf.shapes.append(Shape(label="dog", points=[[5, 5]], shape_type="point"))
    save_labelme(t / "a.json", lf)
    p = write_set(tmp_path / "p", TRUTH, scores=True)
    report = evaluate_annotations(p, t)
    assert report.labels["cat"].truth == 3  # the polygon's box is a truth box a person would have to draw
    assert any("1 polygon in 1 Labelme file read as its bounding box" in w and w.startswith("truth: ")
               for w in report.warnings), report.warnings
    assert any("1 point shape in 1 Labelme file dropped" in w for w in report.warnings), report.warnings
    assert main(["evaluate-annotations", str(p), str(t)]) == 0
    assert "warning: truth: 1 polygon" in capsys.readouterr().err
