"""Distributed training through accelerate on the CPU: two processes (gloo) train the same model as one process
would, and only rank 0 writes (one export.pkl, one report)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.workspace import Workspace

ARGS = ["--size", "32", "--batch-size", "8", "--epochs", "2", "--device", "cpu", "--always-fine-tune"]


@pytest.mark.slow
def test_two_cpu_processes_train_like_one(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    for split, n, offset in (("train", 20, 0), ("valid", 20, 300)):
        write_fashion_folders(data / split, per_class=n, classes=("pullover", "bag", "sneaker"), size_px=28,
                              offset=offset)
    single = Workspace(data, tmp_path / "single")
    double = Workspace(data, tmp_path / "double")
    assert main(["train", "--data", str(data), "--models", str(single.models_dir), *ARGS]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--models", str(double.models_dir), *ARGS, "--distributed", "2"]) == 0
    out, err = capsys.readouterr()
    assert "launching 2 processes" in err

    # exactly one run, written once (by rank 0), and promoted
    runs = [p for p in (double.models_dir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1 and not any(p.name.startswith(".") for p in (double.models_dir / "runs").iterdir()
                                      if p.is_dir())
    assert sorted(p.name for p in runs[0].iterdir()) == [".smarthub-models.jsonl", "confusion.png", "export.pkl",
                                                         "history.csv", "report.json"]
    assert sorted(p.name for p in double.models_dir.iterdir() if p.is_file()) == [
        ".smarthub-models.jsonl", "confusion.png", "export.pkl", "history.csv", "promoted.json", "report.json"]
    assert len(list(double.models_dir.rglob("export.pkl"))) == 2  # the run's file and its promoted link
    assert double.export_path.samefile(runs[0] / "export.pkl") or \
        double.export_path.read_bytes() == (runs[0] / "export.pkl").read_bytes()
    one, two = (json.loads(ws.report_path.read_text()) for ws in (single, double))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["n_valid"] == one["n_valid"] == 60 and two["valid_sha256"] == one["valid_sha256"]
    assert two["epochs_run"] >= 1 and two["device"] == "cpu"
    assert abs(two["valid_accuracy"] - one["valid_accuracy"]) <= 0.07, (one["valid_accuracy"], two["valid_accuracy"])

    # rank 0 exported after leaving the distributed stage: a fresh process loads and predicts with it

    images = sorted((data / "valid" / "bag").glob("*.png"))[:2]
    proc = subprocess.run([sys.executable, "-m", "smarthub", "predict", *map(str, images), "--model",
                           str(double.export_path), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 2
