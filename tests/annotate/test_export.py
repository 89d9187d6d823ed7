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


# ---------------------------------------------------------------- --overwrite destroys nothing smarthub did not write

REPO = Path(__file__).resolve().parents[2]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included) with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def a_workspace(root: Path) -> Path:
    """A real data folder with a journal and a trash (a relabel and a delete done through fileops)."""
    from smarthub import fileops
    from smarthub.workspace import Workspace

    from helpers import make_image

    ws = Workspace(data_dir=root / "data", models_dir=root / "models")
    for c, label in enumerate(("fish", "bird")):
        for i in range(4):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", pattern=10 * c + i)
    fileops.relabel(ws, ws.data_dir / "fish" / "fish0.jpg", "bird")
    fileops.trash(ws, ws.data_dir / "bird" / "bird1.jpg")
    assert ws.journal_path.is_file() and any(ws.trash_dir.rglob("*.jpg"))
    return ws.data_dir


def _data_folder(tmp_path: Path) -> Path:
    return a_workspace(tmp_path / "ws")


def _models_folder(tmp_path: Path) -> Path:
    import torch

    from smarthub.trust import save_model

    models = tmp_path / "ws" / "models"
    save_model(models / "export.pkl", lambda tmp: torch.save({"w": torch.zeros(2)}, tmp))
    return models


def _strangers_folder(tmp_path: Path) -> Path:
    (tmp_path / "mine" / "holiday").mkdir(parents=True)
    (tmp_path / "mine" / "holiday" / "beach.jpg").write_bytes(b"a photo")
    return tmp_path / "mine"


def _export_plus_stranger(tmp_path: Path) -> Path:
    out = tmp_path / "yolo"
    export_yolo(scenes(tmp_path / "other", 3), out)
    (out / "notes.txt").write_text("mine")
    return out


def _forged_marker(tmp_path: Path) -> Path:
    out = _strangers_folder(tmp_path)
    (out / ".smarthub-export").write_text('{"kind": "yolo-export", "files": []}')
    return out


REFUSED = [
    (_data_folder, "it is a data folder (it holds .smarthub/ with the journal and trash)"),
    (_models_folder, "it is a models folder"),
    (_strangers_folder, "smarthub did not export it (no .smarthub-export)"),
    (_export_plus_stranger, "it holds 'notes.txt', which smarthub did not write"),
    (_forged_marker, "it holds 'holiday/beach.jpg', which smarthub did not write"),
]


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
@pytest.mark.parametrize("make,why", REFUSED, ids=["data-folder", "models-folder", "strangers-folder",
                                                   "export-plus-stranger", "forged-marker"])
def test_overwrite_refuses_a_folder_smarthub_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           make, why: str, fmt: str) -> None:
    src = scenes(tmp_path / "lm", 4)
    out = make(tmp_path)
    before = tree(out)
    assert main(["export-yolo", str(src), str(out), "--overwrite", "--format", fmt]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: refusing to replace {out}: {why}; --overwrite replaces only a folder smarthub exported "
                   f"(or an empty one) — choose a new output folder\n")
    assert tree(out) == before  # every image, the journal and the trash intact
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # nothing staged or locked is left


def test_import_yolo_overwrite_refuses_a_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = scenes(tmp_path / "lm", 4)
    assert main(["export-yolo", str(src), str(tmp_path / "yolo")]) == 0
    data = a_workspace(tmp_path / "ws")
    before = tree(data)
    assert main(["import-yolo", str(tmp_path / "yolo"), str(data), "--overwrite"]) == 2
    assert "it is a data folder" in capsys.readouterr().err and tree(data) == before


@pytest.mark.parametrize("state", ["empty", "previous-export", "previous-import"])
def test_overwrite_replaces_an_empty_folder_or_its_own_output(tmp_path: Path, state: str) -> None:
    src = scenes(tmp_path / "lm", 6)
    out = tmp_path / "out"
    out.mkdir()
    if state == "previous-export":
        export_dataset(src, out, fmt="coco", split=(1.0, 0.0, 0.0))
    elif state == "previous-import":
        export_yolo(src, tmp_path / "yolo")
        out.rmdir()
        import_yolo(tmp_path / "yolo", out)
    r = export_yolo(src, out, overwrite=True)
    marker = json.loads((out / ".smarthub-export").read_text())
    assert marker["kind"] == "yolo-export" and marker["by"].startswith("smarthub")
    assert sorted(marker["files"]) == [f for f in files_under(out) if f != ".smarthub-export"]
    assert sum(r.images.values()) == 6 and not (out / "annotations").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["lm", "out"] + (["yolo"] if "import" in state
                                                                               else []))


CRASH = r"""
import os, shutil, sys
from smarthub.annotate.export import export_yolo

src, out, point = sys.argv[1], sys.argv[2], sys.argv[3]
real_rename, real_rmtree = os.rename, shutil.rmtree
renames = []

def rename(a, b):
    renames.append(b)
    if (point == "before-swap" and len(renames) == 1) or (point == "between-renames" and len(renames) == 2):
        os._exit(9)  # killed here: no finally block, no cleanup, like kill -9
    return real_rename(a, b)

def rmtree(path, *a, **kw):
    if point == "before-aside-removed" and ".old-" in str(path):
        os._exit(9)
    return real_rmtree(path, *a, **kw)

os.rename, shutil.rmtree = rename, rmtree
export_yolo(src, out, overwrite=True, split=(1.0, 0.0, 0.0))
"""


@pytest.mark.parametrize("point,left", [("before-swap", "old"), ("between-renames", "old"),
                                        ("before-aside-removed", "new")],
                         ids=["before-swap", "between-renames", "before-aside-removed"])
