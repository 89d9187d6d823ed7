"""export_yolo (Labelme → YOLO dataset) and the Ultralytics loop: train YOLO on the export, annotate with it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_annotate import BLUE, RED, scene
from test_detect import SquareDetector
from test_labelme import write_oriented

from smarthub.annotate.preannotate import annotate_folder
from smarthub.cli import main
from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.annotate.labelme import LabelmeFile, Shape, load_labelme, save_labelme
from smarthub.annotate.export import export_yolo, parse_split, split_counts


def annotated_folder(root: Path, n: int = 10) -> Path:
    """n images (nested one level for half of them) annotated by the square detector."""
    for i in range(n):
        sub = root / ("nested" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        x = 4 + 6 * i
        scene(squares=((RED, (x, 8, x + 20, 30)), (BLUE, (60, 30, 90, 60)))).save(sub / f"img{i}.png")
    report = annotate_folder(root, SquareDetector())
    assert len(report.written) == n
    return root


def read_labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines()]


def test_export_writes_images_labels_and_yaml(tmp_path: Path) -> None:
    src = annotated_folder(tmp_path / "lm")
    out = tmp_path / "yolo"
    r = export_yolo(src, out, split=(0.6, 0.2, 0.2), seed=1)
    assert r.names == ["blue", "red"] and r.images == {"train": 6, "val": 2, "test": 2} and r.boxes == 20
    assert len(list(src.rglob("*.png"))) == 10  # copied, not moved
    yaml = (out / "data.yaml").read_text()
    assert "train: images/train" in yaml and "val: images/val" in yaml and "test: images/test" in yaml
    assert '0: "blue"' in yaml and '1: "red"' in yaml and "nc: 2" in yaml
    # planted truth: nested/img1.jpg has red at x 10..30, y 8..30 and blue at 60..90, 30..60 in a 96x64 image
    label_file = next(out.glob("labels/*/nested__img1.txt"))
    rows = sorted(read_labels(label_file))
    assert rows[0] == pytest.approx([0, 75 / 96, 45 / 64, 30 / 96, 30 / 64], abs=2e-2)
    assert rows[1] == pytest.approx([1, 20 / 96, 19 / 64, 20 / 96, 22 / 64], abs=2e-2)
    split = label_file.parent.name
    assert (out / "images" / split / "nested__img1.png").exists()
    # same seed, same split; another seed, another split
    r2 = export_yolo(src, tmp_path / "yolo2", split=(0.6, 0.2, 0.2), seed=1)
    assert sorted(p.name for p in (tmp_path / "yolo2" / "labels" / "val").iterdir()) == \
        sorted(p.name for p in (out / "labels" / "val").iterdir())
    assert r2.names == r.names


def test_exif_rotated_image_uses_the_labelme_frame(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    write_oriented(src / "r.jpg", scene(squares=((RED, (10, 8, 40, 30)),)), 6)  # stored 64x96, shown 96x64
    annotate_folder(src, SquareDetector())
    export_yolo(src, tmp_path / "y", split=(1.0, 0.0, 0.0))
    (row,) = read_labels(tmp_path / "y" / "labels" / "train" / "r.txt")
    assert row == pytest.approx([0, 25 / 96, 19 / 64, 30 / 96, 22 / 64], abs=0.035)  # JPEG bleeds a pixel


def test_polygons_become_boxes_points_are_ignored(tmp_path: Path) -> None:
    src = tmp_path / "lm"
    src.mkdir()
    Image.new("RGB", (100, 50)).save(src / "p.png")
    save_labelme(src / "p.json", LabelmeFile("p.png", 50, 100, [
        Shape("leaf", [[10, 10], [30, 5], [20, 40]], shape_type="polygon"),
        Shape("dot", [[1, 1]], shape_type="point")]))
    r = export_yolo(src, tmp_path / "y", split=(1.0, 0.0, 0.0))
    assert r.names == ["leaf"] and r.images["train"] == 1
    (row,) = read_labels(tmp_path / "y" / "labels" / "train" / "p.txt")
    assert row == pytest.approx([0, 0.2, 0.45, 0.2, 0.7])
    assert "val: images/train" in (tmp_path / "y" / "data.yaml").read_text()  # no val images: reuse train
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no boxes in any Labelme file"):
        export_yolo(tmp_path / "empty", tmp_path / "y2")


@pytest.mark.parametrize("text,expected", [("0.8,0.1,0.1", (0.8, 0.1, 0.1)), ("1,0,0", (1.0, 0.0, 0.0)),
                                           ("0.5,0.5", None), ("a,b,c", None), ("0.5,0.6,0.1", None),
                                           ("0,0.5,0.5", None)],
                         ids=["default", "all-train", "two", "words", "sum", "no-train"])
def test_parse_split(text: str, expected) -> None:
    if expected is None:
        with pytest.raises(SmartHubError):
            parse_split(text)
    else:
        assert parse_split(text) == expected


@pytest.mark.parametrize("n,split,expected", [(10, (0.8, 0.1, 0.1), (8, 1, 1)), (1, (0.8, 0.1, 0.1), (1, 0, 0)),
                                              (2, (0.8, 0.1, 0.1), (1, 1, 0)), (3, (0.8, 0.1, 0.1), (1, 1, 1)),
                                              (5, (1.0, 0.0, 0.0), (5, 0, 0))],
                         ids=["ten", "one", "two", "three", "train-only"])
def test_split_counts(n: int, split, expected) -> None:
    assert split_counts(n, split) == expected


def test_cli_export_yolo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = annotated_folder(tmp_path / "lm", n=4)
    assert main(["export-yolo", str(src), str(tmp_path / "y"), "--split", "0.5,0.5,0", "--seed", "3"]) == 0
    assert "4 images (train 2, val 2, test 0; 0 without boxes kept as background)" in capsys.readouterr().out


# ---------------------------------------------------------------- Ultralytics end to end


@pytest.fixture
def ultralytics_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cfg = tmp_path / "ultra_cfg"
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    if "ultralytics" not in sys.modules:  # first import in this process: keep its settings.json in tmp
        monkeypatch.setenv("YOLO_CONFIG_DIR", str(cfg))
    pytest.importorskip("ultralytics")
    return cfg


@pytest.mark.slow
def test_ultralytics_train_on_export_then_annotate(tmp_path: Path, ultralytics_home: Path) -> None:
    """YOLO('yolov8n.yaml') trained 1 epoch (imgsz 64) on our YOLO export, saved, then used by annotate."""
    from smarthub.annotate.detect import DetectorOptions, import_ultralytics, load_detector

    YOLO = import_ultralytics(ultralytics_home)
    src = annotated_folder(tmp_path / "lm", n=8)
    export = export_yolo(src, tmp_path / "yolo", split=(0.75, 0.25, 0.0))
    model = YOLO("yolov8n.yaml")
    model.train(data=str(export.data_yaml), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False,
                val=False, amp=False, project=str(tmp_path / "runs"), name="t", exist_ok=True, verbose=False)
    best = tmp_path / "runs" / "t" / "weights" / "best.pt"
    assert best.exists()
    det = load_detector(best, DetectorOptions(conf=0.0, max_det=5, imgsz=64, label_map={"red": "apple"}))
    assert det.class_names == ["blue", "red"] and type(det).__name__ == "YoloDetector"
    batch = tmp_path / "batch"
    batch.mkdir()
    scene().save(batch / "new.jpg")
    write_oriented(batch / "rot.jpg", scene(), 8)
    report = annotate_folder(batch, det)
    assert len(report.written) == 2 and not report.failed
    lf = load_labelme(batch / "rot.json")
    assert (lf.image_width, lf.image_height) == (96, 64) and lf.stamp["model"] == "best.pt"
    assert all(s.label in {"apple", "blue"} and len(s.points) == 2 for s in lf.shapes)
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    print(f"\nultralytics config dir: {USER_CONFIG_DIR}; sync={SETTINGS['sync']}")
    with pytest.raises(SmartHubError, match=r"--label-map names unknown classes \['person'\]"):
        load_detector(best, DetectorOptions(label_map={"person": "x"}))

    # the same weights exported to ONNX (what users deploy) give the same boxes through onnxruntime
    onnx_path = Path(YOLO(str(best)).export(format="onnx", imgsz=64, simplify=False, verbose=False))
    assert onnx_path.suffix == ".onnx" and onnx_path.is_file()
    options = DetectorOptions(conf=0.0, max_det=5, imgsz=64)
    from_pt = load_detector(best, options).detect([Image.open(batch / "new.jpg").convert("RGB")])[0]
    from_onnx_det = load_detector(onnx_path, options)
    assert from_onnx_det.class_names == ["blue", "red"] and type(from_onnx_det).__name__ == "YoloDetector"
    from_onnx = from_onnx_det.detect([Image.open(batch / "new.jpg").convert("RGB")])[0]
    assert len(from_onnx) == len(from_pt) > 0
    import numpy as np

    assert np.allclose(from_onnx.xyxy, from_pt.xyxy, atol=1.0) and np.allclose(from_onnx.confidence,
                                                                                 from_pt.confidence, atol=1e-2)
    # the CLI on the .onnx in a new process: nothing lands in $HOME (onnxruntime's device id, ultralytics'
    # settings and matplotlib's font list stay in the batch's .smarthub folder)
    onnx_batch, home = tmp_path / "onnx_batch", tmp_path / "home"
    onnx_batch.mkdir()
    home.mkdir()
    scene().save(onnx_batch / "new.jpg")
    env = {k: v for k, v in os.environ.items()
           if k not in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    proc = subprocess.run([sys.executable, "-m", "smarthub", "annotate", str(onnx_batch), "--model", str(onnx_path),
                           "--conf", "0.0", "--imgsz", "64"], capture_output=True, text=True, timeout=600,
                          env={**env, "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert load_labelme(onnx_batch / "new.json").stamp["model"] == onnx_path.name
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []


@pytest.mark.slow
def test_ultralytics_classifier_weights_are_not_a_detector(tmp_path: Path, ultralytics_home: Path) -> None:
    from smarthub.annotate.detect import import_ultralytics, load_detector

    YOLO = import_ultralytics(ultralytics_home)
    cls_model = YOLO("yolov8n-cls.yaml")
    cls_model.save(str(tmp_path / "cls.pt"))
    with pytest.raises(ModelError, match="not a detector"):
        load_detector(tmp_path / "cls.pt")


# ---------------------------------------------------------------- import-yolo: contained and strict

SECRET = "root:x:0:0:root:/root:/bin/bash"


def yolo_dataset(root: Path, lines: list[str], *, yaml: str = "names: [fish, bird]\n") -> Path:
    """A real YOLO dataset: one 100 x 50 image with the label lines given."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.new("RGB", (100, 50), (90, 120, 60)).save(root / "images" / "train" / "a.png")
    (root / "labels" / "train" / "a.txt").write_text("".join(x + "\n" for x in lines))
    (root / "data.yaml").write_text(yaml)
    return root


