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
