"""Provenance ledger: one append-only JSONL line per collected image, written after its file.

Lines are whole or absent (atomicio.append_jsonl), and the image is always written before its
line, so a crash never leaves a line without its file. A line whose file has since gone
(trashed by the user) is ignored when counting and reported. Files are named by their content
hash, so a relabel (which keeps the name) is followed by name.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from smarthub.atomicio import append_jsonl, read_jsonl
from smarthub.dataset import class_counts, outside_note, scan_dataset
from smarthub.imaging import ImageHashes
from smarthub.workspace import Workspace


@dataclass(frozen=True)
class ProvenanceRecord:
    """Where one saved image came from. `path` is relative to the data folder (POSIX)."""

    sha256: str
    phash: str
    label: str
    path: str
    url: str
    page_url: str = ""
    query: str = ""
    backend: str = ""
    licence: str = ""
    width: int = 0
    height: int = 0
    bytes: int = 0
    fetched_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, rec: dict) -> ProvenanceRecord | None:
        """Parse a ledger line; None when required fields are missing."""
        names = {f.name for f in fields(cls)}
        if not all(isinstance(rec.get(k), str) for k in ("sha256", "label", "path", "url")):
            return None
        kwargs = {k: v for k, v in rec.items() if k in names}
        try:
            for k in ("width", "height", "bytes"):
                kwargs[k] = int(kwargs.get(k) or 0)
            kwargs["phash"] = str(kwargs.get("phash") or "")
            return cls(**kwargs)
        except (TypeError, ValueError):
            return None


def append_records(ws: Workspace, records: Iterable[ProvenanceRecord]) -> None:
    """Append records to `ws.ledger_path` as whole lines (call after the files are on disk)."""
    recs = [r.to_dict() for r in records]
    if recs:
        append_jsonl(ws.ledger_path, recs)


def read_records(ws: Workspace) -> list[ProvenanceRecord]:
    """Every well-formed ledger record, in order (torn or malformed lines skipped)."""
    out = []
    for rec in read_jsonl(ws.ledger_path):
        parsed = ProvenanceRecord.from_dict(rec)
        if parsed is not None:
            out.append(parsed)
    return out


def current_path(ws: Workspace, record: ProvenanceRecord, by_name: dict[str, Path] | None = None) -> Path | None:
    """Where the record's file is now: its recorded path, or (after a relabel) a file of the same name."""
    path = ws.data_dir / record.path
    if path.is_file():
        return path
    if by_name is not None:
        return by_name.get(Path(record.path).name)
    return None


def _files_by_name(ws: Workspace) -> dict[str, Path]:
    if not ws.data_dir.is_dir():
        return {}
    return {item.path.name: item.path for item in scan_dataset(ws.data_dir)}


def split_present(ws: Workspace, records: list[ProvenanceRecord] | None = None
                  ) -> tuple[list[tuple[ProvenanceRecord, Path]], list[ProvenanceRecord]]:
    """(records whose file exists with its current path, records whose file is gone)."""
    records = read_records(ws) if records is None else records
    by_name = _files_by_name(ws)
    present, missing = [], []
    for r in records:
        p = current_path(ws, r, by_name)
        if p is None:
            missing.append(r)
        else:
            present.append((r, p))
    return present, missing


def ledger_seeds(ws: Workspace) -> dict:
    """Known hashes from the ledger keyed by '<file name>:<bytes>' (for dedupe.hash_files)."""
    seeds = {}
    for r in read_records(ws):
        if r.phash and r.bytes:
            try:
                seeds[f"{Path(r.path).name}:{r.bytes}"] = ImageHashes(r.sha256, int(r.phash, 16), r.width, r.height)
            except ValueError:
                continue
    return seeds


def domain_of(url: str) -> str:
    """Host of a URL without a leading 'www.' ('(file list)' when there is none)."""
    host = urlsplit(url).hostname or ""
    return host.removeprefix("www.") or "(no host)"


@dataclass
class InfoReport:
    """What `smarthub info` prints: images per class, per source domain, licence hints."""

    per_class: dict[str, int] = field(default_factory=dict)
    per_domain: dict[str, int] = field(default_factory=dict)
    licences: dict[str, int] = field(default_factory=dict)
    with_provenance: int = 0
    without_provenance: int = 0
    missing_files: int = 0
    outside: str | None = None  # the line on links leading outside the data folder (skipped, never read)


def info(ws: Workspace) -> InfoReport:
    """Summarise the data folder and its provenance ledger."""
    outside: list[Path] = []
    items = scan_dataset(ws.data_dir, outside=outside)
    report = InfoReport(per_class=class_counts(items), outside=outside_note(outside, ws.data_dir))
    present, missing = split_present(ws)
    seen_paths = set()
    domains: Counter[str] = Counter()
    licences: Counter[str] = Counter()
    for rec, path in present:
        if path in seen_paths:
            continue
        seen_paths.add(path)
        domains[domain_of(rec.url)] += 1
        licences[rec.licence or "unknown (check the source page)"] += 1
    report.per_domain = dict(domains.most_common())
    report.licences = dict(licences.most_common())
    report.with_provenance = len(seen_paths)
    report.without_provenance = sum(1 for i in items if i.path not in seen_paths)
    report.missing_files = len(missing)
    return report


# ---------------------------------------------------------------- lookup: where did this image come from?

SOURCE_FIELDS = ("source_url", "original_name")


def original_name(record: ProvenanceRecord) -> str:
    """The file name the image had at its source: the last segment of its URL's path ('' when none)."""
    from urllib.parse import unquote

    return unquote(urlsplit(record.url).path.rstrip("/").rpartition("/")[2])


@dataclass
class ProvenanceIndex:
    """Ledger records by sha256 and by file name (relabel and rename keep the name); later lines win."""

    by_sha: dict[str, ProvenanceRecord] = field(default_factory=dict)
    by_name: dict[str, ProvenanceRecord] = field(default_factory=dict)

    def find(self, *, sha256: str = "", path: Path | str | None = None) -> ProvenanceRecord | None:
        """The record of an image by its content hash, else by its current file name."""
        if sha256 and sha256 in self.by_sha:
            return self.by_sha[sha256]
        if path is not None:
            return self.by_name.get(Path(path).name)
        return None

    def columns(self, *, sha256: str = "", path: Path | str | None = None) -> dict[str, str]:
        """{'source_url': …, 'original_name': …} for a table row ('' when the image has no provenance)."""
        rec = self.find(sha256=sha256, path=path)
        return {"source_url": rec.url if rec else "", "original_name": original_name(rec) if rec else ""}


def provenance_index(ws: Workspace) -> ProvenanceIndex:
    """Index the workspace's ledger for lookups by sha256 or current path (empty when there is no ledger)."""
    index = ProvenanceIndex()
    for r in read_records(ws):
        index.by_sha[r.sha256] = r
        index.by_name[Path(r.path).name] = r
    return index


def provenance_for_data_dir(data_dir: Path | None) -> ProvenanceIndex:
    """`provenance_index` of the workspace whose data folder is `data_dir` (empty for None)."""
    if data_dir is None:
        return ProvenanceIndex()
    return provenance_index(Workspace(data_dir=Path(data_dir), models_dir=Path(data_dir)))
