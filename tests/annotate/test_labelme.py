"""Labelme codec: validation errors name file and shape, round trips keep unknown keys, labelme 6.3.1 opens our files."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from smarthub.annotate.detect import Detections
from smarthub.errors import AnnotationError
from smarthub.annotate.labelme import (LabelmeFile, Shape, detections_to_labelme, edit_state, labelme_to_dict, load_labelme,
                              parse_labelme, relative_image_path, save_labelme, shapes_hash)

GOOD = {"version": "5.5.0", "flags": {}, "imagePath": "a.jpg", "imageData": None, "imageHeight": 48,
        "imageWidth": 64, "shapes": [{"label": "cat", "points": [[1, 2], [30.5, 40]], "group_id": None,
                                      "description": "", "shape_type": "rectangle", "flags": {}, "mask": None}]}


def _mut(fn):
    d = copy.deepcopy(GOOD)
    fn(d)
    return d


BROKEN = [
    ("not-object", [1, 2], "must be a JSON object"),
    ("no-shapes", _mut(lambda d: d.pop("shapes")), "missing required key 'shapes'"),
    ("no-height", _mut(lambda d: d.pop("imageHeight")), "missing required key 'imageHeight'"),
    ("zero-width", _mut(lambda d: d.update(imageWidth=0)), "'imageWidth' must be a positive integer"),
    ("bool-height", _mut(lambda d: d.update(imageHeight=True)), "'imageHeight' must be a positive integer"),
    ("empty-path", _mut(lambda d: d.update(imagePath="")), "'imagePath'"),
    ("shapes-dict", _mut(lambda d: d.update(shapes={})), "'shapes' must be a list"),
    ("shape-not-dict", _mut(lambda d: d["shapes"].append("x")), r"shapes\[1\]: must be an object"),
    ("empty-label", _mut(lambda d: d["shapes"][0].update(label="")), r"shapes\[0\]: 'label'"),
    ("rect-3-points", _mut(lambda d: d["shapes"][0]["points"].append([3, 3])),
     r"shapes\[0\]: a rectangle needs exactly 2 points, got 3"),
    ("nan-point", _mut(lambda d: d["shapes"][0].update(points=[[0, float("nan")], [1, 1]])), r"shapes\[0\]: 'points'"),
    ("str-point", _mut(lambda d: d["shapes"][0].update(points=[["0", 1], [1, 1]])), r"shapes\[0\]: 'points'"),
    ("polygon-2", _mut(lambda d: d["shapes"][0].update(shape_type="polygon")), "a polygon needs at least 3"),
    ("bad-type", _mut(lambda d: d["shapes"][0].update(shape_type="blob")), "unknown shape_type 'blob'"),
    ("group-str", _mut(lambda d: d["shapes"][0].update(group_id="1")), "'group_id' must be an integer"),
    ("flags-int", _mut(lambda d: d["shapes"][0].update(flags={"a": 1})), "'flags' must map names to true/false"),
    ("imagedata-int", _mut(lambda d: d.update(imageData=3)), "'imageData'"),
]


@pytest.mark.parametrize("obj,match", [(o, m) for _, o, m in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_files_are_refused_naming_file_and_shape(tmp_path: Path, obj, match: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(AnnotationError, match=match) as info:
        load_labelme(path)
    assert str(path) in str(info.value)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{nope")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        load_labelme(tmp_path / "x.json")
    with pytest.raises(AnnotationError, match="not found"):
        load_labelme(tmp_path / "missing.json")


def test_unknown_keys_survive_a_round_trip(tmp_path: Path) -> None:
    obj = _mut(lambda d: (d.update(custom={"a": [1, 2]}, otherTool="x"),
                          d["shapes"][0].update(score=0.5, attributes={"occluded": True})))
    path = tmp_path / "a.json"
    path.write_text(json.dumps(obj))
    lf = load_labelme(path)
    assert lf.extra == {"custom": {"a": [1, 2]}, "otherTool": "x"}
    assert lf.shapes[0].extra == {"score": 0.5, "attributes": {"occluded": True}}
    save_labelme(path, lf)
    assert json.loads(path.read_text()) == obj


# ---- property tests: dataclass → JSON → dataclass is the identity

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), finite, st.text(max_size=8))
extra_keys = st.dictionaries(st.text(min_size=1, max_size=8).filter(
    lambda k: k not in {"label", "points", "group_id", "description", "shape_type", "flags", "mask"}),
    json_scalar, max_size=3)


@st.composite
def shapes(draw) -> Shape:
    kind = draw(st.sampled_from(["rectangle", "polygon", "point", "linestrip"]))
    n = {"rectangle": 2, "point": 1}.get(kind) or draw(st.integers(3, 6))
    pts = [[draw(finite), draw(finite)] for _ in range(n)]
    return Shape(label=draw(st.text(min_size=1, max_size=12).filter(str.strip)), points=pts, shape_type=kind,
                 group_id=draw(st.one_of(st.none(), st.integers(0, 99))), description=draw(st.text(max_size=10)),
                 flags=draw(st.dictionaries(st.text(max_size=5), st.booleans(), max_size=2)), extra=draw(extra_keys))


@st.composite
def files(draw) -> LabelmeFile:
    top = draw(st.dictionaries(st.text(min_size=1, max_size=8).filter(
        lambda k: k not in {"version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"}),
        json_scalar, max_size=3))
    return LabelmeFile(image_path=draw(st.text(min_size=1, max_size=20)), image_height=draw(st.integers(1, 20000)),
                       image_width=draw(st.integers(1, 20000)), shapes=draw(st.lists(shapes(), max_size=5)),
                       flags=draw(st.dictionaries(st.text(max_size=5), st.booleans(), max_size=2)), extra=top)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files())
def test_codec_round_trip_property(lf: LabelmeFile) -> None:
    text = json.dumps(labelme_to_dict(lf))
    back = parse_labelme(json.loads(text), source="mem")
    assert back == lf
    assert shapes_hash(back.shapes) == shapes_hash(lf.shapes)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 500), st.integers(1, 500),
       st.lists(st.tuples(finite, finite, finite, finite), max_size=8))
def test_detections_become_clipped_two_point_rectangles(w: int, h: int, boxes) -> None:
    xyxy = np.array([[min(a, c), min(b, d), max(a, c), max(b, d)] for a, b, c, d in boxes]).reshape(-1, 4)
    det = Detections(xyxy, np.full(len(xyxy), 0.5), np.zeros(len(xyxy), int), ["x"] * len(xyxy))
    lf = detections_to_labelme(det, image_path="i.jpg", width=w, height=h)
    for s in lf.shapes:
        (x1, y1), (x2, y2) = s.points
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert s.shape_type == "rectangle" and s.extra["score"] == 0.5
    assert edit_state(parse_labelme(json.loads(json.dumps(labelme_to_dict(lf))))) == "ours"


def test_edit_state_tells_ours_from_edited_and_foreign() -> None:
    det = Detections(np.array([[1.0, 1, 10, 10]]), np.array([0.9]), np.array([0]), ["cat"])
    lf = detections_to_labelme(det, image_path="a.jpg", width=20, height=20, provenance={"model": "m"})
    assert edit_state(lf) == "ours"
    d = labelme_to_dict(lf)
    d["shapes"][0]["points"] = [[1, 1], [10, 10]]  # ints instead of floats, same box: still ours
    d["shapes"][0].pop("score")
    assert edit_state(parse_labelme(d)) == "ours"
    d["shapes"][0]["points"][1] = [12, 10]
    assert edit_state(parse_labelme(d)) == "edited"
    d["shapes"][0]["points"][1] = [10, 10]
    d["shapes"][0]["label"] = "dog"
    assert edit_state(parse_labelme(d)) == "edited"
    d.pop("smarthub")
    assert edit_state(parse_labelme(d)) == "foreign"


def test_save_is_atomic_when_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(GOOD))
    lf = load_labelme(path)
    lf.shapes[0].label = "changed"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(AnnotationError, match="No space left"):
        save_labelme(path, lf)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == GOOD
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_relative_image_path(tmp_path: Path) -> None:
    assert relative_image_path(tmp_path / "out" / "sub" / "a.json", tmp_path / "img" / "sub" / "a.jpg") == \
        "../../img/sub/a.jpg"
    assert relative_image_path(tmp_path / "a.json", tmp_path / "a.jpg") == "a.jpg"


# ---- labelme 6.3.1 itself opens what we write (it also checks imageHeight/Width against the EXIF-corrected image)

INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
           7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def write_oriented(path: Path, upright: Image.Image, orientation: int) -> Path:
    """Store `upright` rotated so that applying EXIF `orientation` gives `upright` back."""
    stored = upright if INVERSE[orientation] is None else upright.transpose(INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


def _labelme_label_file():
    pytest.importorskip("labelme")
    from labelme import LabelFile

    return LabelFile


@pytest.mark.parametrize("orientation", range(1, 9), ids=[f"exif{o}" for o in range(1, 9)])
@pytest.mark.parametrize("embed", [False, True], ids=["path", "embedded"])
def test_labelme_opens_our_files_for_every_orientation(tmp_path: Path, orientation: int, embed: bool) -> None:
    from test_detect import SquareDetector

    from smarthub.annotate.preannotate import annotate_folder

    LabelFile = _labelme_label_file()
    upright = Image.new("RGB", (64, 40), (120, 120, 120))
    upright.paste((220, 30, 30), (8, 4, 24, 20))
    (tmp_path / "imgs").mkdir()
    write_oriented(tmp_path / "imgs" / "a.jpg", upright, orientation)
    report = annotate_folder(tmp_path / "imgs", SquareDetector(), embed_image=embed)
    assert not report.failed and len(report.written) == 1
    lf = LabelFile(str(report.written[0]))  # raises on any size mismatch or malformed shape
    assert len(lf.shapes) == 1 and lf.shapes[0]["shape_type"] == "rectangle"
    assert lf.shapes[0]["other_data"]["score"] > 0.9
    ours = load_labelme(report.written[0])
    assert (ours.image_width, ours.image_height) == (64, 40)
    assert np.allclose(ours.shapes[0].xyxy, (8, 4, 24, 20), atol=1)


@pytest.mark.parametrize("size,colour", [((1, 1), (0, 0, 0)), ((10000, 8000), (90, 90, 90))], ids=["1x1", "10000x8000"])
def test_labelme_opens_files_for_tiny_and_huge_images_with_no_detections(tmp_path: Path, size, colour) -> None:
    from test_detect import SquareDetector

    from smarthub.annotate.preannotate import annotate_folder

    LabelFile = _labelme_label_file()
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", size, colour).save(tmp_path / "imgs" / "a.jpg", quality=50)
    report = annotate_folder(tmp_path / "imgs", SquareDetector())
    assert not report.failed and report.boxes == 0
    lf = LabelFile(str(report.written[0]))
    assert lf.shapes == []
    raw = json.loads(report.written[0].read_text())
    assert (raw["imageWidth"], raw["imageHeight"]) == size and raw["imageData"] is None


# ---------------------------------------------------------------- shapes that are not boxes are reported


def _shape(label: str, kind: str, points: list[list[float]]) -> Shape:
    return Shape(label=label, points=points, shape_type=kind)


@pytest.mark.parametrize("kinds,boxes,boxed,dropped", [
    (["rectangle"], 1, 0, {}),
    (["polygon", "rectangle"], 2, 1, {}),
    (["point", "line", "circle"], 0, 0, {"circle": 1, "line": 1, "point": 1}),
    (["polygon", "polygon", "point"], 2, 2, {"point": 1}),
], ids=["rectangle", "polygon-boxed", "all-dropped", "mixed"])
def test_non_box_shapes_are_counted(kinds, boxes: int, boxed: int, dropped: dict) -> None:
    from smarthub.annotate.labelme import non_box_shapes, shape_boxes

    pts = {"rectangle": [[1, 1], [9, 9]], "polygon": [[1, 1], [9, 2], [5, 9]], "point": [[3, 3]],
           "line": [[1, 1], [5, 5]], "circle": [[5, 5], [7, 7]]}
    lf = LabelmeFile("a.jpg", 20, 20, [_shape("cat", k, pts[k]) for k in kinds])
    assert len(shape_boxes(lf)) == boxes
    assert non_box_shapes(lf) == (boxed, dropped)


def test_a_folder_scan_reports_polygons_boxed_and_points_dropped(tmp_path: Path) -> None:
    from smarthub.annotate.detset import scan_labelme_dir

    for name in ("a", "b", "c"):
        Image.new("RGB", (20, 20)).save(tmp_path / f"{name}.jpg")
    save_labelme(tmp_path / "a.json", LabelmeFile("a.jpg", 20, 20, [
        _shape("cat", "polygon", [[1, 1], [9, 2], [5, 9]]), _shape("cat", "point", [[3, 3]])]))
    save_labelme(tmp_path / "b.json", LabelmeFile("b.jpg", 20, 20, [
        _shape("dog", "polygon", [[2, 2], [12, 2], [7, 12]]), _shape("dog", "line", [[1, 1], [5, 5]])]))
    save_labelme(tmp_path / "c.json", LabelmeFile("c.jpg", 20, 20, [_shape("dog", "rectangle", [[1, 1], [9, 9]])]))
    ds = scan_labelme_dir(tmp_path)
    assert sum(len(it.boxes) for it in ds.items) == 3
    assert ds.items[0].boxes == [("cat", (1, 1, 9, 9))]
    assert len(ds.notes) == 2 and all("\n" not in n for n in ds.notes)
    assert ds.notes[0].startswith("2 polygons in 2 Labelme files read as their bounding box (e.g. ")
    assert ds.notes[1].startswith("1 line, 1 point shapes in 2 Labelme files dropped: a detector learns boxes")
    save_labelme(tmp_path / "a.json", LabelmeFile("a.jpg", 20, 20, [_shape("cat", "rectangle", [[1, 1], [9, 9]])]))
    save_labelme(tmp_path / "b.json", LabelmeFile("b.jpg", 20, 20, []))
    assert scan_labelme_dir(tmp_path).notes == []  # nothing converted: nothing said


def test_export_reports_converted_shapes(tmp_path: Path) -> None:
    from smarthub.annotate.export import export_dataset

    src = tmp_path / "lm"
    src.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20)).save(src / f"i{i}.jpg")
        save_labelme(src / f"i{i}.json", LabelmeFile(f"i{i}.jpg", 20, 20, [
            _shape("cat", "polygon" if i == 0 else "rectangle", [[1, 1], [9, 2], [5, 9]] if i == 0 else [[1, 1], [9, 9]]),
            *([_shape("cat", "point", [[3, 3]])] if i == 1 else [])]))
    summary = export_dataset(src, tmp_path / "out", split=(0.5, 0.5, 0.0)).summary()
    assert "1 polygon in 1 Labelme file read as its bounding box" in summary
    assert "1 point shape in 1 Labelme file dropped" in summary
