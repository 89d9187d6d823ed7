"""Out-of-sample class probabilities → label-issue ranking → Suspect records; keep-state.

Three ways to get a probability vector for every image (all cached per image sha256):
  fast      embeddings of the pretrained body (cached) + a K-fold cross-validated logistic-regression
            head: every image is scored by a head that never saw its label (out-of-sample). Seconds.
  finetune  K fine-tunes through `smarthub.model.train`, each scoring the fold it did not train on. Minutes.
  model     the exported model (models/export.pkl): images of its training split are in-sample.
Ranking is cleanlab's (`find_label_issues`, `get_label_quality_scores`); embeddings also give near
duplicates filed under another class (nearest neighbour by cosine similarity) and outliers
(`cleanlab.outlier.OutOfDistribution`). Analysis only: acting on a suspect is `fileops`' job.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import atomic_write_json, atomic_write_text, atomic_write_with, read_json
from smarthub.dataset import ImageItem, dataset_fingerprint, scan_dataset, sha256_file, verify_images
from smarthub.model.embeddings import Progress, embed_items, hash_scanned, review_cache_dir, scan_stat
from smarthub.errors import DatasetError, FileOpError, ModelError, SmartHubError
from smarthub.clean.ranking import (DUPLICATE_MIN_SIMILARITY, classify_suspects, cross_val_probs, fit_linear_head,
                              fold_assignment, head_probs, near_duplicates, normalise_rows, outlier_mask)
from smarthub.model.train import TrainOptions
from smarthub.workspace import Workspace

METHODS = ("fast", "finetune", "model")
KINDS = ("wrong", "unsure", "duplicate", "outlier")
_KEEP_LOCK = threading.Lock()


@dataclass(frozen=True)
class Suspect:
    """An image whose label the ranking doubts.

    kind: wrong (predicted ≠ given), unsure (predicted = given but p_given < threshold),
    duplicate (near duplicate of an image filed under another class), outlier (unlike the rest).
    split: "valid" when scored out-of-sample (the scorer never saw its label), "train" when in-sample.
    score: cleanlab label quality in [0, 1], lower is worse.
    """

    path: Path
    given: str
    predicted: str
    p_given: float
    p_predicted: float
    score: float
    kind: str
    split: str
    sha256: str = ""
    duplicate_of: Path | None = None


@dataclass(frozen=True)
class Entry:
    """One image of the dataset as the ranking sees it."""

    path: Path
    label: str
    sha256: str


def _default_train_options() -> TrainOptions:
    return TrainOptions(arch="mobilenet_v2")


@dataclass
class ReviewOptions:
    """How to score: method fast | finetune | model, K folds, the 'unsure' threshold, training options."""

    method: str = "fast"
    folds: int = 5
    threshold: float = 0.6
    train: TrainOptions = field(default_factory=_default_train_options)
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SmartHubError(f"unknown review method {self.method!r}: use one of {', '.join(METHODS)}")
        if not 2 <= int(self.folds) <= 20:
            raise SmartHubError(f"--folds must be between 2 and 20, got {self.folds}")
        if not 0.0 < float(self.threshold) < 1.0:
            raise SmartHubError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.limit is not None and int(self.limit) < 1:
            raise SmartHubError(f"--limit must be at least 1, got {self.limit}")


@dataclass
class ReviewResult:
    """Suspects worst first, plus the per-sha256 state that lets the ranking update without inference."""

    suspects: list[Suspect]
    vocab: list[str]
    n_images: int
    method: str
    seconds: float
    probs_by_sha: dict[str, np.ndarray]
    split_by_sha: dict[str, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    duplicate_of: dict[str, str] = field(default_factory=dict)  # sha → sha of its nearest near-duplicate
    outliers: set[str] = field(default_factory=set)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # images that could not be scored
    notes: list[str] = field(default_factory=list)
    options: ReviewOptions | None = None
    fingerprint: str = ""  # content fingerprint of the data the probabilities were computed on
    n_kept: int = 0
    head: Any = None  # fitted on all embeddings (fast method): scores new images in refresh()
    unreadable: dict[str, str] = field(default_factory=dict)  # sha → reason: not retried by refresh()

    def by_kind(self) -> dict[str, int]:
        counts = {k: 0 for k in KINDS}
        for s in self.suspects:
            counts[s.kind] += 1
        return counts


# ---------------------------------------------------------------- ranking over entries (no inference)

def rank(entries: Sequence[Entry], probs_by_sha: dict[str, np.ndarray], vocab: Sequence[str], *,
         threshold: float, split_by_sha: dict[str, str] | None = None,
         duplicate_of: dict[str, str] | None = None, outliers: set[str] | frozenset = frozenset(),
         kept: set[str] | frozenset = frozenset(), limit: int | None = None) -> tuple[list[Suspect], list[str]]:
    """Suspects worst first from cached probabilities and the current labels; returns (suspects, notes)."""
    split_by_sha = split_by_sha or {}
    duplicate_of = duplicate_of or {}
    index = {c: i for i, c in enumerate(vocab)}
    scored = [e for e in entries if e.sha256 in probs_by_sha and e.label in index]
    notes = []
    unknown = sorted({e.label for e in entries if e.label not in index})
    if unknown:
        notes.append(f"classes not scored (new since the review; run it again): {', '.join(unknown)}")
    if len(scored) < 2:
        return [], notes
    labels = np.fromiter((index[e.label] for e in scored), dtype=int, count=len(scored))
    probs = np.stack([probs_by_sha[e.sha256] for e in scored])
    # near or exact duplicates filed under another class (only the shas involved are looked at)
    by_sha: dict[str, list[Entry]] = {}
    for e in entries:
        by_sha.setdefault(e.sha256, []).append(e)
    involved = {s for s, group in by_sha.items() if len(group) > 1} | set(duplicate_of)
    labels_of_sha = {s: {x.label for x in by_sha.get(s, ())} for s in involved | set(duplicate_of.values())}
    dup_target: list[str | None] = [None] * len(scored)
    if involved:
        for n, e in enumerate(scored):
            if e.sha256 not in involved:
                continue
            if len(labels_of_sha[e.sha256]) > 1:  # the same bytes filed under two classes
                dup_target[n] = e.sha256
            else:
                near = duplicate_of.get(e.sha256)
                if near is not None and labels_of_sha.get(near, set()) - {e.label}:
                    dup_target[n] = near
    duplicate = np.array([t is not None for t in dup_target])
    outlier = np.array([e.sha256 in outliers for e in scored])
    order, kind, quality = classify_suspects(labels, probs, threshold=threshold, duplicate=duplicate,
                                             outlier=outlier)
    pred_all = probs.argmax(axis=1)
    rows = np.arange(len(scored))
    p_given_all, p_pred_all = probs[rows, labels].tolist(), probs[rows, pred_all].tolist()
    pred_list, quality_list = pred_all.tolist(), quality.tolist()
    suspects = []
    for i in order.tolist():
        e = scored[i]
        if e.sha256 in kept:
            continue
        target = dup_target[i]
        dup_path = None
        if target is not None:
            dup_path = next((x.path for x in by_sha.get(target, ()) if x.path != e.path), None)
        suspects.append(Suspect(
            path=e.path, given=e.label, predicted=vocab[pred_list[i]], p_given=p_given_all[i],
            p_predicted=p_pred_all[i], score=quality_list[i], kind=str(kind[i]),
            split=split_by_sha.get(e.sha256, "valid"), sha256=e.sha256, duplicate_of=dup_path,
        ))
        if limit is not None and len(suspects) >= limit:
            break
    return suspects, notes


# ---------------------------------------------------------------- the I/O edge: review, refresh

def _scan(ws: Workspace, progress: Progress | None,
          known: Sequence[Entry] = ()) -> tuple[list[Entry], list[tuple[Path, str]]]:
    paths = {str(e.path): e.path for e in known}  # reusing Path objects saves most of a 20,000-file rescan
    hashed = hash_scanned(ws, scan_stat(ws.data_dir, known=paths), progress=progress)
    entries = [Entry(path=i.path, label=i.label, sha256=s) for i, s in zip(hashed.items, hashed.shas)]
    return entries, hashed.skipped


def _check_reviewable(entries: Sequence[Entry], ws: Workspace) -> list[str]:
    if not entries:
        raise DatasetError(f"no images in {ws.data_dir}: add class folders with images (or run `smarthub bootstrap`)")
    vocab = sorted({e.label for e in entries})
    if len(vocab) < 2:
        raise DatasetError(f"only one class ({vocab[0]!r}) in {ws.data_dir}: reviewing labels needs at least two")
    return vocab


def content_fingerprint(entries: Iterable[Entry]) -> str:
    """Hash of the sorted (sha256, label) pairs: changes when an image, or its label, changes."""
    h = hashlib.sha256()
    for sha, label in sorted((e.sha256, e.label) for e in entries):
        h.update(f"{sha}\t{label}\n".encode())
    return h.hexdigest()[:16]


def _probs_cache_path(ws: Workspace, options: ReviewOptions) -> Path:
    t = options.train
    tag = f"{options.method}-{t.arch}-{t.size_px}"
    if options.method != "model":
        tag += f"-k{options.folds}-s{t.seed}"
    if options.method == "finetune":
        tag += f"-e{t.epochs}"
    return review_cache_dir(ws) / f"probs-{tag}.npz"


def _model_stamp(ws: Workspace) -> str:
    try:
        st = ws.export_path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def _load_probs_cache(path: Path, fingerprint: str, stamp: str) -> dict | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fingerprint or str(z["model_stamp"]) != stamp:
                return None
            return {"shas": [str(s) for s in z["shas"]], "probs": z["probs"].astype(np.float64),
                    "vocab": [str(v) for v in z["vocab"]], "splits": [str(s) for s in z["splits"]],
                    "dup": [str(s) for s in z["dup"]], "outliers": [str(s) for s in z["outliers"]],
                    "unreadable": [str(s) for s in z["unreadable"]]}
    except (OSError, ValueError, KeyError):
        return None  # an unreadable cache is recomputed


def _save_probs_cache(path: Path, *, fingerprint: str, stamp: str, dataset_fp: str, result: ReviewResult) -> None:
    import io

    shas = sorted(result.probs_by_sha)
    buf = io.BytesIO()
    np.savez(
        buf, fingerprint=np.array(fingerprint), model_stamp=np.array(stamp), dataset_fingerprint=np.array(dataset_fp),
        shas=np.array(shas, dtype=str), probs=np.stack([result.probs_by_sha[s] for s in shas]).astype(np.float32),
        vocab=np.array(result.vocab, dtype=str), splits=np.array([result.split_by_sha.get(s, "valid") for s in shas]),
        dup=np.array([f"{a}\t{b}" for a, b in sorted(result.duplicate_of.items())], dtype=str),
        outliers=np.array(sorted(result.outliers), dtype=str),
        unreadable=np.array([f"{a}\t{b}" for a, b in sorted(result.unreadable.items())], dtype=str),
    )
    atomic_write_with(path, lambda f: f.write(buf.getvalue()))


def review(ws: Workspace, options: ReviewOptions | None = None, *,
           progress: Progress | None = None) -> ReviewResult:
    """Score every image of the workspace and rank the label suspects, worst first.

    Probabilities are cached per image sha256 with the dataset's content fingerprint: a second call on
    unchanged data does no inference. Images that cannot be read are skipped and listed in `skipped`.

    Raises:
        DatasetError: no images or a single class.
        ModelError: (method "model") no exported model, or its classes differ from the folders;
            pretrained weights unavailable for the embedding pass.
    """
    options = options or ReviewOptions()
    start = time.perf_counter()
    entries, skipped = _scan(ws, progress)
    vocab = _check_reviewable(entries, ws)
    learner = None
    if options.method == "model":
        learner = _load_model(ws, vocab)
    fp = content_fingerprint(entries)
    stamp = _model_stamp(ws) if options.method == "model" else ""
    cache_path = _probs_cache_path(ws, options)
    cached = _load_probs_cache(cache_path, fp, stamp)
    notes: list[str] = []
    if options.method == "fast" and not _train_opts(options)[2]:
        notes.append("--no-pretrained: embeddings of an untrained body rank poorly; prefer --finetune")
    head = None
    unreadable: dict[str, str] = {}
    if cached is not None and cached["vocab"] == vocab:
        probs_by_sha = dict(zip(cached["shas"], cached["probs"]))
        split_by_sha = dict(zip(cached["shas"], cached["splits"]))
        duplicate_of = dict(x.split("\t") for x in cached["dup"])
        outliers = set(cached["outliers"])
        unreadable = dict(x.split("\t", 1) for x in cached["unreadable"])
        skipped += [(e.path, unreadable[e.sha256]) for e in entries if e.sha256 in unreadable]
        notes.append("probabilities reused from the cache (the data has not changed)")
    else:
        feats, failed = _embeddings_or_none(ws, entries, options, progress, notes)
        if feats is None:  # no embedding pass to catch unreadable images: decode them all once
            failed = verify_images([e.path for e in entries]).problems
        skipped += failed
        bad = {str(p) for p, _ in failed}
        entries_ok = [e for e in entries if str(e.path) not in bad]
        unreadable = _unreadable(entries, failed)
        if options.method == "fast":
            if feats is None:
                raise ModelError(notes[-1])
            probs_by_sha, head = _fast_probs(entries_ok, feats, vocab, options)
            split_by_sha = {}
        elif options.method == "finetune":
            probs_by_sha = _finetune_probs(ws, entries_ok, vocab, options, progress)
            split_by_sha = {}
        else:
            probs_by_sha, split_by_sha = _model_probs(ws, learner, entries_ok, vocab, progress, notes)
        duplicate_of, outliers = ({}, set()) if feats is None else _duplicates_and_outliers(feats)
        if options.method == "model":
            n_train = sum(1 for s in split_by_sha.values() if s == "train")
            if n_train:
                notes.append(f"{n_train} images were in the model's training split: scored in-sample (split=train)")
    kept_shas = kept(ws)
    suspects, rank_notes = rank(entries, probs_by_sha, vocab, threshold=options.threshold, split_by_sha=split_by_sha,
                                duplicate_of=duplicate_of, outliers=outliers, kept=kept_shas, limit=options.limit)
    result = ReviewResult(
        suspects=suspects, vocab=vocab, n_images=len(entries), method=options.method,
        seconds=time.perf_counter() - start, probs_by_sha=probs_by_sha, split_by_sha=split_by_sha,
        entries=entries, duplicate_of=duplicate_of, outliers=outliers, skipped=skipped,
        notes=notes + rank_notes, options=options, fingerprint=fp,
        n_kept=sum(1 for e in entries if e.sha256 in kept_shas), head=head, unreadable=unreadable,
    )
    if cached is None or cached["vocab"] != vocab:
        _save_probs_cache(cache_path, fingerprint=fp, stamp=stamp,
                          dataset_fp=dataset_fingerprint([ImageItem(e.path, e.label) for e in entries], ws.data_dir),
                          result=result)
    return result


def refresh(ws: Workspace, result: ReviewResult, *, progress: Progress | None = None) -> ReviewResult:
    """Re-read the folders and re-rank from cached probabilities; only new or changed images are scored.

    After a relabel, delete or undo this does no inference at all (probabilities are keyed by sha256).
    """
    start = time.perf_counter()
    options = result.options or ReviewOptions()
    entries, skipped = _scan(ws, progress, result.entries)
    probs_by_sha = dict(result.probs_by_sha)
    split_by_sha = dict(result.split_by_sha)
    duplicate_of, outliers = dict(result.duplicate_of), set(result.outliers)
    notes: list[str] = []
    head = result.head
    unreadable = dict(result.unreadable)
    skipped += [(e.path, unreadable[e.sha256]) for e in entries if e.sha256 in unreadable]
    new = [e for e in entries
           if e.sha256 not in probs_by_sha and e.sha256 not in unreadable and e.label in result.vocab]
    if new:
        feats, failed = _embeddings_or_none(ws, new, options, progress, notes)
        if feats is None:
            failed = verify_images([e.path for e in new]).problems
        skipped += failed
        unreadable.update(_unreadable(new, failed))
        bad = {str(p) for p, _ in failed}
        new = [e for e in new if str(e.path) not in bad]
        if options.method == "model":
            learner = _load_model(ws, sorted({e.label for e in entries}))
            got, splits = _model_probs(ws, learner, new, result.vocab, progress, notes)
            probs_by_sha.update(got)
            split_by_sha.update(splits)
        elif feats is not None and new:
            if head is None:
                head = _fit_full_head(ws, entries, probs_by_sha, result.vocab, options)
            rows = np.stack([feats[e.sha256] for e in new])
            for e, p in zip(new, head_probs(head, rows, len(result.vocab))):
                probs_by_sha[e.sha256] = p
                split_by_sha[e.sha256] = "valid"  # the head never saw these images
        if feats is not None and new:
            _update_duplicates(ws, entries, new, feats, options, duplicate_of)
        if new:
            how = " by a linear head on all other images" if options.method == "finetune" else ""
            notes.append(f"{len(new)} new or changed images scored{how}")
    kept_shas = kept(ws)
    suspects, rank_notes = rank(entries, probs_by_sha, result.vocab, threshold=options.threshold,
                                split_by_sha=split_by_sha, duplicate_of=duplicate_of, outliers=outliers,
                                kept=kept_shas, limit=options.limit)
    return replace(
        result, suspects=suspects, n_images=len(entries), seconds=time.perf_counter() - start,
        probs_by_sha=probs_by_sha, split_by_sha=split_by_sha, entries=entries, duplicate_of=duplicate_of,
        outliers=outliers, skipped=skipped, notes=notes + rank_notes,
        n_kept=sum(1 for e in entries if e.sha256 in kept_shas), head=head, unreadable=unreadable,
    )


def _unreadable(entries: Sequence[Entry], failed: Sequence[tuple[Path, str]]) -> dict[str, str]:
    reasons = {str(p): r for p, r in failed}
    return {e.sha256: reasons[str(e.path)] for e in entries if str(e.path) in reasons}


# ---------------------------------------------------------------- the three scorers

def _train_opts(options: ReviewOptions) -> tuple[str, int, bool, int, int]:
    t = options.train
    return (t.arch, int(t.size_px), bool(t.pretrained),
            int(t.seed), int(t.batch_size))


def _embeddings_or_none(ws: Workspace, entries: Sequence[Entry], options: ReviewOptions,
                        progress: Progress | None, notes: list[str]) -> tuple[dict | None, list]:
    """sha → embedding for `entries` (cached); None with a note when the weights are unavailable."""
    arch, size_px, pretrained, _, _ = _train_opts(options)
    try:
        return embed_items(ws, [e.path for e in entries], [e.sha256 for e in entries], arch=arch, size_px=size_px,
                           pretrained=pretrained, batch_size=64, progress=progress)
    except ModelError as e:
        if options.method == "fast":
            raise
        notes.append(f"no embeddings, so no duplicate/outlier check: {e}")
        return None, []


def _fast_probs(entries: Sequence[Entry], feats: dict, vocab: list[str],
                options: ReviewOptions) -> tuple[dict[str, np.ndarray], Any]:
    index = {c: i for i, c in enumerate(vocab)}
    uniq: dict[str, Entry] = {}
    for e in entries:  # exact duplicates are scored once (with the first label seen)
        uniq.setdefault(e.sha256, e)
    shas = list(uniq)
    x = np.stack([feats[s] for s in shas])
    y = np.array([index[uniq[s].label] for s in shas])
    _, _, _, seed, _ = _train_opts(options)
    probs = cross_val_probs(x, y, n_classes=len(vocab), folds=options.folds, seed=seed)
    return dict(zip(shas, probs)), None


def _fit_full_head(ws: Workspace, entries: Sequence[Entry], probs_by_sha: dict, vocab: list[str],
                   options: ReviewOptions) -> Any:
    """A linear head on every known image (current labels): scores images added after the review."""
    index = {c: i for i, c in enumerate(vocab)}
    known = [e for e in entries if e.sha256 in probs_by_sha and e.label in index]
    feats, _ = _embeddings_or_none(ws, known, options, None, [])
    known = [e for e in known if feats and e.sha256 in feats]
    return fit_linear_head(np.stack([feats[e.sha256] for e in known]), np.array([index[e.label] for e in known]))


def _duplicates_and_outliers(feats: dict[str, np.ndarray]) -> tuple[dict[str, str], set[str]]:
    shas = list(feats)
    if len(shas) < 2:
        return {}, set()
    x = np.stack([feats[s] for s in shas])
    near = near_duplicates(x)
    dup = {shas[i]: shas[j] for i, j in enumerate(near) if j >= 0}
    out = {shas[i] for i in np.flatnonzero(outlier_mask(x))}
    return dup, out


def _update_duplicates(ws: Workspace, entries: Sequence[Entry], new: Sequence[Entry], feats: dict,
                       options: ReviewOptions, duplicate_of: dict[str, str]) -> None:
    """Nearest neighbour of each new image among all images (one query per new image)."""
    from sklearn.neighbors import NearestNeighbors

    arch, size_px, pretrained, _, _ = _train_opts(options)
    from smarthub.model.embeddings import load_embedding_cache

    cache = load_embedding_cache(ws, arch, size_px, pretrained)
    shas = sorted({e.sha256 for e in entries if e.sha256 in cache})
    if len(shas) < 2:
        return
    x = normalise_rows(np.stack([cache[s] for s in shas]))
    nn = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(x)
    q = normalise_rows(np.stack([feats[e.sha256] for e in new]))
    dist, idx = nn.kneighbors(q)
    for e, d_row, i_row in zip(new, dist, idx):
        for d, i in zip(d_row, i_row):
            if shas[i] != e.sha256 and 1.0 - d * d / 2.0 >= DUPLICATE_MIN_SIMILARITY:
                duplicate_of[e.sha256] = shas[i]
                break


def _finetune_probs(ws: Workspace, entries: Sequence[Entry], vocab: list[str], options: ReviewOptions,
                    progress: Progress | None) -> dict[str, np.ndarray]:
    """K fine-tunes through smarthub.model.train; each predicts the fold it was not trained on."""
    import tempfile

    from smarthub.model import train

    index = {c: i for i, c in enumerate(vocab)}
    uniq: dict[str, Entry] = {}
    for e in entries:
        uniq.setdefault(e.sha256, e)
    chosen = list(uniq.values())
    labels = np.array([index[e.label] for e in chosen])
    _, _, _, seed, _ = _train_opts(options)
    fold = fold_assignment(labels, folds=options.folds, seed=seed)
    items = [ImageItem(path=e.path, label=e.label) for e in chosen]
    probs: dict[str, np.ndarray] = {}
    n_folds = int(fold.max()) + 1
    with tempfile.TemporaryDirectory(prefix="smarthub-review-") as tmp:
        for k in range(n_folds):
            if progress is not None:
                progress("fine-tuning fold", k, n_folds)
            is_valid = [bool(f == k) for f in fold]
            learner = train.build_learner(items, is_valid, options.train, work_dir=Path(tmp) / f"fold{k}")
            train.fit(learner, options.train)
            held = [e for e, f in zip(chosen, fold) if f == k]
            got = train.predict_probs(learner, [e.path for e in held])
            learner_vocab = [str(v) for v in learner.dls.vocab]
            cols = [learner_vocab.index(c) if c in learner_vocab else -1 for c in vocab]
            for e, row in zip(held, got):
                probs[e.sha256] = np.array([row[c] if c >= 0 else 0.0 for c in cols], dtype=np.float64)
        if progress is not None:
            progress("fine-tuning fold", n_folds, n_folds)
    return probs


def _load_model(ws: Workspace, folder_vocab: list[str]) -> Any:
    """The exported learner; its classes must be the folders' classes."""
    if not ws.export_path.exists():
        raise ModelError(f"no model at {ws.export_path}: run `smarthub train` first (or review without --fast-model)")
    from smarthub.model import train

    learner = train.load_classifier(ws.export_path)
    model_vocab = [str(v) for v in learner.dls.vocab]
    extra = sorted(set(folder_vocab) - set(model_vocab))
    missing = sorted(set(model_vocab) - set(folder_vocab))
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"folders the model does not know: {', '.join(extra)}")
        if missing:
            parts.append(f"model classes with no folder: {', '.join(missing)}")
        raise ModelError(f"the model {ws.export_path} does not match the data ({'; '.join(parts)}): "
                         f"run `smarthub train` again")
    return learner


