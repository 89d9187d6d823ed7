"""Exact (sha256) and near (pHash + Hamming distance) duplicates, without O(n²) comparisons.

Near duplicates are found with multi-index hashing: the 64-bit pHash is split into
m (≤ 4) bands; by the pigeonhole principle two hashes within `threshold` bits differ in at
most `threshold // m` bits on at least one band, so a query looks up only the buckets
within that radius of each of its band values and compares the hashes found there.
Hashes of files already in the data folder are cached (keyed by path, size, mtime) and
seeded from the provenance ledger, so a 100k-image folder is not re-hashed each run.

Over 400 lines on purpose: exact and near duplicates, the multi-index pHash search and the quarantine plan are one
job; the index alone is ~150 lines.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.atomicio import append_jsonl, atomic_write_text, read_jsonl
from smarthub.collect.options import DEFAULT_NEAR_THRESHOLD
from smarthub.dataset import scan_dataset
from smarthub.errors import ImageError, SmartHubError
from smarthub.imaging import HASH_BITS, ImageHashes, hamming, hash_image_file, phash_hex, phash_int  # noqa: F401
from smarthub.ledger import ledger_seeds, read_records
from smarthub.workspace import Workspace


class HashIndex:
    """Near-neighbour index of 64-bit hashes under Hamming distance (multi-index hashing)."""

    def __init__(self, threshold: int = DEFAULT_NEAR_THRESHOLD) -> None:
        if not 0 <= threshold < HASH_BITS:
            raise ValueError(f"threshold must be in 0..{HASH_BITS - 1}")
        self.threshold = threshold
        # m bands; two hashes within t bits differ in at most t // m bits on some band (pigeonhole),
        # so a query probes each band's table at every value within that radius. Four 16-bit bands
        # keep buckets small (100k random hashes: ~1.5 per bucket) and the probes few (t=6: 4 × 17).
        n_bands = min(threshold + 1, 4)
        self._radius = threshold // n_bands
        edges = [round(i * HASH_BITS / n_bands) for i in range(n_bands + 1)]
        self._bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in zip(edges, edges[1:])]
        self._flips = [_flip_masks(hi - lo, self._radius) for lo, hi in zip(edges, edges[1:])]
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._bands]
        self._hashes: list[int] = []
        self._keys: list[Hashable] = []

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, value: int, key: Hashable) -> None:
        """Index hash `value` under `key`."""
        i = len(self._hashes)
        self._hashes.append(value)
        self._keys.append(key)
        for table, (shift, mask) in zip(self._tables, self._bands):
            table.setdefault((value >> shift) & mask, []).append(i)

    def query(self, value: int) -> list[tuple[Hashable, int]]:
        """Keys whose hash is within `threshold` bits of `value`, nearest first."""
        seen: set[int] = set()
        found: list[tuple[int, int]] = []
        hashes, limit = self._hashes, self.threshold
        for table, (shift, mask), flips in zip(self._tables, self._bands, self._flips):
            band = (value >> shift) & mask
            for flip in flips:
                bucket = table.get(band ^ flip)
                if not bucket:
                    continue
                for i in bucket:
                    if i in seen:
                        continue
                    seen.add(i)
                    d = (value ^ hashes[i]).bit_count()
                    if d <= limit:
                        found.append((d, i))
        found.sort()
        return [(self._keys[i], d) for d, i in found]


def _flip_masks(bits: int, radius: int) -> list[int]:
    """Every mask of `bits` bits with at most `radius` bits set (0 first)."""
    from itertools import combinations

    masks = [0]
    for r in range(1, radius + 1):
        masks.extend(sum(1 << b for b in combo) for combo in combinations(range(bits), r))
    return masks


# ---------------------------------------------------------------- hashing files


class HashCache:
    """Cache of file hashes in `data/.smarthub/cache/dedupe/hashes.jsonl`, keyed by (path, size, mtime)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.path = ws.cache_dir / "dedupe" / "hashes.jsonl"
        self._entries: dict[str, dict] = {}
        self._lines = 0
        for rec in read_jsonl(self.path):
            if isinstance(rec.get("p"), str):
                self._entries[rec["p"]] = rec
                self._lines += 1
        self._new: list[dict] = []

    def _key(self, path: Path) -> tuple[str, int, int] | None:
        try:
            st = Path(path).stat()
            rel = Path(path).resolve().relative_to(self.ws.data_dir.resolve()).as_posix()
        except (OSError, ValueError):
            return None
        return rel, st.st_size, st.st_mtime_ns

    def get(self, path: Path) -> ImageHashes | None:
        key = self._key(path)
        rec = self._entries.get(key[0]) if key else None
        if rec is None or rec.get("s") != key[1] or rec.get("m") != key[2]:
            return None
        try:
            return ImageHashes(str(rec["sha"]), int(rec["ph"], 16), int(rec["w"]), int(rec["h"]))
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, path: Path, hashes: ImageHashes) -> None:
        key = self._key(path)
        if key is None:
            return
        rec = {"p": key[0], "s": key[1], "m": key[2], "sha": hashes.sha256, "ph": phash_hex(hashes.phash),
               "w": hashes.width, "h": hashes.height}
        self._entries[key[0]] = rec
        self._new.append(rec)

    def flush(self) -> None:
        """Persist new entries (append); rewrite the file when it holds mostly stale lines."""
        if not self._new:
            return
        if self._lines + len(self._new) > 2 * len(self._entries) + 1000:
            import json

            text = "".join(json.dumps(r) + "\n" for r in self._entries.values())
            atomic_write_text(self.path, text)
            self._lines = len(self._entries)
        else:
            append_jsonl(self.path, self._new)
            self._lines += len(self._new)
        self._new = []


