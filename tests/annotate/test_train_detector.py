"""train-detector for real: a tiny YOLO (a YOLOv8n head on the cached ImageNet MobileNetV2, the default start
here) and a tiny torchvision detector trained on scenes of the shipped drawings; the start chooser, the run
folder, tuned thresholds used by annotate, one line per epoch, Stop, silver, bad input."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_annotate import BLUE, RED, scene
from test_detect import SquareDetector
from test_export import files_under, scenes

from smarthub.annotate.labelme import load_labelme, save_labelme
from smarthub.annotate.preannotate import annotate_folder
from smarthub.annotate.starts import choose_start
from smarthub.annotate.train_detector import (DEFAULT_BUDGET, DEFAULT_PATIENCE, DetectorTrainOptions,
                                              TrainingStopped, latest_run, list_runs, train_detector)
from smarthub.cli import main
from smarthub.errors import ModelError, SmartHubError

pytestmark = pytest.mark.slow
TINY = dict(epochs=2, imgsz=64, batch=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(labelme dir, models dir, run folder) of one real Ultralytics training."""
    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")
    root = tmp_path_factory.mktemp("trained")
    lm = scenes(root / "lm", 16)
    Image.new("RGB", (96, 72), (80, 140, 60)).save(lm / "field.jpg")  # a background negative
    run = train_detector(lm, root / "models", DetectorTrainOptions(**TINY, name="first"))  # model="auto"
    return lm, root / "models", run.run_dir


def test_the_run_folder(trained) -> None:
    lm, models, run_dir = trained
    assert sorted(p.name for p in run_dir.iterdir()) == [".smarthub-models.jsonl", "epochs.csv", "pr_curves.png",
                                                         "run.json", "split.json", "train.log", "weights.pt"]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["backend"] == "ultralytics" and run["names"] == ["fish", "fruit"] and run["imgsz"] == 64
    # the start: TORCH_HOME holds MobileNetV2's ImageNet weights only (conftest), so auto picks them
    assert run["start"] == {"kind": "backbone", "model": "yolov8n neck+head", "weights_file": "mobilenet_v2-b0353104.pth",
                            "backbone": "mobilenet_v2", "backbone_weights": "IMAGENET1K_V1",
                            "neck_from": [{"block": 6, "index": 7, "stride": 8, "channels": 32},
                                          {"block": 13, "index": 14, "stride": 16, "channels": 96},
                                          {"block": 17, "index": 18, "stride": 32, "channels": 320}]}
    assert run["pretrained"] == "ImageNet (mobilenet_v2 backbone)"
    assert run["training"]["epochs"] == 2 and run["training"]["reason"] == "2 epochs as asked"
    log = (run_dir / "train.log").read_text()
    assert "TorchVision" in log and "epochs=2" in log  # Ultralytics' model table and argument dump, kept here
    assert (run_dir / "epochs.csv").read_text().count("\n") == 3  # header and two epochs
    assert run["split"]["counts"]["train"] + run["split"]["counts"]["val"] == 17
    assert sum(run["split"]["backgrounds"].values()) == 1
    for label in ("fish", "fruit"):
        v = run["validation"]["classes"][label]
        assert v["truth"] > 0 and set(v) == {"truth", "ap50", "ap50_95", "precision", "recall"}
        assert 0.0 <= run["thresholds"][label]["conf"] <= 1.0
    # --tune time (default): one threshold for every class, a box under the wrong label priced as a relabel
    assert run["threshold_rule"].startswith("one for every class") and len({t["conf"] for t in run["thresholds"].values()}) == 1
    split = json.loads((run_dir / "split.json").read_text())
    assert split == json.loads((lm / ".smarthub" / "split.json").read_text())  # the run records the split
    assert "field.jpg" in split["assignments"]
    with Image.open(run_dir / "pr_curves.png") as im:
        assert im.format == "PNG" and im.width > 100
    assert latest_run(models) == run_dir and list_runs(models) == [run_dir]


