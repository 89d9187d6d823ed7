"""The review's probabilities on disk: one .npz per (method, embedder, size, folds, seed), valid while the
data's content fingerprint (sha256 + label of every image) and, for the model way, export.pkl are unchanged."""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import atomic_write_with
from smarthub.clean.records import Entry
from smarthub.dataset import ImageItem, dataset_fingerprint
from smarthub.model.embeddings import review_cache_dir
from smarthub.model.options import TrainOptions
from smarthub.workspace import Workspace

# bump when the scores change meaning (2: the head combined with neighbour agreement)
SCORES_VERSION = 2


@dataclass
class CachedProbs:
    probs_by_sha: dict[str, np.ndarray]
    split_by_sha: dict[str, str]
    vocab: list[str]
    duplicate_of: dict[str, str]
    outliers: set[str]
    unreadable: dict[str, str]
    head_by_sha: dict[str, np.ndarray] = field(default_factory=dict)  # fast method: the heads' part (relearn)
    pruned: set[str] = field(default_factory=set)


def content_fingerprint(entries: Iterable[Entry], trusted: Iterable[str] = ()) -> str:
    """Hash of the sorted (sha256, label) pairs: changes when an image, or its label, changes; and when the set
    of `trusted` sha256s (labels a person checked, which the fast ranking weighs) changes."""
    h = hashlib.sha256()
    for sha, label in sorted((e.sha256, e.label) for e in entries):
        h.update(f"{sha}\t{label}\n".encode())
    for sha in sorted(set(trusted)):
        h.update(f"{sha}\ttrusted\n".encode())
    return h.hexdigest()[:16]


def probs_cache_path(ws: Workspace, method: str, train: TrainOptions, folds: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in train.arch)
    tag = f"{method}-{safe}-{train.size_px}"
    if not train.pretrained:
        tag += "-scratch"
    if method != "model":
        tag += f"-k{folds}-s{train.seed}"
    if method == "finetune":
        tag += f"-e{train.epochs}"
    return review_cache_dir(ws) / f"probs-v{SCORES_VERSION}-{tag}.npz"


def model_stamp(ws: Workspace) -> str:
    try:
        st = ws.export_path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def load_probs_cache(path: Path, fingerprint: str, stamp: str) -> CachedProbs | None:
    """The cached probabilities if they were computed on this content (and model); else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or str(z["model_stamp"]) != stamp:
                return None
            shas = [str(s) for s in z["shas"]]
            heads = dict(zip(shas, z["heads"].astype(np.float64))) if "heads" in z.files and len(z["heads"]) else {}
            return CachedProbs(
                head_by_sha=heads, pruned={str(s) for s in z["pruned"]} if "pruned" in z.files else set(),
                probs_by_sha=dict(zip(shas, z["probs"].astype(np.float64))),
                split_by_sha=dict(zip(shas, (str(s) for s in z["splits"]))),
                vocab=[str(v) for v in z["vocab"]],
                duplicate_of=dict(str(x).split("\t") for x in z["dup"]),
                outliers={str(s) for s in z["outliers"]},
                unreadable=dict(str(x).split("\t", 1) for x in z["unreadable"]))
    except (OSError, ValueError, KeyError):
        return None  # an unreadable cache is recomputed


def save_probs_cache(path: Path, ws: Workspace, *, fingerprint: str, stamp: str, result: Any) -> None:
    """Write a ReviewResult's per-sha256 state atomically."""
    shas = sorted(result.probs_by_sha)
    dataset_fp = dataset_fingerprint([ImageItem(e.path, e.label) for e in result.entries], ws.data_dir)
    buf = io.BytesIO()
    n_classes = len(result.vocab)
    probs = np.stack([result.probs_by_sha[s] for s in shas]) if shas else np.zeros((0, n_classes))
    heads = getattr(result, "head_by_sha", {}) or {}
    heads_arr = np.stack([heads[s] for s in shas]) if shas and all(s in heads for s in shas) else np.zeros((0, n_classes))
    np.savez(
        buf, fingerprint=np.array(fingerprint), model_stamp=np.array(stamp), dataset_fingerprint=np.array(dataset_fp),
        shas=np.array(shas, dtype=str), probs=probs.astype(np.float32),
        vocab=np.array(result.vocab, dtype=str), splits=np.array([result.split_by_sha.get(s, "valid") for s in shas]),
        dup=np.array([f"{a}\t{b}" for a, b in sorted(result.duplicate_of.items())], dtype=str),
        outliers=np.array(sorted(result.outliers), dtype=str),
        unreadable=np.array([f"{a}\t{b}" for a, b in sorted(result.unreadable.items())], dtype=str),
        heads=heads_arr.astype(np.float32), pruned=np.array(sorted(getattr(result, "pruned", set())), dtype=str),
    )
    atomic_write_with(path, lambda f: f.write(buf.getvalue()))
