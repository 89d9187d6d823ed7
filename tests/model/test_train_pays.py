"""Fine-tuning only while it pays, on real tiny runs; readable progress; the run id is the run's start time."""
from __future__ import annotations

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
    from smarthub.model.train import TrainOptions, train

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
    from smarthub.model.train import TrainProgress

    monkeypatch.setattr(cli_train, "LOG_PROGRESS_EVERY_S", 0.0)
    printer = cli_train.epoch_printer(tty=False)
    printer(TrainProgress("embedding", 0, 0, 0, 0, {}))
    printer(TrainProgress("embedding", 0, 0, 40, 100, {}))
    printer(TrainProgress("training", 1, 2, 3, 10, {"train_loss": 0.5}))
    printer(TrainProgress("note", 0, 0, 0, 0, {"message": "fine-tuning did not beat the head after 3 steps"}))
    err = capsys.readouterr().err.splitlines()
    assert err == ["embedding…", "embedding… 40/100", "epoch 1/2 (training): batch 3/10  train_loss 0.5000",
                   "fine-tuning did not beat the head after 3 steps"]
