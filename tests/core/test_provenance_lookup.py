"""Provenance lookups by sha256 / current path, and the source columns of suspects.csv."""
from __future__ import annotations

import csv

import pytest

from helpers import make_image
from smarthub import fileops
from smarthub.clean.review import Suspect, write_suspects
from smarthub.dataset import sha256_file
from smarthub.ledger import ProvenanceRecord, append_records, original_name, provenance_index


def plant(ws, label: str, name: str, url: str) -> ProvenanceRecord:
    path = make_image(ws.data_dir / label / name, pattern=sum(map(ord, name)))
    rec = ProvenanceRecord(sha256=sha256_file(path), phash="00ff00ff00ff00ff", label=label, path=f"{label}/{name}",
                           url=url, bytes=path.stat().st_size)
    append_records(ws, [rec])
    return rec


@pytest.mark.parametrize("url,expected", [
    ("https://img.example/photos/Red%20Apple.JPG?w=640", "Red Apple.JPG"),
    ("http://cdn.example/a/b/", "b"),
    ("https://img.example", ""),
], ids=["quoted-with-query", "trailing-slash", "no-path"])
def test_original_name_from_the_url(url, expected) -> None:
    rec = ProvenanceRecord(sha256="a", phash="", label="x", path="x/a.jpg", url=url)
    assert original_name(rec) == expected


def test_lookup_follows_a_relabel_by_hash_and_by_name(ws) -> None:
    rec = plant(ws, "apple", "3f2a.jpg", "https://img.example/fruit/apple_01.jpg")
    fileops.relabel(ws, [ws.data_dir / "apple" / "3f2a.jpg"], "pear")
    index = provenance_index(ws)
    assert index.find(sha256=rec.sha256) == rec
    assert index.find(path=ws.data_dir / "pear" / "3f2a.jpg") == rec  # no hash at hand: by the kept name
    assert index.find(sha256="0" * 64, path="pear/unknown.jpg") is None
    assert index.columns(path="pear/3f2a.jpg") == {"source_url": rec.url, "original_name": "apple_01.jpg"}


def test_suspects_csv_names_source_and_original_file(ws) -> None:
    rec = plant(ws, "apple", "3f2a.jpg", "https://img.example/fruit/apple_01.jpg")
    own = make_image(ws.data_dir / "apple" / "mine.jpg", pattern=3)  # added by hand: no provenance
    suspects = [Suspect(path=p, given="apple", predicted="pear", p_given=0.1, p_predicted=0.9, score=0.1,
                        kind="wrong", split="valid", sha256=sha256_file(p))
                for p in (ws.data_dir / rec.path, own)]
    out = write_suspects(suspects, ws.data_dir.parent / "suspects.csv", base=ws.data_dir)
    rows = list(csv.DictReader(out.open()))
    assert [(r["path"], r["source_url"], r["original_name"]) for r in rows] == [
        ("apple/3f2a.jpg", rec.url, "apple_01.jpg"), ("apple/mine.jpg", "", "")]