def hash_files(paths: Sequence[Path], *, cache: HashCache | None = None,
               seeds: dict[str, ImageHashes] | None = None, workers: int | None = None,
               progress: Callable[[int, int], None] | None = None
               ) -> tuple[dict[Path, ImageHashes], list[tuple[Path, str]]]:
    """Hash many files (cached ones and ledger-seeded ones are not re-read); returns (hashes, failed).

    `seeds` maps '<file name>:<size in bytes>' to known hashes (from the provenance ledger).
    """
    result: dict[Path, ImageHashes] = {}
    failed: list[tuple[Path, str]] = []
    todo: list[Path] = []
    for path in paths:
        cached = cache.get(path) if cache else None
        if cached is None and seeds:
            try:
                cached = seeds.get(f"{Path(path).name}:{Path(path).stat().st_size}")
            except OSError:
                cached = None
            if cached is not None and cache is not None:
                cache.put(path, cached)
        if cached is not None:
            result[path] = cached
        else:
            todo.append(path)
    total, done = len(paths), len(result)
    if progress is not None and total:
        progress(done, total)

    def one(path: Path) -> tuple[Path, ImageHashes | None, str]:
        try:
            return path, hash_image_file(path), ""
        except ImageError as e:
            return path, None, str(e)

    if todo:
        with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2))) as pool:
            for path, hashes, reason in pool.map(one, todo):
                done += 1
                if hashes is None:
                    failed.append((path, reason))
                else:
                    result[path] = hashes
                    if cache is not None:
                        cache.put(path, hashes)
                if progress is not None and (done % 200 == 0 or done == total):
                    progress(done, total)
    if cache is not None:
        cache.flush()
    return result, failed


# ---------------------------------------------------------------- grouping


@dataclass
class DuplicateGroup:
    """Images that are the same picture: `keep` (largest, then first by path) and the extras."""

    keep: Path
    duplicates: list[Path]
    kind: str  # "exact" (identical bytes) or "near" (pHash within the threshold)
    max_distance: int = 0
    reason: str = ""  # why `keep` was chosen (see `choose_keep`)

    @property
    def paths(self) -> list[Path]:
        return [self.keep, *self.duplicates]


def group_hashes(hashes: Sequence[tuple[str, int]], *, threshold: int = DEFAULT_NEAR_THRESHOLD
                 ) -> list[list[int]]:
    """Pure: indices of `(sha256, phash)` pairs grouped as duplicates (connected components); singletons left out."""
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_sha: dict[str, int] = {}
    index = HashIndex(threshold)
    for i, (sha, ph) in enumerate(hashes):
        if sha in by_sha:
            union(i, by_sha[sha])
            continue  # identical bytes: the first copy already stands for it in the index
        by_sha[sha] = i
        for j, _ in index.query(ph):
            union(i, int(j))
        index.add(ph, i)
    groups: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def find_duplicate_groups(paths: Iterable[Path], *, threshold: int = DEFAULT_NEAR_THRESHOLD,
                          cache: HashCache | None = None, seeds: dict[str, ImageHashes] | None = None,
                          progress: Callable[[int, int], None] | None = None,
                          failed: list[tuple[Path, str]] | None = None) -> list[DuplicateGroup]:
    """Group `paths` into exact and near duplicates; unreadable files are appended to `failed`."""
    paths = list(paths)
    hashed, bad = hash_files(paths, cache=cache, seeds=seeds, progress=progress)
    if failed is not None:
        failed.extend(bad)
    ordered = [p for p in paths if p in hashed]
    return groups_from_hashes({p: hashed[p] for p in ordered}, threshold=threshold)


