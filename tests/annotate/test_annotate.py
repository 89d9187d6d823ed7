"""annotate_folder and the annotate CLI: orientation, bad input, never overwriting a person's edits, zip, classifier."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_detect import SquareDetector
from test_labelme import write_oriented

from smarthub.annotate.preannotate import annotate_folder, zip_outputs
from smarthub.cli import main
from smarthub.annotate.detect import DetectorOptions
from smarthub.errors import AnnotationError, DatasetError, SmartHubError
from smarthub.annotate.labelme import labelme_to_dict, load_labelme, save_labelme

RED, BLUE = (220, 30, 30), (30, 30, 220)


def scene(size=(96, 64), squares=((RED, (10, 8, 40, 30)),)) -> Image.Image:
    im = Image.new("RGB", size, (120, 120, 120))
    for colour, box in squares:
        im.paste(colour, box)
    return im


def boxes_of(path: Path) -> list[tuple[str, tuple[float, ...]]]:
    return [(s.label, s.xyxy) for s in load_labelme(path).shapes]


@pytest.mark.parametrize("orientation", range(1, 9), ids=[f"exif{o}" for o in range(1, 9)])
def test_same_boxes_for_upright_and_exif_rotated_copies(tmp_path: Path, orientation: int) -> None:
    upright = scene(squares=((RED, (10, 8, 40, 30)), (BLUE, (56, 24, 88, 56))))
    d = tmp_path / "imgs"
    d.mkdir()
    upright.save(d / "upright.jpg", quality=95)
    write_oriented(d / "rotated.jpg", upright, orientation)
    report = annotate_folder(d, SquareDetector())
    assert len(report.written) == 2 and report.boxes_per_label == {"blue": 2, "red": 2}
    a, b = boxes_of(d / "upright.json"), boxes_of(d / "rotated.json")
    assert [lab for lab, _ in a] == [lab for lab, _ in b]
    assert np.allclose([x for _, x in a], [x for _, x in b], atol=1.0)
    assert np.allclose(dict(a)["red"], (10, 8, 40, 30), atol=1.0)
    lf = load_labelme(d / "rotated.json")
    assert (lf.image_width, lf.image_height) == (96, 64)


def test_mirrored_out_tree_and_relative_image_path(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    (d / "a" / "b").mkdir(parents=True)
    scene().save(d / "a" / "b" / "x.png")
    scene().save(d / "top.jpg")
    (d / ".smarthub").mkdir()
    scene().save(d / ".smarthub" / "hidden.jpg")
    seen: list[tuple[int, int]] = []
    report = annotate_folder(d, SquareDetector(), out_dir=tmp_path / "out", progress=lambda i, n: seen.append((i, n)))
    assert report.images == 2 and seen[-1] == (2, 2)
    lf = load_labelme(tmp_path / "out" / "a" / "b" / "x.json")
    assert lf.image_path == "../../../imgs/a/b/x.png"
    assert (tmp_path / "out" / "a" / "b" / lf.image_path).resolve() == (d / "a" / "b" / "x.png").resolve()
    assert not list(d.rglob("*.json"))
    z = zip_outputs(report, zip_path=tmp_path / "ann.zip")
    assert sorted(zipfile.ZipFile(z).namelist()) == ["a/b/x.json", "top.json"]
    assert sorted(zipfile.ZipFile(zip_outputs(tmp_path / "out")).namelist()) == ["a/b/x.json", "top.json"]


def test_images_stream_in_batches(tmp_path: Path) -> None:
    class Recording(SquareDetector):
        sizes: list[int] = []

        def forward(self, images):
            self.sizes.append(len(images))
            return super().forward(images)

    for i in range(7):
        scene().save(tmp_path / f"{i}.jpg")
    det = Recording(DetectorOptions(conf=0.1, batch=3))
    report = annotate_folder(tmp_path, det)
    assert len(report.written) == 7 and det.sizes == [3, 3, 1]


def _bad_dir(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    return d


BAD = [
    ("undecodable", lambda d: (d / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg"), "failed", "not an image|truncated"),
    ("truncated-png", lambda d: (d / "t.png").write_bytes(_png_bytes()[:60]), "failed", "not an image|truncated"),
    ("zero-detections", lambda d: scene(squares=()).save(d / "plain.jpg"), "written", None),
    ("1x1", lambda d: Image.new("RGB", (1, 1), RED).save(d / "one.png"), "written", None),
    ("10000x8000", lambda d: Image.new("RGB", (10000, 8000), (120, 120, 120)).save(d / "huge.jpg", quality=30),
     "written", None),
    ("too-many-pixels", lambda d: Image.new("L", (10001, 8000)).save(d / "big.png", optimize=False), "failed",
     "decompression bomb"),
]


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    scene().save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("make,outcome,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_reported_not_fatal(tmp_path: Path, make, outcome: str, reason: str | None) -> None:
    d = _bad_dir(tmp_path)
    make(d)
    scene().save(d / "good.jpg")
    report = annotate_folder(d, SquareDetector())
    assert (d / "good.json").exists()
    if outcome == "failed":
        assert len(report.failed) == 1 and re.search(reason, report.failed[0][1])
        assert len(report.written) == 1
    else:
        assert len(report.written) == 2 and not report.failed
        other = next(p for p in report.written if p.name != "good.json")
        lf = load_labelme(other)
        with Image.open(next(p for p in d.glob(other.stem + ".*") if p.suffix != ".json")) as im:
            assert (lf.image_width, lf.image_height) == im.size
        if make is BAD[2][1]:
            assert lf.shapes == []


def test_output_folder_not_writable_is_one_clear_error(tmp_path: Path) -> None:
    d = _bad_dir(tmp_path)
    scene().save(d / "a.jpg")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AnnotationError, match="output folder .* is not writable"):
        annotate_folder(d, SquareDetector(), out_dir=tmp_path / "afile" / "out")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(AnnotationError, match="not writable"):
            annotate_folder(d, SquareDetector(), out_dir=ro)
    with pytest.raises(DatasetError, match="images folder not found"):
        annotate_folder(tmp_path / "nope", SquareDetector())


def test_never_overwrite_a_person_edit(tmp_path: Path) -> None:
    d = _bad_dir(tmp_path)
    scene(squares=((RED, (10, 8, 40, 30)), (BLUE, (56, 24, 88, 56)))).save(d / "a.jpg")
    scene().save(d / "b.jpg")
    first = annotate_folder(d, SquareDetector())
    assert len(first.written) == 2
    # unchanged files of ours are refreshed on a rerun
    again = annotate_folder(d, SquareDetector())
    assert len(again.written) == 2 and not again.skipped
    # a person edits a.json: moves the red box, deletes the blue one, adds a person box
    lf = load_labelme(d / "a.json")
    lf.shapes.sort(key=lambda s: s.label != "red")  # red first, then blue
    lf.shapes[0].points = [[12.0, 9.0], [42.0, 31.0]]
    lf.shapes[1].points = [[0.0, 40.0], [8.0, 60.0]]
    lf.shapes[1].label = "person"
    save_labelme(d / "a.json", lf)
    edited = labelme_to_dict(load_labelme(d / "a.json"))
    rerun = annotate_folder(d, SquareDetector())
    assert [p.name for p, _ in rerun.skipped] == ["a.jpg"] and "edited by a person" in rerun.skipped[0][1]
    assert labelme_to_dict(load_labelme(d / "a.json")) == edited
    # --merge keeps the person's shapes and adds ours without duplicating the (moved) red box
    merged = annotate_folder(d, SquareDetector(), merge=True)
    assert merged.boxes_per_label == {"blue": 1, "red": 1}  # b.jpg's red, a.jpg's blue
    labels = [s.label for s in load_labelme(d / "a.json").shapes]
    assert labels == ["red", "person", "blue"]
    assert load_labelme(d / "a.json").shapes[0].points == [[12.0, 9.0], [42.0, 31.0]]
    # a merged file holds a person's work: plain reruns keep skipping it, merging again adds nothing
    assert [p.name for p, _ in annotate_folder(d, SquareDetector()).skipped] == ["a.jpg"]
    annotate_folder(d, SquareDetector(), merge=True)
    assert [s.label for s in load_labelme(d / "a.json").shapes] == labels
    # --overwrite replaces it with fresh detections
    annotate_folder(d, SquareDetector(), overwrite=True)
    assert sorted(s.label for s in load_labelme(d / "a.json").shapes) == ["blue", "red"]
    with pytest.raises(SmartHubError, match="one of --overwrite and --merge"):
        annotate_folder(d, SquareDetector(), overwrite=True, merge=True)


def test_foreign_and_broken_existing_files_are_kept(tmp_path: Path) -> None:
    d = _bad_dir(tmp_path)
    scene().save(d / "a.jpg")
    scene().save(d / "b.jpg")
    (d / "a.json").write_text("{broken")
    foreign = {"version": "5.4.1", "flags": {}, "imagePath": "b.jpg", "imageData": None, "imageHeight": 64,
               "imageWidth": 96, "shapes": []}
    (d / "b.json").write_text(json.dumps(foreign))
    report = annotate_folder(d, SquareDetector())
    reasons = dict((p.name, r) for p, r in report.skipped)
    assert "not a valid Labelme file" in reasons["a.jpg"] and "not written by smarthub" in reasons["b.jpg"]
    assert (d / "a.json").read_text() == "{broken" and json.loads((d / "b.json").read_text()) == foreign


def test_cli_annotate_in_process_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _bad_dir(tmp_path)
    scene().save(d / "a.jpg")
    code = main(["annotate", str(d), "--model", str(tmp_path / "missing.pt")])
    assert code == 2 and "not found" in capsys.readouterr().err
    code = main(["annotate", str(d), "--model", "fasterrcnn_mobilenet_v3_large_fpn", "--label-map", "bad"])
    assert code == 2 and "must look like NAME=LABEL" in capsys.readouterr().err
    code = main(["export-yolo", str(d), str(tmp_path / "y"), "--split", "0.5,0.6,0.1"])
    assert code == 2 and "summing to 1" in capsys.readouterr().err


def make_tiny_classifier(folder: Path) -> Path:
    """A real fastai Learner (tiny CNN) trained to tell red squares ('reds') from blue ones ('blues'), exported."""
    import torch
    from fastai.vision.all import CategoryBlock, DataBlock, ImageBlock, Learner, Resize, accuracy, parent_label
    from fastai.vision.all import CrossEntropyLossFlat, RandomSplitter, get_image_files
    from torch import nn

    rng = np.random.default_rng(0)
    for name, colour in (("reds", RED), ("blues", BLUE)):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            jitter = tuple(int(np.clip(c + rng.integers(-25, 25), 0, 255)) for c in colour)
            Image.new("RGB", (24, 24), jitter).save(folder / name / f"{i}.png")
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(24)).dataloaders(folder, bs=8, num_workers=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fit(6, 0.05)
    learn.export(folder / "export.pkl")
    return folder / "export.pkl"


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("clf"))


@pytest.mark.slow
def test_crop_classifier_names_the_boxes(tmp_path: Path, tiny_classifier: Path) -> None:
    """A detector's boxes relabelled by classifying each crop; both scores kept as extra keys."""
    d = _bad_dir(tmp_path)
    scene(squares=((RED, (10, 8, 40, 30)), (BLUE, (56, 24, 88, 56)))).save(d / "a.jpg")
    report = annotate_folder(d, SquareDetector(), classifier=tiny_classifier)
    assert report.boxes_per_label == {"blues": 1, "reds": 1}
    lf = load_labelme(d / "a.json")
    assert lf.stamp["classifier"] == "export.pkl"
    by_label = {s.label: s.extra for s in lf.shapes}
    assert by_label["reds"]["detector_label"] == "red" and by_label["blues"]["detector_label"] == "blue"
    for extra in by_label.values():
        assert 0.5 < extra["classifier_score"] <= 1 and 0 < extra["detector_score"] <= 1
    with pytest.raises(SmartHubError, match="classifier .* not found"):
        annotate_folder(d, SquareDetector(), classifier=tmp_path / "none.pkl", overwrite=True)


