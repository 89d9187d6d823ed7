"""Training: bad input is refused with one readable line; real tiny fastai runs export a model that a new
process loads and predicts with; the train/valid layout is honoured; a failed write keeps the last model."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_image, write_fashion_folders
from smarthub.cli import main
from smarthub.errors import DatasetError, SmartHubError
from smarthub.workspace import Workspace

TINY = ["--epochs", "1", "--size", "32", "--batch-size", "8"]
REPORT_FIELDS = {
    "arch", "vocab", "size_px", "epochs", "batch_size", "seed", "pretrained", "valid_accuracy", "error_rate",
    "per_class", "confusion_matrix", "n_train", "n_valid", "dataset_fingerprint", "versions", "seconds",
    "created_at",
}


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _two_classes(data: Path, n: int = 3) -> None:
    for c, label in enumerate(("red", "blue")):
        for i in range(n):
            make_image(data / label / f"{label}{i}.png", color=(200, 30, 30) if c == 0 else (30, 30, 200),
                       pattern=c * 10 + i)


def _no_images(data: Path) -> None:
    (data / "empty_class").mkdir(parents=True)


def _one_class(data: Path) -> None:
    for i in range(4):
        make_image(data / "only" / f"{i}.png", pattern=i)


def _class_with_one_image(data: Path) -> None:
    _two_classes(data)
    make_image(data / "lonely" / "0.png", pattern=99)


def _unreadable_image(data: Path) -> None:
    _two_classes(data)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")


def _missing_dir(data: Path) -> None:
    data.rmdir()


def _good(data: Path) -> None:
    _two_classes(data)


BAD_TRAIN_INPUT = [
    # (setup, extra CLI args, message pattern)
    (_no_images, ["--no-pretrained"], r"no images to train on"),
    (_missing_dir, ["--no-pretrained"], r"does not exist"),
    (_one_class, ["--no-pretrained"], r"only one class \('only'\)"),
    (_class_with_one_image, ["--no-pretrained"], r"fewer than 2 images: 'lonely' \(1\)"),
    (_unreadable_image, ["--no-pretrained"], r"broken\.jpg.*smarthub verify"),
    (_good, ["--no-pretrained", "--arch", "no_such_net"], r"unknown architecture 'no_such_net'.*resnet18"),
    (_good, ["--arch", "resnet18"],
     r"resnet18-f37072fd\.pth.*smarthub weights add.*--no-pretrained.*cached: mobilenet_v2 → `--arch mobilenet_v2`"),
    (_good, ["--device", "cuda"], r"--device cuda asked for, but torch sees no CUDA GPU here"),
    (_good, ["--device", "cuda:1"], r"--device cuda:1 asked for, but torch sees no CUDA GPU here"),
    (_good, ["--device", "tpu"], r"unknown device 'tpu': use auto, cpu, cuda, cuda:N or mps"),
    (_good, ["--no-pretrained", "--head-only"], r"--head-only needs a pretrained body"),
    (_good, ["--patience", "0"], r"patience must be at least 1"),
    (_good, ["--freeze-stride", "3"], r"--freeze-stride must be one of 0, 2, 4, 8, 16, 32 \(got 3\)"),
    (_good, ["--no-pretrained", "--epochs", "0"], r"epochs must be at least 1"),
    (_good, ["--no-pretrained", "--valid-pct", "1.5"], r"--valid-pct must be between 0 and 1"),
]


@pytest.mark.parametrize("setup, extra, message", BAD_TRAIN_INPUT, ids=[
    "no-images", "missing-data-dir", "one-class", "class-with-one-image", "unreadable-image", "unknown-arch",
    "resnet18-weights-not-cached", "cuda-without-cuda", "cuda-index-without-cuda", "unknown-device",
    "head-only-from-scratch", "zero-patience", "bad-freeze-stride", "zero-epochs", "bad-valid-pct"])
def test_train_refuses_bad_input(ws: Workspace, capsys, setup, extra, message) -> None:
    setup(ws.data_dir)
    rc, out, err = _cli(capsys, "train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), *TINY, *extra)
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert not ws.export_path.exists()


def test_core_train_raises_dataset_error_naming_the_file(ws: Workspace) -> None:
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    _unreadable_image(ws.data_dir)
    with pytest.raises(DatasetError, match=r"red/broken\.jpg: (not an image|truncated|unreadable)"):
        train(ws, TrainOptions(epochs=1, size_px=32, batch_size=8, pretrained=False))


@pytest.mark.parametrize("n, valid_pct, expect_valid", [
    ((6, 6, 6), 0.2, (1, 1, 1)),
    ((2, 2), 0.2, (0, 1)),      # tiny: still one validation image, never the last training image of a class
    ((10, 3), 0.5, (5, 2)),
    ((2, 20), 0.25, (0, 5)),
], ids=["even", "tiny", "half", "unbalanced"])
def test_split_items_is_seeded_and_per_class(n, valid_pct, expect_valid) -> None:
    from smarthub.dataset import ImageItem
    from smarthub.model.data import split_items

    items = [ImageItem(Path(f"{c}/{i}.png"), f"c{c}") for c, k in enumerate(n) for i in range(k)]
    flags = split_items(items, valid_pct=valid_pct, seed=3)
    assert flags == split_items(items, valid_pct=valid_pct, seed=3)
    got = tuple(sum(f for f, it in zip(flags, items) if it.label == f"c{c}") for c in range(len(n)))
    assert sum(got) == sum(expect_valid)
    for c, k in enumerate(n):
        assert got[c] < k  # every class keeps a training image


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A real fastai run from scratch (resnet18, 1 epoch, 32 px) on Fashion-MNIST trousers and bags."""
    root = tmp_path_factory.mktemp("trained")
    ws = Workspace(root / "data", root / "models")
    write_fashion_folders(ws.data_dir, per_class=12, classes=("trouser", "bag"), size_px=32)
    rc = main(["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--arch", "resnet18",
               "--no-pretrained", *TINY])
    assert rc == 0
    return ws


