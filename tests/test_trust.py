"""Model files are pickles: only those smarthub wrote load without --trust, and a refused file never runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smarthub import trust
from smarthub.atomicio import atomic_save_torch
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
    atomic_save_torch(model, lambda tmp: torch.save({"w": torch.zeros(2)}, tmp))
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
        from smarthub.model.train import load_classifier

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
