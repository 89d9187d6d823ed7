"""The stratified, seeded, stable split: planted datasets with a rare class, backgrounds and growth."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from smarthub.annotate.split import (BACKGROUND, assign_splits, load_split, stable_split, strata)
from smarthub.errors import SmartHubError


def planted(n_common: int = 40, n_rare: int = 6, n_background: int = 10, prefix: str = "") -> dict[str, frozenset]:
    """Common-only images, images holding the rare class too, and images without boxes."""
    items = {f"{prefix}common{i:03d}.jpg": frozenset({"cow"}) for i in range(n_common)}
    items |= {f"{prefix}rare{i:03d}.jpg": frozenset({"cow", "calf"}) for i in range(n_rare)}
    items |= {f"{prefix}bg{i:03d}.jpg": frozenset() for i in range(n_background)}
    return items


def test_the_rarest_class_decides_the_stratum() -> None:
    s = strata(planted(5, 2, 1))
    assert s["rare000.jpg"] == "calf" and s["common000.jpg"] == "cow" and s["bg000.jpg"] == BACKGROUND


def test_every_stratum_gets_its_share() -> None:
    items = planted()
    out = assign_splits(items, fractions=(0.7, 0.2, 0.1), seed=3)
    assert set(out) == set(items)
    per = {kind: Counter(v for k, v in out.items() if k.startswith(kind)) for kind in ("common", "rare", "bg")}
    assert per["common"] == {"train": 28, "val": 8, "test": 4}
    assert per["rare"] == {"train": 4, "val": 1, "test": 1}  # the rare class is in validation and test too
    assert per["bg"] == {"train": 7, "val": 2, "test": 1}  # background negatives are kept and split


def test_seeded() -> None:
    items = planted()
    a = assign_splits(items, fractions=(0.8, 0.2, 0.0), seed=1)
    assert a == assign_splits(dict(reversed(list(items.items()))), fractions=(0.8, 0.2, 0.0), seed=1)
    assert a != assign_splits(items, fractions=(0.8, 0.2, 0.0), seed=2)


def test_growth_keeps_old_assignments_and_fills_the_shares(tmp_path: Path) -> None:
    split_file = tmp_path / ".smarthub" / "split.json"
    first = stable_split(planted(20, 4, 5), split_file, fractions=(0.8, 0.2, 0.0), seed=0)
    grown_items = planted(20, 4, 5) | planted(20, 4, 5, prefix="new_")
    # a later run with another seed and other fractions: the old images keep their split anyway
    grown = stable_split(grown_items, split_file, fractions=(0.6, 0.2, 0.2), seed=9)
    assert all(grown.assignments[k] == v for k, v in first.assignments.items())
    new = Counter(v for k, v in grown.assignments.items() if k.startswith("new_common"))
    assert new["val"] >= 1 and new["test"] >= 1  # the new images fill what each split now lacks
    assert load_split(split_file).assignments == grown.assignments
    # an image that leaves and comes back keeps its split
    gone = "common000.jpg"
    without = {k: v for k, v in grown_items.items() if k != gone}
    stable_split(without, split_file, fractions=(0.8, 0.2, 0.0), seed=0)
    back = stable_split(grown_items, split_file, fractions=(0.8, 0.2, 0.0), seed=0)
    assert back.assignments[gone] == first.assignments[gone]


def test_a_damaged_split_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text('{"seed": 0, "assignments": []}')
    with pytest.raises(SmartHubError, match="is damaged .*delete it to split anew"):
        stable_split(planted(), path, fractions=(0.8, 0.2, 0.0), seed=0)
