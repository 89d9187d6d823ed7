"""Train a classifier on the class folders: the whole job, on top of model/'s training stack.

progress (reports, stop) → data (split, Learner, image checks) → fit (LP-FT) → artefacts (report, files) →
`train(ws, options)`: scan, check, split, fit, evaluate, write the artefacts atomically. Inference
(`load_classifier`, `predict_probs`) is model/inference.py, below training.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.dataset import check_trainable, dataset_fingerprint, outside_note, scan_dataset
from smarthub.errors import DatasetError
from smarthub.fileops import class_names
from smarthub.model import distributed
from smarthub.model.archs import check_weights_available, resolve_arch
from smarthub.model.artefacts import (classification_report, library_versions, portable_learner, valid_predictions,
                                      write_artifacts)
from smarthub.model.data import (build_learner, check_images_cached, class_split_counts, empty_classes_note,
                                 raise_moved, split_items)
from smarthub.model.devices import resolve_device
from smarthub.model.embeddings import hash_items
from smarthub.model.fit import cached_head_data, fit
from smarthub.model.imagecache import resized_copies
from smarthub.model.options import TrainOptions
from smarthub.model.progress import ProgressFn, StopFn, report_stage

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What `train` wrote and measured."""

    export_path: Path
    report_path: Path
    report: dict
    seconds: float
    wrote: bool = True


def train(ws: Any, options: TrainOptions, *, progress: ProgressFn | None = None,
          bars: bool = False, should_stop: StopFn | None = None) -> TrainResult:
    """Train on `ws.data_dir` and write export.pkl, report.json, confusion.png, history.csv to `ws.models_dir`.

    Uses the train/ and valid/ folders when the data folder has them, else a seeded per-class random split.
    Images are checked through smarthub.imaging, hashed, decoded and resized once into the image cache;
    stage 1 reads the embeddings cache shared with review. Launched distributed (see model/distributed.py),
    every rank trains on the same split and only rank 0 writes (`TrainResult.wrote`).
    Raises DatasetError (no/too few images, unreadable images — run `smarthub verify`), ModelError
    (weights, device), SmartHubError (cannot write), TrainingStopped (`should_stop()` turned true: nothing
    written). On any error the current model files are left as they were.
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")  # the run's id (model/runs.py)
    device = distributed.rank_device(resolve_device(options.device))
    options = replace(options, device=device)
    outside: list[Path] = []
    items = scan_dataset(ws.data_dir, outside=outside)
    empty = sorted(set(class_names(ws)) - {it.label for it in items})
    notes = [n for n in (outside_note(outside, ws.data_dir), empty_classes_note(empty)) if n]
    try:
        check_trainable(items)
    except DatasetError as e:
        raise DatasetError("; ".join([str(e), *notes])) from e
    spec = resolve_arch(options.arch)
    if options.pretrained:
        check_weights_available(spec.name)
    split_layout = any(it.split for it in items)
    is_valid = ([it.split == "valid" for it in items] if split_layout
                else split_items(items, valid_pct=options.valid_pct, seed=options.seed))
    with distributed.main_process_first(device):  # rank 0 fills the caches, the other ranks read them
        check_images_cached(ws, items, progress=progress)
        hashed = hash_items(ws, items)
        if hashed.skipped:
            gone = [path for path, _ in hashed.skipped if not path.exists()]
            if gone:
                raise_moved(gone)
            path, reason = hashed.skipped[0]
            raise DatasetError(f"{path}: {reason}; scan again (the data folder changed during training)")
        shas = hashed.shas
        report_stage(progress, "resizing images")
        cached = resized_copies(ws.cache_dir, items, shas, size_px=options.size_px,
                                progress=lambda d, t: report_stage(progress, "resizing images", d, t))
        report_stage(progress, "building")
        learn = build_learner(cached, is_valid, options, work_dir=ws.models_dir)
        head_data = (cached_head_data(ws, learn, cached, shas, is_valid, options=options, spec=spec,
                                      progress=progress) if options.pretrained else None)
    extra_cbs = [distributed.trainer_callback(device)] if distributed.is_distributed() else []
    result = fit(learn, options, head_data=head_data, progress=progress, bars=bars, should_stop=should_stop,
                 cbs=extra_cbs, probe=options.probe and not distributed.is_distributed(), started=started)
    used_device = str(next(learn.model.parameters()).device)
    if not distributed.is_main_process():
        return TrainResult(export_path=ws.export_path, report_path=ws.report_path, report={},
                           seconds=round(time.monotonic() - started, 2), wrote=False)

    report_stage(progress, "evaluating")
    probs, targets = valid_predictions(learn)
    vocab = [str(v) for v in learn.dls.vocab]
    metrics = classification_report(targets, probs.argmax(axis=1), vocab)

    report_stage(progress, "saving")
    n_valid = sum(is_valid)
    report = {
        "arch": spec.name,
        "vocab": vocab,
        "size_px": options.size_px,
        "recipe": options.recipe,
        "epochs": options.epochs,
        "epochs_run": sum(1 for h in result.history if h.get("stage") != "head"),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "head_valid_accuracy": None if result.head_accuracy is None else round(result.head_accuracy, 4),
        "frozen_blocks": result.frozen_blocks,
        "finetune_decision": result.decision,
        "probe": result.probe,
        "budget_s": options.budget_s,
        "budget_plan": result.plan,
        "batch_size": options.batch_size,
        "valid_pct": options.valid_pct,
        "seed": options.seed,
        "pretrained": options.pretrained,
        "weights_file": spec.weights_file if options.pretrained else None,
        "lr": options.lr,
        "num_workers": options.num_workers,
        "device": used_device,
        "mixed_precision": used_device.startswith("cuda"),
        "processes": distributed.world_size(),
        "split": "folders" if split_layout else "random",
        "n_train": len(items) - n_valid,
        "n_valid": n_valid,
        "class_counts": class_split_counts(items, is_valid),
        "valid_accuracy": metrics["accuracy"],
        "error_rate": metrics["error_rate"],
        "per_class": metrics["per_class"],
        "confusion_matrix": metrics["confusion_matrix"],
        "history": result.history,
        "valid_sha256": sorted({s for s, v in zip(shas, is_valid) if v}),
        "data_dir": str(ws.data_dir),
        "dataset_fingerprint": dataset_fingerprint(items, ws.data_dir),
        "versions": library_versions(),
        "options": asdict(options),
        "started_at": started_at,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": notes,
    }
    report["seconds"] = round(time.monotonic() - started, 2)
    portable_learner(learn)
    write_artifacts(ws, learn, report, valid_items=[it for it, v in zip(items, is_valid) if v],  # dls.valid order
                    valid_shas=[s for s, v in zip(shas, is_valid) if v],
                    valid_preds=[vocab[i] for i in np.asarray(probs).argmax(axis=1)])
    report_stage(progress, "done")
    return TrainResult(export_path=ws.export_path, report_path=ws.report_path, report=report,
                       seconds=report["seconds"])
