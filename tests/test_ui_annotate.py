"""Annotate tab handlers without a browser: detector upload (kept only when it is one), detector choices,
train-detector from the tab with Stop."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from smarthub.ui import tab_annotate
from smarthub.ui._common import StopSwitch
from smarthub.workspace import Workspace


def test_upload_keeps_a_detector_and_refuses_what_is_not_one(tmp_path: Path) -> None:
    from smarthub.annotate import detect

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    ws.data_dir.mkdir(parents=True)
    model = detect.build_torchvision_model("ssdlite320_mobilenet_v3_large", 3)
    good = detect.save_detector_checkpoint(tmp_path / "det.pt", model, arch="ssdlite320_mobilenet_v3_large",
                                           labels=["__background__", "cow", "calf"])
    message, spec = tab_annotate.store_detector(ws, str(good))
    assert spec == "detectors/uploads/det.pt" and "cow, calf" in message
    _, again = tab_annotate.store_detector(ws, str(good))
    assert again == "detectors/uploads/det_1.pt"  # never overwrites
    assert tab_annotate.detector_choices(ws)[:2] == [spec, again]
    bad = tmp_path / "notes.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(gr.Error, match="not a detector weights file torch can read"):
        with tab_annotate.user_errors():
            tab_annotate.store_detector(ws, str(bad))
    uploads = ws.models_dir / "detectors" / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == ["det.pt", "det_1.pt"]  # nothing half-kept


@pytest.mark.slow
def test_train_detector_from_the_tab_then_stop(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from smarthub.annotate.scenes import compose_scenes, load_drawings, texture_backgrounds

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    samples = Path(__file__).resolve().parents[1] / "smarthub" / "samples"
    drawings = {c: load_drawings(samples / c, limit=3, max_side_px=64) for c in ("fish", "fruit")}
    compose_scenes(ws.data_dir / "corrected", 10, drawings, texture_backgrounds(2), size=(96, 72))
    seen: list[str] = []

    def progress(frac, desc=None) -> None:
        seen.append(desc or "")

    text, png = tab_annotate.run_train_detector(ws, "corrected", "yolov8n.yaml", 1, 64, progress, StopSwitch())
    assert text.startswith("**Done:** detector `detectors/") and png and Path(png).is_file()
    assert any(d.startswith("epoch 1/1, batch") for d in seen)
    first = tab_annotate.default_detector(ws)
    assert first.startswith("detectors/") and first in tab_annotate.detector_choices(ws)

    switch = StopSwitch()

    def stop_soon(frac, desc=None) -> None:
        if desc and desc.startswith("epoch"):
            switch.stop()

    text, png = tab_annotate.run_train_detector(ws, "corrected", "yolov8n.yaml", 3, 64, stop_soon, switch)
    import re

    assert re.match(r"\*\*Stopped:\*\* training stopped at epoch [12]/3: nothing was written", text) and png is None
    assert tab_annotate.default_detector(ws) == first  # the previous detector stays


# ---------------------------------------------------------------- a batch, a live threshold, placement


def make_run(models_dir: Path, name: str = "r1", thresholds: dict[str, float] | None = None) -> Path:
    """A detector run folder (run.json + a torchvision checkpoint with an untrained head: real code path)."""
    import json

    import torch

    from smarthub.annotate import detect

    torch.manual_seed(0)
    run = models_dir / "detectors" / name
    run.mkdir(parents=True)
    kw = {"min_size": 96, "max_size": 96}
    # ImageNet MobileNetV2 features (torch cache) under an untrained head: scores differ from box to box
    model = detect.build_fasterrcnn_mobilenet_v2(3, backbone_weights=True, **kw)
    detect.save_detector_checkpoint(run / "weights.pt", model, arch=detect.SMARTHUB_ARCHS[0],
                                    labels=["__background__", "cat", "dog"], model_kwargs=kw)
    tuned = thresholds if thresholds is not None else {"cat": 0.3, "dog": 0.35}
    (run / "run.json").write_text(json.dumps({"format": "smarthub-detector-run", "weights": "weights.pt",
                                              "thresholds": {k: {"conf": v} for k, v in tuned.items()}}))
    return run


def make_batch(folder: Path, n: int = 4) -> Path:
    from helpers import make_image

    for i in range(n):
        make_image(folder / f"img{i}.jpg", size=(96, 72), pattern=i)
    return folder


def boxes_in_files(folder: Path) -> int:
    from smarthub.annotate.labelme import load_labelme

    return sum(len(load_labelme(p).shapes) for p in folder.glob("*.json"))


def test_live_threshold_filters_without_the_detector_and_writes_on_request(tmp_path: Path) -> None:
    from smarthub.annotate.labelme import load_labelme, save_labelme
    from smarthub.annotate.scored import scored_path

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    ws.data_dir.mkdir(parents=True)
    make_run(ws.models_dir)
    batch = make_batch(ws.batches_dir / "batch1")
    text, zipped, view = tab_annotate.annotate_batch(ws, "batch1", None, "detectors/r1", 0.25, 0.7, False, "skip")
    assert "4 images, 4 Labelme files written" in text and "next images to correct" in text and zipped
    assert "warning" not in text  # a batch in the batches folder is where it belongs
    assert view.classes == ["cat", "dog"] and view.written.per_class == {"cat": 0.3, "dog": 0.35}
    floor_boxes = sum(len(it.shapes) for it in view.scored.images)
    written = boxes_in_files(batch)
    assert 0 < written < floor_boxes  # the files hold the tuned-threshold boxes, the sidecar all of them
    sidecar = scored_path(batch).stat().st_mtime_ns

    low = tab_annotate.thresholds_of(view, 0.25, True, [0.06, 0.06])
    high = tab_annotate.thresholds_of(view, 0.25, True, [0.9, 0.9])
    shown_low = tab_annotate.show_view(view, low, "least_confident")
    shown_high = tab_annotate.show_view(view, high, "next")
    n_low, n_high = sum(shown_low.boxes_per_label.values()), sum(shown_high.boxes_per_label.values())
    assert n_low > written > n_high  # boxes appear and vanish at once ...
    assert boxes_in_files(batch) == written and scored_path(batch).stat().st_mtime_ns == sidecar  # ... nothing rerun
    assert "press **Write Labelme files at these thresholds**" in tab_annotate.shown_note(view, low, shown_low)
    global_only = tab_annotate.thresholds_of(view, 0.5, False, [0.06, 0.06])
    assert global_only.per_class == {} and global_only.conf == 0.5

    # a person edits img0.json in Labelme; writing at the low thresholds must keep it
    lf = load_labelme(batch / "img0.json")
    lf.shapes = lf.shapes[:1] or lf.shapes
    from smarthub.annotate.labelme import Shape

    lf.shapes.append(Shape("dog", [[1, 1], [20, 20]]))
    save_labelme(batch / "img0.json", lf)
    before = (batch / "img0.json").read_bytes()
    text, zipped = tab_annotate.write_view(ws, view, low)
    assert "3 Labelme files rewritten" in text and "1 kept (a person edited them)" in text and zipped
    assert (batch / "img0.json").read_bytes() == before
    assert view.written == low and "the Labelme files hold these boxes" in tab_annotate.shown_note(view, low, shown_low)
    import zipfile

    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == [f"img{i}.json" for i in range(4)]


def test_batches_live_outside_the_class_folders(tmp_path: Path) -> None:
    from smarthub.workspace import batch_placement_warning

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    assert ws.batches_dir == tmp_path / "batches" and ws.contains(tmp_path / "batches" / "b1")
    assert Workspace(tmp_path / "d", tmp_path / "m", tmp_path / "elsewhere").batches_dir == tmp_path / "elsewhere"
    assert batch_placement_warning(ws, ws.batches_dir / "b1") is None
    assert batch_placement_warning(ws, ws.data_dir / ".smarthub" / "cache" / "up") is None
    line = batch_placement_warning(ws, ws.data_dir / "unlabelled" / "batch1")
    assert line is not None and "\n" not in line and "where every folder is a class" in line
    assert str(ws.batches_dir) in line
    assert "the data folder itself" in batch_placement_warning(ws, ws.data_dir)
    # the app: a name resolves in the batches folder first, and a class folder is annotated with a warning
    ws.data_dir.mkdir(parents=True)
    make_run(ws.models_dir, thresholds={})
    make_batch(ws.data_dir / "cat", n=1)
    make_batch(ws.batches_dir / "cat", n=2)  # same name in both: the batch wins
    text, _, view = tab_annotate.annotate_batch(ws, "cat", None, "detectors/r1", 0.25, 0.7, False, "skip")
    assert view.scored.images_dir == ws.batches_dir / "cat" and not text.startswith("warning")
    assert view.classes == []  # no tuned thresholds: only the global slider
    text, _, _ = tab_annotate.annotate_batch(ws, str(ws.data_dir / "cat"), None, "detectors/r1", 0.25, 0.7, False,
                                             "skip")
    assert text.splitlines()[0].startswith("warning: ") and "put batches to annotate in" in text.splitlines()[0]


def test_demo_gives_a_batch_a_person_can_find(tmp_path: Path) -> None:
    from smarthub.dataset import scan_dataset
    from smarthub.demo import prepare_demo

    ws = Workspace(tmp_path / "demo" / "data", tmp_path / "demo" / "models")
    report = prepare_demo(ws, train=False)
    assert report.batch == tmp_path / "demo" / "batches" / "batch1"
    assert f"a batch to annotate: {report.batch} (Annotate tab: type batch1)" in str(report)
    assert len(list(report.batch.glob("*.jpg"))) == 8 and not list(report.batch.glob("*.json"))
    assert "batch1" not in {i.label for i in scan_dataset(ws.data_dir)}  # not taken for a class
    assert tab_annotate.inside_workspace(ws, "batch1", what="folder") == report.batch
    before = sorted(p.stat().st_mtime_ns for p in report.batch.iterdir())
    assert prepare_demo(ws, train=False).batch == report.batch  # reused, not rewritten
    assert sorted(p.stat().st_mtime_ns for p in report.batch.iterdir()) == before
