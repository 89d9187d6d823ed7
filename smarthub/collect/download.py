"""Concurrent fetch of image URLs → verified, normalised image bytes, and atomic saving by content hash.

The pipeline per URL: fetch (a wall-clock deadline, byte cap, bounded redirects, a per-host limit) →
sniff (HTML and SVG are refused by name) → pixel-count check before decoding → full decode →
normalise (EXIF orientation, RGB on white, 16-bit scaled, first frame, longest side ≤ max) →
JPEG bytes + sha256 + pHash. Download threads only wait on the network; a per-core pool decodes.
Neither writes: the caller decides what to save (see `bootstrap.py`).

The deadline holds whatever the server does (a byte every few seconds, headers that never end, endless
redirects): a watchdog thread shuts the socket of every fetch past its deadline, and closing
`fetch_many` (Ctrl-C, the app's Stop) shuts the sockets of all fetches in flight.
A redirect may not lead from an address to a more private one (public → loopback, private or
link-local; loopback → link-local): URLs listed on purpose are the user's choice, redirects are not.

Over 400 lines on purpose: the fetch pipeline (deadline, byte cap, redirects, per-host limit, verification, saving)
is one chain whose limits are tested together.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from smarthub.atomicio import atomic_write_bytes
from smarthub.collect.options import BootstrapOptions
from smarthub.collect.netguard import Watch, Watchdog, current_watch, redirect_refusal, watched_adapter_class
from smarthub.imaging import MAX_IMAGE_PIXELS, flatten_to_rgb, open_image, phash_int
from smarthub.errors import ImageError, NetworkError, SmartHubError

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) smarthub/0.1 (+image dataset bootstrap)"
SUFFIX_BY_FORMAT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                    "BMP": ".bmp", "TIFF": ".tif"}
NAME_HEX_CHARS = 16


@dataclass(frozen=True)
class DownloadOptions:
    """How to fetch and normalise. Timeouts in seconds; sizes in bytes or pixels."""

    workers: int = BootstrapOptions.workers
    per_host: int = BootstrapOptions.per_host
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    max_side_px: int = BootstrapOptions.max_side_px
    min_side_px: int = BootstrapOptions.min_side_px
    max_pixels: int = MAX_IMAGE_PIXELS
    keep_original: bool = False
    jpeg_quality: int = 90
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        for name in ("workers", "per_host", "max_bytes", "max_side_px", "max_pixels"):
            if getattr(self, name) < 1:
                raise SmartHubError(f"download option {name} must be at least 1 (got {getattr(self, name)})")
        if self.min_side_px < 0 or self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise SmartHubError("download options: --min-side must be ≥ 0 and timeouts > 0")


@dataclass(frozen=True)
class NormalisedImage:
    """An image ready to be written: its bytes, file suffix, size after orientation, hashes."""

    data: bytes
    suffix: str
    width: int
    height: int
    sha256: str
    phash: int
    source_format: str = ""
    frames: int = 1

    @property
    def file_name(self) -> str:
        """Short content hash + suffix: moving between class folders never collides."""
        return self.sha256[:NAME_HEX_CHARS] + self.suffix


@dataclass
class DownloadReport:
    """Outcome of collecting one label: saved files, and every URL not saved with the reason."""

    label: str = ""
    saved: list[Path] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    existing: int = 0
    wanted: int = 0

    @property
    def total(self) -> int:
        """Images of this label on disk after the run (existing + saved)."""
        return self.existing + len(self.saved)

    def reasons(self) -> dict[str, int]:
        """Failure reasons summarised (the detail after a colon or parenthesis dropped), most common first."""
        counts: dict[str, int] = {}
        for _, reason in self.failed:
            key = re.split(r"[:(]", reason, maxsplit=1)[0].strip()
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True)
class FetchOutcome:
    """What one URL gave: a normalised image, or the reason it was refused."""

    url: str
    image: NormalisedImage | None = None
    reason: str = ""
    tag: Any = None

    @property
    def ok(self) -> bool:
        return self.image is not None


# ---------------------------------------------------------------- fetching


class Fetcher:
    """Fetches URLs with one requests.Session per worker thread, a per-host concurrency limit and a deadline."""

    def __init__(self, options: DownloadOptions) -> None:
        self.options = options
        self._local = threading.local()
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._hosts_lock = threading.Lock()
        self._watchdog = Watchdog()

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            adapter = watched_adapter_class()(pool_connections=8, pool_maxsize=self.options.per_host, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers.update({"User-Agent": self.options.user_agent, "Accept": "image/*,*/*;q=0.5"})
            self._local.session = session
        return session

    def _host_slot(self, url: str) -> threading.BoundedSemaphore:
        host = urlsplit(url).netloc.lower()
        with self._hosts_lock:
            sem = self._hosts.get(host)
            if sem is None:
                sem = self._hosts[host] = threading.BoundedSemaphore(self.options.per_host)
            return sem

    def abort_in_flight(self) -> None:
        """End every fetch running now (their sockets are shut; they raise NetworkError 'stopped')."""
        self._watchdog.abort_all()

    def fetch(self, url: str) -> tuple[bytes, str]:
        """Return (body, content type) of `url`, following at most `max_redirects` redirects.

        The whole fetch (connect, headers, redirects, body) ends by `total_timeout_s`, whatever the server does.

        Raises:
            NetworkError: HTTP error status, timeout, reset, redirect loop or into a private address,
                body over the byte cap, stopped.
        """
        import requests

        opts = self.options
        watch = self._watchdog.start(time.monotonic() + opts.total_timeout_s)
        current_watch.watch = watch
        try:
            body, ctype = self._fetch(url, watch)
        except (NetworkError, requests.exceptions.RequestException) as e:
            if watch.reason:
                raise NetworkError(watch.message(opts.total_timeout_s)) from e
            if isinstance(e, NetworkError):
                raise
            raise NetworkError(f"request failed ({type(e).__name__}: {e})") from e
        finally:
            current_watch.watch = None
            self._watchdog.finish(watch)
        if watch.reason:  # a body without Content-Length cut at the deadline looks complete: it is not
            raise NetworkError(watch.message(opts.total_timeout_s))
        return body, ctype

    def _fetch(self, url: str, watch: Watch) -> tuple[bytes, str]:
        import requests

        opts = self.options
        seen = {url}
        current = url
        for _ in range(opts.max_redirects + 1):
            scheme = urlsplit(current).scheme.lower()
            if scheme not in ("http", "https"):
                raise NetworkError(f"unsupported URL scheme {scheme or '(none)'!r}")
            slot = self._host_slot(current)
            if not slot.acquire(timeout=max(0.0, watch.deadline - time.monotonic())):
                raise NetworkError(watch.message(opts.total_timeout_s))
            try:
                resp = self._session().get(
                    current, stream=True, allow_redirects=False,
                    timeout=(opts.connect_timeout_s, opts.read_timeout_s),
                )
                try:
                    if resp.is_redirect:
                        location = resp.headers.get("location", "")
                        nxt = urljoin(current, location)
                        if nxt in seen:
                            raise NetworkError(f"redirect loop ({current} → {nxt})")
                        refused = redirect_refusal(url, nxt)
                        if refused:
                            raise NetworkError(refused)
                        seen.add(nxt)
                        current = nxt
                        continue
                    if resp.status_code >= 400:
                        raise NetworkError(f"HTTP {resp.status_code} {resp.reason or ''}".rstrip())
                    ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                    return _read_capped(resp, opts.max_bytes, watch.deadline, opts.total_timeout_s), ctype
                finally:
                    resp.close()
            except requests.exceptions.ConnectTimeout as e:
                raise NetworkError(f"timed out connecting (after {opts.connect_timeout_s:g} s)") from e
            except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout) as e:
                raise NetworkError(f"timed out (no data for {opts.read_timeout_s:g} s)") from e
            except requests.exceptions.ConnectionError as e:
                raise NetworkError(f"connection failed ({_short_conn_error(e)})") from e
            finally:
                slot.release()
        raise NetworkError(f"too many redirects (more than {opts.max_redirects})")


def _read_capped(resp: Any, max_bytes: int, deadline: float, total_s: float) -> bytes:
    """Read a streamed body, refusing it as soon as it exceeds `max_bytes` or the total deadline."""
    import requests

    declared = resp.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise NetworkError(f"too large: {int(declared):,} bytes, over the byte cap of {max_bytes:,}")
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise NetworkError(f"too large: more than the byte cap of {max_bytes:,} bytes")
            if time.monotonic() > deadline:
                raise NetworkError(f"timed out (download took more than {total_s:g} s)")
            chunks.append(chunk)
    except requests.exceptions.ConnectionError as e:
        if "timed out" in str(e).lower():
            raise NetworkError("timed out (while reading the body)") from e
        raise NetworkError(f"connection failed while reading ({_short_conn_error(e)})") from e
    except requests.exceptions.ChunkedEncodingError as e:
        raise NetworkError(f"connection failed while reading ({_short_conn_error(e)})") from e
    return b"".join(chunks)


def _short_conn_error(e: BaseException) -> str:
    text = str(e)
    for needle, short in (("reset by peer", "reset by the server"), ("Connection refused", "refused"),
                          ("Name or service not known", "unknown host"), ("Failed to resolve", "unknown host"),
                          ("RemoteDisconnected", "closed by the server"), ("IncompleteRead", "body cut short"),
                          ("Connection broken", "connection broken")):
        if needle in text:
            return short
    return text[:120]


# ---------------------------------------------------------------- normalising (pure)


def sniff_markup(head: bytes, content_type: str = "") -> str:
    """'svg', 'html' or '' from the first bytes of a body (and its declared content type)."""
    text = head[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if "svg" in content_type or b"<svg" in text:
        return "svg"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--")) or b"<html" in text[:512]:
        return "html"
    if content_type in ("text/html", "application/xhtml+xml"):
        return "html"
    return ""


def normalise_image(data: bytes, *, options: DownloadOptions = DownloadOptions(),
                    content_type: str = "") -> NormalisedImage:
    """Verify and normalise image bytes (pure: no I/O).

    Raises:
        ImageError: zero bytes, not an image (HTML), unsupported (SVG), too large (pixels),
            too small (--min-side), truncated or undecodable.
    """
    if not data:
        raise ImageError("zero bytes")
    markup = sniff_markup(data, content_type)
    if markup == "svg":
        raise ImageError("unsupported format: SVG (a vector drawing; only raster images are collected)")
    if markup == "html":
        shown = content_type or "no content type"
        raise ImageError(f"not an image: the server sent an HTML page ({shown})")
    max_side = None if options.keep_original else options.max_side_px

    def refuse_small(size: tuple[int, int]) -> tuple[int, int] | None:
        if min(size) < options.min_side_px:  # before the decode: a tiny icon costs nothing
            raise ImageError(f"too small: {size[0]}x{size[1]} px (--min-side {options.min_side_px})")
        return None if max_side is None else (max_side, max_side)

    opened = open_image(data, max_pixels=options.max_pixels, draft_for=refuse_small)
    source_format, frames = opened.format, opened.frames
    rgb = flatten_to_rgb(opened.image, max_side_px=max_side)

    suffix = SUFFIX_BY_FORMAT.get(source_format, "")
    if options.keep_original and suffix:
        out = data
    else:
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=options.jpeg_quality)
        out, suffix = buf.getvalue(), ".jpg"
    return NormalisedImage(
        data=out, suffix=suffix, width=rgb.size[0], height=rgb.size[1], sha256=hashlib.sha256(out).hexdigest(),
        phash=phash_int(rgb), source_format=source_format, frames=frames,
    )


def fetch_and_normalise(fetcher: Fetcher, url: str) -> NormalisedImage:
    """Fetch one URL and normalise it; raises NetworkError or ImageError with the reason."""
    body, ctype = fetcher.fetch(url)
    return normalise_image(body, options=fetcher.options, content_type=ctype)


def fetch_many(urls: Iterable[tuple[str, Any]], *, options: DownloadOptions = DownloadOptions(),
               fetcher: Fetcher | None = None, should_stop: Callable[[], bool] | None = None,
               on_idle: Callable[[], None] | None = None) -> Iterator[FetchOutcome]:
    """Fetch and normalise `(url, tag)` pairs concurrently, yielding outcomes as they complete.

    Two pools: `options.workers` threads only wait on the network, and a small pool (one thread per
    core) decodes and normalises, so CPU work never holds a download slot. Closing the generator
    early (break, an exception in the consumer, Ctrl-C) cancels what has not started and ends the fetches
    in flight; `should_stop` is polled a few times a second and ends it the same way; `on_idle` is called
    when a quarter second passes without an outcome (the caller writes what it holds). Nothing is written here.
    """
    fetcher = fetcher or Fetcher(options)
    source = iter(urls)
    net_pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="smarthub-dl")
    cpu_pool = ThreadPoolExecutor(max_workers=_cpu_workers(), thread_name_prefix="smarthub-norm")
    fetching: dict[Future, tuple[str, Any]] = {}
    normalising: dict[Future, tuple[str, Any]] = {}

    def normalise(url: str, tag: Any, body: bytes, ctype: str) -> FetchOutcome:
        try:
            return FetchOutcome(url=url, image=normalise_image(body, options=options, content_type=ctype), tag=tag)
        except ImageError as e:
            return FetchOutcome(url=url, reason=str(e), tag=tag)

    try:
        exhausted = False
        while True:
            # keep every download slot busy, but bound the bodies waiting for the CPU pool
            while not exhausted and len(fetching) + len(normalising) < options.workers * 2:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                fetching[net_pool.submit(fetcher.fetch, item[0])] = item
            if not fetching and not normalising:
                return
            if should_stop is not None and should_stop():
                return
            done, _ = wait([*fetching, *normalising], timeout=0.25, return_when=FIRST_COMPLETED)
            if not done and on_idle is not None:
                on_idle()
            for fut in done:
                if fut in fetching:
                    url, tag = fetching.pop(fut)
                    try:
                        body, ctype = fut.result()
                    except NetworkError as e:
                        yield FetchOutcome(url=url, reason=str(e), tag=tag)
                        continue
                    normalising[cpu_pool.submit(normalise, url, tag, body, ctype)] = (url, tag)
                else:
                    normalising.pop(fut)
                    yield fut.result()
    finally:
        for fut in [*fetching, *normalising]:
            fut.cancel()
        fetcher.abort_in_flight()
        net_pool.shutdown(wait=False, cancel_futures=True)
        cpu_pool.shutdown(wait=False, cancel_futures=True)


def _cpu_workers() -> int:
    """Decode threads: one per core this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores))


