"""`smarthub tune`: Optuna trials on real tiny runs, every trial recorded (a failing one too) in the final run's
folder as a table and a plot; a space with no valid point is one line."""
from __future__ import annotations

import csv
import io
import json
import os
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
    # no budget: the best trial's model is the one kept (training its settings again would give the same model)
    assert result.promoted == "trial" and report["tuning"]["promoted"] == "trial"
    assert report["valid_accuracy"] == pytest.approx(best.valid_accuracy)
    assert report["tuning"]["why"] == result.why and "no time budget" in result.why
    assert report["options"]["promote"] == "if-better" and report["promotion"]["promoted"] is True
    assert [p.name for p in ws.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")] == [report["run_id"]]


SPACE = TuneSpace(lr=(1e-3, 4e-3), freeze_strides=(8,), aug_strengths=(0.0,), sizes_px=(32,))


def _tiny(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "data", tmp_path / "models")
    write_fashion_folders(ws.data_dir, per_class=8, classes=("trouser", "bag", "coat"), size_px=28)
    return ws


def test_with_budget_left_a_final_run_fills_it_and_the_better_is_promoted(tmp_path: Path, torch_home: Path) -> None:
    """One real trial, a budget far above its time: the final run with its settings runs, and the run recorded and
    promoted is the better of the two on validation (its report holds both figures)."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.tune import tune

    ws = _tiny(tmp_path)
    lines: list[str] = []
    result = tune(ws, TrainOptions(size_px=32, batch_size=8, epochs=1), space=SPACE, trials=1, budget_s=3600,
                  say=lines.append)
    tuning = result.final.report["tuning"]
    assert [ln for ln in lines if re.match(r"best: trial 0, .*a final run with these settings for the \d+ s left", ln)]
    trial_acc, final_acc = tuning["trial_score"], tuning["final_score"]
    assert trial_acc == pytest.approx(result.trials[0].valid_accuracy) and final_acc is not None
    winner = "final" if final_acc > trial_acc else "trial"
    assert result.promoted == tuning["promoted"] == winner and lines[-1] == result.why
    assert result.final.report["valid_accuracy"] == pytest.approx(max(trial_acc, final_acc))
    assert result.final.report["epochs"] == (2 if winner == "final" else 1)  # the final run may train (N+1)x longer
    promoted = json.loads(ws.report_path.read_text())
    assert promoted["run_id"] == result.final.report["run_id"] and promoted["tuning"]["promoted"] == winner
    assert not (ws.cache_dir / "tune").exists()


def test_a_failed_final_run_keeps_the_best_trials_model(tmp_path: Path, torch_home: Path) -> None:
    """An unreadable image appears once the trial is done: the final run fails on it, and the best trial's model
    is recorded and promoted, the reason in its report."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.tune import tune

    ws = _tiny(tmp_path)
    broken = ws.data_dir / "coat" / "zz-broken.png"

    def say(text: str) -> None:
        if text.startswith("best: trial"):
            broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    result = tune(ws, TrainOptions(size_px=32, batch_size=8, epochs=1), space=SPACE, trials=1, budget_s=3600, say=say)
    report = result.final.report
    assert result.promoted == "trial" and report["tuning"]["final_score"] is None
    assert re.match(r"^kept the best trial's model \(validation accuracy [0-9.]+\): the final run failed \(.*"
                    r"zz-broken\.png", result.why), result.why
    assert report["valid_accuracy"] == pytest.approx(result.trials[0].valid_accuracy)
    assert json.loads(ws.report_path.read_text())["run_id"] == report["run_id"]
    from smarthub.model.predict import predict

    assert predict(ws.export_path, [ws.data_dir / "bag" / sorted(p.name for p in (ws.data_dir / "bag").iterdir())[0]],
                   top_k=1, device="cpu")[0].label in ("trouser", "bag", "coat")


def test_an_error_while_recording_leaves_the_promoted_model_unchanged(tmp_path: Path, torch_home: Path,
                                                                     monkeypatch) -> None:
    """A model is promoted; tuning then cannot write into the models folder (os.replace refused there): one
    SmartHubError, the promoted files and pointer byte for byte as before, no scratch left."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train
    from smarthub.model.tune import tune

    ws = _tiny(tmp_path)
    options = TrainOptions(size_px=32, batch_size=8, epochs=1)
    train(ws, options)
    before = {p.name: p.read_bytes() for p in ws.models_dir.iterdir() if p.is_file()}
    real_replace = os.replace
    models = ws.models_dir.resolve()

    def refuse_models(src, dst, *args, **kwargs):
        if models in Path(dst).resolve().parents:
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse_models)
    with pytest.raises(SmartHubError, match=r"^cannot write .*Permission denied"):
        tune(ws, options, space=SPACE, trials=1)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in ws.models_dir.iterdir() if p.is_file()} == before
    assert not (ws.cache_dir / "tune").exists()