def _valid_shas_from_report(ws: Workspace) -> set[str] | None:
    """sha256s of the exported model's validation images, from report.json (None when not recorded)."""
    if not ws.report_path.exists():
        return None
    try:
        report = read_json(ws.report_path, what="training report")
    except SmartHubError:
        return None
    if not isinstance(report, dict):
        return None
    if isinstance(report.get("valid_sha256"), list):
        return {str(s) for s in report["valid_sha256"]}
    # no list recorded: rebuild the seeded split, which is only valid if the data did not change since
    items = scan_dataset(ws.data_dir)
    if report.get("split") == "folders":
        return {sha256_file(i.path) for i in items if i.split == "valid"}
    if report.get("split") != "random" or report.get("dataset_fingerprint") != dataset_fingerprint(items, ws.data_dir):
        return None
    from smarthub.model.train import split_items

    is_valid = split_items(items, valid_pct=float(report.get("valid_pct", 0.2)), seed=int(report.get("seed", 42)))
    return {sha256_file(i.path) for i, v in zip(items, is_valid) if v}


def _model_probs(ws: Workspace, learner: Any, entries: Sequence[Entry], vocab: list[str],
                 progress: Progress | None, notes: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from smarthub.model import train

    uniq: dict[str, Entry] = {}
    for e in entries:
        uniq.setdefault(e.sha256, e)
    chosen = list(uniq.values())
    if progress is not None:
        progress("predicting", 0, len(chosen))
    got = train.predict_probs(learner, [e.path for e in chosen]) if chosen else np.zeros((0, len(vocab)))
    if progress is not None:
        progress("predicting", len(chosen), len(chosen))
    model_vocab = [str(v) for v in learner.dls.vocab]
    cols = [model_vocab.index(c) for c in vocab]
    valid = _valid_shas_from_report(ws)
    if valid is None:
        notes.append(f"cannot tell the model's validation images (data changed since training, or {ws.report_path} "
                     f"is missing): every image counted as in-sample")
    probs = {e.sha256: np.asarray(row, dtype=np.float64)[cols] for e, row in zip(chosen, got)}
    splits = {e.sha256: ("valid" if valid is not None and e.sha256 in valid else "train") for e in chosen}
    return probs, splits


# ---------------------------------------------------------------- keep-state

def _read_keep(ws: Workspace) -> dict[str, dict]:
    if not ws.keep_path.exists():
        return {}
    data = read_json(ws.keep_path, what="keep list")
    kept_map = data.get("kept") if isinstance(data, dict) else None
    if not isinstance(kept_map, dict):
        raise SmartHubError(f"keep list {ws.keep_path} is malformed (no 'kept' object): fix or delete it")
    return kept_map


def _image_sha(ws: Workspace, path: Path) -> tuple[Path, str]:
    path = Path(path)
    if not path.is_absolute():
        path = path.absolute() if path.exists() else ws.data_dir / path
    if not ws.contains(path):
        raise FileOpError(f"{path} is not inside the data folder {ws.data_dir}")
    try:
        return path, sha256_file(path)
    except OSError as e:
        raise FileOpError(f"cannot read {path}: {e.strerror or e} (deleted or moved meanwhile? refresh)") from e


def keep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Mark images as correct as labelled: hidden from suspects until their content changes. Returns sha256s."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolved = [_image_sha(ws, p) for p in paths]
    with _KEEP_LOCK:
        kept_map = _read_keep(ws)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for path, sha in resolved:
            rel = path.relative_to(ws.data_dir).as_posix() if path.is_relative_to(ws.data_dir) else str(path)
            kept_map[sha] = {"path": rel, "at": now}
        atomic_write_json(ws.keep_path, {"version": 1, "kept": kept_map})
    return [sha for _, sha in resolved]


def unkeep(ws: Workspace, paths: Path | Sequence[Path]) -> list[str]:
    """Forget 'keep' marks of images (by their current content). Returns the sha256s removed."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    resolved = [_image_sha(ws, p) for p in paths]
    with _KEEP_LOCK:
        kept_map = _read_keep(ws)
        removed = [sha for _, sha in resolved if kept_map.pop(sha, None) is not None]
        if removed:
            atomic_write_json(ws.keep_path, {"version": 1, "kept": kept_map})
    return removed


def kept(ws: Workspace) -> set[str]:
    """sha256s of the images marked 'keep'."""
    return set(_read_keep(ws))


# ---------------------------------------------------------------- output

SUSPECT_FIELDS = ("path", "given", "predicted", "p_given", "p_predicted", "score", "kind", "split", "sha256",
                  "duplicate_of")


def suspect_rows(suspects: Iterable[Suspect], *, base: Path | None = None) -> list[dict[str, Any]]:
    """Suspects as plain dicts (paths relative to `base` when inside it)."""
    def show(p: Path | None) -> str:
        if p is None:
            return ""
        return p.relative_to(base).as_posix() if base is not None and p.is_relative_to(base) else str(p)

    return [{"path": show(s.path), "given": s.given, "predicted": s.predicted, "p_given": round(s.p_given, 4),
             "p_predicted": round(s.p_predicted, 4), "score": round(s.score, 4), "kind": s.kind, "split": s.split,
             "sha256": s.sha256, "duplicate_of": show(s.duplicate_of)} for s in suspects]


def write_suspects(suspects: Sequence[Suspect], out: Path, *, base: Path | None = None) -> Path:
    """Write suspects worst first to .csv or .json, atomically.

    Raises:
        SmartHubError: other suffix.
    """
    import csv
    import io

    from smarthub.ledger import SOURCE_FIELDS, provenance_for_data_dir

    out = Path(out)
    sources = provenance_for_data_dir(base)  # where each image came from, when the ledger knows
    rows = [{**row, **sources.columns(sha256=s.sha256, path=s.path)}
            for row, s in zip(suspect_rows(suspects, base=base), suspects)]
    if out.suffix.lower() == ".json":
        atomic_write_json(out, rows)
    elif out.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUSPECT_FIELDS + SOURCE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    else:
        raise SmartHubError(f"--out {out}: use a .csv or .json file name")
    return out
