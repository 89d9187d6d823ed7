"""Bootstrap categories: search → download → verify/normalise → dedupe → save → ledger.

Resumable and idempotent: images already in `data/<label>/` count towards `count`, URLs in
the ledger are not fetched again, each image's ledger line is on disk before the image appears
(atomically) in its folder, so a kill never leaves an image without provenance, and a rerun after a
crash completes the job without duplicates.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag

from smarthub.atomicio import discard_temp, is_own_temp
from smarthub.collect.dedupe import DEFAULT_NEAR_THRESHOLD, DatasetIndex, phash_hex
from smarthub.collect.download import DownloadOptions, DownloadReport, Fetcher, fetch_many, save_image
from smarthub.collect.options import BootstrapOptions
from smarthub.collect.search import (
    DEFAULT_QUERY_TEMPLATES,
    DDGSBackend,
    SearchBackend,
    SearchHit,
    SearchOptions,
    UrlListBackend,
    cached_search,
)
from smarthub.dataset import check_label_case, has_split_layout, is_image_file, validate_label
from smarthub.errors import DatasetError, LabelError, NetworkError, OptionError
from smarthub.fileops import class_names
from smarthub.ledger import ProvenanceRecord, append_records, read_records, split_present
from smarthub.staging import now
from smarthub.workspace import Workspace

WRITER_THREADS = 4  # file writes in flight (their fsyncs overlap)
LEDGER_BATCH = 16  # ledger lines appended together (one fsync), always before their files are written


@dataclass(frozen=True)
class BootstrapProgress:
    """A progress event: stage is 'search', 'index', 'download' or 'done'; done/total count images."""

    label: str
    stage: str
    done: int
    total: int
    message: str = ""


@dataclass
class BootstrapReport:
    """What a bootstrap did, per label, plus anything the user should know about the folder."""

    data_dir: Path
    count: int
    reports: dict[str, DownloadReport] = field(default_factory=dict)
    queries: dict[str, list[str]] = field(default_factory=dict)
    searches_cached: int = 0
    ledger_missing: int = 0
    unreadable_existing: list[tuple[Path, str]] = field(default_factory=list)
    stopped: str = ""  # why the run stopped early (network lost, cancelled), '' when it completed
    backend: str = ""

    @property
    def saved(self) -> int:
        return sum(len(r.saved) for r in self.reports.values())

    @property
    def complete(self) -> bool:
        """Every label reached `count` and nothing stopped the run."""
        return not self.stopped and all(r.total >= self.count for r in self.reports.values())

    def summary(self) -> str:
        """A few lines a person reads: per label what was saved and why other URLs were not."""
        lines = []
        for label, r in self.reports.items():
            new = len(r.saved)
            head = f"{label}: {r.total}/{self.count} images ({new} new"
            head += f", {r.existing} already there)" if r.existing else ")"
            extra = []
            if r.duplicates:
                extra.append(f"{len(r.duplicates)} duplicate{'s' * (len(r.duplicates) != 1)} skipped")
            if r.conflicts:
                extra.append(f"{len(r.conflicts)} cross-class conflict{'s' * (len(r.conflicts) != 1)} "
                             f"(already filed under another class) skipped")
            if r.failed:
                reasons = ", ".join(f"{k} ×{n}" for k, n in list(r.reasons().items())[:4])
                extra.append(f"{len(r.failed)} failed: {reasons}")
            if extra:
                head += "; " + "; ".join(extra)
            if r.total < self.count and not self.stopped:
                if self.backend == "urls":
                    head += " — the URL list has no more usable URLs for it"
                else:
                    n = len(self.queries.get(label, []))
                    head += f" — search results ran out after {n} quer{'y' if n == 1 else 'ies'}; " \
                            f"rerun later, or add URLs with --urls-file"
            lines.append(head)
        if self.ledger_missing:
            lines.append(f"note: {self.ledger_missing} ledger records point to images that are gone "
                         f"(deleted); they were ignored and their URLs are not fetched again")
        if self.unreadable_existing:
            lines.append(f"note: {len(self.unreadable_existing)} existing images could not be read "
                         f"(`smarthub verify` lists them)")
        if self.stopped:
            lines.append(f"stopped early: {self.stopped}; run it again to continue (saved images are not fetched again)")
        lines.append(f"{self.saved} images saved in {self.data_dir}")
        return "\n".join(lines)


ProgressFn = Callable[[BootstrapProgress], None]


def validate_labels(labels: Sequence[str], *, existing: Sequence[str] = ()) -> list[str]:
    """Validate every label before anything happens; duplicates dropped, order kept.

    Raises:
        LabelError: no label given, one breaks the label rules, or one differs only in case from an `existing`
            class or from another label given.
    """
    if isinstance(labels, str):
        labels = [labels]
    checked = list(dict.fromkeys(validate_label(label) for label in labels))
    if not checked:
        raise LabelError("no label given: name at least one class, e.g. `smarthub bootstrap koi`")
    for i, label in enumerate(checked):
        check_label_case(label, [*existing, *checked[:i]])
    return checked


def bootstrap(ws: Workspace, labels: Sequence[str], *, count: int = BootstrapOptions.count,
              backend: SearchBackend | None = None,
              search_options: SearchOptions | None = None, download_options: DownloadOptions | None = None,
              progress: ProgressFn | None = None, templates: Sequence[str] = DEFAULT_QUERY_TEMPLATES,
              results_per_query: int = 100, near_threshold: int = DEFAULT_NEAR_THRESHOLD,
              should_stop: Callable[[], bool] | None = None) -> BootstrapReport:
    """Fill `data/<label>/` with up to `count` verified, de-duplicated images per label.

    Args:
        backend: image search (default DDGSBackend); a UrlListBackend downloads from a list.
        progress: called with BootstrapProgress events (the app's progress bar, the CLI's tqdm).
        should_stop: polled between images; True ends the run cleanly (report.stopped says so).

    Raises:
        LabelError: a label breaks the rules (checked before anything is fetched or written).
        NetworkError: the image search is unreachable before anything was saved.
        DatasetError: the URL list does not fit the labels, or the data folder uses train/valid splits.
    """
    labels = validate_labels(labels, existing=class_names(ws))
    if count < 1:
        raise OptionError(f"{{count}} must be at least 1 (got {count})", field="count", owner=BootstrapOptions)
    if ws.data_dir.is_dir() and has_split_layout(ws.data_dir):
        raise DatasetError(f"{ws.data_dir} uses train/ and valid/ split folders; bootstrap writes "
                           f"{ws.data_dir}/<label>/ — point --data at a folder with one sub-folder per class")
    if backend is None:
        backend = DDGSBackend()
    if isinstance(backend, UrlListBackend):
        _check_url_list(backend, labels)
    search_options = search_options or SearchOptions()
    dl = download_options or DownloadOptions()
    emit = progress or (lambda _event: None)

    records = read_records(ws)
    report = BootstrapReport(data_dir=ws.data_dir, count=count, backend=getattr(backend, "name", ""))
    unfinished: set[tuple[str, str]] = set()
    if records:
        missing = split_present(ws, records)[1]
        unfinished = _unfinished(ws, missing)
        report.ledger_missing = len(missing) - len(unfinished)
    ledger_shas = {r.sha256 for r in records}
    # a line whose image was never written (killed between the two) does not stop that URL being fetched again
    seen_urls = {_url_key(r.url) for r in records if (r.sha256, r.path) not in unfinished}
    state = _RunState(ws=ws, backend=backend, options=dl, near_threshold=near_threshold, emit=emit,
                      ledger_shas=ledger_shas, fetcher=Fetcher(dl), should_stop=should_stop)
    # a URL list is not searched: one "query" per label returns its URLs
    queries = list(dict.fromkeys(templates)) if not isinstance(backend, UrlListBackend) else ["{label}"]

    for label in labels:
        rep = DownloadReport(label=label, wanted=count)
        report.reports[label] = rep
        folder = ws.data_dir / label
        _discard_stale_temps(folder)
        rep.existing = _count_images(folder)
        need = count - rep.existing
        emit(BootstrapProgress(label, "search", rep.existing, count, f"{label}: {rep.existing} images already"))
        tried = report.queries.setdefault(label, [])
        for template in queries:
            if len(rep.saved) >= need or report.stopped:
                break
            query = template.replace("{label}", label)
            tried.append(query)
            try:
                hits, cached = cached_search(backend, query, max_results=results_per_query,
                                             options=search_options, cache_dir=ws.cache_dir)
            except NetworkError as e:
                if state.index is None:  # nothing fetched or written yet: fail as a whole
                    raise
                report.stopped = str(e)
                break
            report.searches_cached += int(cached)
            fresh = []
            for hit in hits:
                key = _url_key(hit.image_url)
                if key not in seen_urls:
                    seen_urls.add(key)
                    fresh.append(hit)
            if fresh:
                if state.index is None:
                    state.build_index(label)
                    report.unreadable_existing = state.index.unreadable
                stop = state.collect(label, query, fresh, rep, need)
                if stop:
                    report.stopped = stop
        emit(BootstrapProgress(label, "done", rep.total, count, f"{label}: {rep.total}/{count} images"))
        if report.stopped:
            break
    return report


@dataclass
class _RunState:
    """What one bootstrap run shares across labels: the dataset index, sessions, the ledger's hashes."""

    ws: Workspace
    backend: SearchBackend
    options: DownloadOptions
    near_threshold: int
    emit: ProgressFn
    ledger_shas: set[str]
    fetcher: Fetcher
    should_stop: Callable[[], bool] | None = None
    index: DatasetIndex | None = None

    def build_index(self, label: str) -> None:
        def on_progress(done: int, total: int) -> None:
            self.emit(BootstrapProgress(label, "index", done, total, f"hashing existing images {done}/{total}"))

        self.index = DatasetIndex.build(self.ws, threshold=self.near_threshold, progress=on_progress)

    def collect(self, label: str, query: str, hits: list[SearchHit], rep: DownloadReport, need: int) -> str:
        """Download `hits` until `need` new images of `label` are saved; returns a stop reason or ''.

        Decisions (dedupe against the index) are made here, one image at a time; accepted images wait
        in small batches whose ledger lines are appended (one fsync) before their files are handed to
        a few writer threads (their fsyncs overlap): provenance is on disk before an image is visible.
        Whatever happens (an error, Ctrl-C, Stop), the batch decided so far is recorded and written
        before this returns.
        """
        folder = self.ws.data_dir / label
        index = self.index
        if index is None:
            raise RuntimeError("build_index() must run before collect()")
        writes: list[Future] = []
        pending: list[tuple[object, ProvenanceRecord]] = []  # accepted, not yet recorded nor written
        accepted = len(rep.saved)  # saved by earlier queries of this label
        writer = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="smarthub-write")

        def flush() -> None:
            """Ledger lines of the pending images first, then their files."""
            if pending:
                recorded = self.ledger_shas
                # an image whose line a killed run already wrote (its file never made it) keeps that line
                append_records(self.ws, [record for _, record in pending if record.sha256 not in recorded])
                self.ledger_shas.update(record.sha256 for _, record in pending)
                writes.extend(writer.submit(save_image, folder, image) for image, _ in pending)
                pending.clear()

        def settle(*, wait_all: bool) -> None:
            """Move finished writes to `rep.saved` (all of them when wait_all); re-raise a failed write."""
            nonlocal writes
            still = []
            error: BaseException | None = None
            for fut in writes:
                if not (wait_all or fut.done()):
                    still.append(fut)
                    continue
                try:
                    rep.saved.append(fut.result())
                except BaseException as e:  # noqa: BLE001 - re-raised below once the others are collected
                    error = error or e
            writes = still
            if error is not None:
                raise error

        outcomes = fetch_many(((h.image_url, h) for h in hits), options=self.options, fetcher=self.fetcher,
                              should_stop=self.should_stop, on_idle=flush)  # slow hosts never hold back a batch
        try:
            for outcome in outcomes:
                hit: SearchHit = outcome.tag
                image = outcome.image
                if image is None:
                    rep.failed.append((outcome.url, outcome.reason))
                else:
                    match = index.match(image.sha256, image.phash, prefer_label=label)
                    if match is None:
                        path = folder / image.file_name
                        index.add(image.sha256, image.phash, path, label)
                        pending.append((image, self._record(label, query, hit, image, path)))
                        accepted += 1
                    else:
                        rel = _rel(self.ws, match.path)
                        what = "same image" if match.kind == "exact" else f"near-duplicate (distance {match.distance})"
                        if match.label != label:
                            rep.conflicts.append((outcome.url, f"{what} already filed under {match.label!r}: {rel}"))
                        else:
                            if match.kind == "exact" and image.sha256 not in self.ledger_shas and \
                                    match.path.is_file() and all(r.sha256 != image.sha256 for _, r in pending):
                                # saved before provenance came first, by a run killed before its line: record it now
                                append_records(self.ws, [self._record(label, query, hit, image, match.path)])
                                self.ledger_shas.add(image.sha256)
                            rep.duplicates.append((outcome.url, f"{what} as {rel}"))
                settle(wait_all=False)
                if len(pending) >= LEDGER_BATCH or accepted >= need or not writes:
                    flush()  # batch while the writers are busy, write at once while they are idle
                self.emit(BootstrapProgress(label, "download", rep.existing + accepted, rep.existing + need,
                                            f"{label}: {accepted}/{need} new ({len(rep.failed)} failed, "
                                            f"{len(rep.duplicates) + len(rep.conflicts)} duplicates)"))
                if accepted >= need:
                    return ""
                if self.should_stop is not None and self.should_stop():
                    return "stopped on request"
            if self.should_stop is not None and self.should_stop():
                return "stopped on request"  # fetch_many ended early because of it
            return ""
        finally:
            outcomes.close()  # cancels the fetches not started yet and ends those in flight
            flush()
            writer.shutdown(wait=True)
            settle(wait_all=True)

    def _record(self, label: str, query: str, hit: SearchHit, image, path: Path) -> ProvenanceRecord:
        return ProvenanceRecord(
            sha256=image.sha256, phash=phash_hex(image.phash), label=label, path=_rel(self.ws, path),
            url=hit.image_url, page_url=hit.page_url, query=query, backend=getattr(self.backend, "name", ""),
            licence=hit.licence, width=image.width, height=image.height, bytes=len(image.data),
            fetched_at=now(),
        )