def test_annotate_uses_the_tuned_thresholds_unless_conf_is_given(trained, tmp_path: Path) -> None:
    _, _, run_dir = trained
    tuned = {k: v["conf"] for k, v in json.loads((run_dir / "run.json").read_text())["thresholds"].items()}
    batch = scenes(tmp_path / "batch", 2)
    for p in batch.glob("*.json"):
        p.unlink()
    assert main(["annotate", str(batch), "--model", str(run_dir), "--device", "cpu"]) == 0
    stamp = load_labelme(batch / "scene0000.json").stamp
    assert stamp["model"] == run_dir.name and stamp["class_conf"] == pytest.approx(tuned, abs=1e-4)
    assert main(["annotate", str(batch), "--model", str(run_dir), "--conf", "0.5", "--overwrite"]) == 0
    stamp = load_labelme(batch / "scene0000.json").stamp
    assert stamp["conf"] == 0.5 and "class_conf" not in stamp
    assert main(["annotate", str(batch), "--model", str(run_dir), "--conf", "0.01", "--silver-min-conf", "0.6",
                 "--overwrite"]) == 0
    for p in batch.glob("*.json"):
        lf = load_labelme(p)
        assert lf.stamp["silver_min_conf"] == 0.6 and lf.flags["silver"] == (
            bool(lf.shapes) and all(s.extra["score"] >= 0.6 for s in lf.shapes))
        assert all(s.flags["silver"] == (s.extra["score"] >= 0.6) for s in lf.shapes)


def test_stop_mid_epoch_writes_nothing_and_the_previous_detector_stays(trained) -> None:
    lm, models, run_dir = trained
    before = files_under(models)
    seen = []

    def should_stop() -> bool:
        return len(seen) >= 1  # after the first batch of the first epoch

    with pytest.raises(TrainingStopped, match="training stopped at epoch 1/2: nothing was written, the previous "
                                              "detector stays"):
        train_detector(lm, models, DetectorTrainOptions(**TINY, name="second"), progress=seen.append,
                       should_stop=should_stop)
    after = files_under(models)
    assert [p for p in after if ".cache/" not in p] == [p for p in before if ".cache/" not in p]
    assert latest_run(models) == run_dir


def test_silver_images_go_to_train_only(trained, tmp_path: Path) -> None:
    lm, models, _ = trained
    silver = tmp_path / "silver"
    silver.mkdir()
    for i in range(4):  # the square detector is sure of red (score 1.0) and less of a ragged blue
        im = scene(squares=((RED, (10 + i, 8, 40, 30)), (BLUE, (50, 20, 80, 50))))
        if i % 2:
            im.paste((255, 255, 255), (60, 30, 70, 40))  # a hole in blue: score 0.89 < 0.95
        im.save(silver / f"s{i}.png")
    report = annotate_folder(silver, SquareDetector(), silver_min_conf=0.95)
    assert len(report.written) == 4
    flags = {p.stem: load_labelme(p) for p in silver.glob("*.json")}
    assert [k for k, lf in sorted(flags.items()) if lf.flags["silver"]] == ["s0", "s2"]
    assert all(s.flags["silver"] == (s.extra["score"] >= 0.95) for lf in flags.values() for s in lf.shapes)
    # the classes must be the corrected set's: rename red/blue to fish/fruit as a person would
    for p, lf in flags.items():
        for s in lf.shapes:
            s.label = {"red": "fish", "blue": "fruit"}[s.label]
        save_labelme(silver / f"{p}.json", lf)
    run = train_detector(lm, models, DetectorTrainOptions(epochs=1, imgsz=64, batch=8, name="silver",
                                                          silver_dir=silver))
    data = json.loads((run.run_dir / "run.json").read_text())
    assert data["split"]["silver"] == 2 == run.silver
    assert not any("s0" in k or "s2" in k for k in json.loads((run.run_dir / "split.json").read_text())["assignments"])
    assert "2 silver images added to train" in run.summary()