def groups_from_hashes(hashed: dict[Path, ImageHashes], *, threshold: int = DEFAULT_NEAR_THRESHOLD
                       ) -> list[DuplicateGroup]:
    """Pure: DuplicateGroups from already-computed hashes (the largest image of each group is kept)."""
    ordered = list(hashed)
    groups = []
    for members in group_hashes([(hashed[p].sha256, hashed[p].phash) for p in ordered], threshold=threshold):
        paths = sorted((ordered[i] for i in members),
                       key=lambda p: (-hashed[p].width * hashed[p].height, str(p)))
        keep = paths[0]
        shas = {hashed[p].sha256 for p in paths}
        dist = max(hamming(hashed[keep].phash, hashed[p].phash) for p in paths)
        groups.append(DuplicateGroup(keep=keep, duplicates=paths[1:], kind="exact" if len(shas) == 1 else "near",
                                     max_distance=dist))
    groups.sort(key=lambda g: str(g.keep))
    return groups


# ---------------------------------------------------------------- the dataset index used while collecting


@dataclass(frozen=True)
class Match:
    """An image already in the dataset that a new image duplicates."""

    path: Path
    label: str
    kind: str  # "exact" or "near"
    distance: int


@dataclass
class DatasetIndex:
    """Every image of the data folder (all classes), indexed by sha256 and by pHash."""

    threshold: int = DEFAULT_NEAR_THRESHOLD
    by_sha: dict[str, tuple[Path, str]] = field(default_factory=dict)
    near: HashIndex | None = None
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.near is None:
            self.near = HashIndex(self.threshold)

    @classmethod
    def build(cls, ws: Workspace, *, threshold: int = DEFAULT_NEAR_THRESHOLD,
              progress: Callable[[int, int], None] | None = None) -> DatasetIndex:
        """Index the data folder, reusing cached hashes and the ledger's; writes only the hash cache."""
        index = cls(threshold=threshold)
        if not ws.data_dir.is_dir():
            return index
        items = scan_dataset(ws.data_dir)
        if not items:
            return index
        hashed, index.unreadable = hash_files([i.path for i in items], cache=HashCache(ws),
                                              seeds=ledger_seeds(ws), progress=progress)
        for item in items:
            h = hashed.get(item.path)
            if h is not None:
                index.add(h.sha256, h.phash, item.path, item.label)
        return index

    def __len__(self) -> int:
        return len(self.near)

    def add(self, sha256: str, phash: int, path: Path, label: str) -> None:
        self.by_sha.setdefault(sha256, (path, label))
        self.near.add(phash, (path, label))

    def match(self, sha256: str, phash: int, *, prefer_label: str | None = None) -> Match | None:
        """The existing image this one duplicates (exact first; among near ones the nearest), or None.

        With `prefer_label`, a near match in another class wins over one in `prefer_label`
        (a cross-class conflict must be reported even when a same-class copy exists too).
        """
        if sha256 in self.by_sha:
            path, label = self.by_sha[sha256]
            return Match(path, label, "exact", 0)
        hits = self.near.query(phash)
        if not hits:
            return None
        if prefer_label is not None:
            other = [(k, d) for k, d in hits if k[1] != prefer_label]
            if other:
                hits = other
        (path, label), d = hits[0]
        return Match(path, label, "near", d)


@dataclass
class DatasetDuplicates:
    """Duplicate groups of a data folder, with each image's class and the files that could not be read."""

    groups: list[DuplicateGroup]
    labels: dict[Path, str]
    unreadable: list[tuple[Path, str]]

    @property
    def extras(self) -> list[Path]:
        """Every duplicate copy (all but the kept image of each group)."""
        return [p for g in self.groups for p in g.duplicates]

    def cross_class(self, group: DuplicateGroup) -> bool:
        """True when the group's copies are filed under more than one class."""
        return len({self.labels.get(p) for p in group.paths}) > 1


