"""Fine-tuning only while it pays, on real tiny runs; readable progress; the run id is the run's start time."""
from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.workspace import Workspace


def _fashion(root: Path, classes: tuple[str, ...], per_class: int, size_px: int = 28) -> Workspace:
    ws = Workspace(root / "data", root / "models")
    write_fashion_folders(ws.data_dir, per_class=per_class, classes=classes, size_px=size_px)
    return ws


def test_the_run_id_is_the_start_time_not_the_time_it_was_written(tmp_path: Path, torch_home: Path) -> None:
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = _fashion(tmp_path, ("trouser", "bag"), 6)

    def slow_saving(p) -> None:  # the run's end comes seconds after its start, whatever the machine
        if p.stage == "saving":
            time.sleep(1.5)

    before = datetime.now(timezone.utc).replace(microsecond=0)
    report = train(ws, TrainOptions(size_px=32, batch_size=4, head_only=True), progress=slow_saving).report
    started = datetime.fromisoformat(report["started_at"])
    created = datetime.fromisoformat(report["created_at"])
    assert before <= started < created
    assert report["run_id"] == f"{started.strftime('%Y%m%dT%H%M%S')}-mobilenet_v2"
    assert (ws.runs_dir / report["run_id"] / "report.json").is_file()


def test_library_warnings_are_silenced_by_message_only(recwarn) -> None:
    import warnings

    from smarthub.libwarnings import quiet_library_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_library_warnings()
        warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]


def test_cli_progress_lines_inside_long_steps_without_a_terminal(capsys, monkeypatch) -> None:
    """In a log (no terminal) a long step still says how far it is, at most every LOG_PROGRESS_EVERY_S."""
    from smarthub.cli import train as cli_train
    from smarthub.model.progress import TrainProgress

    monkeypatch.setattr(cli_train, "LOG_PROGRESS_EVERY_S", 0.0)
    printer = cli_train.epoch_printer(tty=False)
    printer(TrainProgress("embedding", 0, 0, 0, 0, {}))
    printer(TrainProgress("embedding", 0, 0, 40, 100, {}))
    printer(TrainProgress("training", 1, 2, 3, 10, {"train_loss": 0.5}))
    printer(TrainProgress("note", 0, 0, 0, 0, {"message": "fine-tuning did not beat the head after 3 steps"}))
    err = capsys.readouterr().err.splitlines()
    assert err == ["embedding…", "embedding… 40/100", "epoch 1/2 (training): batch 3/10  train_loss 0.5000",
                   "fine-tuning did not beat the head after 3 steps"]


SIMILAR = ("tshirt", "pullover", "coat", "shirt")  # tops: the head on ImageNet features gets some wrong


@pytest.fixture(scope="module")
def tops(tmp_path_factory: pytest.TempPathFactory, torch_home: Path) -> Path:
    root = tmp_path_factory.mktemp("tops")
    write_fashion_folders(root / "data", per_class=80, classes=SIMILAR, size_px=28)
    return root / "data"


def test_fine_tuning_that_loses_at_once_stops_after_the_probe_and_keeps_the_head(tops: Path, tmp_path: Path,
                                                                               capsys) -> None:
    """A learning rate far too high (9: Adam moves every weight by about 0.4 in the first step) wrecks the model in its first steps: the probe sees it, stops there with one
    line saying why, and the head is what is kept and exported."""
    rc = main(["train", "--data", str(tops), "--models", str(tmp_path / "models"), "--size", "32", "--batch-size",
               "16", "--epochs", "3", "--lr", "9"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    import json

    report = json.loads((tmp_path / "models" / "report.json").read_text())
    assert report["head_valid_accuracy"] < 1.0  # there was something to gain
    assert report["probe"]["pays"] is False and report["probe"]["steps"] >= 1
    assert report["epochs_run"] == 0 and report["best_epoch"] == 0
    assert report["valid_accuracy"] == pytest.approx(report["head_valid_accuracy"], abs=1e-4)
    line = f"fine-tuning did not beat the head after {report['probe']['steps']} steps"
    assert [ln for ln in err.splitlines() if ln.startswith(line)], err
    assert ln_has_kept_head(err)
    assert "kept the head" in out  # the summary's recipe line says it too
    assert not [ln for ln in err.splitlines() if ln.startswith("epoch ") and "valid_loss" in ln]  # no epoch ended


def ln_has_kept_head(err: str) -> bool:
    return any(ln.startswith("fine-tuning did not beat the head") and ln.endswith("kept the head")
               for ln in err.splitlines())


def test_fine_tuning_within_the_warm_up_dip_goes_on(tops: Path, tmp_path: Path, torch_home: Path) -> None:
    """The probe lets an ordinary fine-tune go on, with the schedule it had: as many epochs as without it."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    events: list = []
    report = train(Workspace(tops, tmp_path / "probed"), TrainOptions(size_px=32, batch_size=8, epochs=2),
                   progress=events.append).report
    assert report["head_valid_accuracy"] < 1.0
    assert report["probe"]["pays"] is True
    assert report["epochs_run"] >= 1 and [h["stage"] for h in report["history"]][:2] == ["head", "training"]
    notes = [p.metrics["message"] for p in events if p.stage == "note"]
    assert notes and notes[0].startswith(f"fine-tuning goes on: after {report['probe']['steps']} steps")


def test_a_head_without_validation_errors_skips_fine_tuning(tmp_path: Path, torch_home: Path) -> None:
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = _fashion(tmp_path, ("trouser", "bag", "sneaker"), 10)
    events: list = []
    report = train(ws, TrainOptions(size_px=32, batch_size=8, epochs=3), progress=events.append).report
    assert report["head_valid_accuracy"] == 1.0 and report["valid_accuracy"] == 1.0
    assert report["epochs_run"] == 0 and report["probe"] is None
    assert re.match(r"the head gets 0 of \d+ validation images wrong, within the noise of that count \(±0.0\): "
                    r"fine-tuning could not show a gain; kept the head$", report["finetune_decision"])
    assert [p.metrics["message"] for p in events if p.stage == "note"] == [report["finetune_decision"]]
