"""A detector run from weights trained elsewhere (the best trial of `train-detector --tune`): measured on the
validation split the way train_detector measures its own runs, and written in the same layout, so that the two
can be compared and either put in use.
"""
from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smarthub import trust
from smarthub.annotate.detect import RUN_FILE, DetectorOptions, load_detector
from smarthub.annotate.options import DetectorTrainOptions
from smarthub.annotate.starts import DetectorStart
from smarthub.annotate.thresholds import threshold_rule
from smarthub.annotate.train_detector import (
    EPOCHS_FILE,
    EVAL_CONF,
    ClassMetrics,
    DetectorRun,
    TrainLength,
    detectors_dir,
    predict_items,
    pretrained_words,
    run_record,
    save_pr_curves,
    validation_metrics,
)
from smarthub.atomicio import atomic_write_bytes, atomic_write_json
from smarthub.model.devices import resolve_device
from smarthub.outputs import staged_output


@dataclass(frozen=True)
class WeightsEvaluation:
    """A detector's figures on the validation split, measured as train_detector measures its run."""

    metrics: list[ClassMetrics]
    map50: float | None
    map50_95: float | None
    pairs: dict[str, list[tuple[float, bool]]]


def evaluate_weights(weights: Path, val_items: list[Any], names: list[str], options: DetectorTrainOptions, *,
                     config_dir: Path) -> WeightsEvaluation:
    """Validation figures and tuned thresholds of Ultralytics `weights` (train_detector's own measure)."""
    detector = load_detector(weights, DetectorOptions(conf=EVAL_CONF, max_det=100, imgsz=options.imgsz,
                                                      device=resolve_device(options.device), config_dir=config_dir))
    metrics, map50, map50_95, pairs = validation_metrics(val_items, predict_items(detector, val_items), names,
                                                         min_precision=options.min_precision,
                                                         objective=options.threshold_objective)
    return WeightsEvaluation(metrics, map50, map50_95, pairs)


def write_weights_run(labelme_dir: Path, models_dir: Path, options: DetectorTrainOptions, *, weights: Path,
                      names: list[str], reason: str, evaluation: WeightsEvaluation, splits: dict[str, list[Any]],
                      record: Any, start: DetectorStart, epochs_csv: Path | None) -> DetectorRun:
    """A run folder holding `weights` (trained elsewhere: `reason` says where), laid out as train_detector's
    (weights.pt, run.json, split.json, pr_curves.png, epochs.csv), not yet the one in use (latest.json unchanged).
    Raises SmartHubError when it cannot be written (nothing is left behind then)."""
    runs = detectors_dir(models_dir)
    name = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    length = TrainLength(epochs=_count_rows(epochs_csv), best_epoch=None, reason=reason)
    run = DetectorRun(run_dir=runs / name, backend="ultralytics", names=names,
                      counts={s: len(v) for s, v in splits.items()},
                      backgrounds={s: sum(not it.boxes for it in v) for s, v in splits.items()}, silver=0,
                      metrics=evaluation.metrics, map50=evaluation.map50, map50_95=evaluation.map50_95,
                      start=start, length=length,
                      threshold_rule=threshold_rule(options.threshold_objective, options.min_precision))
    with staged_output(run.run_dir, kind=None, notes=run.notes) as staged:
        trust.save_model(staged / "weights.pt", lambda tmp: shutil.copyfile(weights, tmp))
        if epochs_csv is not None and epochs_csv.is_file():
            atomic_write_bytes(staged / EPOCHS_FILE, epochs_csv.read_bytes())
        save_pr_curves(staged / "pr_curves.png", evaluation.pairs, evaluation.metrics)
        atomic_write_json(staged / "split.json", record.to_json())
        atomic_write_json(staged / RUN_FILE, run_record(run, options, weights_name="weights.pt",
                                                        pretrained=pretrained_words(start),
                                                        device=resolve_device(options.device), labelme_dir=labelme_dir))
    return run


def _count_rows(csv_path: Path | None) -> int:
    if csv_path is None or not csv_path.is_file():
        return 0
    return max(0, len(csv_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()) - 1)
