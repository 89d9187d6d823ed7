"""Install pretrained weights files into torch's cache by hand (for machines without internet)."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smarthub.errors import ModelError, SmartHubError


@dataclass(frozen=True)
class WeightsStatus:
    """One architecture: the file torchvision expects and whether it is in the cache."""

    arch: str
    file: str
    path: Path
    cached: bool


def load_state_dict_file(file: Path) -> dict[str, Any]:
    """Load `file` as a state dict (weights only, no code runs). Raises ModelError if it is not one."""
    import pickle

    import torch

    file = Path(file)
    if not file.is_file():
        raise ModelError(f"no weights file at {file}")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as e:
        raise ModelError(f"{file} is not a PyTorch weights file (a state dict saved with torch.save): "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelError(f"{file} is not a state dict (a dict of tensor names to tensors); "
                         f"found {type(obj).__name__}")
    return obj


def _shapes_match(state: dict[str, Any], fn: Any) -> bool:
    """True when `state` has exactly the parameter/buffer names and shapes of the model `fn()` builds."""
    import torch

    try:
        with torch.device("meta"):  # shapes without allocating memory
            model = fn(weights=None)
    except (NotImplementedError, RuntimeError):  # builders that compute on tensors (regnet) need real ones
        model = fn(weights=None)
    expected = model.state_dict()
    if expected.keys() != state.keys():
        return False
    return all(tuple(expected[k].shape) == tuple(state[k].shape) for k in expected)


def detect_arch(state: dict[str, Any], *, candidates: list[str] | None = None) -> list[str]:
    """The torchvision architectures (among `candidates`, default all smarthub offers) `state` loads into."""
    from smarthub.model.archs import TORCHVISION_ARCHS, resolve_arch

    names = candidates or list(TORCHVISION_ARCHS)
    return [n for n in names if _shapes_match(state, resolve_arch(n).model_fn)]


def add_weights(file: Path, *, arch: str | None = None) -> Path:
    """Check `file` holds weights for a torchvision model smarthub supports and copy it into
    $TORCH_HOME/hub/checkpoints/ under the name torchvision expects. Returns the installed path.

    Raises:
        ModelError: not a state dict, fits no supported model (or not `arch`), fits several (give --arch).
        SmartHubError: unknown `arch`, cannot write the cache.
    """
    from smarthub.model.archs import checkpoints_dir, resolve_arch
    from smarthub.atomicio import atomic_write_with

    from smarthub.annotate import detect

    file = Path(file)
    if arch in detect.TORCHVISION_ARCHS:
        return _add_detector_weights(file, [arch], explicit=True)
    if arch is not None:
        spec = resolve_arch(arch)
        if spec.is_timm:
            raise SmartHubError(f"{spec.name} is a timm model: timm caches its own weights; "
                                f"`smarthub weights add` handles torchvision models")
    state = load_state_dict_file(file)
    if arch is not None:
        matches = detect_arch(state, candidates=[resolve_arch(arch).name])
        if not matches:
            raise ModelError(f"{file} does not fit {arch}: its tensor names or shapes differ "
                             f"(is it the weights of another model?)")
    else:
        matches = detect_arch(state)
        if not matches:
            if any(_detector_shapes_match(state, a) for a in detect.TORCHVISION_ARCHS):
                return _add_detector_weights(file, list(detect.TORCHVISION_ARCHS), explicit=False, state=state)
            raise ModelError(f"{file} fits none of the torchvision models smarthub supports; "
                             f"see `smarthub weights list`")
        if len(matches) > 1:
            raise ModelError(f"{file} fits several models ({', '.join(matches)}): name one with --arch")
    spec = resolve_arch(matches[0])
    model = spec.model_fn(weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{file} does not load into {spec.name}: {str(e).splitlines()[0]}") from e
    del model, state
    target = checkpoints_dir() / str(spec.weights_file)
    with open(file, "rb") as src:
        atomic_write_with(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
    return target


def _detector_shapes_match(state: dict[str, Any], arch: str) -> bool:
    """True when `state` has the names and shapes of torchvision's COCO (91-class) detector `arch`."""
    import torch

    from smarthub.annotate.detect import build_torchvision_model

    with torch.device("meta"):
        expected = build_torchvision_model(arch, 91).state_dict()
    return expected.keys() == state.keys() and all(
        tuple(expected[k].shape) == tuple(state[k].shape) for k in expected)


def _add_detector_weights(file: Path, candidates: list[str], *, explicit: bool,
                          state: dict[str, Any] | None = None) -> Path:
    """Install COCO weights of a torchvision detector under the file name torchvision downloads them as."""
    from smarthub.model.archs import checkpoints_dir
    from smarthub.atomicio import atomic_write_with
    from smarthub.annotate.detect import coco_weights_file

    state = load_state_dict_file(file) if state is None else state
    matches = [a for a in candidates if _detector_shapes_match(state, a)]
    if not matches:
        what = candidates[0] if explicit else "any torchvision detector smarthub supports"
        raise ModelError(f"{file} does not fit {what} with COCO's 91 classes (a fine-tuned detector is used with "
                         f"`smarthub annotate --model FILE` instead)")
    if len(matches) > 1:
        raise ModelError(f"{file} fits several detectors ({', '.join(matches)}): name one with --arch")
    target = checkpoints_dir() / coco_weights_file(matches[0])[0]
    with open(file, "rb") as src:
        atomic_write_with(target, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))
    return target


def weights_status() -> list[WeightsStatus]:
    """For every torchvision architecture smarthub offers: the expected file and whether it is cached."""
    from smarthub.model.archs import TORCHVISION_ARCHS, checkpoints_dir, resolve_arch

    folder = checkpoints_dir()
    rows = []
    for name in TORCHVISION_ARCHS:
        file = str(resolve_arch(name).weights_file)
        rows.append(WeightsStatus(arch=name, file=file, path=folder / file, cached=(folder / file).is_file()))
    return rows