def _check_url_list(backend: UrlListBackend, labels: list[str]) -> None:
    named = backend.labels()
    if not named and len(labels) > 1:
        raise DatasetError(f"{backend.path} has no labels but {len(labels)} labels were given: give one LABEL, "
                           f"or write `url,label` lines")
    if named:
        unknown = [label for label in labels if label not in named]
        if unknown:
            raise DatasetError(f"{backend.path} has no URLs labelled {', '.join(map(repr, unknown))} "
                               f"(it has {', '.join(map(repr, named[:10]))})")


def _unfinished(ws: Workspace, missing: list[ProvenanceRecord]) -> set[tuple[str, str]]:
    """(sha256, path) of ledger lines whose image is neither in the data folder nor in the trash:
    a run was killed after writing the line and before the image (deleted images are in the trash)."""
    trashed = {p.name for p in ws.trash_dir.rglob("*") if p.is_file()} if ws.trash_dir.is_dir() else set()
    return {(r.sha256, r.path) for r in missing if Path(r.path).name not in trashed}


def _url_key(url: str) -> str:
    return urldefrag(url.strip())[0]


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return Path(path).relative_to(ws.data_dir).as_posix()
    except ValueError:
        return str(path)


def _discard_stale_temps(folder: Path) -> None:
    """Remove temp files a killed run left behind (`.<name>.<random>.tmp`; never an image)."""
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            if path.is_file() and is_own_temp(path):
                discard_temp(path)


def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*")
               if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))
