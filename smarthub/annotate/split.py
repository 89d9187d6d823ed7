"""Stratified, seeded, stable train/val/test split of a detection dataset (pure functions + one file).

Each image's stratum is the rarest class it holds (fewest images in the whole set); images without
boxes form their own stratum (background negatives). Within a stratum every split gets its share
(`split_counts`). Assignments already made keep their split when the dataset grows: new images only
fill what each split of their stratum still lacks, so an image is never in two splits across runs.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smarthub.atomicio import atomic_write_json
from smarthub.errors import SmartHubError

SPLITS = ("train", "val", "test")
BACKGROUND = "(background)"
SPLIT_FILE = "split.json"


def parse_split(text: str) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' → (0.8, 0.1, 0.1); fractions must be >= 0 and sum to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError as e:
        raise SmartHubError(f"--split {text!r} must be three numbers like 0.8,0.1,0.1") from e
    if len(parts) != 3:
        raise SmartHubError(f"--split {text!r} must be three numbers like 0.8,0.1,0.1")
    return check_split(parts)


def check_split(split: tuple[float, ...]) -> tuple[float, float, float]:
    """The fractions as a 3-tuple; SmartHubError unless they are >= 0, sum to 1 and train > 0."""
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
        raise SmartHubError(f"split {split} must be three fractions >= 0 summing to 1, train > 0")
    return (float(split[0]), float(split[1]), float(split[2]))


def split_counts(n: int, split: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of n items go to train/val/test: rounded, val gets one when asked for and n >= 2."""
    n_val = round(n * split[1])
    n_test = round(n * split[2])
    if split[1] > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if split[2] > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n_val + n_test >= n and n > 0:  # train keeps at least one
        if n_test:
            n_test -= 1
        else:
            n_val -= 1
    return n - n_val - n_test, n_val, n_test


def strata(items: Mapping[str, frozenset[str]]) -> dict[str, str]:
    """{key: stratum}: the rarest class of each image (ties by name), BACKGROUND for images without boxes."""
    freq = Counter(label for labels in items.values() for label in labels)
    return {key: min(labels, key=lambda lab: (freq[lab], lab)) if labels else BACKGROUND
            for key, labels in items.items()}


def _order(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()


def assign_splits(items: Mapping[str, frozenset[str]], *, fractions: tuple[float, float, float], seed: int,
                  previous: Mapping[str, str] | None = None) -> dict[str, str]:
    """{key: 'train'|'val'|'test'} for every key of `items` (key → the set of classes in that image).

    Keys in `previous` keep their split; new keys of each stratum, in a seeded order, go where the
    stratum's share (`split_counts` over old + new) is still short, then to train.
    """
    fractions = check_split(fractions)
    previous = {k: v for k, v in (previous or {}).items() if k in items and v in SPLITS}
    out = dict(previous)
    by_stratum: dict[str, list[str]] = {}
    for key, stratum in strata(items).items():
        by_stratum.setdefault(stratum, []).append(key)
    for stratum in sorted(by_stratum):
        keys = by_stratum[stratum]
        have = Counter(previous[k] for k in keys if k in previous)
        want = dict(zip(SPLITS, split_counts(len(keys), fractions)))
        new = sorted((k for k in keys if k not in previous), key=lambda k: _order(seed, k))
        for key in new:
            short = [s for s in ("val", "test", "train") if have[s] < want[s]]
            split = short[0] if short else "train"
            out[key] = split
            have[split] += 1
    return out


@dataclass
class SplitRecord:
    """The split as stored in `<labelme dir>/.smarthub/split.json` and copied into each run."""

    seed: int
    fractions: tuple[float, float, float]
    assignments: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"seed": self.seed, "fractions": list(self.fractions), "assignments": dict(sorted(self.assignments.items()))}

    def counts(self, keys: list[str] | None = None) -> dict[str, int]:
        """Images per split (of `keys` when given)."""
        chosen = self.assignments if keys is None else {k: self.assignments[k] for k in keys}
        c = Counter(chosen.values())
        return {s: c.get(s, 0) for s in SPLITS}


def load_split(path: Path) -> SplitRecord | None:
    """The stored split, or None when there is none; SmartHubError when the file is damaged."""
    import json

    path = Path(path)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        assignments = {str(k): str(v) for k, v in obj["assignments"].items()}
        return SplitRecord(seed=int(obj["seed"]), fractions=check_split(tuple(obj["fractions"])),
                           assignments=assignments)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SmartHubError(f"{path} is damaged ({type(e).__name__}: {e}); delete it to split anew "
                            f"(old images may then change split)") from e


def stable_split(items: Mapping[str, frozenset[str]], split_file: Path, *, fractions: tuple[float, float, float],
                 seed: int) -> SplitRecord:
    """Assign splits keeping those stored in `split_file`, store the result (atomic), return it.

    Keys no longer present stay in the file, so an image that comes back keeps its split.
    """
    old = load_split(split_file)
    previous = old.assignments if old else {}
    assigned = assign_splits(items, fractions=fractions, seed=seed, previous=previous)
    record = SplitRecord(seed=seed, fractions=check_split(fractions), assignments={**previous, **assigned})
    if old is None or record.assignments != old.assignments:
        atomic_write_json(split_file, record.to_json())
    return record
