"""The annotate job's inputs from a person (annotate/inputs.py), called without any UI: uploaded images staged in
the cache, typed folders and detector specs kept inside the workspace, an uploaded detector kept only when it is
one."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from helpers import make_image
from smarthub.annotate import inputs
from smarthub.dataset import folder_classes
from smarthub.errors import DatasetError, ModelError
from smarthub.workspace import Workspace


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_stage_uploads_copies_into_a_fresh_cache_folder_and_never_clobbers(ws: Workspace, tmp_path: Path) -> None:
    a = make_image(tmp_path / "up1" / "cow.jpg", pattern=1)
    b = make_image(tmp_path / "up2" / "cow.jpg", pattern=2)  # the same name from another folder
    c = make_image(tmp_path / "up1" / "calf.png", fmt="PNG", pattern=3)
    images = inputs.stage_uploads(ws, [a, b, c])
    assert images.parent.parent == inputs.runs_dir(ws) and images.name == "images"
    assert sorted(p.name for p in images.iterdir()) == ["calf.png", "cow.jpg", "cow_1.jpg"]
    assert [_sha(images / n) for n in ("cow.jpg", "cow_1.jpg", "calf.png")] == [_sha(a), _sha(b), _sha(c)]
    assert a.is_file() and b.is_file()  # copies: the uploads stay
    again = inputs.stage_uploads(ws, [a])
    assert again != images and sorted(p.name for p in images.iterdir()) == ["calf.png", "cow.jpg", "cow_1.jpg"]


@pytest.mark.parametrize("typed, where, error", [
    ("batch1", "batches", None),
    ("cat", "data", None),
    ("../../elsewhere", None, "folder '../../elsewhere' is outside the workspace"),
    ("/etc", None, "folder '/etc' is outside the workspace"),
], ids=["batch-name", "data-relative", "climbs-out", "absolute-outside"])
def test_inside_workspace(ws: Workspace, typed: str, where: str | None, error: str | None) -> None:
    (ws.batches_dir / "batch1").mkdir(parents=True)
    if error is not None:
        with pytest.raises(DatasetError, match=error):
            inputs.inside_workspace(ws, typed, what="folder")
        return
    root = ws.batches_dir if where == "batches" else ws.data_dir
    assert inputs.inside_workspace(ws, f" {typed} ", what="folder") == root / typed


@pytest.mark.parametrize("spec, expected, error", [
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn", None),
    ("detectors/uploads/det.pt", "{models}/detectors/uploads/det.pt", None),
    ("  ", None, "choose a detector name"),
    ("/tmp/elsewhere.pt", None, "must be inside the workspace"),
], ids=["torchvision-name", "relative-checkpoint", "empty", "outside"])
def test_resolve_detector(ws: Workspace, spec: str, expected: str | None, error: str | None) -> None:
    if error is not None:
        with pytest.raises(ModelError, match=error):
            inputs.resolve_detector(ws, spec)
        return
    assert inputs.resolve_detector(ws, spec) == expected.format(models=ws.models_dir)


def test_store_detector_keeps_a_detector_under_a_new_name_and_refuses_the_rest(ws: Workspace,
                                                                               tmp_path: Path) -> None:
    from smarthub.annotate import detect

    model = detect.build_torchvision_model("ssdlite320_mobilenet_v3_large", 3)
    good = detect.save_detector_checkpoint(tmp_path / "det.pt", model, arch="ssdlite320_mobilenet_v3_large",
                                           labels=["__background__", "cow", "calf"])
    first = inputs.store_detector(ws, good)
    assert first == inputs.StoredDetector(spec="detectors/uploads/det.pt", kind=first.kind, classes=("cow", "calf"))
    assert _sha(ws.models_dir / first.spec) == _sha(good)
    second = inputs.store_detector(ws, good)
    assert second.spec == "detectors/uploads/det_1.pt"  # never overwrites
    assert inputs.detector_choices(ws)[:2] == [first.spec, second.spec]
    assert inputs.default_detector(ws) == detect.TORCHVISION_ARCHS[0]  # uploads are not runs
    bad = tmp_path / "notes.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a detector weights file torch can read"):
        inputs.store_detector(ws, bad)
    with pytest.raises(ModelError, match=r"notes\.txt is not a detector file: upload a \.pt, \.pth or \.onnx"):
        inputs.store_detector(ws, tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="choose a detector file"):
        inputs.store_detector(ws, None)
    assert sorted(p.name for p in inputs.uploads_dir(ws).iterdir()) == ["det.pt", "det_1.pt"]  # nothing half-kept


def test_folder_classes_are_the_non_empty_class_folders(ws: Workspace) -> None:
    make_image(ws.data_dir / "cat" / "a.jpg")
    make_image(ws.data_dir / "dog" / "b.jpg")
    (ws.data_dir / "empty").mkdir()
    (ws.data_dir / "hidden-only" / ".keep").parent.mkdir()
    (ws.data_dir / "hidden-only" / ".keep").write_text("")
    (ws.data_dir / ".smarthub").mkdir(exist_ok=True)
    assert folder_classes(ws.data_dir) == ["cat", "dog"]
    assert folder_classes(ws.data_dir / "missing") == []
