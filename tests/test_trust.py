"""Model files are pickles: only those smarthub wrote load without --trust, and a refused file never runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smarthub import trust
from smarthub.errors import ModelError
from tests.helpers import make_image

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this creates `marker`: proof that loading ran the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _malicious(path: Path, marker: Path, *, mention: str = "") -> Path:
    import torch

    torch.save({"payload": _Payload(marker), "note": mention}, path)
    return path


@pytest.fixture
def enforced():
    previous = trust.require_known_models(True)
    yield
    trust.require_known_models(previous)


def test_files_smarthub_wrote_are_recognised_by_their_bytes(tmp_path: Path) -> None:
    import torch

    model = tmp_path / "models" / "export.pkl"
    trust.save_model(model, lambda tmp: torch.save({"w": torch.zeros(2)}, tmp))
    origin = trust.written_by_smarthub(model)
    assert origin is not None and origin["name"] == "export.pkl" and origin["by"].startswith("smarthub")
    assert "written by smarthub" in trust.check_pickle(model)
    copied = tmp_path / "elsewhere" / "export.pkl"
    copied.parent.mkdir()
    copied.write_bytes(model.read_bytes())
    assert trust.written_by_smarthub(copied) is None  # no record beside it
    model.write_bytes(model.read_bytes() + b"\0")
    assert trust.written_by_smarthub(model) is None  # changed since smarthub wrote it


def test_library_calls_load_with_a_notice_when_not_enforced(tmp_path: Path) -> None:
    notice = trust.check_pickle(tmp_path / "x.pkl", what="classifier")
    assert "NOT written by smarthub" in notice and "runs code" not in notice and "ran code" in notice


@pytest.mark.parametrize("loader", ["classifier", "ultralytics-detector"])
def test_a_refused_pickle_never_runs(tmp_path: Path, enforced, loader: str) -> None:
    marker = tmp_path / "pwned"
    if loader == "classifier":
        from smarthub.model.inference import load_classifier

        path = _malicious(tmp_path / "export.pkl", marker)
        with pytest.raises(ModelError, match=r"export\.pkl was not written by smarthub .*again with --trust"):
            load_classifier(path)
    else:
        from smarthub.annotate.detect import load_detector

        path = _malicious(tmp_path / "yolo.pt", marker, mention="ultralytics.nn.tasks.DetectionModel")
        with pytest.raises(ModelError, match=r"yolo\.pt was not written by smarthub"):
            load_detector(path)
    assert not marker.exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "smarthub", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_refuses_a_foreign_model_and_trust_lets_it_through(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    model = _malicious(tmp_path / "export.pkl", marker)
    image = make_image(tmp_path / "a.png")
    refused = _cli("predict", str(image), "--model", str(model), cwd=tmp_path)
    assert refused.returncode == 2 and not marker.exists()
    assert refused.stderr.startswith("error: ") and "--trust" in refused.stderr and len(refused.stderr.splitlines()) == 1
    trusted = _cli("predict", str(image), "--model", str(model), "--trust", cwd=tmp_path)
    assert marker.exists()  # the user said so: the pickle was loaded (and ran), then found not to be a learner
    assert trusted.returncode == 2 and "does not hold a fastai learner" in trusted.stderr


# ---------------------------------------------------------------- every entry point that loads a model file


def _hostile_workspace(root: Path, marker: Path) -> tuple[Path, Path]:
    """(data, models): two classes of three real images each, and a hostile models/export.pkl."""
    data, models = root / "data", root / "models"
    for label, color in (("fish", (200, 40, 40)), ("bird", (40, 40, 200))):
        for i in range(3):
            make_image(data / label / f"{label}{i}.png", color=(color[0], color[1] + 20 * i, color[2]))
    models.mkdir()
    _malicious(models / "export.pkl", marker)
    return data, models


def _checkpoint(path: Path) -> Path:
    """A real torchvision detector checkpoint smarthub wrote (so it passes the check by itself)."""
    import torch

    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint

    torch.manual_seed(0)
    model = build_torchvision_model("fasterrcnn_mobilenet_v3_large_320_fpn", 2, min_size=64, max_size=64)
    return save_detector_checkpoint(path, model, arch="fasterrcnn_mobilenet_v3_large_320_fpn",
                                    labels=["__background__", "thing"], model_kwargs={"min_size": 64, "max_size": 64})


ENTRY_POINTS = ["predict --model", "review --fast-model", "annotate --classifier", "annotate --model x.pt",
                "train-detector --model x.pt", "app detector upload"]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["predict", "review", "annotate-classifier",
                                                     "annotate-ultralytics", "train-detector-from-pt", "app-upload"])
def test_each_entry_point_refuses_a_hostile_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   entry: str) -> None:
    from smarthub.cli import main

    marker = tmp_path / "pwned"
    data, models = _hostile_workspace(tmp_path, marker)
    images = tmp_path / "images"
    make_image(images / "a.png")
    yolo = _malicious(tmp_path / "x.pt", marker, mention="ultralytics.nn.tasks.DetectionModel")
    if entry == "app detector upload":
        from smarthub.ui.tab_annotate import store_detector
        from smarthub.workspace import Workspace

        previous = trust.require_known_models(True)  # what `smarthub app` sets without --trust
        try:
            with pytest.raises(ModelError, match=r"x\.pt was not written by smarthub .*--trust"):
                store_detector(Workspace(data_dir=data, models_dir=models), str(yolo))
        finally:
            trust.require_known_models(previous)
        assert not (models / "detectors" / "uploads" / "x.pt").exists()
    else:
        argv = {
            "predict --model": ["predict", str(images / "a.png"), "--model", str(models / "export.pkl")],
            "review --fast-model": ["review", "--data", str(data), "--models", str(models), "--fast-model",
                                    "--folds", "2"],
            "annotate --classifier": ["annotate", str(images), "--model", str(_checkpoint(tmp_path / "det.pt")),
                                      "--classifier", str(models / "export.pkl"), "--out", str(tmp_path / "out")],
            "annotate --model x.pt": ["annotate", str(images), "--model", str(yolo), "--out", str(tmp_path / "out")],
            "train-detector --model x.pt": ["train-detector", str(images), "--models", str(models), "--model",
                                            str(yolo), "--epochs", "1"],
        }[entry]
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("hashing: ")]
        assert len(err) == 1 and err[0].startswith("error: "), err  # one line (after review's progress)
        assert "was not written by smarthub" in err[0] and "--trust" in err[0]
    assert not marker.exists()  # refused before a byte of it was unpickled


def test_no_import_fallback_around_smarthub_modules() -> None:
    """A failing import of smarthub's own code must fail loudly, never fall back to a path without the checks."""
    import ast

    offenders = []
    for path in sorted((REPO / "smarthub").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Try):
                continue
            catches = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                          or isinstance(h.type, ast.Tuple) and any(getattr(e, "id", "") in ("ImportError",
                                                                                             "ModuleNotFoundError")
                                                                    for e in h.type.elts)
                          for h in node.handlers if h.type is not None)
            own = [n for n in ast.walk(ast.Module(body=node.body, type_ignores=[]))
                   if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("smarthub")
                   or isinstance(n, ast.Import) and any(a.name.startswith("smarthub") for a in n.names)]
            if catches and own:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
