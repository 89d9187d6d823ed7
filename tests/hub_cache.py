"""Write files into the Hugging Face hub cache exactly as a download leaves them (no network).

`models--ORG--NAME/blobs/<sha256>` holds the bytes, `snapshots/<revision>/<file>` links to the blob and
`refs/main` names the revision: what `huggingface_hub.hf_hub_download` writes and, offline, reads back.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"


def isolated_hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty hub cache for one test, read offline (as HF_HUB_OFFLINE=1 makes the library do)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def write_hub_repo(cache: Path, repo: str, files: dict[str, bytes], *, revision: str = REVISION) -> Path:
    """Put `files` (name → bytes) of `repo` into the hub cache folder `cache`; returns the snapshot folder."""
    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    (root / "blobs").mkdir(exist_ok=True)
    snapshot = root / "snapshots" / revision
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def safetensors_bytes(state: dict) -> bytes:
    """A state dict as the bytes of a .safetensors file (contiguous tensors, as the hub stores them)."""
    import safetensors.torch

    return safetensors.torch.save({k: v.contiguous() for k, v in state.items()})
