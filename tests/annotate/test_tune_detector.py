"""`train-detector --tune N` for real: Ultralytics' genetic tuner on tiny scenes of the shipped drawings (1 epoch,
64-96 px), every trial recorded in the final run's folder (a failing one too, and the search goes on), the final
detector trained with the best settings; bad input is one line and the previous detector stays."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
from test_export import scenes

from smarthub.annotate.train_detector import DetectorTrainOptions, latest_run
from smarthub.annotate.tune_detector import (TRIAL_COLUMNS, DetectorTuneSpace, check_trials, trial_from_result,
                                             tune_detector)
from smarthub.cli import main
from smarthub.errors import SmartHubError

pytestmark = pytest.mark.slow
TINY = dict(epochs=1, imgsz=64, batch=8)
SPACE = DetectorTuneSpace(imgsz=(64, 96))


def _ultralytics() -> None:
    if "ultralytics" not in sys.modules:
        os.environ.setdefault("YOLO_OFFLINE", "1")
    pytest.importorskip("ultralytics")


def _previous_detector(models: Path) -> Path:
    """A finished run already in use (latest.json names it)."""
    run = models / "detectors" / "old"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"format": "smarthub-detector"}')
    (models / "detectors" / "latest.json").write_text('{"run": "old"}')
    return run


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(lr0=(1e-2, 1e-3)), r"no valid point: learning rates 0\.01\.\.0\.001"),
    (dict(imgsz=(100, 120)), r"no valid point: image sizes 100\.\.120 px \(need a multiple of 32"),
    (dict(augment={"scale": (0.5, 2.0)}), r"no valid point: scale 0\.5\.\.2 \(valid: 0 to 0\.95"),
    (dict(augment={"blur": (0.0, 1.0)}), r"no valid point: augmentation 'blur' \(tunable: scale, translate, mosaic\)"),
], ids=["lr-reversed", "no-stride-multiple", "scale-too-strong", "unknown-augmentation"])
def test_a_space_with_no_valid_point_is_refused(kwargs, message) -> None:
    with pytest.raises(SmartHubError, match=message):
        DetectorTuneSpace(**kwargs)


@pytest.mark.parametrize("trials", [0, -3, True, 2.5], ids=["zero", "negative", "bool", "float"])
def test_trials_must_be_a_count(trials) -> None:
    with pytest.raises(SmartHubError, match=r"^--tune needs a number of trials of 1 or more"):
        check_trials(trials)


def test_space_sizes_are_stride_multiples_inside_the_bounds() -> None:
    assert DetectorTuneSpace(imgsz=(50, 130)).sizes() == [64, 96, 128]
    assert DetectorTuneSpace(imgsz=(64, 96)).bounds() == {"lr0": (1e-4, 1e-2), "imgsz": (64, 96), "scale": (0.0, 0.95),
                                                          "translate": (0.0, 0.9), "mosaic": (0.0, 1.0)}


def test_a_failed_record_keeps_its_error_line() -> None:
    result = {"iteration": 3, "fitness": 0.0, "hyperparameters": {"lr0": 0.002, "imgsz": 64.0},
              "datasets": {"dataset": {"metrics/mAP50-95(B)": 0.0, "fitness": 0.0}}, "failed_datasets": ["dataset"]}
    trial = trial_from_result(result, seconds=4.2, log_tail="Traceback\nRuntimeError: No valid images found in x\n")
    assert (trial.number, trial.state, trial.fitness, trial.settings["imgsz"]) == (3, "failed", None, 64)
    assert trial.note == "RuntimeError: No valid images found in x (see tune.log)"


@pytest.mark.parametrize(("argv", "message"), [
    (["--tune", "0"], r"^error: --tune needs a number of trials of 1 or more \(got 0\)$"),
    (["--tune", "-2"], r"^error: --tune needs a number of trials of 1 or more \(got -2\)$"),
    (["--tune", "2", "--model", "fasterrcnn_mobilenet_v3_large_320_fpn"], r"^error: --tune searches with Ultralytics' "
                                                                           r"tuner: --model fasterrcnn"),
], ids=["zero", "negative", "torchvision"])
def test_cli_bad_tune_is_one_line_and_the_previous_detector_stays(tmp_path: Path, capsys, argv, message) -> None:
    models = tmp_path / "models"
    old = _previous_detector(models)
    rc = main(["train-detector", str(tmp_path / "lm"), "--models", str(models), "--data", str(tmp_path / "data"),
               *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert re.match(message, err), err
    assert latest_run(models) == old
    assert sorted(p.name for p in (models / "detectors").iterdir()) == ["latest.json", "old"]


def test_cli_tune_that_is_neither_a_count_nor_an_objective_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train-detector", str(tmp_path), "--tune", "many"])
    assert info.value.code == 2
    assert "--tune takes time, time-per-class, f1 or a number of trials (got 'many')" in capsys.readouterr().err


def test_trials_are_recorded_a_failing_one_too_and_the_final_detector_uses_the_best(tmp_path: Path,
                                                                                  torch_home: Path) -> None:
    """Two real trials; the images vanish while the first runs (its dataset has none left: it fails, with the
    reason) and come back for the second; the final detector is trained with the second's settings, and the
    table, plot and Ultralytics' log sit in its run folder."""
    _ultralytics()
    lm, away = scenes(tmp_path / "lm", 12), tmp_path / "away"
    models = tmp_path / "models"
    lines: list[str] = []

    def progress(p) -> None:
        lines.append(p.line())
        if p.stage == "start" and p.text.startswith("tuning:"):
            lm.rename(away)
        elif p.stage == "trial" and p.text.startswith("trial 1/"):
            away.rename(lm)

    result = tune_detector(lm, models, DetectorTrainOptions(**TINY), trials=2, space=SPACE, progress=progress)
    assert [t.state for t in result.trials] == ["failed", "complete"]
    assert "No valid images found" in result.trials[0].note and result.trials[0].fitness is None
    assert [ln for ln in lines if ln.startswith("trial 1/2: failed")], lines
    second = result.trials[1]
    assert second.settings["imgsz"] in (64, 96) and 1e-4 <= second.settings["lr0"] <= 1e-2
    assert result.best == second.settings
    run_dir = result.run.run_dir
    run = json.loads((run_dir / "run.json").read_text())
    assert run["imgsz"] == second.settings["imgsz"]
    assert run["options"]["ultralytics_args"]["lr0"] == pytest.approx(second.settings["lr0"])
    assert run["options"]["ultralytics_args"]["optimizer"] == "AdamW"
    tuning = run["tuning"]
    assert {k: tuning[k] for k in ("searcher", "trials", "completed", "best")} == {
        "searcher": "ultralytics.engine.tuner.Tuner", "trials": 2, "completed": 1, "best": second.settings}
    _check_the_better_is_promoted(models, result, tuning)
    rows = list(csv.DictReader(io.StringIO((run_dir / "tune-trials.csv").read_text())))
    assert tuple(rows[0]) == TRIAL_COLUMNS and [r["state"] for r in rows] == ["failed", "complete"]
    assert (run_dir / "tune-trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Tuner" in (run_dir / "tune.log").read_text()
    assert latest_run(models) == run_dir
    assert not [p for p in (models / "detectors" / ".cache").iterdir() if p.name.startswith("tune-")]


def _check_the_better_is_promoted(models: Path, result, tuning: dict) -> None:
    """The run in use is the better on validation of the best trial's model and the final run (trained on from the
    trial's weights); the other one's folder, when the final run lost, is kept but not in use."""
    trial_map, final_map = tuning["trial_score"], tuning["final_score"]
    assert tuning["metric"] == "mAP50-95"
    assert trial_map is not None and final_map is not None
    winner = "final" if final_map > trial_map else "trial"
    assert (tuning["promoted"], result.promoted) == (winner, winner), tuning
    run = json.loads((result.run.run_dir / "run.json").read_text())
    assert run["validation"]["map50_95"] == pytest.approx(max(trial_map, final_map))
    assert latest_run(models) == result.run.run_dir
    assert result.final_run is not None and result.final_run.name == tuning["final_run"]
    final = json.loads((result.final_run / "run.json").read_text())
    assert final["start"]["kind"] == "weights" and final["validation"]["map50_95"] == pytest.approx(final_map)
    assert final["options"]["ultralytics_args"]["warmup_epochs"] == 0  # trained on from the trial: no second warm-up
    assert (result.final_run == result.run.run_dir) == (winner == "final")
    assert set(run) - {"tuning"} == set(final) - {"tuning"}  # the trial's run is laid out as train_detector's
    assert tuning["why"].startswith("the final run is better" if winner == "final" else "kept the best trial's model")


def test_a_failed_final_run_keeps_the_best_trials_model(tmp_path: Path, torch_home: Path) -> None:
    """The images vanish once the trials are done: the final run fails, and the best trial's model (measured on
    validation before) is written as a run and put in use, with the reason in run.json and the summary."""
    _ultralytics()
    lm, away = scenes(tmp_path / "lm", 12), tmp_path / "away"
    models = tmp_path / "models"
    old = _previous_detector(models)

    def progress(p) -> None:
        if p.stage == "start" and p.text.startswith("best: trial"):
            lm.rename(away)

    result = tune_detector(lm, models, DetectorTrainOptions(**TINY), trials=1, space=SPACE, progress=progress)
    assert result.promoted == "trial" and result.final_run is None
    run_dir = result.run.run_dir
    assert latest_run(models) == run_dir != old
    run = json.loads((run_dir / "run.json").read_text())
    assert run["tuning"]["promoted"] == "trial" and run["tuning"]["final_run"] is None
    assert re.match(r"^kept the best trial's model \(validation mAP50-95 [0-9.]+\): the final run failed "
                    r"\(Labelme folder not found", run["tuning"]["why"]), run["tuning"]["why"]
    assert run["validation"]["map50_95"] == pytest.approx(run["tuning"]["trial_score"])
    assert run["imgsz"] == result.best["imgsz"] and run["training"]["reason"].startswith("trial 1 of the search")
    assert run["tuning"]["why"] in result.run.summary()
    # the kept weights are a working detector, recorded as written by smarthub
    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.trust import written_by_smarthub

    assert written_by_smarthub(run_dir / "weights.pt") is not None
    load_detector(run_dir / "weights.pt", DetectorOptions(imgsz=run["imgsz"], device="cpu"))
    assert (run_dir / "pr_curves.png").is_file() and (run_dir / "split.json").is_file()
    assert not [p for p in (models / "detectors" / ".cache").iterdir() if p.name.startswith("tune-")]


def test_an_error_before_the_decision_leaves_the_previous_detector_in_use(tmp_path: Path, torch_home: Path,
                                                                          monkeypatch) -> None:
    """Writing latest.json fails (os.replace refused): one SmartHubError, and the detector in use is the old one."""
    _ultralytics()
    lm, models = scenes(tmp_path / "lm", 12), tmp_path / "models"
    old = _previous_detector(models)
    real_replace = os.replace

    def refuse_latest(src, dst, *args, **kwargs):
        if Path(dst).name == "latest.json":
            raise PermissionError(13, "Permission denied")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse_latest)
    with pytest.raises(SmartHubError, match=r"^cannot write .*latest\.json: Permission denied$"):
        tune_detector(lm, models, DetectorTrainOptions(**TINY), trials=1, space=SPACE)
    assert latest_run(models) == old
    assert json.loads((models / "detectors" / "latest.json").read_text()) == {"run": "old"}


def test_no_trial_completes_nothing_is_written_and_the_previous_detector_stays(tmp_path: Path,
                                                                             torch_home: Path) -> None:
    _ultralytics()
    lm, away = scenes(tmp_path / "lm", 8), tmp_path / "away"
    models = tmp_path / "models"
    old = _previous_detector(models)

    def progress(p) -> None:
        if p.stage == "start" and p.text.startswith("tuning:"):
            lm.rename(away)

    with pytest.raises(SmartHubError, match=r"^no tuning trial completed \(1 tried: trial 1: RuntimeError: No valid "
                                            r"images found.*the previous detector stays$"):
        tune_detector(lm, models, DetectorTrainOptions(**TINY), trials=1, space=SPACE, progress=progress)
    assert latest_run(models) == old
    assert sorted(p.name for p in (models / "detectors").iterdir() if not p.name.startswith(".")) == [
        "latest.json", "old"]
    assert not [p for p in (models / "detectors" / ".cache").iterdir() if p.name.startswith("tune-")]
