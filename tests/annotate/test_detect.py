"""Detections record, detector options and backends (torchvision checkpoint, COCO by name, bad weights)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from smarthub.annotate.detect import Detections, Detector, DetectorOptions

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


class SquareDetector(Detector):
    """Test double with a real algorithm: one box per saturated colour, the bbox of its pixels.

    A pixel belongs to colour c when its c channel is > 150 and the other two are < 110.
    Confidence is the fraction of the box the colour fills.
    """

    name = "square-detector"
    class_names = list(COLOURS)

    def __init__(self, options: DetectorOptions | None = None) -> None:
        super().__init__(options or DetectorOptions(conf=0.1))
        self.calls = 0

    def forward(self, images: Sequence[Image.Image]) -> list[Detections]:
        out = []
        for im in images:
            self.calls += 1
            a = np.asarray(im.convert("RGB")).astype(np.int16)
            boxes, conf, cls = [], [], []
            for c in range(3):
                others = [k for k in range(3) if k != c]
                mask = (a[..., c] > 150) & (a[..., others[0]] < 110) & (a[..., others[1]] < 110)
                if mask.sum() < 4:
                    continue
                ys, xs = np.nonzero(mask)
                x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                boxes.append([x1, y1, x2, y2])
                conf.append(mask.sum() / ((x2 - x1) * (y2 - y1)))
                cls.append(c)
            out.append(Detections(np.array(boxes, dtype=float).reshape(-1, 4), np.array(conf), np.array(cls, dtype=int),
                                  [self.class_names[c] for c in cls]))
        return out


# ---------------------------------------------------------------- Detections record

import pickle  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from smarthub.annotate.detect import (build_torchvision_model, load_detector, parse_label_map,  # noqa: E402
                             save_detector_checkpoint)
from smarthub.errors import ModelError, SmartHubError  # noqa: E402


def _det(n: int = 3) -> Detections:
    xyxy = np.array([[i, i, i + 10, i + 5] for i in range(n)], dtype=float)
    return Detections(xyxy, np.linspace(0.9, 0.1, n), np.arange(n), [f"c{i}" for i in range(n)],
                      {"extra": np.arange(n) * 2})


DETECTIONS_CASES = [
    ("ok", dict(xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[0], labels=["a"]), None),
    ("empty", dict(xyxy=np.zeros((0, 4)), confidence=[], class_id=[], labels=[]), None),
    ("bad-shape", dict(xyxy=[[0, 0, 1]], confidence=[0.5], class_id=[0], labels=["a"]), "shape"),
    ("x1>x2", dict(xyxy=[[5, 0, 1, 1]], confidence=[0.5], class_id=[0], labels=["a"]), "x1 <= x2"),
    ("nan", dict(xyxy=[[0, 0, np.nan, 1]], confidence=[0.5], class_id=[0], labels=["a"]), "finite"),
    ("inf-conf", dict(xyxy=[[0, 0, 1, 1]], confidence=[np.inf], class_id=[0], labels=["a"]), "finite"),
    ("labels-short", dict(xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[0], labels=[]), "labels"),
    ("float-class", dict(xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[0.5], labels=["a"]), "integers"),
    ("data-length", dict(xyxy=[[0, 0, 1, 1]], confidence=[0.5], class_id=[0], labels=["a"], data={"k": [1, 2]}),
     r"data\['k'\]"),
]


@pytest.mark.parametrize("kwargs,match", [c[1:] for c in DETECTIONS_CASES], ids=[c[0] for c in DETECTIONS_CASES])
def test_detections_are_validated(kwargs, match) -> None:
    if match is None:
        assert len(Detections(**kwargs)) == len(kwargs["labels"])
    else:
        with pytest.raises(SmartHubError, match=match):
            Detections(**kwargs)


def test_detections_slice_by_mask_index_and_scale() -> None:
    d = _det(4)
    m = d[d.confidence > 0.5]
    assert len(m) == 2 and m.labels == ["c0", "c1"] and list(m.data["extra"]) == [0, 2]
    r = d[np.array([3, 0])]
    assert r.labels == ["c3", "c0"] and r.class_id.tolist() == [3, 0]
    assert len(d[1]) == 1 and len(Detections.empty()) == 0 and len(Detections.empty()[np.zeros(0, bool)]) == 0
    s = d.scaled(2.0, 0.5)
    assert s.xyxy[1].tolist() == [2, 0.5, 22, 3]


def test_postprocess_filters_and_label_map() -> None:
    det = SquareDetector(DetectorOptions(conf=0.3, max_det=1, label_map={"red": "worker"}))
    raw = Detections(np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], float), np.array([0.2, 0.9, 0.5]),
                     np.array([0, 0, 2]), ["red", "red", "blue"])
    out = det.postprocess(raw)
    assert out.labels == ["worker"] and out.confidence.tolist() == [0.9]
    det = SquareDetector(DetectorOptions(conf=0.0, classes=["blue"]))
    assert det.postprocess(raw).labels == ["blue"]


def test_one_box_per_object_whatever_its_label() -> None:
    """A fish boxed twice, as fish 0.4 and as fruit 0.6 (IoU 0.9): one box stays, the better; a worker and the
    hardhat inside it (IoU 0.25) both stay; --nms-per-class keeps all three."""
    raw = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 9], [20, 0, 40, 20], [25, 0, 35, 10]], float),
                     np.array([0.4, 0.6, 0.8, 0.7]), np.array([0, 1, 2, 3]), ["fish", "fruit", "worker", "hardhat"])
    out = SquareDetector(DetectorOptions(conf=0.1)).postprocess(raw)
    assert out.labels == ["worker", "hardhat", "fruit"]
    out = SquareDetector(DetectorOptions(conf=0.1, one_box_per_object=False)).postprocess(raw)
    assert out.labels == ["worker", "hardhat", "fruit", "fish"]
    assert SquareDetector(DetectorOptions()).provenance()["nms"] == "one box per object"


@pytest.mark.parametrize("text,expected", [("person=worker, car=vehicle", {"person": "worker", "car": "vehicle"}),
                                           ("", {}), ("a=b,", {"a": "b"}), ("oops", None), ("=x", None)],
                         ids=["two", "empty", "trailing-comma", "no-equals", "no-name"])
def test_parse_label_map(text, expected) -> None:
    if expected is None:
        with pytest.raises(SmartHubError, match="NAME=LABEL"):
            parse_label_map(text)
    else:
        assert parse_label_map(text) == expected


@pytest.mark.parametrize("kwargs", [dict(conf=1.5), dict(iou=0), dict(max_det=0), dict(batch=0), dict(imgsz=8)],
                         ids=["conf", "iou", "max-det", "batch", "imgsz"])
def test_bad_options(kwargs) -> None:
    with pytest.raises(SmartHubError):
        DetectorOptions(**kwargs)


# ---------------------------------------------------------------- loading detectors

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"
SMALL = {"min_size": 64, "max_size": 64}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = build_torchvision_model(ARCH, 3, **SMALL)
    return save_detector_checkpoint(tmp_path_factory.mktemp("ckpt") / "det.pt", model, arch=ARCH,
                                    labels=["__background__", "red", "blue"], model_kwargs=SMALL)


def _weights_file(kind: str, tmp_path: Path) -> Path:
    import torch

    p = tmp_path / f"{kind}.pt"
    if kind == "random-bytes":
        p.write_bytes(b"\x00garbage" * 100)
    elif kind == "classifier-state-dict":
        from helpers import mobilenet_weights_source

        return mobilenet_weights_source()
    elif kind == "pickled-object":
        p.write_bytes(pickle.dumps({"learner": Path("export.pkl")}))  # like a pickled fastai Learner
    elif kind == "tensor":
        torch.save(torch.zeros(3), p)
    elif kind == "folder":
        p.mkdir()
    elif kind == "wrong-shapes":
        ckpt = {"format": "smarthub-detector", "arch": ARCH, "num_classes": 3, "labels": ["__background__", "a", "b"],
                "state_dict": {"nope": torch.zeros(1)}}
        torch.save(ckpt, p)
    elif kind == "labels-mismatch":
        torch.save({"arch": ARCH, "num_classes": 5, "labels": ["__background__"], "state_dict": {}}, p)
    return p


NOT_DETECTORS = [
    ("random-bytes", "not a detector weights file torch can read"),
    ("classifier-state-dict", "is not a detector: it holds a plain state_dict"),
    ("pickled-object", "not a detector weights file torch can read"),
    ("tensor", "is not a detector: it holds Tensor"),
    ("folder", "is a folder"),
    ("wrong-shapes", "weights do not fit"),
    ("labels-mismatch", "1 labels for num_classes=5"),
]


@pytest.mark.parametrize("kind,match", NOT_DETECTORS, ids=[k for k, _ in NOT_DETECTORS])
def test_a_weights_file_that_is_not_a_detector(tmp_path: Path, kind: str, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        load_detector(_weights_file(kind, tmp_path))


def test_unknown_spec_and_offline_coco_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found: give a weights file or one of fasterrcnn"):
        load_detector("yolo_v99")
    with pytest.raises(ModelError) as info:
        load_detector("ssdlite320_mobilenet_v3_large")
    msg = str(info.value)
    assert "\n" not in msg and "ssdlite320_mobilenet_v3_large_coco-a79551df.pth" in msg
    assert "smarthub weights add FILE" in msg


def test_checkpoint_round_trip_and_label_map_checks(checkpoint: Path) -> None:
    det = load_detector(checkpoint, DetectorOptions(conf=0.0, max_det=5, label_map={"red": "apple"}))
    assert det.class_names == ["__background__", "red", "blue"] and det.name == "det.pt"
    out = det.detect([Image.new("RGB", (64, 48), (120, 120, 120)), Image.new("RGB", (20, 30), (0, 0, 0))])
    assert len(out) == 2 and all(len(o) <= 5 for o in out)
    assert all(lab in {"apple", "blue"} for o in out for lab in o.labels)
    assert np.all(out[1].xyxy[:, 2] <= 20.001) and np.all(out[1].xyxy[:, 3] <= 30.001)
    with pytest.raises(SmartHubError, match=r"--label-map names unknown classes \['person'\].*known: red, blue"):
        load_detector(checkpoint, DetectorOptions(label_map={"person": "worker"}))
    with pytest.raises(SmartHubError, match=r"--classes names unknown classes \['cat'\]"):
        load_detector(checkpoint, DetectorOptions(classes=["cat"]))


def test_missing_ultralytics_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # what an install without the extra looks like
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelError, match=r"pip install smarthub\[yolo\]"):
        load_detector(tmp_path / "m.onnx")


def test_importing_core_modules_stays_light() -> None:
    import subprocess

    code = ("import sys, smarthub.annotate.detect, smarthub.annotate.labelme, smarthub.annotate.preannotate, smarthub.annotate.evaluate, "
            "smarthub.annotate.export, smarthub.cli.annotate; "
            "heavy = [m for m in ('torch', 'torchvision', 'fastai', 'ultralytics', 'gradio', 'faster_coco_eval') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
