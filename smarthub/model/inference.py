"""Inference with an exported classifier: load export.pkl onto a device and get class probabilities.

Below training: it imports none of model/data, fit, artefacts or train (tests/test_imports.py checks it), so
predicting, pre-annotating and the model-based review load no trainer.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smarthub import trust
from smarthub.errors import ModelError
from smarthub.imaging import as_rgb, open_rgb
from smarthub.model.compat import PICKLE_MODULE
from smarthub.model.devices import resolve_device
from smarthub.model.options import TrainOptions

__all__ = ["load_classifier", "predict_probs"]

# get_preds swaps callbacks and data loaders on the learner: one prediction at a time (the app is threaded)
_PREDICT_LOCK = threading.Lock()


def load_classifier(path: Path, *, device: str = TrainOptions.device) -> Any:
    """Load an exported fastai learner onto `device` (auto, cpu, cuda, cuda:N, mps; see model/devices.py).

    Models exported by smarthub's first version load too (model/compat.py maps their old names).
    export.pkl is a pickle: loading runs code from the file, so load only files you trust.
    Raises ModelError: missing file (run `smarthub train` first), corrupt file, not a fastai learner, or a
    device the machine does not have.
    """
    import pickle
    import warnings

    import torch
    from fastai.learner import Learner

    path = Path(path)
    target = resolve_device(device)
    if not path.is_file():
        raise ModelError(f"no model at {path}: run {{train}} first")
    notice = trust.check_pickle(path, what="classifier")  # refuses a pickle smarthub did not write (unless --trust)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # what fastai's load_learner does, with the type checked before the learner is touched
            learn = torch.load(path, map_location="cpu", weights_only=False, pickle_module=PICKLE_MODULE)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, TypeError, KeyError,
            AttributeError, ImportError, IndexError) as e:
        raise ModelError(f"{path} is not a readable fastai model ({type(e).__name__}: {e}); "
                         f"train again with {{train}}") from e
    if not isinstance(learn, Learner) or getattr(learn, "dls", None) is None:
        raise ModelError(f"{path} does not hold a fastai learner (found {type(learn).__name__}); "
                         f"train again with {{train}}")
    trust.announce(notice)
    if hasattr(learn, "channels_last"):
        learn = learn.to_contiguous(to_fp32=True)
    elif hasattr(learn, "mixed_precision"):
        learn = learn.to_fp32()
    learn.dls.to(torch.device(target))
    learn.model.to(torch.device(target))
    return learn


def predict_probs(learner: Any, images: Sequence[Path | Any], *, batch_size: int = 64) -> np.ndarray:
    """Class probabilities [N, n_classes] in `learner.dls.vocab` order for images (paths or PIL images).

    Every image is opened through smarthub.imaging (EXIF orientation, pixel limit, alpha on white) and handed
    to the learner's own pipeline (`dls.test_dl` + `get_preds`) batch by batch. The first unreadable image
    raises ImageError naming it (use `dataset.verify_images` first to get a per-image report).
    """
    from PIL import Image

    images = list(images)
    n_classes = len(learner.dls.vocab)
    out = [np.zeros((0, n_classes), dtype=np.float32)]
    with _PREDICT_LOCK:
        for start in range(0, len(images), batch_size):
            chunk = [as_rgb(x) if isinstance(x, Image.Image) else open_rgb(Path(x))
                     for x in images[start:start + batch_size]]
            dl = learner.dls.test_dl(chunk, bs=batch_size, num_workers=0)
            with learner.no_bar():
                probs, _ = learner.get_preds(dl=dl)
            out.append(probs.float().cpu().numpy())
    return np.concatenate(out)