@pytest.mark.parametrize("arch", ["fasterrcnn_mobilenet_v3_large_320_fpn"], ids=["fasterrcnn-mobilenet"])
def test_torchvision_backend(tmp_path: Path, arch: str, capsys: pytest.CaptureFixture[str]) -> None:
    lm = scenes(tmp_path / "lm", 8)
    assert main(["train-detector", str(lm), "--models", str(tmp_path / "models"), "--data", str(tmp_path / "data"),
                 "--model", arch, "--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "(torchvision," in out and "fish" in out and "use it: smarthub annotate" in out
    run_dir = latest_run(tmp_path / "models")
    from smarthub.annotate.detect import coco_weights_file, torch_checkpoint_dir

    cached = (torch_checkpoint_dir() / coco_weights_file(arch)[0]).is_file()  # another test may have cached them
    assert (run_dir / "detector.pt").is_file()
    assert json.loads((run_dir / "run.json").read_text())["pretrained"] == ("COCO" if cached else None)
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "a.jpg").write_bytes((lm / "scene0000.jpg").read_bytes())
    assert main(["annotate", str(batch), "--model", str(run_dir)]) == 0
    assert load_labelme(batch / "a.json").stamp["model"] == run_dir.name


def test_cli_prints_the_start_and_one_line_per_epoch(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lm = scenes(tmp_path / "lm", 8)
    assert main(["train-detector", str(lm), "--models", str(tmp_path / "models"), "--data", str(tmp_path / "data"),
                 "--epochs", "2", "--imgsz", "64", "--batch", "4", "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("start: YOLOv8n neck and head on mobilenet_v2 IMAGENET1K_V1 "
                               "(mobilenet_v2-b0353104.pth); neck fed by block 6 (stride 8, 32 ch), block 13")
    assert lines[0].endswith("at most 2 epochs, stopping early after 10 epochs without a better validation mAP")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all(", validation mAP50 " in e and "loss " in e for e in epochs)
    # Ultralytics' argument dump, model table and per-batch bars are in the run's log, not on the terminal
    for noise in ("engine/trainer", "Ultralytics 8.", "TorchVision", "it/s", "━"):
        assert noise not in out and noise not in err
    assert "engine/trainer" in (latest_run(tmp_path / "models") / "train.log").read_text()


def test_start_chooser(tmp_path: Path, torch_home: Path) -> None:
    """COCO weights present / an ImageNet backbone in the torch cache / nothing: the start and its line."""
    cache = torch_home / "hub" / "checkpoints"
    coco_dir, empty = tmp_path / "weights", tmp_path / "empty"
    coco_dir.mkdir()
    empty.mkdir()
    (coco_dir / "yolov8n.pt").write_bytes(b"planted")
    table = [
        (dict(search_dirs=[coco_dir], torch_cache=cache), "coco", "start: COCO YOLO weights " + str(coco_dir / "yolov8n.pt")),
        (dict(search_dirs=[empty], torch_cache=cache), "backbone",
         "start: YOLOv8n neck and head on mobilenet_v2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth); neck fed by block 6 "
         "(stride 8, 32 ch), block 13 (stride 16, 96 ch), block 17 (stride 32, 320 ch)"),
        (dict(search_dirs=[empty], torch_cache=empty), "scratch",
         f"start: yolov8n.yaml from scratch (no pretrained weights found: neither yolo11n.pt nor yolov8n.pt in {empty} "
         f"nor ImageNet weights of mobilenet_v2, mobilenet_v3_large, efficientnet_b0, resnet18 in {empty}; add one "
         f"with `smarthub weights add FILE` for a much better detector)"),
    ]
    for where, kind, line in table:
        start = choose_start("auto", **where)
        assert (start.kind, start.describe()) == (kind, line)
    assert choose_start("yolov8n.pt", search_dirs=[coco_dir], torch_cache=empty).weights_file == coco_dir / "yolov8n.pt"
    assert choose_start("yolov8n.yaml", search_dirs=[], torch_cache=cache).kind == "scratch"
    assert choose_start("mobilenet_v2", search_dirs=[], torch_cache=cache).kind == "backbone"


@pytest.mark.parametrize("spec, error, message", [
    ("yolov8n.pt", ModelError, "weights yolov8n.pt not found (looked in {empty}); offline they cannot be downloaded: "
                               "copy the file there with `smarthub weights add yolov8n.pt`"),
    ("mobilenet_v2", ModelError, "ImageNet weights for backbone mobilenet_v2 are not in the torch cache (expected "
                                 "{empty}/mobilenet_v2-b0353104.pth): copy the file there with `smarthub weights add "
                                 "mobilenet_v2-b0353104.pth`"),
    ("mobilenet_v9", SmartHubError, "torchvision has no backbone 'mobilenet_v9' (close: mobilenet_v2"),
    ("weights.onnx", SmartHubError, "--model 'weights.onnx': give auto, a YOLO .pt or .yaml"),
], ids=["coco-not-cached", "backbone-not-cached", "unknown-backbone", "wrong-suffix"])
def test_start_chooser_refuses(tmp_path: Path, spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message.format(empty=tmp_path))):
        choose_start(spec, search_dirs=[tmp_path], torch_cache=tmp_path)


def test_defaults_in_one_place() -> None:
    from smarthub.cli import build_parser

    args = build_parser().parse_args(["train-detector", "lm"])  # the flags' defaults are the record's
    assert (args.budget, args.patience, args.split) == (DEFAULT_BUDGET, DEFAULT_PATIENCE, (0.8, 0.2, 0.0))
    o = DetectorTrainOptions()
    assert (o.model, o.epochs, o.budget, o.patience) == ("auto", None, DEFAULT_BUDGET, DEFAULT_PATIENCE)
    assert o.length() == f"at most 10 min, stopping early after {DEFAULT_PATIENCE} epochs without a better validation mAP"


def _one_image_class(lm: Path) -> None:
    lf = load_labelme(lm / "scene0000.json")
    lf.shapes[0].label = "unicorn"
    save_labelme(lm / "scene0000.json", lf)


def _no_boxes(lm: Path) -> None:
    for p in lm.glob("*.json"):
        lf = load_labelme(p)
        lf.shapes = []
        save_labelme(p, lf)


def _corrupt(lm: Path) -> None:
    (lm / "scene0001.json").write_text("{not json")


def _missing_image(lm: Path) -> None:
    (lm / "scene0002.jpg").unlink()


BAD = [
    (_one_image_class, [], "class 'unicorn' is in one image only (scene0000.jpg)"),
    (_no_boxes, [], "no boxes in any Labelme file"),
    (_corrupt, [], "scene0001.json is not valid JSON"),
    (_missing_image, [], "scene0002.json: its image 'scene0002.jpg' is missing"),
    (None, ["--models", "{lm}/models"], "is inside the input folder"),
    (None, ["--model", "{tmp}/notes.pt"], "cannot load Ultralytics model"),
    (None, ["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
    (None, ["--budget", "0"], "--budget must be above zero (got '0')"),
    (None, ["--model", "yolov8n.pt"], "weights yolov8n.pt not found"),
    (None, ["--model", "resnet18"], "ImageNet weights for backbone resnet18 are not in the torch cache (expected"),
    (None, ["--model", "notanet"], "torchvision has no backbone 'notanet'"),
]


@pytest.mark.parametrize("spoil,extra,message", BAD, ids=["class-in-one-image", "no-boxes", "corrupt-json",
                                                          "missing-image", "output-inside-input", "not-a-model",
                                                          "zero-epochs", "zero-budget", "coco-not-cached",
                                                          "backbone-not-cached", "unknown-backbone"])
def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil, extra: list[str], message: str) -> None:
    lm = scenes(tmp_path / "lm", 6)
    (tmp_path / "notes.pt").write_text("not weights")
    if spoil:
        spoil(lm)
    before = files_under(lm)
    args = [a.format(lm=lm, tmp=tmp_path) for a in extra]
    if "--models" not in args:
        args += ["--models", str(tmp_path / "models")]
    assert main(["train-detector", str(lm), "--data", str(tmp_path / "data"), "--epochs", "1", "--imgsz", "64",
                 *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.strip().count("\n") == 0 and err.startswith("error: ")
    assert [p for p in files_under(lm) if not p.startswith(".smarthub/")] == before
    assert list_runs(tmp_path / "models") == [] and list_runs(lm / "models") == []


def test_annotate_refuses_a_detector_file_that_is_not_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "imgs").mkdir()
    scene().save(tmp_path / "imgs" / "a.png")
    (tmp_path / "det.pt").write_bytes(b"\x00garbage" * 50)
    (tmp_path / "run").mkdir()
    for model, message in ((tmp_path / "det.pt", "not a detector weights file torch can read"),
                           (tmp_path / "run", "is a folder without run.json")):
        assert main(["annotate", str(tmp_path / "imgs"), "--model", str(model)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0
    assert not list((tmp_path / "imgs").glob("*.json"))


def test_validation_metrics_threshold_rules() -> None:
    """Planted validation boxes: a fish boxed as fruit. The default rule shares one threshold low enough to keep it
    (a relabel), `time-per-class` gives fruit its own higher one (that box is a false fruit there)."""
    import numpy as np

    from smarthub.annotate.detect import Detections
    from smarthub.annotate.detset import DetItem
    from smarthub.annotate.train_detector import validation_metrics

    items = [DetItem("a.jpg", Path("a.jpg"), 100, 100, boxes=[("fish", (0, 0, 10, 10)), ("fruit", (20, 0, 30, 10))]),
             DetItem("b.jpg", Path("b.jpg"), 100, 100, boxes=[("fish", (0, 0, 10, 10))])]
    dets = [Detections(np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60]], dtype=float),
                       np.array([0.3, 0.9, 0.5]), np.array([1, 1, 0]), ["fruit", "fruit", "fish"]),
            Detections(np.array([[0, 0, 10, 10]], dtype=float), np.array([0.8]), np.array([0]), ["fish"])]
    shared, *_ = validation_metrics(items, dets, ["fish", "fruit"], min_precision=None, objective="time")
    assert [m.threshold.conf for m in shared] == [0.3, 0.3]
    assert shared[1].threshold.precision == 0.5  # fruit at 0.3: its own right box and the fish it names
    own, *_ = validation_metrics(items, dets, ["fish", "fruit"], min_precision=None, objective="time-per-class")
    assert [m.threshold.conf for m in own] == [0.8, 0.9]
