"""Three ways to get out-of-sample class probabilities for every image, plus the embedding pass they share.

  fast      cached embeddings → the K-fold cross-validated linear head combined with neighbour agreement
            (`ranking.default_label_probs`): every image is scored without its own label. Seconds.
  finetune  K fine-tunes through `smarthub.model.fit`, each scoring the fold it did not train on. Minutes.
  model     the exported model (models/export.pkl): images of its training split are in-sample.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import read_json
from smarthub.clean import ranking
from smarthub.clean.neighbours import Neighbours, nearest, query
from smarthub.clean.records import Entry
from smarthub.dataset import ImageItem, dataset_fingerprint, scan_dataset, sha256_file
from smarthub.errors import ModelError, SmartHubError
from smarthub.model.data import build_learner, split_items
from smarthub.model.embeddings import Progress, cached_alternatives, embed_items, load_embedding_cache
from smarthub.model.fit import fit
from smarthub.model.inference import load_classifier, predict_probs
from smarthub.model.options import TrainOptions
from smarthub.workspace import Workspace


def unique_by_sha(entries: Sequence[Entry]) -> list[Entry]:
    """One entry per image content (exact duplicates are scored once, with the first label seen)."""
    uniq: dict[str, Entry] = {}
    for e in entries:
        uniq.setdefault(e.sha256, e)
    return list(uniq.values())


def embeddings(ws: Workspace, entries: Sequence[Entry], train: TrainOptions, progress: Progress | None, *,
               required: bool, notes: list[str]) -> tuple[dict[str, np.ndarray] | None, list[tuple[Path, str]]]:
    """sha → embedding for `entries` (cached per embedder, size and sha256).

    Without the weights: ModelError naming --embedder and the cached alternatives when `required`, else
    None with a note (the finetune and model ways then skip the duplicate/outlier check).
    """
    try:
        return embed_items(ws, [e.path for e in entries], [e.sha256 for e in entries], arch=train.arch,
                           size_px=train.size_px, pretrained=train.pretrained, batch_size=64, progress=progress)
    except ModelError as e:
        if required:
            raise ModelError(f"{e} — for review, pick another embedder: {cached_alternatives()}") from e
        notes.append(f"no embeddings, so no duplicate/outlier check: {e}")
        return None, []


def neighbours_of(feats: dict[str, np.ndarray], shas: Sequence[str], *, seed: int) -> Neighbours:
    """The KNN_K nearest neighbours of each of `shas` among them (exact or faiss by size)."""
    return nearest(np.stack([feats[s] for s in shas]), k=ranking.KNN_K, seed=seed)


def fast_probs(uniq: Sequence[Entry], feats: dict[str, np.ndarray], nb: Neighbours, vocab: list[str], *,
               folds: int, seed: int, trusted: set[str] | frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """The default scorer: cross-validated head + neighbour agreement, per sha256 of `uniq` (nb's rows).

    `trusted`: sha256s whose current label a person checked (kept or relabelled): full weight in the fits.
    """
    return fast_scores(uniq, feats, nb, vocab, folds=folds, seed=seed, trusted=trusted)[0]


def _labels_and_trust(uniq: Sequence[Entry], vocab: list[str],
                      trusted: set[str] | frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(vocab)}
    y = np.fromiter((index[e.label] for e in uniq), dtype=int, count=len(uniq))
    return y, np.fromiter((e.sha256 in trusted for e in uniq), dtype=bool, count=len(uniq))


def fast_scores(uniq: Sequence[Entry], feats: dict[str, np.ndarray], nb: Neighbours, vocab: list[str], *,
                folds: int, seed: int, trusted: set[str] | frozenset[str] = frozenset()
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], set[str]]:
    """`fast_probs` with what `rerank_fast` needs: (sha → probs, sha → the heads' probs, sha256s pruned)."""
    x = np.stack([feats[e.sha256] for e in uniq])
    y, sure = _labels_and_trust(uniq, vocab, trusted)
    parts = ranking.default_label_parts(x, y, n_classes=len(vocab), folds=folds, seed=seed, neighbours=nb,
                                        trusted=sure)
    shas = [e.sha256 for e in uniq]
    return (dict(zip(shas, parts.probs)), dict(zip(shas, parts.head)),
            {s for s, f in zip(shas, parts.flagged.tolist()) if f})


def rerank_fast(uniq: Sequence[Entry], nb: Neighbours, head_by_sha: dict[str, np.ndarray], flagged: set[str],
                vocab: list[str], *, trusted: set[str] | frozenset[str]) -> dict[str, np.ndarray]:
    """The re-rank after a page of decisions (`ranking.rerank_probs`): the last full ranking's heads, neighbour votes
    under the current labels with `trusted` labels weighing more. Milliseconds; no embedding, no fit."""
    y, sure = _labels_and_trust(uniq, vocab, trusted)
    head = np.stack([head_by_sha[e.sha256] for e in uniq])
    pruned = np.fromiter((e.sha256 in flagged for e in uniq), dtype=bool, count=len(uniq))
    probs = ranking.rerank_probs(ranking.LabelProbs(head, head, pruned), nb.index, nb.similarity, y,
                                 n_classes=len(vocab), trusted=sure)
    return dict(zip((e.sha256 for e in uniq), probs))


def score_new_fast(ws: Workspace, entries: Sequence[Entry], new: Sequence[Entry], probs_by_sha: dict,
                   vocab: list[str], train: TrainOptions, head: Any) -> tuple[dict[str, np.ndarray], Any]:
    """Probabilities for images added after the review: a head fit on all known images, and their neighbours
    among the known images (whose labels are the current ones). Returns (sha → probs, the head for reuse)."""
    index = {c: i for i, c in enumerate(vocab)}
    cache = load_embedding_cache(ws, train.arch, train.size_px, train.pretrained)
    known = unique_by_sha([e for e in entries if e.sha256 in probs_by_sha and e.label in index and e.sha256 in cache])
    new = [e for e in new if e.sha256 in cache]
    if len(known) < 2 or not new:
        return {}, head
    x = np.stack([cache[e.sha256] for e in known])
    y = np.array([index[e.label] for e in known])
    if head is None:
        head = ranking.fit_linear_head(x, y)
    q = np.stack([cache[e.sha256] for e in new])
    nb = query(x, q, k=ranking.KNN_K)
    knn = ranking.neighbour_label_probs(nb.index, nb.similarity, y, n_classes=len(vocab))
    probs = ranking.combine_probs(ranking.head_probs(head, q, len(vocab)), knn)
    return {e.sha256: p for e, p in zip(new, probs)}, head


def finetune_probs(ws: Workspace, entries: Sequence[Entry], vocab: list[str], train_options: TrainOptions, *,
                   folds: int, progress: Progress | None) -> dict[str, np.ndarray]:
    """K fine-tunes through smarthub.model.fit; each predicts the fold it was not trained on."""
    index = {c: i for i, c in enumerate(vocab)}
    chosen = unique_by_sha(entries)
    labels = np.array([index[e.label] for e in chosen])
    fold = ranking.fold_assignment(labels, folds=folds, seed=train_options.seed)
    items = [ImageItem(path=e.path, label=e.label) for e in chosen]
    probs: dict[str, np.ndarray] = {}
    n_folds = int(fold.max()) + 1
    with tempfile.TemporaryDirectory(prefix="smarthub-review-") as tmp:
        for k in range(n_folds):
            if progress is not None:
                progress("fine-tuning fold", k, n_folds)
            is_valid = [bool(f == k) for f in fold]
            learner = build_learner(items, is_valid, train_options, work_dir=Path(tmp) / f"fold{k}")
            fit(learner, train_options)
            held = [e for e, f in zip(chosen, fold) if f == k]
            got = predict_probs(learner, [e.path for e in held])
            learner_vocab = [str(v) for v in learner.dls.vocab]
            cols = [learner_vocab.index(c) if c in learner_vocab else -1 for c in vocab]
            for e, row in zip(held, got):
                probs[e.sha256] = np.array([row[c] if c >= 0 else 0.0 for c in cols], dtype=np.float64)
        if progress is not None:
            progress("fine-tuning fold", n_folds, n_folds)
    return probs


def load_model(ws: Workspace, folder_vocab: list[str]) -> Any:
    """The exported learner; its classes must be the folders' classes."""
    if not ws.export_path.exists():
        raise ModelError(f"no model at {ws.export_path}: run {{train}} first (or review without --fast-model)")

    learner = load_classifier(ws.export_path)
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
                         f"run {{train}} again")
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

    is_valid = split_items(items, valid_pct=float(report.get("valid_pct", TrainOptions.valid_pct)),
                           seed=int(report.get("seed", TrainOptions.seed)))
    return {sha256_file(i.path) for i, v in zip(items, is_valid) if v}


def model_probs(ws: Workspace, learner: Any, entries: Sequence[Entry], vocab: list[str],
                progress: Progress | None, notes: list[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The exported model's probabilities and each image's split (valid = out-of-sample, train = in-sample)."""
    chosen = unique_by_sha(entries)
    if progress is not None:
        progress("predicting", 0, len(chosen))
    got = predict_probs(learner, [e.path for e in chosen]) if chosen else np.zeros((0, len(vocab)))
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
