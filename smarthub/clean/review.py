"""The review job: scan the folders, score every image out-of-sample, and hand out the review queue.

By default the queue holds the *estimated label issues* (cleanlab's `find_label_issues` on out-of-sample
probabilities), worst first; low confidence, near duplicates filed under another class, outliers and
image-quality issues are filters a user turns on (`ReviewOptions.include`), each counted; `show_all`
ranks every image. Probabilities, embeddings and image-quality issues are cached per image sha256, so
`refresh()` after a relabel, delete or undo does no inference. Analysis only: acting is `fileops`' job.

Active label cleaning: images a person kept or relabelled (`keep.decisions`) are trusted labels. They are never
suspects again while their content and label are the ones decided, and the fast ranking fits on them with full
weight; `relearn()` re-ranks with them from the cached embeddings (the Clean tab and the notebook call it after
every page of decisions, `review()` uses them on every run). The idea and its measured value: Bernhardt et al.
2022, "Active label cleaning for improved dataset quality under resource constraints", Nature Communications
13:1161; Goh & Mueller 2023, "ActiveLab: active learning with re-labeling by multiple annotators" (cleanlab).
bench/review_effort.py measures the images a person looks at, static vs re-ranked.

Pieces: records (Suspect, Entry, output), scorers (fast / finetune / model), ranking (pure),
neighbours (exact or faiss), quality (CleanVision), keep (keep-state), caches (probabilities on disk).

Over 400 lines on purpose: scan, score, queue, requeue and the health view share ReviewResult's per-image state; the
scoring already lives below (ranking, scorers, signals, caches).
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from smarthub.atomicio import read_json
from smarthub.clean import caches, folders, scorers, signals
from smarthub.clean.health import health
from smarthub.clean.keep import decisions, fixed_count, keep, kept, trusted_shas, unkeep
from smarthub.clean.neighbours import query
from smarthub.clean.options import DEFAULT_EMBEDDER, DEFAULT_SIZE_PX, METHODS, ReviewOptions, expand_filters
from smarthub.clean.quality import quality_issues
from smarthub.clean.ranking import (
    DUPLICATE_MIN_SIMILARITY,
    duplicates_from_neighbours,
    label_issue_scores,
    outliers_from_neighbours,
    triage,
)
from smarthub.clean.records import (
    FILTERS,
    KINDS,
    QUALITY_ISSUES,
    SUSPECT_FIELDS,
    Entry,
    Suspect,
    suspect_rows,
    write_suspects,
)
from smarthub.dataset import outside_note, verify_images
from smarthub.errors import DatasetError, OptionError, SmartHubError
from smarthub.model.embeddings import Progress, check_embedder, hash_scanned, load_embedding_cache, scan_stat
from smarthub.model.options import TrainOptions
from smarthub.workspace import Workspace

__all__ = ["FILTERS", "KINDS", "METHODS", "QUALITY_ISSUES", "SUSPECT_FIELDS", "Entry", "ReviewOptions",
           "ReviewResult", "Suspect", "content_fingerprint", "default_train_options", "keep", "kept", "rank",
           "refresh", "relearn", "review", "suspect_rows", "unkeep", "write_suspects"]

content_fingerprint = caches.content_fingerprint


class FoldsError(DatasetError, OptionError):
    """Too few different images for the folds asked: a dataset problem that names the folds option."""


def default_train_options(ws: Workspace) -> TrainOptions:
    """The embedder (and fine-tune settings) review uses when none is given: see DEFAULT_EMBEDDER."""
    arch, size = DEFAULT_EMBEDDER, DEFAULT_SIZE_PX
    if ws.report_path.exists() and ws.export_path.exists():
        try:
            report = read_json(ws.report_path, what="training report")
        except SmartHubError:
            report = None
        if isinstance(report, dict) and isinstance(report.get("arch"), str) and report.get("pretrained", True):
            arch = report["arch"]
            size = int(report.get("size_px", size)) if str(report.get("size_px", "")).isdigit() else size
    return TrainOptions(arch=arch, size_px=size)


@dataclass
class ReviewResult:
    """The queue worst first (`suspects`), its counts, and the per-sha256 state that lets it update without
    inference. estimated_issues: cleanlab's estimate of the label errors left among n_images (trusted labels
    aside); n_fixed: label errors a person has fixed (images whose label is their relabel); filter_counts:
    images per filter (unsure, duplicate, outlier and each image-quality issue); trusted: sha256s of labels
    a person checked; ranked_with: the trusted sha256s the probabilities were computed with."""

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
    estimated_issues: int = 0
    filter_counts: dict[str, int] = field(default_factory=dict)
    quality_by_sha: dict[str, tuple[str, ...]] = field(default_factory=dict)
    n_fixed: int = 0
    trusted: frozenset[str] = frozenset()
    ranked_with: frozenset[str] = frozenset()
    neighbours: Any = None  # the fast method's neighbour search over `neighbour_shas` (reused by relearn)
    neighbour_shas: list[str] = field(default_factory=list)
    head_by_sha: dict[str, np.ndarray] = field(default_factory=dict)  # the fast method's heads (relearn's input)
    pruned: set[str] = field(default_factory=set)  # images its prune round took out of the neighbour votes
    folders: dict[str, int] = field(default_factory=dict)  # folder → mtime at the last scan (`folders`; {}: unknown)

    def by_kind(self) -> dict[str, int]:
        counts = {k: 0 for k in signals.kinds()}
        for s in self.suspects:
            if s.kind in counts:
                counts[s.kind] += 1
        return counts

    def headline(self) -> str:
        """'estimated N label errors among M images' (the line the CLI, the app and the notebook show), and once a
        person has fixed some: how many, and how many are estimated left."""
        if not self.n_fixed:
            return f"estimated {self.estimated_issues} label errors among {self.n_images} images"
        return (f"estimated {self.estimated_issues + self.n_fixed} label errors among {self.n_images} images: "
                f"{self.n_fixed} fixed by you, about {self.estimated_issues} left")


# ---------------------------------------------------------------- ranking over entries (no inference)

@dataclass(frozen=True)
class Queue:
    """What `queue()` hands out: suspects worst first, notes, and the counts the page shows."""

    suspects: list[Suspect]
    notes: list[str]
    estimated_issues: int
    filter_counts: dict[str, int]


def _duplicate_targets(entries: Sequence[Entry], scored: Sequence[Entry],
                       duplicate_of: dict[str, str]) -> list[str | None]:
    """For each scored entry, the sha of a (near) duplicate filed under another class, else None."""
    by_sha: dict[str, list[Entry]] = {}
    for e in entries:
        by_sha.setdefault(e.sha256, []).append(e)
    involved = {s for s, group in by_sha.items() if len(group) > 1} | set(duplicate_of)
    labels_of_sha = {s: {x.label for x in by_sha.get(s, ())} for s in involved | set(duplicate_of.values())}
    out: list[str | None] = [None] * len(scored)
    for n, e in enumerate(scored):
        if e.sha256 not in involved:
            continue
        if len(labels_of_sha[e.sha256]) > 1:  # the same bytes filed under two classes
            out[n] = e.sha256
        else:
            near = duplicate_of.get(e.sha256)
            if near is not None and labels_of_sha.get(near, set()) - {e.label}:
                out[n] = near
    return out


def queue(entries: Sequence[Entry], probs_by_sha: dict[str, np.ndarray], vocab: Sequence[str], *,
          threshold: float, split_by_sha: dict[str, str] | None = None,
          duplicate_of: dict[str, str] | None = None, outliers: set[str] | frozenset = frozenset(),
          kept: set[str] | frozenset = frozenset(), limit: int | None = None,
          include: frozenset[str] = frozenset(), show_all: bool = False,
          quality_by_sha: dict[str, tuple[str, ...]] | None = None) -> Queue:
    """The review queue from cached probabilities and the current labels: the estimated label issues,
    plus images tagged with an `include` filter (or every image with `show_all`), worst first."""
    split_by_sha = split_by_sha or {}
    duplicate_of = duplicate_of or {}
    quality_by_sha = quality_by_sha or {}
    index = {c: i for i, c in enumerate(vocab)}
    scored = [e for e in entries if e.sha256 in probs_by_sha and e.label in index]
    notes = []
    unknown = sorted({e.label for e in entries if e.label not in index})
    if unknown:
        notes.append(f"classes not scored (new since the review; run it again): {', '.join(unknown)}")
    if len(scored) < 2:
        return Queue([], notes, 0, {})
    labels = np.fromiter((index[e.label] for e in scored), dtype=int, count=len(scored))
    probs = np.stack([probs_by_sha[e.sha256] for e in scored])
    dup_target = _duplicate_targets(entries, scored, duplicate_of)
    duplicate = np.array([t is not None for t in dup_target])
    outlier = np.array([e.sha256 in outliers for e in scored])
    quality_of = [quality_by_sha.get(e.sha256, ()) for e in scored]
    kind, quality, issues = triage(labels, probs, threshold=threshold, duplicate=duplicate, outlier=outlier,
                                   quality=quality_of)
    pred_all = probs.argmax(axis=1)
    rows = np.arange(len(scored))
    p_given_all, p_pred_all = probs[rows, labels], probs[rows, pred_all]
    others = probs.copy()
    others[rows, labels] = -1.0  # the suggestion: the most probable class other than the given one
    suggested_all = others.argmax(axis=1)
    p_suggested_all = probs[rows, suggested_all]
    masks = signals.tag_masks(signals.Evidence(labels=labels, probs=probs, issues=issues, threshold=threshold,
                                               duplicate=duplicate, outlier=outlier, quality=quality_of))
    names = list(masks)
    flagged = np.stack([masks[n] for n in names], axis=1) if names else np.zeros((len(scored), 0), dtype=bool)
    open_ = np.fromiter((e.sha256 not in kept for e in scored), dtype=bool, count=len(scored))
    counts = {name: int((flagged[:, j] & open_).sum()) for j, name in enumerate(names)}
    n_issues = int((issues & open_).sum())
    wanted = [j for j, name in enumerate(names) if name in include]
    listed = open_ & (issues | show_all | (flagged[:, wanted].any(axis=1) if wanted else False))
    order = np.argsort(quality, kind="stable")
    order = order[listed[order]][:limit].tolist()
    # the tags of a row: one tuple per distinct pattern of flags (a few), not one per image
    codes = (flagged.astype(np.int64) << np.arange(len(names), dtype=np.int64)).sum(axis=1) * 2 + issues
    tags_of = {c: (("issue",) if c & 1 else ()) + tuple(n for j, n in enumerate(names) if (c >> 1) >> j & 1)
               for c in set(codes[order].tolist())}
    by_sha_path = {e.sha256: e.path for e in entries} if any(t is not None for t in dup_target) else {}
    suspects = []
    for i in order:
        e = scored[i]
        target = dup_target[i]
        dup_path = None
        if target is not None:
            dup_path = by_sha_path.get(target) if target != e.sha256 else next(
                (x.path for x in entries if x.sha256 == target and x.path != e.path), None)
        suspects.append(Suspect(
            path=e.path, given=e.label, predicted=vocab[int(pred_all[i])], p_given=float(p_given_all[i]),
            p_predicted=float(p_pred_all[i]), score=float(quality[i]), kind=str(kind[i]) or "ok",
            split=split_by_sha.get(e.sha256, "valid"), sha256=e.sha256, duplicate_of=dup_path,
            tags=tags_of[int(codes[i])], suggested=vocab[int(suggested_all[i])],
            p_suggested=float(p_suggested_all[i]),
        ))
    return Queue(suspects, notes, n_issues, counts)


def rank(entries: Sequence[Entry], probs_by_sha: dict[str, np.ndarray], vocab: Sequence[str], *,
         threshold: float, **kw: Any) -> tuple[list[Suspect], list[str]]:
    """(suspects worst first, notes): `queue()` without the counts."""
    q = queue(entries, probs_by_sha, vocab, threshold=threshold, **kw)
    return q.suspects, q.notes


# ---------------------------------------------------------------- the I/O edge: review, refresh

def _scan(ws: Workspace, progress: Progress | None,
          known: Sequence[Entry] = ()) -> tuple[list[Entry], list[tuple[Path, str]], list[str]]:
    """(entries, unreadable files, notes: the one line on links leading outside the data folder, never read)."""
    paths = {str(e.path): e.path for e in known}  # reusing Path objects saves most of a 20,000-file rescan
    outside: list[Path] = []
    hashed = hash_scanned(ws, scan_stat(ws.data_dir, known=paths, outside=outside), progress=progress)
    entries = [Entry(path=i.path, label=i.label, sha256=s) for i, s in zip(hashed.items, hashed.shas)]
    note = outside_note(outside, ws.data_dir)
    return entries, hashed.skipped, [note] if note else []


def _check_reviewable(entries: Sequence[Entry], ws: Workspace, folds: int) -> list[str]:
    """The classes, after refusing data a review cannot rank (one line each, naming what to do)."""
    if not entries:
        raise DatasetError(f"no images in {ws.data_dir}: add class folders with images (or run {{bootstrap}})")
    vocab = sorted({e.label for e in entries})
    if len(vocab) < 2:
        raise DatasetError(f"only one class ({vocab[0]!r}) in {ws.data_dir}: reviewing labels needs at least two")
    per_class: dict[str, int] = {}
    for e in scorers.unique_by_sha(entries):
        per_class[e.label] = per_class.get(e.label, 0) + 1
    lonely = sorted(c for c in vocab if per_class.get(c, 0) < 2)
    if lonely:
        raise DatasetError(f"class {lonely[0]!r} has only one image: a review compares each image with others of "
                           f"its class; add images to {ws.data_dir / lonely[0]} or move it into another class")
    n = sum(per_class.values())
    if n < folds:
        raise FoldsError(f"only {n} different images for {folds} folds: use {{folds}} {max(2, min(n, 5))} "
                         f"or add images", field="folds", owner=ReviewOptions)
    return vocab


def _resolved(ws: Workspace, options: ReviewOptions) -> ReviewOptions:
    """Options with the embedder filled in (the documented default when none was given) and checked."""
    train = options.train if options.train is not None else default_train_options(ws)
    name = check_embedder(train.arch)
    if name != train.arch:
        train = replace(train, arch=name)
    return replace(options, train=train)


def review(ws: Workspace, options: ReviewOptions | None = None, *,
           progress: Progress | None = None) -> ReviewResult:
    """Score every image of the workspace and build the review queue, worst first.

    Probabilities are cached per image sha256 with the dataset's content fingerprint: a second call on
    unchanged data does no inference. Images that cannot be read are skipped and listed in `skipped`.

    Raises:
        DatasetError: no images, a single class, a class of one image, fewer images than folds.
        SmartHubError: an embedder name that does not exist.
        ModelError: (method "model") no exported model, or its classes differ from the folders;
            pretrained weights unavailable for the embedding pass.
    """
    options = _resolved(ws, options or ReviewOptions())
    train = options.train
    assert train is not None
    start = time.perf_counter()
    stamps = folders.stamp_folders(ws.data_dir)
    entries, skipped, notes = _scan(ws, progress)
    vocab = _check_reviewable(entries, ws, options.folds)
    learner = scorers.load_model(ws, vocab) if options.method == "model" else None
    trusted = trusted_shas(entries, decisions(ws)) if options.method == "fast" else set()
    fp = caches.content_fingerprint(entries, trusted)
    stamp = caches.model_stamp(ws) if options.method == "model" else ""
    cache_path = caches.probs_cache_path(ws, options.method, train, options.folds)
    cached = caches.load_probs_cache(cache_path, fp, stamp)
    if options.method == "fast" and not train.pretrained:
        notes.append("--no-pretrained: embeddings of an untrained body rank poorly; prefer --finetune")
    head = None
    nb, uniq = None, []
    head_by_sha: dict[str, np.ndarray] = {}
    pruned: set[str] = set()
    if cached is not None and cached.vocab == vocab:
        probs_by_sha, split_by_sha = cached.probs_by_sha, cached.split_by_sha
        head_by_sha, pruned = cached.head_by_sha, cached.pruned
        duplicate_of, outliers, unreadable = cached.duplicate_of, cached.outliers, cached.unreadable
        skipped += [(e.path, unreadable[e.sha256]) for e in entries if e.sha256 in unreadable]
        notes.append("probabilities reused from the cache (the data has not changed)")
    else:
        feats, failed = scorers.embeddings(ws, entries, train, progress, required=options.method == "fast",
                                           notes=notes)
        if feats is None:  # no embedding pass to catch unreadable images: decode them all once
            failed = verify_images([e.path for e in entries]).problems
        skipped += failed
        bad = {str(p) for p, _ in failed}
        entries_ok = [e for e in entries if str(e.path) not in bad]
        unreadable = _unreadable(entries, failed)
        if options.method == "fast":  # the unreadable ones aside, the rest must still be reviewable
            _check_reviewable(entries_ok, ws, options.folds)
        uniq = scorers.unique_by_sha(entries_ok)
        nb = scorers.neighbours_of(feats, [e.sha256 for e in uniq], seed=train.seed) if feats and len(uniq) > 1 \
            else None
        split_by_sha: dict[str, str] = {}
        if options.method == "fast":
            # invariant: fast requires embeddings (ModelError above) and at least 4 readable images remain
            assert feats is not None and nb is not None
            probs_by_sha, head_by_sha, pruned = scorers.fast_scores(uniq, feats, nb, vocab, folds=options.folds,
                                                                    seed=train.seed, trusted=trusted)
        elif options.method == "finetune":
            probs_by_sha = scorers.finetune_probs(ws, entries_ok, vocab, train, folds=options.folds,
                                                  progress=progress)
        else:
            probs_by_sha, split_by_sha = scorers.model_probs(ws, learner, entries_ok, vocab, progress, notes)
            n_train = sum(1 for s in split_by_sha.values() if s == "train")
            if n_train:
                notes.append(f"{n_train} images were in the model's training split: scored in-sample (split=train)")
        duplicate_of, outliers = _duplicates_and_outliers([e.sha256 for e in uniq], nb)
    quality = _quality(ws, entries, unreadable, progress)
    result = _ranked(ws, ReviewResult(
        suspects=[], vocab=vocab, n_images=len(entries), method=options.method, seconds=0.0,
        probs_by_sha=probs_by_sha, split_by_sha=split_by_sha, entries=entries, duplicate_of=duplicate_of,
        outliers=outliers, skipped=skipped, notes=notes, options=options, fingerprint=fp, head=head,
        unreadable=unreadable, quality_by_sha=quality, ranked_with=frozenset(trusted),
        neighbours=nb if options.method == "fast" else None,
        neighbour_shas=[e.sha256 for e in uniq] if options.method == "fast" and nb is not None else [],
        head_by_sha=head_by_sha, pruned=pruned, folders=stamps,
    ), start)
    if cached is None or cached.vocab != vocab:
        caches.save_probs_cache(cache_path, ws, fingerprint=fp, stamp=stamp, result=result)
    return result


def _ranked(ws: Workspace, result: ReviewResult, start: float, decided: dict | None = None) -> ReviewResult:
    """`result` with its queue, counts and timing filled in from its cached state (and the person's decisions)."""
    options = result.options or ReviewOptions()
    decided = decisions(ws) if decided is None else decided
    trusted = trusted_shas(result.entries, decided)
    q = queue(result.entries, result.probs_by_sha, result.vocab, threshold=options.threshold,
              split_by_sha=result.split_by_sha, duplicate_of=result.duplicate_of, outliers=result.outliers,
              kept=trusted, limit=options.limit, include=options.include, show_all=options.show_all,
              quality_by_sha=result.quality_by_sha)
    return replace(result, suspects=q.suspects, notes=result.notes + q.notes, estimated_issues=q.estimated_issues,
                   filter_counts=q.filter_counts, seconds=time.perf_counter() - start,
                   n_kept=sum(1 for e in result.entries if e.sha256 in trusted and decided[e.sha256].how == "keep"),
                   n_fixed=fixed_count(result.entries, decided), trusted=frozenset(trusted))


def _quality(ws: Workspace, entries: Sequence[Entry], unreadable: dict[str, str],
             progress: Progress | None) -> dict[str, tuple[str, ...]]:
    readable = [e for e in scorers.unique_by_sha(entries) if e.sha256 not in unreadable]
    return quality_issues(ws, [e.path for e in readable], [e.sha256 for e in readable], progress=progress)


def _duplicates_and_outliers(shas: Sequence[str], nb: Any) -> tuple[dict[str, str], set[str]]:
    if nb is None:
        return {}, set()
    near = duplicates_from_neighbours(nb.index, nb.similarity)
    dup = {shas[i]: shas[j] for i, j in enumerate(near.tolist()) if j >= 0}
    return dup, {shas[i] for i in np.flatnonzero(outliers_from_neighbours(nb.similarity))}


def refresh(ws: Workspace, result: ReviewResult, *, progress: Progress | None = None) -> ReviewResult:
    """Re-read the folders and rebuild the queue from cached probabilities; only new or changed images are scored.

    After a relabel, delete or undo this does no inference at all (probabilities are keyed by sha256).
    """
    start = time.perf_counter()
    return _ranked(ws, _rescanned(ws, result, progress), start)


def _rescanned(ws: Workspace, result: ReviewResult, progress: Progress | None) -> ReviewResult:
    """`result` with the folders re-read and new or changed images scored; the queue not rebuilt yet."""
    options = result.options if result.options is not None and result.options.train is not None \
        else _resolved(ws, result.options or ReviewOptions())
    train = options.train
    assert train is not None
    stamps = folders.stamp_folders(ws.data_dir)
    entries, skipped, notes = _scan(ws, progress, result.entries)
    probs_by_sha = dict(result.probs_by_sha)
    split_by_sha = dict(result.split_by_sha)
    duplicate_of, outliers = dict(result.duplicate_of), set(result.outliers)
    head = result.head
    unreadable = dict(result.unreadable)
    skipped += [(e.path, unreadable[e.sha256]) for e in entries if e.sha256 in unreadable]
    new = [e for e in entries
           if e.sha256 not in probs_by_sha and e.sha256 not in unreadable and e.label in result.vocab]
    if new:
        feats, failed = scorers.embeddings(ws, new, train, progress, required=False, notes=notes)
        if feats is None:
            failed = verify_images([e.path for e in new]).problems
        skipped += failed
        unreadable.update(_unreadable(new, failed))
        bad = {str(p) for p, _ in failed}
        new = [e for e in new if str(e.path) not in bad]
        if options.method == "model":
            learner = scorers.load_model(ws, sorted({e.label for e in entries}))
            got, splits = scorers.model_probs(ws, learner, new, result.vocab, progress, notes)
            probs_by_sha.update(got)
            split_by_sha.update(splits)
        elif feats is not None and new:
            got, head = scorers.score_new_fast(ws, entries, new, probs_by_sha, result.vocab, train, head)
            probs_by_sha.update(got)
            split_by_sha.update({s: "valid" for s in got})  # the head never saw these images
        if feats is not None and new:
            _update_duplicates(ws, entries, new, train, duplicate_of)
        if new:
            how = " by a linear head on all other images" if options.method == "finetune" else ""
            notes.append(f"{len(new)} new or changed images scored{how}")
    quality = _quality(ws, entries, unreadable, progress)
    return replace(
        result, n_images=len(entries), probs_by_sha=probs_by_sha, split_by_sha=split_by_sha, entries=entries,
        duplicate_of=duplicate_of, outliers=outliers, skipped=skipped, notes=notes, head=head,
        unreadable=unreadable, options=options, quality_by_sha=quality, folders=stamps,
    )


def _quick_rescanned(ws: Workspace, result: ReviewResult) -> ReviewResult | None:
    """`_rescanned(ws, result)` re-listing only the class folders that changed (`folders.rescan_changed`), or
    None when that cannot tell: new content, links leading outside the data folder, a changed folder layout."""
    if not result.folders or result.options is None or result.options.train is None or result.skipped \
            or any("links leading outside" in n for n in result.notes):
        return None
    got = folders.rescan_changed(ws, result.entries, result.folders)
    if got is None:
        return None
    entries, stamps = got
    if any(e.sha256 not in result.probs_by_sha for e in entries):
        return None  # new or changed content, or a class the review did not score: score it
    return replace(result, n_images=len(entries), entries=entries, notes=[], folders=stamps)


def _unreadable(entries: Sequence[Entry], failed: Sequence[tuple[Path, str]]) -> dict[str, str]:
    reasons = {str(p): r for p, r in failed}
    return {e.sha256: reasons[str(e.path)] for e in entries if str(e.path) in reasons}


def _update_duplicates(ws: Workspace, entries: Sequence[Entry], new: Sequence[Entry], train: TrainOptions,
                       duplicate_of: dict[str, str]) -> None:
    """Nearest neighbour of each new image among all images (one exact query per new image)."""
    cache = load_embedding_cache(ws, train.arch, train.size_px, train.pretrained)
    new = [e for e in new if e.sha256 in cache]
    shas = sorted({e.sha256 for e in entries if e.sha256 in cache})
    if len(shas) < 2 or not new:
        return
    nb = query(np.stack([cache[s] for s in shas]), np.stack([cache[e.sha256] for e in new]), k=2)
    for e, i_row, s_row in zip(new, nb.index, nb.similarity):
        for i, s in zip(i_row.tolist(), s_row.tolist()):
            if shas[i] != e.sha256 and s >= DUPLICATE_MIN_SIMILARITY:
                duplicate_of[e.sha256] = shas[i]
                break


def check_options(ws: Workspace, options: ReviewOptions) -> ReviewOptions:
    """`options` with the embedder resolved and checked, without scanning (the CLI fails fast with it)."""
    return _resolved(ws, options)


__all__ += ["DEFAULT_EMBEDDER", "DEFAULT_SIZE_PX", "Queue", "check_options", "expand_filters", "health_of", "queue",
            "requeue"]


def requeue(ws: Workspace, result: ReviewResult, *, include: Iterable[str] = (),
            show_all: bool = False) -> ReviewResult:
    """The same review with other filters turned on: no scan, no inference (the Clean tab's filter boxes)."""
    options = replace(result.options or ReviewOptions(), include=frozenset(include), show_all=show_all)
    return _ranked(ws, replace(result, options=options, notes=[]), time.perf_counter())


def relearn(ws: Workspace, result: ReviewResult, *, progress: Progress | None = None) -> ReviewResult:
    """`refresh()` (re-reading only the class folders whose mtime changed since the last scan: `folders`), then, for
    the fast method, the queue ranked again with the person's decisions as trusted labels
    (active label cleaning): the neighbour votes are counted again under the current labels with trusted labels
    weighing `ranking.TRUSTED_WEIGHT` times, over the last full fit's heads (`scorers.rerank_fast`, milliseconds;
    `review()` refits the heads with them too). No inference. The other methods only hide trusted images.
    """
    start = time.perf_counter()
    fresh = _quick_rescanned(ws, result) or _rescanned(ws, result, progress)
    options = fresh.options
    decided = decisions(ws)
    trusted = frozenset(trusted_shas(fresh.entries, decided))
    if fresh.method != "fast" or options is None or options.train is None or trusted == fresh.ranked_with:
        return _ranked(ws, fresh, start, decided)
    train = options.train
    known = [e for e in fresh.entries if e.label in fresh.vocab and e.sha256 not in fresh.unreadable]
    by_sha = {e.sha256: e for e in scorers.unique_by_sha(known)}

    if fresh.neighbours is not None and set(fresh.neighbour_shas) == set(by_sha):  # the usual case: same images
        uniq, nb = [by_sha[s] for s in fresh.neighbour_shas], fresh.neighbours
    else:  # new images, or a review read from the cache: the neighbour search again (no inference)
        cache = load_embedding_cache(ws, train.arch, train.size_px, train.pretrained)
        uniq = [e for e in by_sha.values() if e.sha256 in cache]
        if len({e.label for e in uniq}) < 2 or len(uniq) < options.folds:
            return _ranked(ws, fresh, start, decided)  # too little left to fit on: the queue as refreshed
        nb = scorers.neighbours_of(cache, [e.sha256 for e in uniq], seed=train.seed)
    shas = [e.sha256 for e in uniq]
    if all(s in fresh.head_by_sha for s in shas):
        probs = scorers.rerank_fast(uniq, nb, fresh.head_by_sha, fresh.pruned, fresh.vocab, trusted=trusted)
        heads, pruned = fresh.head_by_sha, fresh.pruned
    else:  # images the heads never scored: fit them again, with the trusted labels
        cache = load_embedding_cache(ws, train.arch, train.size_px, train.pretrained)
        probs, heads, pruned = scorers.fast_scores(uniq, cache, nb, fresh.vocab, folds=options.folds,
                                                   seed=train.seed, trusted=trusted)
    return _ranked(ws, replace(fresh, probs_by_sha={**fresh.probs_by_sha, **probs}, ranked_with=trusted,
                               neighbours=nb, neighbour_shas=shas, head_by_sha=heads, pruned=pruned), start, decided)


def health_of(result: ReviewResult) -> tuple[Any, list[Entry]]:
    """(`health.Health` of the reviewed images, the entries its rows are): per-class estimated errors (trusted
    labels never count), most-confused pairs, highest losses under the review's probabilities, imbalance."""
    index = {c: i for i, c in enumerate(result.vocab)}
    scored = scorers.unique_by_sha([e for e in result.entries if e.sha256 in result.probs_by_sha and e.label in index])
    if len(scored) < 2:
        return health(np.zeros(0, int), np.zeros((0, len(result.vocab))), np.zeros(0, bool), result.vocab), scored
    labels = np.fromiter((index[e.label] for e in scored), dtype=int, count=len(scored))
    probs = np.stack([result.probs_by_sha[e.sha256] for e in scored])
    _, issues = label_issue_scores(labels, probs)
    issues &= np.fromiter((e.sha256 not in result.trusted for e in scored), dtype=bool, count=len(scored))
    return health(labels, probs, issues, result.vocab), scored
