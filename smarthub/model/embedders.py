"""Strong embedders for review: which are recommended, which are cached here, the strongest one, a download.

A recommended embedder is a set of files in a Hugging Face hub repository, loaded by timm (DINOv2, SigLIP 2) or
open_clip (CLIP, `open_clip:hf-hub:ORG/REPO`) from the hub cache (`$HF_HOME/hub/models--ORG--REPO/snapshots/
<rev>/…`, `refs/main` naming the revision). "Cached" means every file is there, so the library loads it offline
through its own code path. torchvision architectures come next, from the torch cache (`smarthub weights add`).

Order (strongest first): DINOv2 ViT-B/14 and SigLIP 2 B/16 before DINOv2 ViT-S/14 and CLIP ViT-B/32, as the
authors' ImageNet linear-probe results rank them (DINOv2: Oquab et al. 2023, table 4; SigLIP 2: Tschannen et
al. 2025); torchvision architectures after them, by their ImageNet-1K top-1 accuracy (torchvision's weights meta).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from smarthub.errors import ModelError, SmartHubError
from smarthub.model.archs import _weights_enum_member, cached_archs, resolve_arch

OPEN_CLIP_PREFIX = "open_clip:"
HF_PREFIX = "hf-hub:"
# --embedder dinov2_* (the names of DINOv2's own torch.hub entry points) load the same weights through timm
DINOV2_TIMM = {
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vitl14": "vit_large_patch14_dinov2.lvd142m",
    "dinov2_vitg14": "vit_giant_patch14_dinov2.lvd142m",
}
LIBRARY_PACKAGE = {"timm": "timm", "open_clip": "open_clip_torch"}


@dataclass(frozen=True)
class Recommended:
    """A recommended embedder: its --embedder name, the library loading it, the hub files it needs."""

    name: str
    library: str  # "timm" | "open_clip"
    repo: str
    files: tuple[str, ...]
    size_mb: int  # what a download fetches
    licence: str
    about: str


RECOMMENDED: tuple[Recommended, ...] = (
    Recommended("dinov2_vitb14", "timm", "timm/vit_base_patch14_dinov2.lvd142m", ("model.safetensors",), 346,
                "Apache-2.0", "DINOv2 ViT-B/14 (Meta): self-supervised, the best features for class structure"),
    Recommended("vit_base_patch16_siglip_224.v2_webli", "timm", "timm/vit_base_patch16_siglip_224.v2_webli",
                ("model.safetensors",), 372, "Apache-2.0", "SigLIP 2 B/16 image tower (Google)"),
    Recommended("dinov2_vits14", "timm", "timm/vit_small_patch14_dinov2.lvd142m", ("model.safetensors",), 88,
                "Apache-2.0", "DINOv2 ViT-S/14 (Meta): a quarter of ViT-B's size, nearly as good"),
    Recommended("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip",
                "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", ("open_clip_config.json", "open_clip_model.safetensors"),
                605, "MIT", "CLIP ViT-B/32 trained on LAION-2B (open_clip)"),
)


@dataclass(frozen=True)
class EmbedderStatus:
    """One recommended embedder here: installed (its library), cached (all its files), where."""

    rec: Recommended
    installed: bool
    cached: bool
    path: Path | None  # the snapshot folder holding its files, when cached


def hub_name(name: str) -> str:
    """The timm model name behind a DINOv2 alias (the name itself otherwise)."""
    return DINOV2_TIMM.get(name, name)


def hub_cache_dir() -> Path:
    """Hugging Face's hub cache as its library sees it ($HF_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub), read without importing the library unless it is loaded already."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub").expanduser()


