"""A whole CLI session writes nothing outside its workspace.

One new process, with an empty $HOME and its own $TMPDIR, runs the jobs a user runs: bootstrap from a real
loopback server with --train (pretrained MobileNetV2 from $TORCH_HOME), predict, review, relabel, undo,
verify and annotate with a detector checkpoint. Afterwards $HOME and $TMPDIR are empty, $TORCH_HOME is
unchanged, and the working folder holds only the workspace and the user's own inputs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from http_server import ImageServer, Route, encode, photo

pytestmark = pytest.mark.slow

SESSION = r"""
import json, sys
from pathlib import Path
from smarthub.cli import main

def run(*argv):
    code = main(list(argv))
    print(json.dumps({"argv": argv[0], "code": code}), file=sys.stderr, flush=True)
    if code not in (0, 1):
        sys.exit(f"{argv[0]} failed with {code}")

run("bootstrap", "--urls-file", "urls.csv", "--count", "6", "--min-side", "32", "--max-side", "64", "--train",
    "--arch", "mobilenet_v2", "--epochs", "1", "--train-size", "32", "--batch-size", "4", "--seed", "1")
images = sorted(Path("data/koi").glob("*.jpg"))
run("predict", str(images[0]), "--json")
run("review", "--arch", "mobilenet_v2", "--folds", "2", "--size", "32", "--batch-size", "4")
run("relabel", str(images[1]), "carp")
run("undo")
run("verify")
run("annotate", "batch", "--model", "det.pt", "--classifier", "models/export.pkl")
"""


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_a_cli_session_writes_only_inside_its_workspace(tmp_path: Path, torch_home: Path) -> None:
    from smarthub.annotate import detect

    work, home, tmp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for folder in (work, home, tmp):
        folder.mkdir()
    routes = {f"/{i}.jpg": Route(encode(photo(300 + i, (120, 90)), "JPEG", quality=90)) for i in range(12)}
    batch = work / "batch"
    batch.mkdir()
    for i in range(2):
        photo(400 + i, (96, 72)).save(batch / f"b{i}.jpg", quality=90)
    model = detect.build_torchvision_model("ssdlite320_mobilenet_v3_large", 3)
    detect.save_detector_checkpoint(work / "det.pt", model, arch="ssdlite320_mobilenet_v3_large",
                                    labels=["__background__", "koi", "carp"])
    torch_before = _snapshot(torch_home)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), TMPDIR=str(tmp), TORCH_HOME=str(torch_home), SMARTHUB_DATA="", SMARTHUB_MODELS="")
    with ImageServer(routes) as srv:
        (work / "urls.csv").write_text("".join(f"{srv.url(p)},{'koi' if i % 2 else 'carp'}\n"
                                               for i, p in enumerate(routes)))
        proc = subprocess.run([sys.executable, "-c", SESSION], cwd=work, env=env, capture_output=True, text=True,
                              timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = [json.loads(line)["argv"] for line in proc.stderr.splitlines() if line.startswith('{"argv"')]
    assert ran == ["bootstrap", "predict", "review", "relabel", "undo", "verify", "annotate"]
    assert (work / "models" / "export.pkl").is_file() and len(list(batch.glob("*.json"))) == 2

    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")) == []
    assert _snapshot(torch_home) == torch_before
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == ["batch", "data", "det.pt",
                                                                                 "models", "urls.csv"]
    # the library caches went into the workspace's bookkeeping
    assert (work / "data" / ".smarthub" / "cache" / "matplotlib").is_dir()


# ---------------------------------------------------------------- a link leaving the data folder is never shown


def test_the_clean_tab_never_ranks_or_shows_a_file_outside_the_workspace(tmp_path: Path) -> None:
    """A class folder holding a link to an image outside the workspace: the Clean tab's review (every image
    shown) neither ranks nor displays it, and says on one line that it was skipped."""
    from helpers import make_image
    from smarthub.ui.tab_clean import SHOW_ALL, CleanState, run_review
    from smarthub.workspace import Workspace

    ws = Workspace(data_dir=tmp_path / "ws" / "data", models_dir=tmp_path / "ws" / "models")
    for c, (label, color) in enumerate({"fish": (40, 40, 200), "bird": (200, 40, 40)}.items()):
        for i in range(4):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", color=color, pattern=10 * c + i)
    secret = make_image(tmp_path / "private" / "holiday.jpg", color=(10, 220, 10), pattern=99)
    (ws.data_dir / "fish" / "holiday.jpg").symlink_to(secret)
    view = run_review(ws, CleanState(), "fast", 0.5, 2, include=[SHOW_ALL])
    result = view.state.result
    assert len(result.entries) == 8 and all("holiday" not in str(e.path) for e in result.entries)
    assert len(result.suspects) == 8 and all("holiday" not in str(s.path) for s in result.suspects)
    assert all("holiday" not in caption and "holiday" not in thumb for thumb, caption in view.gallery)
    assert "holiday" not in view.selected and "holiday" not in (view.preview or "")
    assert ("1 entry skipped: links leading outside the data folder" in view.status
            and "fish/holiday.jpg" in view.status)


def test_train_says_what_it_skipped_on_one_line_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty class folder and a link leaving the data folder: `train` trains without them and says so."""
    from helpers import make_image
    from smarthub.cli import main

    data, models = tmp_path / "data", tmp_path / "models"
    for c, label in enumerate(("fish", "bird")):
        for i in range(4):
            make_image(data / label / f"{label}{i}.jpg", color=(60 + 120 * c, 60, 180 - 120 * c), pattern=10 * c + i)
    (data / "koi").mkdir()
    (data / "fish" / "holiday.jpg").symlink_to(make_image(tmp_path / "private" / "holiday.jpg"))
    assert main(["train", "--data", str(data), "--models", str(models), "--arch", "mobilenet_v2", "--epochs", "1",
                 "--size", "32", "--batch-size", "4", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "note: 1 class folder without images skipped (not a class of this model): 'koi'" in out
    assert f"note: 1 entry skipped: links leading outside the data folder {data} (fish/holiday.jpg)" in out
    report = json.loads((models / "report.json").read_text())
    assert report["vocab"] == ["bird", "fish"] and report["n_train"] + report["n_valid"] == 8
