"""Search backends: URL list parsing, the real ddgs path offline, retries/backoff, the results cache."""
from __future__ import annotations

from pathlib import Path

import pytest

from smarthub.errors import DatasetError, LabelError, NetworkError, SmartHubError
from smarthub.collect.search import (DDGSBackend, SearchHit, SearchOptions, UrlListBackend, cache_path, cached_search,
                             hit_from_ddgs, queries_for)


@pytest.mark.parametrize(("text", "expected", "error"), [
    ("http://a/1.jpg\nhttps://b/2.png\n", [("http://a/1.jpg", ""), ("https://b/2.png", "")], None),
    ("# comment\n\nhttp://a/1.jpg , koi\nhttp://a/2.jpg,café\n",
     [("http://a/1.jpg", "koi"), ("http://a/2.jpg", "café")], None),
    ("\ufeffhttp://a/1.jpg\n", [("http://a/1.jpg", "")], None),
    ("ftp://a/1.jpg\n", None, (DatasetError, r"line 1: 'ftp://a/1.jpg' is not an http\(s\) URL")),
    ("http://a/1.jpg,../x\n", None, (LabelError, "path separator")),
    ("# nothing\n\n", None, (DatasetError, "holds no URLs")),
], ids=["plain", "csv-labels", "bom", "not-http", "bad-label", "empty"])
def test_url_list_parsing(tmp_path: Path, text, expected, error):
    path = tmp_path / "urls.txt"
    path.write_text(text, encoding="utf-8")
    if error:
        with pytest.raises(error[0], match=error[1]):
            UrlListBackend(path)
    else:
        backend = UrlListBackend(path)
        assert [(h.image_url, h.label) for h in backend.hits] == expected


def test_url_list_missing_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        UrlListBackend(tmp_path / "nope.txt")


def test_url_list_search_returns_the_urls_of_the_label(tmp_path: Path):
    path = tmp_path / "urls.csv"
    path.write_text("http://a/1.jpg,koi\nhttp://a/2.jpg,tilapia\nhttp://a/3.jpg,koi\n")
    backend = UrlListBackend(path)
    assert backend.labels() == ["koi", "tilapia"]
    hits = backend.search("koi", max_results=10, options=SearchOptions())
    assert [h.image_url for h in hits] == ["http://a/1.jpg", "http://a/3.jpg"]


def test_ddgs_offline_is_one_clear_network_error():
    """The real ddgs client, here without internet: DDGSException → NetworkError naming the fix."""
    backend = DDGSBackend(timeout_s=3, retries=0)
    with pytest.raises(NetworkError, match=r"^image search is unreachable: .*; `--urls-file` downloads from a list$"):
        backend.search("koi", max_results=5, options=SearchOptions())


class _Engine:
    """Stand-in for the remote search engine behind ddgs: scripted failures, then results."""

    def __init__(self, failures: list[Exception], results: list[dict]) -> None:
        self.failures = failures
        self.results = results
        self.calls: list[tuple[str, dict]] = []

    def images(self, query: str, **kwargs):
        self.calls.append((query, kwargs))
        if self.failures:
            raise self.failures.pop(0)
        return self.results


RESULTS = [
    {"title": "Koi", "image": "https://img.example/koi1.jpg", "thumbnail": "t", "url": "https://page.example/koi",
     "height": 600, "width": 800, "source": "Bing"},
    {"title": "no url", "image": "", "url": "x"},
    {"title": "Koi 2", "image": "http://img.example/koi2.jpg", "url": "", "height": "bad", "width": None},
]


def test_ddgs_retries_with_exponential_backoff_then_maps_results():
    from ddgs.exceptions import RatelimitException, TimeoutException

    engine = _Engine([RatelimitException("202 Ratelimit"), TimeoutException("timed out")], RESULTS)
    sleeps: list[float] = []
    backend = DDGSBackend(retries=3, backoff_s=1.5, sleep=sleeps.append, client_factory=lambda: engine)
    hits = backend.search("koi", max_results=7, options=SearchOptions(size="Large", type_image="photo",
                                                                      licence="Public"))
    assert sleeps == [1.5, 3.0]
    assert len(engine.calls) == 3
    kwargs = engine.calls[0][1]
    assert kwargs["max_results"] == 7 and kwargs["size"] == "Large" and kwargs["type_image"] == "photo"
    assert kwargs["license_image"] == "Public" and kwargs["region"] == "wt-wt"
    assert hits == [
        SearchHit("https://img.example/koi1.jpg", "https://page.example/koi", "Koi", 800, 600, "Bing",
                  "public domain (search filter)"),
        SearchHit("http://img.example/koi2.jpg", "", "Koi 2", 0, 0, "", "public domain (search filter)"),
    ]


def test_ddgs_gives_up_after_the_retries():
    from ddgs.exceptions import RatelimitException

    engine = _Engine([RatelimitException("Ratelimit")] * 5, RESULTS)
    sleeps: list[float] = []
    backend = DDGSBackend(retries=2, backoff_s=1.0, sleep=sleeps.append, client_factory=lambda: engine)
    with pytest.raises(NetworkError, match="rate-limiting us .* after 3 attempts"):
        backend.search("koi", max_results=5, options=SearchOptions())
    assert sleeps == [1.0, 2.0]


def test_ddgs_no_results_is_an_empty_list():
    from ddgs.exceptions import DDGSException

    backend = DDGSBackend(client_factory=lambda: _Engine([DDGSException("No results found.")], []))
    assert backend.search("qwxzv", max_results=5, options=SearchOptions()) == []


def test_results_are_cached_so_a_rerun_does_not_search(tmp_path: Path):
    engine = _Engine([], RESULTS)
    backend = DDGSBackend(client_factory=lambda: engine)
    options = SearchOptions()
    first, cached1 = cached_search(backend, "koi", max_results=10, options=options, cache_dir=tmp_path)
    second, cached2 = cached_search(backend, "koi", max_results=10, options=options, cache_dir=tmp_path)
    assert (cached1, cached2) == (False, True) and first == second and len(engine.calls) == 1
    # other options are another search
    cached_search(backend, "koi", max_results=10, options=SearchOptions(region="de-de"), cache_dir=tmp_path)
    assert len(engine.calls) == 2
    # a corrupt cache file is searched again
    cache_path(tmp_path, backend.cache_key, "koi", options, 10).write_text("{not json")
    again, cached3 = cached_search(backend, "koi", max_results=10, options=options, cache_dir=tmp_path)
    assert not cached3 and again == first and len(engine.calls) == 3


def test_offline_search_writes_no_cache(tmp_path: Path):
    with pytest.raises(NetworkError):
        cached_search(DDGSBackend(retries=0), "koi", max_results=5, options=SearchOptions(), cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"safesearch": "strict"}, "safesearch='strict'"),
    ({"size": "huge"}, "size='huge'"),
    ({"type_image": "vector"}, "type='vector'"),
    ({"licence": "MIT"}, "licence='MIT'"),
    ({"safesearch": "off", "size": "Medium", "type_image": "photo", "licence": "any"}, None),
], ids=["safesearch", "size", "type", "licence", "valid"])
def test_search_options_are_checked(kwargs, error):
    if error:
        with pytest.raises(SmartHubError, match=error):
            SearchOptions(**kwargs)
    else:
        SearchOptions(**kwargs)


def test_queries_for_label_and_hit_mapping():
    assert queries_for("koi")[:2] == ["koi", "koi photo"]
    assert hit_from_ddgs({"image": "data:image/png;base64,xx"}, SearchOptions()) is None
