"""Export and import that cannot leak or lie: refusals, whole replacement, COCO, YOLO → Labelme, bad input."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from smarthub.annotate.export import export_dataset, export_yolo, import_yolo
from smarthub.annotate.labelme import LabelmeFile, Shape, load_labelme, save_labelme
from smarthub.annotate.scenes import compose_scenes, load_drawings, texture_backgrounds
from smarthub.cli import main
from smarthub.errors import DatasetError, SmartHubError

SAMPLES = Path(__file__).resolve().parents[2] / "smarthub" / "samples"


def drawings() -> dict:
    return {c: load_drawings(SAMPLES / c, limit=4, max_side_px=64) for c in ("fish", "fruit")}


def scenes(folder: Path, n: int, *, seed: int = 0, prefix: str = "scene") -> Path:
    """n real scenes (shipped drawings on generated backgrounds) with their Labelme truth."""
    compose_scenes(folder, n, drawings(), texture_backgrounds(3, size=(96, 96), seed=seed), size=(96, 72), seed=seed,
                   prefix=prefix)
    return folder


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def stems_by_split(out: Path) -> dict[str, set[str]]:
    return {s.name: {p.stem for p in s.iterdir()} for s in (out / "images").iterdir()}


def test_overwrite_replaces_the_export_whole_and_growth_never_leaks(tmp_path: Path) -> None:
    src, out = scenes(tmp_path / "lm", 20), tmp_path / "yolo"
    export_yolo(src, out, split=(0.6, 0.2, 0.2))
    first = stems_by_split(out)
    with pytest.raises(DatasetError, match="is not empty: choose a new folder or pass --overwrite"):
        export_yolo(src, out)
    (out / "images" / "train" / "stray.jpg").write_bytes(b"someone's")
    with pytest.raises(SmartHubError, match=r"refusing to replace .*yolo: it holds 'images/train/stray.jpg', "
                                            r"which smarthub did not write"):
        export_yolo(src, out, overwrite=True)
    assert (out / "images" / "train" / "stray.jpg").read_bytes() == b"someone's"
    (out / "images" / "train" / "stray.jpg").unlink()
    gone = next(iter(first["train"]))
    for p in src.glob(f"{gone}.*"):
        p.unlink()  # one image leaves the dataset, 10 corrected images join it
    scenes(src, 10, seed=5, prefix="more")
    r = export_yolo(src, out, split=(0.6, 0.2, 0.2), overwrite=True)
    second = stems_by_split(out)
    assert gone not in second["train"]  # replaced whole: nothing of the old export is left
    assert sum(len(v) for v in second.values()) == sum(r.images.values()) == 29
    first["train"].discard(gone)
    for a in second:
        for b in second:
            assert a == b or not second[a] & second[b], f"{a} and {b} share images"
        assert first[a] <= second[a]  # old images kept their split
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged folder left behind


@pytest.mark.parametrize("where", ["rename-aside", "rename-in", "copy"], ids=["rename-aside", "rename-in", "copy"])
def test_a_crash_leaves_the_old_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    import shutil

    src, out = scenes(tmp_path / "lm", 8), tmp_path / "yolo"
    export_yolo(src, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []
    real_rename, real_copy = os.rename, shutil.copy2

    def rename(a, b):
        calls.append(b)
        if (where == "rename-aside" and len(calls) == 1) or (where == "rename-in" and len(calls) == 2):
            raise OSError(28, "No space left on device")
        return real_rename(a, b)

    def copy(a, b, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", rename)
    if where == "copy":
        monkeypatch.setattr(shutil, "copy2", copy)
    with pytest.raises((DatasetError, OSError)):
        export_yolo(src, out, overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    monkeypatch.setattr(shutil, "copy2", real_copy)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "yolo"]


def test_backgrounds_are_kept_and_counted(tmp_path: Path) -> None:
    src = scenes(tmp_path / "lm", 6)
    from PIL import Image

    Image.new("RGB", (40, 30), (90, 120, 60)).save(src / "empty_field.jpg")  # no Labelme file: a background
    save_labelme(src / "scene0000.json", LabelmeFile("scene0000.jpg", 72, 96, []))  # corrected to no boxes
    r = export_yolo(src, tmp_path / "y", split=(1.0, 0.0, 0.0))
    assert r.backgrounds == 2 and r.images["train"] == 7
    assert (tmp_path / "y" / "labels" / "train" / "empty_field.txt").read_text() == ""
    assert "2 without boxes kept as background" in r.summary()


def test_coco_export_loads_in_faster_coco_eval(tmp_path: Path) -> None:
    from faster_coco_eval import COCO

    src = scenes(tmp_path / "lm", 10)
    r = export_dataset(src, tmp_path / "coco", fmt="coco", split=(0.8, 0.2, 0.0))
    truth = {p.stem: load_labelme(p) for p in src.glob("*.json")}
    total = 0
    for split, n in r.images.items():
        if not n:
            assert not (tmp_path / "coco" / "annotations" / f"instances_{split}.json").exists()
            continue
        coco = COCO(str(tmp_path / "coco" / "annotations" / f"instances_{split}.json"))
        assert len(coco.getImgIds()) == n
        names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
        assert sorted(names.values()) == ["fish", "fruit"]
        for img in coco.loadImgs(coco.getImgIds()):
            assert (tmp_path / "coco" / "images" / split / img["file_name"]).is_file()
            lf = truth[Path(img["file_name"]).stem]
            got = sorted((names[a["category_id"]], *a["bbox"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])))
            want = sorted((s.label, s.xyxy[0], s.xyxy[1], s.xyxy[2] - s.xyxy[0], s.xyxy[3] - s.xyxy[1])
                          for s in lf.shapes)
            assert [g[0] for g in got] == [w[0] for w in want]
            assert np.allclose([g[1:] for g in got], [w[1:] for w in want], atol=0.01)
            total += len(got)
    assert total == r.boxes > 0


def test_import_yolo_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = scenes(tmp_path / "lm", 8)
    assert main(["export-yolo", str(src), str(tmp_path / "yolo")]) == 0
    assert main(["import-yolo", str(tmp_path / "yolo"), str(tmp_path / "back")]) == 0
    assert "8 Labelme files written" in capsys.readouterr().out
    imported = {p.stem: load_labelme(p) for p in (tmp_path / "back").rglob("*.json")}
    assert len(imported) == 8
    for p in src.glob("*.json"):
        a, b = load_labelme(p), imported[p.stem]
        assert (b.image_width, b.image_height) == (a.image_width, a.image_height)
        got, want = sorted((s.label, s.xyxy) for s in b.shapes), sorted((s.label, s.xyxy) for s in a.shapes)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert np.allclose([g[1] for g in got], [w[1] for w in want], atol=0.02)
    # exporting the imported files gives the same dataset again
    assert main(["export-yolo", str(tmp_path / "back"), str(tmp_path / "yolo2"), "--split", "1,0,0"]) == 0
    assert len(list((tmp_path / "yolo2" / "labels" / "train").glob("*.txt"))) == 8


def _escape(src: Path) -> None:
    save_labelme(src / "evil.json", LabelmeFile("../../../../etc/passwd", 10, 10, [Shape("x", [[0, 0], [5, 5]])]))


def _not_image(src: Path) -> None:
    (src / "notes.txt").write_text("hello")
    save_labelme(src / "notes.json", LabelmeFile("notes.txt", 10, 10, [Shape("x", [[0, 0], [5, 5]])]))


def _corrupt(src: Path) -> None:
    (src / "scene0001.json").write_text('{"imagePath": "scene0001.jpg", "shapes": [')


def _missing_image(src: Path) -> None:
    (src / "scene0002.jpg").unlink()


def _no_boxes(src: Path) -> None:
    for p in src.glob("*.json"):
        lf = load_labelme(p)
        lf.shapes = []
        save_labelme(p, lf)


BAD_INPUT = [
    (_escape, "evil.json: imagePath '../../../../etc/passwd' points outside"),
    (_not_image, "notes.json: imagePath 'notes.txt' is not an image"),
    (_corrupt, "scene0001.json is not valid JSON"),
    (_missing_image, "scene0002.json: its image 'scene0002.jpg' is missing"),
    (_no_boxes, "no boxes in any Labelme file"),
]


@pytest.mark.parametrize("spoil,message", BAD_INPUT, ids=["path-escape", "not-an-image", "corrupt-json",
                                                           "missing-image", "no-boxes"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil,
                                                   message: str) -> None:
    src = scenes(tmp_path / "lm", 4)
    spoil(src)
    before = files_under(src)
    for fmt in ("yolo", "coco"):
        assert main(["export-yolo", str(src), str(tmp_path / "out"), "--format", fmt]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists() and files_under(src) == before
    assert not list(tmp_path.rglob("passwd"))


@pytest.mark.parametrize("out,message", [("lm/export", "is inside the input folder"), (".", "contains the input folder")],
                         ids=["inside", "around"])
def test_output_folder_inside_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str,
                                               message: str) -> None:
    src = scenes(tmp_path / "lm", 3)
    before = files_under(tmp_path)
    assert main(["export-yolo", str(src), str(tmp_path / out), "--overwrite"]) == 2
    assert message in capsys.readouterr().err
    assert files_under(tmp_path) == before