def _link_label_out(root: Path) -> None:
    secret = root.parent / "etc" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET + "\n")
    (root / "labels" / "train" / "a.txt").unlink()
    (root / "labels" / "train" / "a.txt").symlink_to(secret)


def _link_image_out(root: Path) -> None:
    outside = root.parent / "private.png"
    Image.new("RGB", (10, 10), (1, 2, 3)).save(outside)
    (root / "images" / "train" / "b.png").symlink_to(outside)


def _link_yaml_out(root: Path) -> None:
    outside = root.parent / "elsewhere.yaml"
    outside.write_text("names: [" + SECRET + "]\n")
    (root / "data.yaml").unlink()
    (root / "data.yaml").symlink_to(outside)


def _link_inside(root: Path) -> None:
    (root / "images" / "train" / "b.png").symlink_to(root / "images" / "train" / "a.png")
    (root / "labels" / "train" / "b.txt").symlink_to(root / "labels" / "train" / "a.txt")


def _not_utf8(root: Path) -> None:
    (root / "labels" / "train" / "a.txt").write_bytes(b"0 0.5 0.5 \xff\xfe 0.2\n")


GOOD = "0 0.5 0.5 0.2 0.4"
IMPORT_ROWS = [
    # (label lines, yaml, spoil, expected boxes [(label, xyxy)] or the error it must raise, converted lines)
    ([GOOD], None, None, [("fish", [40.0, 15.0, 60.0, 35.0])], 0),
    ([GOOD, "", "1 0.1 0.2 0.5 0.2 0.3 0.6"], None, None,
     [("fish", [40.0, 15.0, 60.0, 35.0]), ("bird", [10.0, 10.0, 50.0, 30.0])], 1),
    (["1 0.1 0.2 0.5 0.2 0.3 0.6 0.2 0.9"], None, None, [("bird", [10.0, 10.0, 50.0, 45.0])], 1),
    ([GOOD], None, _link_inside, [("fish", [40.0, 15.0, 60.0, 35.0])] * 2, 0),
    (["0 nan nan 0.5 0.5"], None, None, r"a\.txt:1: field 2 is not a finite number \(NaN or infinity\)", 0),
    ([GOOD, "0 0.5 0.5 inf 0.2"], None, None, r"a\.txt:2: field 4 is not a finite number", 0),
    (["0 0.5 0.5 1.5 0.2"], None, None, r"a\.txt:1: field 4 is 1\.5, outside \[0, 1\]", 0),
    (["0 0.5 0.5 -0.1 0.2"], None, None, r"a\.txt:1: field 4 is -0\.1, outside \[0, 1\]", 0),
    (["0 0.5 0.5 0 0.2"], None, None, r"a\.txt:1: the box has no area \(width 0, height 0\.2\)", 0),
    (["0 0.5 0.5 0.2"], None, None, r"a\.txt:1: 4 fields; a YOLO line is 'class cx cy w h'", 0),
    (["0 0.1 0.2 0.5 0.2 0.3"], None, None, r"a\.txt:1: 6 fields", 0),
    (["1 0.1 0.2 0.5 0.2 0.9 0.2"], None, None, r"a\.txt:1: the polygon has no area", 0),
    (["0.5 0.5 0.5 0.2 0.2"], None, None, r"a\.txt:1: the class id \(field 1\) is not a whole number", 0),
    (["7 0.5 0.5 0.2 0.2"], None, None, r"a\.txt:1: class id 7 is not in data\.yaml \(2 classes\)", 0),
    ([GOOD], None, _not_utf8, r"a\.txt: not UTF-8 text", 0),
    ([GOOD], None, _link_label_out, r"a\.txt: the label file is a link to a file outside .*; copy the file", 0),
    ([GOOD], None, _link_image_out, r"b\.png: the image is a link to a file outside", 0),
    ([GOOD], None, _link_yaml_out, r"data\.yaml: the data\.yaml is a link to a file outside", 0),
    ([GOOD], "names: [fish, bird\nnc: 2\n  bad: [\n", None,
     r"data\.yaml: not valid YAML \(line \d+, column \d+: .+\)$", 0),
]