def _predict_subprocess(model: Path, images: list[Path]) -> list[dict]:
    env = {**os.environ, "SMARTHUB_DEBUG": ""}
    proc = subprocess.run([sys.executable, "-m", "smarthub", "predict", *map(str, images), "--model", str(model),
                           "--top-k", "2", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_train_from_scratch_writes_artifacts_and_a_new_process_predicts(trained: Workspace, capsys) -> None:
    ws = trained
    for path in (ws.export_path, ws.report_path, ws.confusion_path, ws.history_path):
        assert path.is_file() and path.stat().st_size > 0, path
    report = json.loads(ws.report_path.read_text())
    assert REPORT_FIELDS <= report.keys()
    assert report["arch"] == "resnet18" and report["pretrained"] is False
    assert report["vocab"] == ["bag", "trouser"]
    assert report["n_train"] + report["n_valid"] == 24 and report["n_valid"] >= 2
    assert sum(map(sum, report["confusion_matrix"])) == report["n_valid"]
    assert set(report["per_class"]) == {"bag", "trouser"}
    assert {"precision", "recall", "f1", "support"} <= report["per_class"]["bag"].keys()
    assert {"torch", "torchvision", "fastai", "smarthub"} <= report["versions"].keys()
    assert ws.confusion_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = ws.history_path.read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,valid_loss,error_rate,accuracy,time")

    images = sorted((ws.data_dir / "bag").glob("*.png"))[:2] + sorted((ws.data_dir / "trouser").glob("*.png"))[:2]
    preds = _predict_subprocess(ws.export_path, images)
    assert [p["path"] for p in preds] == [str(p) for p in images]
    for p in preds:
        assert len(p["top"]) == 2 and {t["label"] for t in p["top"]} == {"bag", "trouser"}
        assert sum(t["prob"] for t in p["top"]) == pytest.approx(1.0, abs=1e-4)


def test_train_honours_train_valid_folders(ws: Workspace, capsys) -> None:
    for split, n in (("train", 5), ("valid", 2)):
        write_fashion_folders(ws.data_dir / split, per_class=n, classes=("trouser", "bag"), size_px=32,
                              offset=0 if split == "train" else 100)
    rc, out, err = _cli(capsys, "train", "--data", str(ws.data_dir), "--models", str(ws.models_dir),
                        "--no-pretrained", *TINY)
    assert rc == 0, err
    report = json.loads(ws.report_path.read_text())
    assert (report["split"], report["n_train"], report["n_valid"]) == ("folders", 10, 4)
    assert report["class_counts"] == {"bag": {"train": 5, "valid": 2}, "trouser": {"train": 5, "valid": 2}}
    assert "validation accuracy" in out and "trouser" in out
    assert "epoch 1/1" in err  # one line per epoch in a log, no progress-bar flood
    assert len(err.splitlines()) < 15


def test_failed_write_keeps_the_previous_model(trained: Workspace, capsys, monkeypatch) -> None:
    ws = trained
    before = {p: p.read_bytes() for p in (ws.export_path, ws.report_path)}
    real_replace = os.replace

    def failing_replace(src, dst, *a, **k):
        if str(dst).endswith("export.pkl"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing_replace)
    rc, out, err = _cli(capsys, "train", "--data", str(ws.data_dir), "--models", str(ws.models_dir),
                        "--no-pretrained", *TINY)
    monkeypatch.undo()
    assert rc == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "export.pkl" in errors[0] and "No space left" in errors[0]
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in ws.models_dir.iterdir() if not p.name.startswith(".")) == [
        "confusion.png", "export.pkl", "history.csv", "promoted.json", "report.json", "runs"]
    assert len([p for p in ws.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 1


@pytest.mark.parametrize("extra", [["--device", "cuda"], ["--arch", "no_such_net"], ["--lr", "50"]],
                         ids=["cuda-without-cuda", "unknown-arch", "absurd-lr"])
def test_bad_input_leaves_the_current_model_alone(trained: Workspace, capsys, extra) -> None:
    ws = trained
    before = {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()}
    rc, out, err = _cli(capsys, "train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), *TINY, *extra)
    assert rc == 2 and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
    assert {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("pretrained", "stop_after_calls", "message"), [
    (False, 1, "after 0 complete epochs"),
    (True, 1, "after fitting the head"),
    (True, 2, "after 0 complete epochs"),
    (True, 5, "after 1 complete epoch;"),
], ids=["scratch-first-batch", "after-the-head", "first-fine-tuning-batch", "second-epoch"])
def test_stopping_writes_nothing_and_keeps_the_previous_model(trained: Workspace, torch_home: Path,
                                                              pretrained: bool, stop_after_calls: int,
                                                              message: str) -> None:
    """`should_stop` (the app's Stop button) ends training cleanly, also between the two stages."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.progress import TrainingStopped
    from smarthub.model.train import train

    ws = trained
    before = {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()}
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= stop_after_calls

    # 24 images, 20 % valid, batch 8: 2 train + 1 valid batches per epoch → polled 3 times per epoch, and
    # once after the head is fitted (pretrained)
    options = TrainOptions(arch="mobilenet_v2", epochs=3, patience=3, size_px=32, batch_size=8, pretrained=pretrained,
                           probe=False)
    with pytest.raises(TrainingStopped, match=f"^training stopped {message}.*nothing was "
                                              f"written, the previous model is unchanged$"):
        train(ws, options, should_stop=should_stop)
    assert len(calls) == stop_after_calls  # not polled again after it said stop
    assert {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()} == before


def test_pretrained_mobilenet_v2_learns_trousers_vs_bags(tmp_path: Path, torch_home: Path) -> None:
    """Real transfer learning with torchvision's ImageNet MobileNetV2 (from the TORCH_HOME fixture), LP-FT."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    write_fashion_folders(ws.data_dir, per_class=16, classes=("trouser", "bag"), size_px=64)
    result = train(ws, TrainOptions(arch="mobilenet_v2", epochs=1, size_px=64, batch_size=8, probe=False))
    report = result.report
    assert report["pretrained"] is True and report["weights_file"] == "mobilenet_v2-b0353104.pth"
    assert report["recipe"] == "lp-ft" and report["device"] == "cpu"
    assert [h["stage"] for h in report["history"]] == ["head", "training"]

    held_out = tmp_path / "held_out"
    write_fashion_folders(held_out, per_class=8, classes=("trouser", "bag"), size_px=64, offset=500)
    images = sorted(held_out.rglob("*.png"))
    preds = _predict_subprocess(ws.export_path, images)
    correct = sum(p["top"][0]["label"] == Path(p["path"]).parent.name for p in preds)
    assert correct / len(preds) > 0.8, preds  # chance is 0.5


def test_train_options_validation_is_a_smarthub_error() -> None:
    from smarthub.model.options import TrainOptions

    with pytest.raises(SmartHubError, match=r"--batch-size must be at least 2 \(got 1\)"):
        TrainOptions(batch_size=1)