@pytest.mark.slow
def test_cli_subprocess_with_checkpoint_and_classifier(tmp_path: Path, tiny_classifier: Path) -> None:
    """The real command line in a child process: torchvision checkpoint + crop classifier + --out + --zip."""
    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint

    import torch

    torch.manual_seed(0)
    ckpt = save_detector_checkpoint(tmp_path / "untrained.pt",
                                    build_torchvision_model("fasterrcnn_mobilenet_v3_large_320_fpn", 3, min_size=64,
                                                            max_size=64),
                                    arch="fasterrcnn_mobilenet_v3_large_320_fpn",
                                    labels=["__background__", "red", "blue"], model_kwargs={"min_size": 64, "max_size": 64})
    d = _bad_dir(tmp_path)
    scene().save(d / "a.jpg")
    r = subprocess.run([sys.executable, "-m", "smarthub", "annotate", str(d), "--model", str(ckpt), "--conf", "0",
                        "--max-det", "3", "--classifier", str(tiny_classifier), "--out", str(tmp_path / "out"),
                        "--zip", str(tmp_path / "a.zip"), "--trust"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1 Labelme files written" in r.stdout and (tmp_path / "a.zip").exists()
    lf = load_labelme(tmp_path / "out" / "a.json")
    assert lf.stamp["model"] == "untrained.pt" and lf.stamp["classifier"] == "export.pkl"
    assert 1 <= len(lf.shapes) <= 3
    for s in lf.shapes:
        assert s.label in {"reds", "blues"} and s.extra["detector_label"] in {"red", "blue"}


def test_two_images_sharing_a_stem_do_not_clobber_each_other(tmp_path: Path) -> None:
    d = _bad_dir(tmp_path)
    scene().save(d / "a.jpg")
    scene(squares=((BLUE, (0, 0, 20, 20)),)).save(d / "a.png")
    report = annotate_folder(d, SquareDetector())
    assert len(report.written) == 1 and report.skipped[0][0].name == "a.png"
    assert "another image already writes a.json" in report.skipped[0][1]
    assert load_labelme(d / "a.json").image_path == "a.jpg"
