"""Image search backends → SearchHit records: ddgs (DuckDuckGo & co.) and a URL list file.

A backend implements `search(query, *, max_results, options) -> list[SearchHit]`.
`cached_search` stores results under `data/.smarthub/cache/search/` keyed by
(backend, query, options, max_results), so a rerun does not search again.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from smarthub.atomicio import atomic_write_json, read_json
from smarthub.collect.options import SAFESEARCH, BootstrapOptions
from smarthub.dataset import validate_label
from smarthub.errors import DatasetError, NetworkError, SmartHubError

DEFAULT_QUERY_TEMPLATES = ("{label}", "{label} photo", "{label} picture", "{label} image",
                           "{label} close-up", "{label} high resolution")
SIZES = ("Small", "Medium", "Large", "Wallpaper")
TYPES = ("photo", "clipart", "gif", "transparent", "line")
LICENCES = ("any", "Public", "Share", "ShareCommercially", "Modify", "ModifyCommercially")
LICENCE_HINTS = {
    "any": "Creative Commons (search filter 'any')",
    "Public": "public domain (search filter)",
    "Share": "free to share and use (search filter)",
    "ShareCommercially": "free to share and use commercially (search filter)",
    "Modify": "free to modify, share and use (search filter)",
    "ModifyCommercially": "free to modify, share and use commercially (search filter)",
}
OFFLINE_HINT = "`--urls-file` downloads from a list"


@dataclass(frozen=True)
class SearchHit:
    """One image found by a search: where it is, where it was shown, and what the engine said about it."""

    image_url: str
    page_url: str = ""
    title: str = ""
    width: int = 0
    height: int = 0
    source: str = ""
    licence: str = ""
    label: str = ""  # set by backends that know the class (a `url,label` list)


@dataclass(frozen=True)
class SearchOptions:
    """Search filters (ddgs/DuckDuckGo names): region like 'us-en' ('wt-wt' = no region)."""

    region: str = BootstrapOptions.region
    safesearch: str = BootstrapOptions.safesearch
    size: str | None = None
    type_image: str | None = None
    licence: str | None = None
    layout: str | None = None
    color: str | None = None
    timelimit: str | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("safesearch", self.safesearch, SAFESEARCH), ("size", self.size, SIZES),
                                     ("type", self.type_image, TYPES), ("licence", self.licence, LICENCES)):
            if value is not None and value not in allowed:
                raise SmartHubError(f"search option {name}={value!r} is not one of {', '.join(allowed)}")

    def key(self) -> dict[str, Any]:
        return asdict(self)


class SearchBackend(Protocol):
    """What bootstrap needs from an image search."""

    name: str

    def search(self, query: str, *, max_results: int, options: SearchOptions) -> list[SearchHit]: ...


class DDGSBackend:
    """Image search through `ddgs.DDGS().images` with retries and exponential backoff.

    `client_factory` builds the DDGS client (tests pass a stand-in for the remote engine).
    """

    name = "ddgs"

    def __init__(self, *, engines: str = "auto", timeout_s: int = 10, retries: int = 3, backoff_s: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep, client_factory: Callable[[], Any] | None = None,
                 proxy: str | None = None) -> None:
        self.engines = engines
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.proxy = proxy
        self.client_factory = client_factory
        self.cache_key = f"ddgs:{engines}"

    def _client(self) -> Any:
        if self.client_factory is not None:
            return self.client_factory()
        from ddgs import DDGS

        return DDGS(proxy=self.proxy, timeout=self.timeout_s)

    def search(self, query: str, *, max_results: int, options: SearchOptions) -> list[SearchHit]:
        """Run one image search.

        Raises:
            NetworkError: search unreachable (offline), or still rate-limited / timing out after retries.
        """
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        kwargs: dict[str, Any] = {"region": options.region, "safesearch": options.safesearch,
                                  "max_results": max_results, "backend": self.engines}
        for ours, theirs in (("size", "size"), ("type_image", "type_image"), ("licence", "license_image"),
                             ("layout", "layout"), ("color", "color"), ("timelimit", "timelimit")):
            value = getattr(options, ours)
            if value is not None:
                kwargs[theirs] = value
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                raw = self._client().images(query, **kwargs)
                return [hit for r in raw if (hit := hit_from_ddgs(r, options)) is not None]
            except (RatelimitException, TimeoutException) as e:
                last = e
                if attempt < self.retries:
                    self.sleep(self.backoff_s * 2 ** attempt)
            except DDGSException as e:
                if "no results" in str(e).lower():
                    return []
                raise NetworkError(f"image search is unreachable: {_one_line(e)}; {OFFLINE_HINT}") from e
        if isinstance(last, RatelimitException):
            raise NetworkError(f"image search is rate-limiting us ({_one_line(last)}) after {self.retries + 1} "
                               f"attempts; wait a few minutes and rerun (what was saved is kept), or "
                               f"{OFFLINE_HINT}") from last
        raise NetworkError(f"image search is unreachable: timed out {self.retries + 1} times "
                           f"({_one_line(last)}); {OFFLINE_HINT}") from last


def _one_line(e: BaseException | None) -> str:
    """A short reason from a ddgs error (its DNS/connection errors are long reprs)."""
    text = " ".join(str(e).split())
    host = re.search(r"url \((?:https?://)?([^/)\s]+)", text)
    if "dns" in text.lower() and host:
        return f"cannot resolve {host.group(1)} (no internet connection?)"
    if "connect" in text.lower() and host:
        return f"cannot connect to {host.group(1)}"
    return text if len(text) <= 160 else text[:157] + "..."


def hit_from_ddgs(rec: dict[str, Any], options: SearchOptions) -> SearchHit | None:
    """Pure: a ddgs image result dict → SearchHit (None without an http(s) image URL)."""
    url = str(rec.get("image") or "")
    if not url.startswith(("http://", "https://")):
        return None

    def as_int(v: Any) -> int:
        try:
            return int(v)
        except (TypeError, ValueError):
            return 0

    return SearchHit(image_url=url, page_url=str(rec.get("url") or ""), title=str(rec.get("title") or ""),
                     width=as_int(rec.get("width")), height=as_int(rec.get("height")),
                     source=str(rec.get("source") or ""),
                     licence=LICENCE_HINTS.get(options.licence or "", ""))


class UrlListBackend:
    """A file of image URLs: one per line, or `url,label` CSV lines. '#' starts a comment.

    `search(query)` returns every URL labelled `query` (or all, when no line has a label):
    a list is not paged, so `max_results` does not cut it.
    """

    name = "urls"
    cache_key = None

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError as e:
            raise DatasetError(f"URL list {self.path} does not exist") from e
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read URL list {self.path}: {e}") from e
        self.hits: list[SearchHit] = []
        for lineno, row in enumerate(csv.reader(text.splitlines()), 1):
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            url = row[0].strip()
            if not url.startswith(("http://", "https://")):
                raise DatasetError(f"{self.path} line {lineno}: {url[:80]!r} is not an http(s) URL")
            label = validate_label(row[1].strip()) if len(row) > 1 and row[1].strip() else ""
            self.hits.append(SearchHit(image_url=url, page_url="", source=self.path.name, label=label))
        if not self.hits:
            raise DatasetError(f"URL list {self.path} holds no URLs: write one image URL per line")

    def labels(self) -> list[str]:
        """Labels named in the file, in order of first appearance ([] when no line has one)."""
        return list(dict.fromkeys(h.label for h in self.hits if h.label))

    def unlabelled(self) -> int:
        return sum(1 for h in self.hits if not h.label)

    def search(self, query: str, *, max_results: int, options: SearchOptions) -> list[SearchHit]:
        if not self.labels():
            return list(self.hits)
        return [h for h in self.hits if h.label == query]


def cache_path(cache_dir: Path, backend_key: str, query: str, options: SearchOptions, max_results: int) -> Path:
    """File holding the cached results of one search."""
    key = json.dumps([backend_key, query, options.key(), max_results], sort_keys=True, ensure_ascii=False)
    return Path(cache_dir) / "search" / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:32] + ".json")


def cached_search(backend: SearchBackend, query: str, *, max_results: int, options: SearchOptions,
                  cache_dir: Path | None) -> tuple[list[SearchHit], bool]:
    """Search, or reuse the cached results of the same search; returns (hits, from_cache).

    Results are cached only after a successful search (an offline failure writes nothing).
    """
    backend_key = getattr(backend, "cache_key", None)
    if not backend_key or cache_dir is None:
        return backend.search(query, max_results=max_results, options=options), False
    path = cache_path(cache_dir, backend_key, query, options, max_results)
    if path.exists():
        try:
            data = read_json(path, what="search cache")
            names = {f.name for f in fields(SearchHit)}
            return [SearchHit(**{k: v for k, v in h.items() if k in names}) for h in data["hits"]], True
        except (SmartHubError, KeyError, TypeError):
            pass  # a corrupt cache entry is simply searched again and overwritten
    hits = backend.search(query, max_results=max_results, options=options)
    atomic_write_json(path, {"backend": backend_key, "query": query, "options": options.key(),
                             "max_results": max_results, "searched_at": time.time(),
                             "hits": [asdict(h) for h in hits]})
    return hits, False


def queries_for(label: str, templates: Sequence[str] = DEFAULT_QUERY_TEMPLATES) -> list[str]:
    """The search queries tried, in order, for one label."""
    return list(dict.fromkeys(t.format(label=label) for t in templates))
