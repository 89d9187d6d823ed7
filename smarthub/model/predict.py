"""Predict labels for images with an exported classifier (models/export.pkl)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.errors import ImageError, SmartHubError
from smarthub.model.devices import DEFAULT_DEVICE
from smarthub.model.inference import load_classifier, predict_probs


@dataclass(frozen=True)
class Prediction:
    """The top labels for one image, most probable first: [(label, probability), ...]."""

    path: Path | None
    top: list[tuple[str, float]]

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_dict(self) -> dict:
        return {"path": None if self.path is None else str(self.path),
                "top": [{"label": lab, "prob": round(p, 6)} for lab, p in self.top]}


def top_k_from_probs(probs: np.ndarray, vocab: Sequence[str], *, top_k: int) -> list[list[tuple[str, float]]]:
    """Per row of `probs`, the `top_k` (label, probability) pairs, most probable first."""
    k = max(1, min(top_k, len(vocab)))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(str(vocab[j]), float(row[j])) for j in idx] for row, idx in zip(probs, order)]


def predict(model_path: Path, paths: Sequence[Path], *, top_k: int = 3, batch_size: int = 64,
            device: str = DEFAULT_DEVICE) -> list[Prediction]:
    """Load the model once (on `device`: auto, cpu, cuda, cuda:N, mps) and predict every image in `paths`, in
    batches; images are opened through smarthub.imaging.

    Raises ImageError (a path is missing or unreadable: the message names it), ModelError (model file, device).
    """
    paths = [Path(p) for p in paths]
    if top_k < 1:
        raise SmartHubError(f"top-k must be at least 1 (got {top_k})")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ImageError(f"no image at {missing[0]}{more}")
    learner = load_classifier(model_path, device=device)
    return _predict_with(learner, paths, top_k=top_k, batch_size=batch_size)


def predict_pil(learner: Any, images: list[Any], *, top_k: int = 3) -> list[Prediction]:
    """Predict uploaded PIL images with an already loaded learner (the app's Predict tab)."""
    return _predict_with(learner, images, top_k=top_k, batch_size=64, keep_paths=False)


def _predict_with(learner: Any, inputs: list[Any], *, top_k: int, batch_size: int,
                  keep_paths: bool = True) -> list[Prediction]:
    probs = predict_probs(learner, inputs, batch_size=batch_size)
    tops = top_k_from_probs(probs, list(learner.dls.vocab), top_k=top_k)
    return [Prediction(path=Path(x) if keep_paths else None, top=t) for x, t in zip(inputs, tops)]
