"""The artefacts floor of training: evaluate the fitted Learner and write the run's files.

`valid_predictions` → `classification_report` (pure: accuracy, per-class scores, confusion matrix) →
`portable_learner` → `write_artifacts` (export.pkl, report.json, history.csv, confusion.png recorded as a run
in models/runs/ and promoted by model/runs.py, which does the atomic writes).
"""
from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import smarthub
from smarthub.dataset import ImageItem
from smarthub.model import runs
from smarthub.model.options import TrainOptions

__all__ = ["classification_report", "confusion_png", "history_csv", "library_versions", "portable_learner",
           "valid_predictions", "write_artifacts"]


def valid_predictions(learn: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, targets) on the validation set, in this process only (fastai's get_preds would gather
    across ranks after a distributed fit, and rank 0 evaluates alone)."""
    import torch

    learn.model.eval()
    probs, targets = [], []
    with torch.inference_mode():
        for xb, yb in learn.dls.valid:
            probs.append(torch.softmax(learn.model(xb).float(), dim=1).cpu().numpy())
            targets.append(yb.cpu().numpy())
    return np.concatenate(probs), np.concatenate(targets)


def classification_report(targets: np.ndarray, preds: np.ndarray, vocab: Sequence[str]) -> dict:
    """Accuracy, error rate, per-class precision/recall/F1/support and the confusion matrix (rows = truth)."""
    n = len(vocab)
    cm = np.zeros((n, n), dtype=int)
    for t, p in zip(targets, preds):
        cm[int(t), int(p)] += 1
    per_class = {}
    for i, label in enumerate(vocab):
        tp = int(cm[i, i])
        predicted, support = int(cm[:, i].sum()), int(cm[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                            "support": support}
    total = int(cm.sum())
    acc = float(np.trace(cm) / total) if total else 0.0
    return {"accuracy": round(acc, 4), "error_rate": round(1 - acc, 4), "per_class": per_class,
            "confusion_matrix": cm.tolist()}


def portable_learner(learn: Any) -> None:
    """Make the Learner what a plain `load_learner` expects: full precision, on the CPU, no smarthub callbacks."""
    if hasattr(learn, "mixed_precision"):
        learn.to_fp32()
    learn.model.cpu()
    learn.dls.cpu()


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model file depends on."""
    import fastai
    import torch
    import torchvision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "fastai": fastai.__version__, "smarthub": smarthub.__version__}


def write_artifacts(ws: Any, learn: Any, report: dict, *, valid_items: Sequence[ImageItem],
                    valid_shas: Sequence[str], valid_preds: Sequence[str]) -> None:
    """Record the run in models/runs/<run id>/ (export.pkl, history.csv, confusion.png, report.json with the
    validation images) and promote it by `report["options"]["promote"]` (model/runs.py).

    Sets report["run_id"] and report["promotion"] (RunOutcome.to_dict(): promoted, message, comparison).
    """
    report["valid_images"] = runs.valid_image_records([it.path for it in valid_items],
                                                      [it.label for it in valid_items], valid_preds,
                                                      data_dir=ws.data_dir, shas=valid_shas)
    outcome = runs.record_run(ws, report, save_export=lambda tmp: learn.export(Path(tmp).absolute()),
                              history_csv=history_csv(report["history"]),
                              confusion_png=confusion_png(report["confusion_matrix"], report["vocab"]),
                              policy=report["options"].get("promote", TrainOptions.promote))
    report["promotion"] = outcome.to_dict()


def history_csv(history: Sequence[dict]) -> str:
    """The per-epoch history as CSV text."""
    buf = io.StringIO()
    cols = ["epoch", "train_loss", "valid_loss", "error_rate", "accuracy", "time", "stage"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(row)
    return buf.getvalue()


def confusion_png(matrix: Sequence[Sequence[int]], vocab: Sequence[str]) -> bytes:
    """Render the confusion matrix (rows = actual, columns = predicted) as PNG bytes (matplotlib Agg)."""
    from matplotlib.figure import Figure

    cm = np.asarray(matrix)
    n = len(vocab)
    side = min(20.0, max(4.0, 0.6 * n + 2.5))
    fig = Figure(figsize=(side, side), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels=list(vocab), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=list(vocab))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("confusion matrix (validation set)")
    threshold = cm.max() / 2 if cm.size else 0
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > threshold else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
