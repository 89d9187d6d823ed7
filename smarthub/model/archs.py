"""Model architectures: names → builders, fastai metadata, the pretrained weights file each expects.

torchvision architectures are built by fastai's `vision_learner` from a `model_meta` entry (how to cut the
body, how to split parameter groups, the normalisation stats, which weights enum member to load). fastai 2.8
lacks entries for several torchvision models (mobilenet_v2, mobilenet_v3, efficientnet, convnext, regnet);
`ensure_model_meta()` registers them. Any other name is tried as a `timm` model when timm is installed.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smarthub.atomicio import atomic_write_with
from smarthub.errors import ModelError, SmartHubError

# torchvision archs we offer, with the fastai body cut and the weights enum member to load.
# `None` for cut/weights/split means "keep fastai's own model_meta entry" (resnets, densenet, vgg, ...).
_MISSING_META: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {"cut": -1, "weights": "IMAGENET1K_V1"},
    "mobilenet_v3_small": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "mobilenet_v3_large": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "efficientnet_b0": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "efficientnet_b1": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "efficientnet_b2": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "efficientnet_b3": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "efficientnet_v2_s": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "convnext_tiny": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "convnext_small": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "regnet_y_400mf": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "regnet_y_800mf": {"cut": -2, "weights": "IMAGENET1K_V1"},
    "resnext50_32x4d": {"cut": -2, "weights": "IMAGENET1K_V1", "split": "resnet"},
    "wide_resnet50_2": {"cut": -2, "weights": "IMAGENET1K_V1", "split": "resnet"},
}
# archs fastai 2.8 already describes in model_meta
_FASTAI_META = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "densenet121", "densenet161", "densenet169", "densenet201",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "squeezenet1_0", "squeezenet1_1", "alexnet",
)
TORCHVISION_ARCHS: tuple[str, ...] = _FASTAI_META + tuple(_MISSING_META)
_HASH_RE = re.compile(r"-([a-f0-9]+)\.")
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ArchSpec:
    """A resolved architecture.

    name: the user-facing name ("resnet18", or a timm name).
    model_fn: torchvision builder (a function fastai's vision_learner accepts), or the timm name (a str).
    meta: fastai model_meta entry (cut, split, stats, weights) for torchvision; {} for timm.
    weights_file: file name torchvision looks for in $TORCH_HOME/hub/checkpoints/ (None for timm).
    """

    name: str
    model_fn: Callable[..., Any] | str
    meta: dict
    weights_file: str | None

    @property
    def is_timm(self) -> bool:
        return isinstance(self.model_fn, str)

    @property
    def weights_url(self) -> str | None:
        return None if self.is_timm else _weights_enum_member(self.name, self.meta["weights"]).url


def _resnet_split_fn() -> Callable:
    from fastai.vision.learner import _resnet_split

    return _resnet_split


def ensure_model_meta() -> None:
    """Register fastai `model_meta` entries for the torchvision archs fastai 2.8 lacks (idempotent)."""
    import torchvision.models as tvm
    from fastai.vision.all import imagenet_stats
    from fastai.vision.learner import default_split, model_meta

    for name, extra in _MISSING_META.items():
        fn = getattr(tvm, name)
        if fn in model_meta:
            continue
        split = _resnet_split_fn() if extra.get("split") == "resnet" else default_split
        model_meta[fn] = {"cut": extra["cut"], "split": split, "stats": imagenet_stats, "weights": extra["weights"]}


def _weights_enum_member(name: str, member: str) -> Any:
    from torchvision.models import get_model_weights

    return get_model_weights(name)[member]


def _timm_available() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_arch(name: str) -> ArchSpec:
    """Turn an architecture name into an ArchSpec.

    Raises:
        SmartHubError: unknown name (the message lists valid ones), or a timm name without timm installed.
    """
    if not isinstance(name, str) or not name.strip():
        raise SmartHubError(f"architecture name is empty; choose one of {', '.join(TORCHVISION_ARCHS[:8])}, ...")
    name = name.strip()
    if name in TORCHVISION_ARCHS:
        import torchvision.models as tvm
        from fastai.vision.learner import model_meta

        ensure_model_meta()
        fn = getattr(tvm, name)
        meta = dict(model_meta[fn])
        return ArchSpec(name=name, model_fn=fn, meta=meta, weights_file=_file_from_url(
            _weights_enum_member(name, meta["weights"]).url))
    suggestions = ", ".join(TORCHVISION_ARCHS[:5] + ("mobilenet_v2", "efficientnet_b0", "convnext_tiny"))
    if _timm_available():
        import timm

        timm_name = name.removeprefix("timm/")
        if timm.is_model(timm_name):
            return ArchSpec(name=timm_name, model_fn=timm_name, meta={}, weights_file=None)
        raise SmartHubError(f"unknown architecture {name!r}: not a torchvision model smarthub supports "
                            f"({suggestions}, ...) nor a timm model (see timm.list_models())")
    raise SmartHubError(f"unknown architecture {name!r}; choose one of {suggestions}, ... "
                        f"(timm architectures need `pip install timm`)")


def _file_from_url(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def expected_weights_file(name: str) -> str | None:
    """File name torchvision expects in $TORCH_HOME/hub/checkpoints/ for `name` (None for timm archs)."""
    return resolve_arch(name).weights_file


def checkpoints_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints (torch's cache folder for pretrained weights), read at call time.

    Before torch is loaded this is torch.hub.get_dir()'s documented default ($TORCH_HOME, else
    $XDG_CACHE_HOME/torch, else ~/.cache/torch), so the app can check for weights without importing torch.
    """
    if "torch" not in sys.modules:
        cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        return Path(os.environ.get("TORCH_HOME") or Path(cache) / "torch").expanduser() / "hub" / "checkpoints"
    import torch.hub  # torch.hub.set_dir() may have moved it

    return Path(torch.hub.get_dir()) / "checkpoints"


def check_weights_available(name: str) -> None:
    """Make sure the pretrained weights of `name` are in the torch cache, downloading them if possible.

    Raises:
        ModelError: not cached and the download failed (offline, blocked, bad file): one line naming
            the expected file path and the fix.
    """
    spec = resolve_arch(name)
    if spec.is_timm:
        return  # timm fetches from the Hugging Face hub itself; its failures are wrapped at build time
    target = checkpoints_dir() / str(spec.weights_file)
    if target.is_file():
        return
    try:
        _download(spec.weights_url or "", target)
    except (urllib.error.URLError, OSError, ValueError, SmartHubError) as e:
        reason = getattr(e, "reason", None) or e
        raise ModelError(
            f"pretrained weights for {spec.name} are not cached at {target} and could not be downloaded "
            f"({reason}); copy the file there with `smarthub weights add {spec.weights_file}`, "
            f"or train without them (--no-pretrained); {cached_archs_hint()}"
        ) from e


def _download(url: str, target: Path) -> None:
    """Fetch `url` into `target` atomically, checking the sha256 prefix in the file name when present."""
    m = _HASH_RE.search(target.name)
    expected = m.group(1) if m else None
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:  # noqa: S310 (https URL from torchvision)
        def writer(f: Any) -> None:
            h = hashlib.sha256()
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                f.write(chunk)
            if expected and not h.hexdigest().startswith(expected):
                raise ValueError(f"downloaded {url} but its sha256 does not start with {expected}")

        atomic_write_with(target, writer)


def feature_extractor(name: str, *, pretrained: bool = True) -> tuple[Any, tuple[list[float], list[float]]]:
    """The (pretrained) body of `name` with global average pooling: image batch → embedding [N, features].

    Returns (module in eval mode, (mean, std) normalisation stats for 0-1 RGB input).
    Raises ModelError when pretrained weights are unavailable.
    """
    import torch.nn as nn

    spec = resolve_arch(name)
    if pretrained:
        check_weights_available(spec.name)
    if spec.is_timm:
        import timm

        try:
            model = timm.create_model(spec.model_fn, pretrained=pretrained, num_classes=0)
        except (OSError, RuntimeError, ValueError) as e:
            raise ModelError(f"cannot build timm model {spec.name} (pretrained={pretrained}): {e}") from e
        cfg = model.default_cfg
        return model.eval(), (list(cfg["mean"]), list(cfg["std"]))
    from fastai.vision.all import imagenet_stats
    from fastai.vision.learner import create_body

    model = build_torchvision_model(spec, pretrained=pretrained)
    body = create_body(model, 3, pretrained, spec.meta["cut"])
    module = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    stats = spec.meta.get("stats") or imagenet_stats
    return module.eval(), (list(stats[0]), list(stats[1]))


def build_torchvision_model(spec: ArchSpec, *, pretrained: bool) -> Any:
    """Instantiate a torchvision model (with its ImageNet weights from the cache when `pretrained`)."""
    try:
        return spec.model_fn(weights=spec.meta["weights"] if pretrained else None)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise ModelError(f"cannot load pretrained weights for {spec.name} from "
                         f"{checkpoints_dir() / (spec.weights_file or '')}: {e}; replace the file with "
                         f"`smarthub weights add FILE` or use --no-pretrained") from e


def cached_weights() -> list[Path]:
    """Files currently in the torch weights cache."""
    folder = checkpoints_dir()
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []



def cached_archs() -> list[str]:
    """torchvision archs smarthub offers whose pretrained weights are in the torch cache now."""
    folder = checkpoints_dir()
    have = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return [name for name in TORCHVISION_ARCHS if expected_weights_file(name) in have] if have else []


def cached_archs_hint() -> str:
    """'cached: mobilenet_v2 → `--arch mobilenet_v2`' (or that none are), for offline error messages."""
    names = cached_archs()
    if not names:
        return "no pretrained weights are cached (`smarthub weights list` shows what each arch expects)"
    return "cached: " + ", ".join(f"{n} → `--arch {n}`" for n in names)
