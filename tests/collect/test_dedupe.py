"""Dedupe: the multi-index agrees with brute force; planted exact/near duplicates are grouped; hashes cached."""
from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from http_server import encode, photo
from smarthub.collect import dedupe
from smarthub.cli import main
from smarthub.collect.dedupe import (DatasetIndex, HashCache, HashIndex, dataset_duplicate_groups, find_duplicate_groups,
                             group_hashes, hamming)


def _flip_bits(value: int, n: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), n):
        value ^= 1 << bit
    return value


@pytest.mark.parametrize("threshold", [0, 3, 6, 10], ids=lambda t: f"t{t}")
def test_hash_index_finds_exactly_what_brute_force_finds(threshold):
    rng = random.Random(threshold)
    base = [rng.getrandbits(64) for _ in range(300)]
    planted = [_flip_bits(base[i], rng.randint(0, threshold + 2), rng) for i in range(0, 300, 3)]
    values = base + planted
    index = HashIndex(threshold)
    for i, v in enumerate(values):
        index.add(v, i)
    for q in values[:40] + planted[:40] + [rng.getrandbits(64) for _ in range(20)]:
        got = sorted(k for k, _ in index.query(q))
        want = sorted(i for i, v in enumerate(values) if hamming(q, v) <= threshold)
        assert got == want


def test_group_hashes_on_planted_duplicates():
    rng = random.Random(7)
    base = [rng.getrandbits(64) for _ in range(2000)]
    items = [(f"sha{i}", h) for i, h in enumerate(base)]
    items.append(("sha5", base[5]))  # exact copy (same bytes)
    items.append(("new1", _flip_bits(base[10], 3, rng)))  # near copy
    items.append(("new2", _flip_bits(base[20], 20, rng)))  # far: a different image
    groups = sorted(sorted(g) for g in group_hashes(items, threshold=6))
    assert groups == [[5, 2000], [10, 2001]]