def test_a_kill_mid_swap_leaves_old_or_new_and_the_next_run_cleans_up(tmp_path: Path, point: str,
                                                                      left: str) -> None:
    import subprocess
    import sys

    src, out = scenes(tmp_path / "lm", 4), tmp_path / "yolo"
    export_yolo(src, out, split=(1.0, 0.0, 0.0))
    old = tree(out)
    scenes(src, 2, seed=3, prefix="more")  # the next export holds 6 images
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", CRASH, str(src), str(out), point], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 9, r.stderr
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the killed run left its folders
    with pytest.raises(SmartHubError, match="is not empty: choose a new folder or pass --overwrite"):
        export_yolo(src, out, split=(1.0, 0.0, 0.0))  # the next run repairs first, then refuses
    got = tree(out)
    if left == "old":
        assert got == old
    else:
        assert len(list((out / "images" / "train").iterdir())) == 6 and got != old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lm", "yolo"]  # staged, aside and lock gone
    r = export_yolo(src, out, overwrite=True, split=(1.0, 0.0, 0.0))
    assert r.images["train"] == 6 and sorted(p.name for p in tmp_path.iterdir()) == ["lm", "yolo"]


HOLD = r"""
import sys, time
from pathlib import Path
from smarthub.outputs import staged_output

with staged_output(Path(sys.argv[1]), kind=None) as staged:
    (staged / "half.txt").write_text("being written")
    print(staged, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_live_writers_staged_folder_is_never_removed_a_dead_ones_is(tmp_path: Path, sig: str) -> None:
    import signal
    import subprocess
    import sys

    from smarthub.outputs import staged_output

    dest = tmp_path / "runs" / "X"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(dest)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        staged = Path(writer.stdout.readline().strip())
        assert (staged / "half.txt").is_file()
        with pytest.raises(SmartHubError, match=rf"another smarthub process is writing {dest} \(held by pid "
                                                rf"{writer.pid}\)"):
            with staged_output(dest, kind=None):
                pass
        assert (staged / "half.txt").read_text() == "being written"  # alive: left alone
    finally:
        writer.send_signal(getattr(signal, sig))
        writer.wait(timeout=60)
    assert staged.is_dir()  # whatever signal ended it, the staged folder stays until the next writer
    (dest.parent / ".partial-X" / "work").mkdir(parents=True)  # what a killed run of the previous version left
    notes: list[str] = []
    with staged_output(dest, kind=None, notes=notes) as mine:
        (mine / "done.txt").write_text("complete")
    assert notes == [f"removed {staged.name}, left by an interrupted run (its process had stopped)",
                     "removed .partial-X, left by an interrupted run (its process had stopped)"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["X"] and (dest / "done.txt").is_file()


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_zero_area_boxes_are_reported_and_counted_right(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        fmt: str) -> None:
    src = scenes(tmp_path / "lm", 4)
    real = sum(len(load_labelme(p).shapes) for p in src.glob("*.json"))
    lf = load_labelme(src / "scene0000.json")
    lf.shapes += [Shape("fish", [[10, 10], [10, 30]]),  # zero width
                  Shape("fruit", [[200, 10], [260, 30]])]  # wholly right of the 96 px wide image
    save_labelme(src / "scene0000.json", lf)
    only = load_labelme(src / "scene0001.json")
    only.shapes = [Shape("fish", [[5, 20], [40, 20]])]  # its one box has no height: the image is a background
    save_labelme(src / "scene0001.json", only)
    kept = real - len(load_labelme(scenes(tmp_path / "again", 4) / "scene0001.json").shapes)
    assert main(["export-yolo", str(src), str(tmp_path / "out"), "--format", fmt, "--split", "1,0,0"]) == 0
    out = capsys.readouterr().out
    assert f"{kept} boxes" in out and "1 without boxes kept as background" in out
    assert ("3 zero-area boxes left out (nothing of them inside the image): scene0000.json (2), "
            "scene0001.json (1)") in out
    if fmt == "yolo":
        labels = (tmp_path / "out" / "labels" / "train").glob("*.txt")
        written = sum(len(p.read_text().splitlines()) for p in labels)
    else:
        coco = json.loads((tmp_path / "out" / "annotations" / "instances_train.json").read_text())
        written = len(coco["annotations"])
    assert written == kept


@pytest.mark.slow
def test_a_detector_run_killed_by_sigterm_never_blocks_its_name(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The row of the issue: SIGTERM during `train-detector --name X`, then `train-detector --name X` again."""
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("ultralytics")
    lm, models = scenes(tmp_path / "lm", 8), tmp_path / "models"
    runs = models / "detectors"
    args = ["train-detector", str(lm), "--models", str(models), "--name", "X", "--imgsz", "64", "--batch", "8",
            "--device", "cpu"]
    env = dict(os.environ, PYTHONPATH=str(REPO), YOLO_OFFLINE="1")
    killed = subprocess.Popen([sys.executable, "-m", "smarthub", *args, "--epochs", "200"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not list(runs.glob(".X.partial-*/work")) and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert killed.poll() is None, "the run ended before it could be stopped"
    finally:
        killed.send_signal(signal.SIGTERM)
        killed.wait(timeout=120)
    staged = list(runs.glob(".X.partial-*"))
    assert len(staged) == 1 and not (runs / "X").exists()  # what the issue saw: a stale staged folder
    assert main([*args, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert f"removed {staged[0].name}, left by an interrupted run (its process had stopped)" in out
    assert (runs / "X" / "run.json").is_file() and not staged[0].exists()
    assert sorted(p.name for p in runs.iterdir() if p.name.startswith(".X")) == []