@pytest.mark.parametrize("lines,yaml,spoil,expected,converted", IMPORT_ROWS, ids=[
    "box", "polygon-beside-box", "polygon-4-points", "links-inside", "nan", "inf", "above-1", "negative",
    "zero-width", "4-fields", "6-fields", "flat-polygon", "float-class", "unknown-class", "not-utf8",
    "label-link-to-passwd", "image-link-out", "yaml-link-out", "multiline-yaml-error"])
def test_import_yolo_table(tmp_path: Path, capsys: pytest.CaptureFixture[str], lines, yaml, spoil, expected,
                           converted: int) -> None:
    src = yolo_dataset(tmp_path / "yolo", lines, **({"yaml": yaml} if yaml else {}))
    if spoil is not None:
        spoil(src)
    code = main(["import-yolo", str(src), str(tmp_path / "out")])
    out, err = capsys.readouterr()
    if isinstance(expected, str):
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        assert __import__("re").search(expected, err.strip()), err
        assert SECRET not in err and "root:x" not in err  # a file's content never shows in an error
        assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        return
    assert code == 0, err
    got = [(s.label, s.points[0] + s.points[1]) for p in sorted((tmp_path / "out").rglob("*.json"))
           for s in load_labelme(p).shapes]
    assert got == expected
    said = [line for line in out.splitlines() if "segmentation" in line]
    assert said == ([f"{converted} segmentation (polygon) lines converted to their polygon's bounding box"]
                    if converted else [])