def _write(path: Path, img: Image.Image, fmt: str = "JPEG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


@pytest.fixture
def planted(ws):
    """Six distinct photos in two classes, plus an exact copy and a resized+recompressed copy."""
    d = ws.data_dir
    for i in range(3):
        _write(d / "koi" / f"k{i}.jpg", photo(100 + i, (240, 180)), quality=92)
        _write(d / "carp" / f"c{i}.jpg", photo(200 + i, (240, 180)), quality=92)
    (d / "koi" / "k0-copy.jpg").write_bytes((d / "koi" / "k0.jpg").read_bytes())
    small = photo(201, (240, 180)).resize((120, 90), Image.Resampling.BILINEAR)
    _write(d / "koi" / "c1-small.jpg", small, quality=60)
    return ws


def test_find_duplicate_groups_finds_the_planted_ones(planted):
    d = planted.data_dir
    groups = find_duplicate_groups(sorted(d.rglob("*.jpg")))
    got = sorted((g.kind, g.keep.relative_to(d).as_posix(), sorted(p.relative_to(d).as_posix() for p in g.duplicates))
                 for g in groups)
    # same size → the first path is kept; a near copy → the larger image is kept
    assert got == [("exact", "koi/k0-copy.jpg", ["koi/k0.jpg"]), ("near", "carp/c1.jpg", ["koi/c1-small.jpg"])]
    found = dataset_duplicate_groups(planted)
    near = next(g for g in found.groups if g.kind == "near")
    assert found.cross_class(near) and len(found.extras) == 2


def test_dataset_index_matches_and_prefers_cross_class(planted):
    index = DatasetIndex.build(planted)
    assert len(index) == 8
    copy = dedupe.hash_image_file(planted.data_dir / "koi" / "c1-small.jpg")
    match = index.match("not-a-known-sha", copy.phash, prefer_label="koi")
    assert match is not None and match.label == "carp" and match.kind == "near"


def test_hashes_are_cached_and_not_recomputed(planted, monkeypatch):
    paths = sorted(planted.data_dir.rglob("*.jpg"))
    first = find_duplicate_groups(paths, cache=HashCache(planted))
    assert (planted.cache_dir / "dedupe" / "hashes.jsonl").is_file()

    def boom(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(dedupe, "hash_image_file", boom)
    again = find_duplicate_groups(paths, cache=HashCache(planted))
    assert [(g.keep, g.duplicates) for g in again] == [(g.keep, g.duplicates) for g in first]
    # a changed file is hashed again
    _write(paths[0], photo(999, (240, 180)))
    with pytest.raises(AssertionError, match="re-hashed"):
        find_duplicate_groups(paths, cache=HashCache(planted))


def test_unreadable_files_are_reported_not_fatal(planted):
    bad = planted.data_dir / "koi" / "broken.jpg"
    bad.write_bytes(encode(photo(1), "JPEG")[:200])
    failed: list = []
    find_duplicate_groups(sorted(planted.data_dir.rglob("*.jpg")), failed=failed)
    assert [p for p, _ in failed] == [bad]


def test_dedupe_cli_reports_and_quarantines_undoably(planted, capsys):
    data = str(planted.data_dir)
    assert main(["dedupe", "--data", data]) == 1
    out = capsys.readouterr().out
    assert "2 duplicate groups, 2 extra copies (1 groups span several classes" in out
    assert "koi/c1-small.jpg" in out
    assert main(["dedupe", "--data", data, "--quarantine"]) == 0
    assert not (planted.data_dir / "koi" / "c1-small.jpg").exists()
    assert len(list(planted.trash_dir.rglob("*.jpg"))) == 2
    capsys.readouterr()
    assert main(["dedupe", "--data", data]) == 0
    assert "0 duplicate groups" in capsys.readouterr().out
    assert main(["undo", "--data", data]) == 0
    assert (planted.data_dir / "koi" / "c1-small.jpg").exists()


def test_dedupe_cli_on_missing_folder(tmp_path, capsys):
    assert main(["dedupe", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_near_threshold_separates_copies_from_distinct_photos():
    """Resized + recompressed copies stay within the default threshold; distinct photos stay far above it."""
    from smarthub.collect.download import DownloadOptions, normalise_image

    opts = DownloadOptions(min_side_px=8)
    near, far = [], []
    hashes = []
    for s in range(30):
        original = photo(s, (400, 300))
        buf = io.BytesIO()
        original.resize((170, 128), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=55)
        a = normalise_image(encode(original, "PNG"), options=opts).phash
        near.append(hamming(a, normalise_image(buf.getvalue(), options=opts).phash))
        hashes.append(a)
    far = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[:i]]
    assert max(near) <= dedupe.DEFAULT_NEAR_THRESHOLD < min(far)


# ---------------------------------------------------------------- which copy stays


def _plant_provenance(ws, path: Path) -> None:
    from smarthub.dataset import sha256_file
    from smarthub.ledger import ProvenanceRecord, append_records

    rel = path.relative_to(ws.data_dir).as_posix()
    append_records(ws, [ProvenanceRecord(sha256=sha256_file(path), phash="", label=rel.split("/")[0], path=rel,
                                         url=f"https://img.example/{path.name}")])


@pytest.fixture
def misfiled(ws):
    """apple/orig.jpg came from the web (ledger); a larger re-encoded copy was filed by hand under banana/."""
    d = ws.data_dir
    _write(d / "apple" / "orig.jpg", photo(300, (120, 90)), quality=90)
    _write(d / "banana" / "copy.jpg", photo(300, (120, 90)).resize((240, 180)), quality=95)
    for i in range(2):
        _write(d / "apple" / f"a{i}.jpg", photo(310 + i, (240, 180)))
        _write(d / "banana" / f"b{i}.jpg", photo(320 + i, (240, 180)))
    _plant_provenance(ws, d / "apple" / "orig.jpg")
    return ws


@pytest.mark.parametrize("policy,kept,reason", [
    ("auto", "apple/orig.jpg", "it has provenance in the ledger"),
    ("provenance", "apple/orig.jpg", "it has provenance in the ledger"),
    ("largest", "banana/copy.jpg", "the largest copy"),
    ("majority", "banana/copy.jpg", "no class holds most copies: the largest copy"),
    ("first", "apple/orig.jpg", "first by path"),
], ids=["auto", "provenance", "largest", "majority-tie", "first"])
def test_keep_policy_with_planted_provenance(misfiled, policy, kept, reason):
    found = dataset_duplicate_groups(misfiled, keep=policy)
    (group,) = found.groups
    assert group.keep.relative_to(misfiled.data_dir).as_posix() == kept and group.reason == reason


def test_keep_majority_class_when_no_copy_has_provenance(ws):
    d = ws.data_dir
    _write(d / "apple" / "x1.jpg", photo(400, (120, 90)), quality=90)
    (d / "apple" / "x2.jpg").write_bytes((d / "apple" / "x1.jpg").read_bytes())
    _write(d / "banana" / "big.jpg", photo(400, (120, 90)).resize((240, 180)), quality=95)
    (group,) = dataset_duplicate_groups(ws).groups
    assert group.keep.parent.name == "apple"
    assert group.reason == "its class 'apple' holds 2 of the 3 copies; the largest of those"


def test_dedupe_quarantine_keeps_the_copy_with_provenance_and_says_why(misfiled, capsys):
    data = str(misfiled.data_dir)
    assert main(["dedupe", "--data", data, "--quarantine"]) == 0
    out = capsys.readouterr().out
    assert "keep  apple/orig.jpg  (it has provenance in the ledger)" in out and "extra banana/copy.jpg" in out
    assert (misfiled.data_dir / "apple" / "orig.jpg").is_file() and not (misfiled.data_dir / "banana" / "copy.jpg").exists()
    assert main(["undo", "--data", data]) == 0 and (misfiled.data_dir / "banana" / "copy.jpg").is_file()


def test_unknown_keep_policy_is_refused():
    from smarthub.errors import SmartHubError

    with pytest.raises(SmartHubError, match="unknown keep policy 'newest'"):
        dedupe.choose_keep([Path("a/1.jpg")], labels={}, policy="newest")