def dataset_duplicate_groups(ws: Workspace, *, threshold: int = DEFAULT_NEAR_THRESHOLD,
                             progress: Callable[[int, int], None] | None = None,
                             keep: str = "auto") -> DatasetDuplicates:
    """Exact and near duplicates across every class of the data folder (hashes cached).

    The copy each group keeps follows the `keep` policy (see `choose_keep`); `group.reason` says why.

    Raises:
        DatasetError: the data folder does not exist or holds no image.
    """
    items = scan_dataset(ws.data_dir, require_images=True)
    failed: list[tuple[Path, str]] = []
    groups = find_duplicate_groups([i.path for i in items], threshold=threshold, cache=HashCache(ws),
                                   seeds=ledger_seeds(ws), progress=progress, failed=failed)
    labels = {i.path: i.label for i in items}
    sourced = paths_with_provenance(ws, [p for g in groups for p in g.paths])
    return DatasetDuplicates(groups=[apply_keep_policy(g, labels=labels, sourced=sourced, policy=keep)
                                     for g in groups], labels=labels, unreadable=failed)


# ---------------------------------------------------------------- which copy a group keeps

KEEP_POLICIES = ("auto", "provenance", "majority", "largest", "first")


def choose_keep(paths: Sequence[Path], *, labels: Mapping[Path, str], sourced: Collection[Path] = (),
                policy: str = "auto") -> tuple[Path, str]:
    """Pure: the copy of a duplicate group to keep and why. `paths` come largest first.

    auto (default): the copy with provenance (it came from a known source; a copy without it was filed by
    hand, often in the wrong class), then the copy in the class most of the group's copies share, then the
    largest. provenance / majority: that rule alone, then the largest. largest: the largest image.
    first: the first path in sort order.

    Raises:
        SmartHubError: unknown policy.
    """
    if policy not in KEEP_POLICIES:
        raise SmartHubError(f"unknown keep policy {policy!r}: use one of {', '.join(KEEP_POLICIES)}")
    paths = list(paths)
    if policy == "first":
        return min(paths, key=str), "first by path"
    if policy == "largest":
        return paths[0], "the largest copy"
    candidates, why = paths, []
    if policy in ("auto", "provenance"):
        with_source = [p for p in candidates if p in sourced]
        if with_source:
            candidates, why = with_source, ["it has provenance in the ledger"]
    if policy in ("auto", "majority") and len(candidates) > 1:
        counts = Counter(labels.get(p, "") for p in paths).most_common()
        best = [label for label, n in counts if n == counts[0][1]]
        in_best = [p for p in candidates if labels.get(p, "") in best]
        if len(best) == 1 and counts[0][1] > 1 and in_best:
            candidates = in_best
            why.append(f"its class {best[0]!r} holds {counts[0][1]} of the {len(paths)} copies")
    if not why:
        missing = {"auto": "no copy has provenance and no class holds most copies",
                   "provenance": "no copy has provenance", "majority": "no class holds most copies"}[policy]
        why.append(f"{missing}: the largest copy")
    elif len(candidates) > 1:
        why.append("the largest of those")
    return candidates[0], "; ".join(why)


def apply_keep_policy(group: DuplicateGroup, *, labels: Mapping[Path, str], sourced: Collection[Path],
                      policy: str = "auto") -> DuplicateGroup:
    """The group with its kept copy chosen by `policy` (see `choose_keep`) and the reason recorded."""
    keep, reason = choose_keep(group.paths, labels=labels, sourced=sourced, policy=policy)
    return DuplicateGroup(keep=keep, duplicates=[p for p in group.paths if p != keep], kind=group.kind,
                          max_distance=group.max_distance, reason=reason)


def paths_with_provenance(ws: Workspace, paths: Iterable[Path]) -> set[Path]:
    """The paths a ledger record vouches for: its recorded path, or (after a relabel) its unique file name."""
    records = read_records(ws)
    recorded = {r.path for r in records}
    names = Counter(Path(r.path).name for r in records)
    paths = list(paths)
    seen_names = Counter(p.name for p in paths)
    out = set()
    for p in paths:
        try:
            rel = p.relative_to(ws.data_dir).as_posix()
        except ValueError:
            continue
        if rel in recorded or (names[p.name] == 1 and seen_names[p.name] == 1):
            out.add(p)
    return out
