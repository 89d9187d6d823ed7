"""Provenance ledger: whole lines only, records follow relabelled files, `smarthub info` summarises."""
from __future__ import annotations

from pathlib import Path

from helpers import make_image
from smarthub import fileops
from smarthub.cli import main
from smarthub.ledger import (ProvenanceRecord, append_records, domain_of, info, ledger_seeds, read_records,
                             split_present)


def _record(ws, label: str, name: str, url: str, licence: str = "") -> ProvenanceRecord:
    path = make_image(ws.data_dir / label / name, pattern=sum(map(ord, label + name)))
    return ProvenanceRecord(sha256="ab" * 32, phash="00ff00ff00ff00ff", label=label,
                            path=f"{label}/{name}", url=url, page_url="https://page/x", query=f"{label} photo",
                            backend="ddgs", licence=licence, width=64, height=48, bytes=path.stat().st_size,
                            fetched_at="2026-01-01T00:00:00+00:00")


def test_records_round_trip_and_torn_lines_are_skipped(ws):
    recs = [_record(ws, "koi", "a.jpg", "https://www.img.example/a.jpg"),
            _record(ws, "café", "b.jpg", "http://cdn.other.org/b.jpg", "public domain (search filter)")]
    append_records(ws, recs)
    with open(ws.ledger_path, "ab") as f:
        f.write(b'{"sha256": "cut in the mid')  # a writer killed mid-line
    append_records(ws, [_record(ws, "koi", "c.jpg", "https://www.img.example/c.jpg")])
    got = read_records(ws)
    assert got[:2] == recs and len(got) == 3
    assert all(line.endswith("}") for line in ws.ledger_path.read_text().splitlines()[:2])


def test_present_follows_relabel_and_reports_deleted(ws):
    recs = [_record(ws, "koi", f"{i}.jpg", f"https://h{i}.example/{i}.jpg") for i in range(3)]
    append_records(ws, recs)
    fileops.relabel(ws, [ws.data_dir / "koi" / "0.jpg"], "carp")
    fileops.trash(ws, [ws.data_dir / "koi" / "1.jpg"])
    present, missing = split_present(ws)
    assert sorted(p.relative_to(ws.data_dir).as_posix() for _, p in present) == ["carp/0.jpg", "koi/2.jpg"]
    assert [r.path for r in missing] == ["koi/1.jpg"]


def test_ledger_seeds_key_by_name_and_size(ws):
    rec = _record(ws, "koi", "a.jpg", "https://x/a.jpg")
    append_records(ws, [rec])
    seeds = ledger_seeds(ws)
    assert seeds[f"a.jpg:{rec.bytes}"].phash == 0x00FF00FF00FF00FF


def test_domain_of():
    assert domain_of("https://www.Example.com:8080/a.jpg") == "example.com"
    assert domain_of("not a url") == "(no host)"


def test_info_report_and_cli(ws, capsys):
    append_records(ws, [_record(ws, "koi", "a.jpg", "https://www.img.example/a.jpg", "public domain (search filter)"),
                        _record(ws, "koi", "b.jpg", "https://img.example/b.jpg"),
                        _record(ws, "café", "c.jpg", "http://cdn.other.org/c.jpg")])
    make_image(ws.data_dir / "café" / "own.jpg", pattern=5)  # added by hand: no provenance
    report = info(ws)
    assert report.per_class == {"café": 2, "koi": 2}
    assert report.per_domain == {"img.example": 2, "cdn.other.org": 1}
    assert report.with_provenance == 3 and report.without_provenance == 1
    assert main(["info", "--data", str(ws.data_dir)]) == 0
    out = capsys.readouterr().out
    assert "img.example" in out and "public domain (search filter)" in out and "unknown (check the source page)" in out
    assert "4 images in 2 classes; 3 with provenance, 1 without" in out


def test_info_on_empty_folder(ws, capsys):
    assert main(["info", "--data", str(ws.data_dir)]) == 0
    assert "no images" in capsys.readouterr().out


def test_info_on_missing_folder(tmp_path: Path, capsys):
    assert main(["info", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