def offline() -> bool:
    """True when the hub library is told to stay offline (HF_HUB_OFFLINE=1): nothing is downloaded."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def cached_file(repo: str, file: str) -> Path | None:
    """The file of `repo` in the hub cache at the revision `refs/main` names (as the library resolves it offline),
    or None. Reads two paths: no import, no network (the app asks at start-up)."""
    root = hub_cache_dir() / ("models--" + repo.replace("/", "--"))
    try:
        revision = (root / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path = root / "snapshots" / revision / file
    return path if revision and path.is_file() else None


def status(rec: Recommended) -> EmbedderStatus:
    paths = [cached_file(rec.repo, f) for f in rec.files]
    cached = all(p is not None for p in paths)
    return EmbedderStatus(rec=rec, installed=importlib.util.find_spec(rec.library) is not None, cached=cached,
                          path=paths[0].parent if cached and paths[0] is not None else None)


def statuses() -> list[EmbedderStatus]:
    """Every recommended embedder, strongest first, with whether it is installed and cached here."""
    return [status(r) for r in RECOMMENDED]


def recommended(name: str) -> Recommended:
    """The recommended embedder called `name`. Raises SmartHubError listing them otherwise."""
    for r in RECOMMENDED:
        if name.strip() == r.name:
            return r
    raise SmartHubError(f"{name!r} is not a recommended embedder: use one of {', '.join(r.name for r in RECOMMENDED)}")


def _torchvision_top1(name: str) -> float:
    meta = _weights_enum_member(name, resolve_arch(name).meta["weights"]).meta
    return float(meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1", 0.0))


def available(*, torchvision: bool = True) -> list[str]:
    """The embedders that load here without a download, strongest first: cached recommended ones whose library is
    installed, then (`torchvision`: this imports it) torchvision architectures whose weights are in the torch
    cache, by ImageNet top-1."""
    strong = [s.rec.name for s in statuses() if s.cached and s.installed]
    if not torchvision:
        return strong

    return strong + sorted(cached_archs(), key=_torchvision_top1, reverse=True)


def strongest(*, torchvision: bool = True) -> str | None:
    """The strongest embedder that loads here without a download (None: nothing is cached)."""
    names = available(torchvision=torchvision)
    return names[0] if names else None


def offline_fix(rec: Recommended) -> str:
    """How to get `rec` onto a machine that cannot download it."""
    folder = "models--" + rec.repo.replace("/", "--")
    return (f"on a machine with internet run `smarthub weights download {rec.name}` and copy its {folder} folder "
            f"into {hub_cache_dir()}")


def download(name: str) -> Path:
    """Fetch a recommended embedder's files into the hub cache (each file lands whole or not at all: the hub
    library writes `.incomplete` beside the blob and renames it). Returns the snapshot folder.

    Raises:
        SmartHubError: not a recommended name; its library is not installed.
        ModelError: offline (HF_HUB_OFFLINE), or the download failed: one line with the fix.
    """
    rec = recommended(name)
    if importlib.util.find_spec(rec.library) is None:
        raise SmartHubError(f"{rec.name} needs {rec.library}: `pip install {LIBRARY_PACKAGE[rec.library]}`")
    if offline():
        raise ModelError(f"cannot download {rec.name}: this machine is offline (HF_HUB_OFFLINE is set); "
                         f"{offline_fix(rec)}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    path = None
    for file in rec.files:
        try:
            path = Path(hf_hub_download(rec.repo, file, cache_dir=hub_cache_dir()))
        except (HfHubHTTPError, OSError, ValueError, RuntimeError) as e:
            raise ModelError(f"downloading {rec.repo}/{file} failed ({str(e).splitlines()[0] if str(e) else e!r}); "
                             f"nothing half-written is kept; try again, or {offline_fix(rec)}") from e
    assert path is not None
    return path.parent


def describe(s: EmbedderStatus) -> str:
    """'cached at …' / 'not cached: downloads 346 MB (Apache-2.0) from …' / 'needs `pip install …`'."""
    rec = s.rec
    if not s.installed:
        return f"needs `pip install {LIBRARY_PACKAGE[rec.library]}`"
    if s.cached:
        return f"cached ({s.path})"
    return f"not cached: `weights download` fetches it from {rec.repo}"
