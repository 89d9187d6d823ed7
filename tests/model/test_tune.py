"""`smarthub tune`: Optuna trials on real tiny runs, every trial recorded (a failing one too) in the final run's
folder as a table and a plot; a space with no valid point is one line."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.errors import SmartHubError
from smarthub.model.tune import TuneSpace, parse_space
from smarthub.workspace import Workspace


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(lr=(1e-2, 1e-3)), r"no valid point: learning rates 0.01..0.001"),
    (dict(freeze_strides=(3, 5)), r"no valid point: freeze strides \[3, 5\]"),
    (dict(aug_strengths=(-1.0, 9.0)), r"no valid point: augmentation strengths \[-1.0, 9.0\]"),
    (dict(sizes_px=(8, 4096)), r"no valid point: image sizes \[8, 4096\]"),
], ids=["lr-reversed", "freeze", "aug", "sizes"])
def test_a_space_with_no_valid_point_is_refused(kwargs, message) -> None:
    with pytest.raises(SmartHubError, match=message):
        TuneSpace(**kwargs)


def test_parse_space_reads_lists_and_refuses_words() -> None:
    assert parse_space(lr="1e-3,2e-3", sizes="32,64") == TuneSpace(lr=(1e-3, 2e-3), sizes_px=(32, 64))
    with pytest.raises(SmartHubError, match=r"--tune-sizes must be comma-separated numbers \(got 'big'\)"):
        parse_space(sizes="big")
    with pytest.raises(SmartHubError, match=r"--tune-lr takes two numbers"):
        parse_space(lr="1e-3")


def test_cli_tune_with_no_valid_point_is_one_line(tmp_path: Path, capsys) -> None:
    rc = main(["tune", "--data", str(tmp_path / "data"), "--models", str(tmp_path / "models"), "--tune-sizes", "8"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: the tuning space has no valid point: image sizes [8]"), err
    assert not (tmp_path / "models").exists()


def test_tune_records_every_trial_and_trains_the_final_model(tmp_path: Path, torch_home: Path) -> None:
    """Three real trials; the second fails (an unreadable image appears in the data, then goes): it is recorded
    with its reason and the search goes on; the final model is trained with the best settings and the table and
    plot sit in its run folder."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.tune import TRIAL_COLUMNS, tune

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    write_fashion_folders(ws.data_dir, per_class=8, classes=("trouser", "bag", "coat"), size_px=28)
    broken = ws.data_dir / "coat" / "zz-broken.png"
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        if text.startswith("trial 0:"):
            broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
        elif text.startswith("trial 1:"):
            broken.unlink()

    space = TuneSpace(lr=(1e-3, 4e-3), freeze_strides=(8, 16), aug_strengths=(0.0, 1.0), sizes_px=(32,))
    result = tune(ws, TrainOptions(size_px=32, batch_size=8, epochs=1), space=space, trials=3, say=say)
    assert [t.state for t in result.trials] == ["complete", "failed", "complete"]
    assert "zz-broken.png" in result.trials[1].note and result.trials[1].valid_accuracy is None
    assert re.match(r"trial 1: failed, accuracy — .*zz-broken\.png", lines[1]), lines[1]
    top = max(t.valid_accuracy for t in result.trials if t.valid_accuracy is not None)
    best = [t for t in result.trials if t.valid_accuracy == top]  # ties: the faster one is taken
    best = min(best, key=lambda t: t.seconds)
    assert (result.best.lr, result.best.freeze_stride, result.best.aug_strength) == (
        best.lr, best.freeze_stride, best.aug_strength)
    report = result.final.report
    assert report["options"]["lr"] == pytest.approx(best.lr) and report["options"]["aug_strength"] == best.aug_strength
    run_dir = ws.runs_dir / report["run_id"]
    rows = list(csv.reader(io.StringIO((run_dir / "tune-trials.csv").read_text())))
    assert tuple(rows[0]) == TRIAL_COLUMNS and [r[1] for r in rows[1:]] == ["complete", "failed", "complete"]
    assert (run_dir / "tune-trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (ws.cache_dir / "tune").exists()  # the trials' scratch folders are gone
    assert ws.export_path.is_file()  # the final model was promoted (there was none before)