# ---------------------------------------------------------------- saving


def save_image(folder: Path, image: NormalisedImage) -> Path:
    """Write `image` into `folder` under its content-hash name (temp file + atomic rename).

    An existing file of that name holds the same bytes (the name is their hash), so it is kept.
    """
    path = Path(folder) / image.file_name
    if not path.exists():
        atomic_write_bytes(path, image.data)
    return path


def download_images(urls: Sequence[str], folder: Path, *, options: DownloadOptions = DownloadOptions(),
                    progress: Callable[[int, int], None] | None = None) -> DownloadReport:
    """Fetch `urls` into `folder` (verified, normalised, exact duplicates skipped); no dataset bookkeeping.

    For collecting a class with dedupe against the whole dataset and provenance, use `bootstrap.bootstrap`.
    """
    report = DownloadReport(label=Path(folder).name, wanted=len(urls))
    seen: dict[str, str] = {}
    for i, outcome in enumerate(fetch_many(((u, None) for u in dict.fromkeys(urls)), options=options), 1):
        if outcome.image is None:
            report.failed.append((outcome.url, outcome.reason))
        elif outcome.image.sha256 in seen:
            report.duplicates.append((outcome.url, f"same image as {seen[outcome.image.sha256]}"))
        else:
            seen[outcome.image.sha256] = outcome.url
            report.saved.append(save_image(Path(folder), outcome.image))
        if progress is not None:
            progress(i, len(urls))
    return report
