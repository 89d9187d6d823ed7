"""The offline demo's detector: trained on scenes of the shipped drawings, then used by annotate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from smarthub.workspace import Workspace


@pytest.mark.slow
def test_demo_detector_trains_once_and_annotates(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from smarthub import demo
    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.labelme import load_labelme
    from smarthub.annotate.preannotate import annotate_folder
    from smarthub.annotate.train_detector import latest_run

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    demo.copy_samples(ws)
    lines: list[str] = []
    notes: list[str] = []
    run = demo.prepare_demo_detector(ws, say=lines.append, notes=notes, scenes=16)
    assert run is not None and run.name == demo.DEMO_DETECTOR_RUN and latest_run(ws.models_dir) == run
    assert any(line.startswith("demo detector: validation mAP50") for line in lines) and notes == []
    # the same start as train-detector: the cached ImageNet MobileNetV2 under a YOLOv8n head (TORCH_HOME: conftest)
    assert any(line.strip().startswith("start: YOLOv8n neck and head on mobilenet_v2 IMAGENET1K_V1") for line in lines)
    assert any(line.strip().startswith("epoch 1/") for line in lines)
    assert json.loads((run / "run.json").read_text())["start"]["kind"] == "backbone"
    assert demo.prepare_demo_detector(ws, say=lines.append, notes=notes) == run  # reused, not retrained
    detector = load_detector(run, DetectorOptions(config_dir=tmp_path / "cfg"))
    assert detector.class_names == [demo.DEMO_DETECTOR_CLASS]
    report = annotate_folder(ws.data_dir / "fish", detector)
    assert len(report.written) == len(list((ws.data_dir / "fish").glob("*.jpg"))) and not report.failed
    assert all(s.label == "object" for p in report.written for s in load_labelme(p).shapes)
    assert not (ws.data_dir / demo.DEMO_DETECTOR_CLASS).exists()  # the scenes never become a class folder
