"""Bootstrap end to end: fake search engine → real HTTP server on 127.0.0.1 → real files, ledger, reports."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from http_server import (ImageServer, Route, animated_gif, cmyk_jpeg, encode, exif_rotated_jpeg,
                         palette_png_with_transparency, photo, png16, png_header_claiming)
from smarthub.collect import bootstrap as bootstrap_mod
from smarthub.collect.bootstrap import BootstrapProgress, bootstrap
from smarthub.cli import main
from smarthub.dataset import scan_dataset, sha256_file
from smarthub.collect.download import DownloadOptions
from smarthub.errors import LabelError, NetworkError, SmartHubError
from smarthub.ledger import read_records
from smarthub.collect.search import DDGSBackend, SearchHit

FAST = DownloadOptions(connect_timeout_s=2.0, read_timeout_s=1.5, total_timeout_s=8.0, max_bytes=300_000,
                       max_side_px=128, min_side_px=32, workers=8)
CARP = photo(500, (320, 240))


class FakeSearch:
    """Stands in for the remote search engine: fixed hits per query, pointing at the loopback server."""

    name = "fake"
    cache_key = "fake"

    def __init__(self, results: dict[str, list[SearchHit]]) -> None:
        self.results = results
        self.calls: list[str] = []

    def search(self, query: str, *, max_results: int, options) -> list[SearchHit]:
        self.calls.append(query)
        return self.results.get(query, [])[:max_results]


def _jpeg(seed: int) -> bytes:
    return encode(photo(seed, (200, 150)), "JPEG", quality=90)


def _carp_copy() -> bytes:
    buf = io.BytesIO()
    CARP.resize((150, 112), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=55)
    return buf.getvalue()


# path, route, expected outcome ("saved" / "duplicate" / "conflict" / "failed"), reason regex
CASES = [
    ("/404.jpg", Route(b"no", "text/plain", status=404), "failed", r"^HTTP 404"),
    ("/500.jpg", Route(b"no", "text/plain", status=500), "failed", r"^HTTP 500"),
    ("/reset.jpg", Route(behaviour="reset"), "failed", r"^connection failed"),
    ("/slow.jpg", Route(_jpeg(1), delay_s=5.0), "failed", r"^timed out"),
    ("/html.jpg", Route(b"<!DOCTYPE html><html>Forbidden</html>", "image/jpeg"), "failed", r"^not an image"),
    ("/truncated.jpg", Route(encode(photo(2, (400, 300)), "JPEG")[:2500]), "failed", r"^truncated"),
    ("/zero.jpg", Route(b""), "failed", r"^zero bytes"),
    ("/huge.jpg", Route(b"\xff\xd8" + b"\0" * 400_000), "failed", r"^too large: .*byte cap"),
    ("/bomb.png", Route(png_header_claiming(20000, 20000), "image/png"), "failed", r"^decompression bomb \((20000x20000 = )?400,000,000 pixels"),
    ("/vector.svg", Route(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"), "failed",
     r"^unsupported format: SVG"),
    ("/loop", Route(behaviour="redirect", location="/loop2"), "failed", r"^redirect loop"),
    ("/anim.gif", Route(animated_gif(3), "image/gif"), "saved", ""),
    ("/cmyk.jpg", Route(cmyk_jpeg(4)), "saved", ""),
    ("/16bit.png", Route(png16(5), "image/png"), "saved", ""),
    ("/palette.png", Route(palette_png_with_transparency(6), "image/png"), "saved", ""),
    ("/photo.webp", Route(encode(photo(7), "WEBP"), "image/webp"), "saved", ""),
    ("/exif.jpg", Route(exif_rotated_jpeg(8)[0]), "saved", ""),
    ("/carp-copy.jpg", Route(_carp_copy()), "conflict", r"^near-duplicate \(distance \d\) already filed under 'carp'"),
]
SAME = {"/same-a.jpg": Route(_jpeg(9)), "/same-b.jpg": Route(_jpeg(9))}  # the same image under two URLs


@pytest.fixture(scope="module")
def server():
    routes = {path: route for path, route, *_ in CASES}
    routes["/loop2"] = Route(behaviour="redirect", location="/loop")
    routes.update(SAME)
    for i in range(12):
        routes[f"/more{i}.jpg"] = Route(_jpeg(100 + i))
    with ImageServer(routes) as srv:
        yield srv


def _hits(server, paths) -> list[SearchHit]:
    return [SearchHit(server.url(p), page_url=f"https://page.example{p}", title=p, source="fake") for p in paths]


@pytest.fixture
def carp_ws(ws):
    """A workspace whose 'carp' class already holds CARP."""
    (ws.data_dir / "carp").mkdir(parents=True)
    CARP.save(ws.data_dir / "carp" / "carp0.jpg", quality=92)
    return ws


@pytest.fixture(scope="module")
def case_run(server, tmp_path_factory):
    from smarthub.workspace import Workspace

    root = tmp_path_factory.mktemp("cases")
    ws = Workspace(root / "data", root / "models")
    (ws.data_dir / "carp").mkdir(parents=True)
    CARP.save(ws.data_dir / "carp" / "carp0.jpg", quality=92)
    backend = FakeSearch({"koi": _hits(server, [c[0] for c in CASES] + list(SAME))})
    events: list[BootstrapProgress] = []
    report = bootstrap(ws, ["koi"], count=50, backend=backend, download_options=FAST, templates=("{label}",),
                       progress=events.append)
    return ws, report, events


@pytest.mark.parametrize(("path", "outcome", "reason"), [(c[0], c[2], c[3]) for c in CASES],
                         ids=[c[0].strip("/") for c in CASES])
def test_each_url_is_reported_with_the_outcome_a_user_expects(server, case_run, path, outcome, reason):
    ws, report, _ = case_run
    r = report.reports["koi"]
    url = server.url(path)
    buckets = {"duplicate": dict(r.duplicates), "conflict": dict(r.conflicts), "failed": dict(r.failed)}
    saved_urls = {rec.url for rec in read_records(ws)}
    if outcome == "saved":
        assert url in saved_urls and all(url not in b for b in buckets.values())
    else:
        assert url in buckets[outcome], (url, buckets)
        assert re.search(reason, buckets[outcome][url]), buckets[outcome][url]
        assert url not in saved_urls


def test_case_run_files_ledger_and_summary_agree(server, case_run):
    ws, report, events = case_run
    r = report.reports["koi"]
    # the same image under two URLs: one saved, one duplicate
    same = [server.url(p) for p in SAME]
    assert len([u for u, _ in r.duplicates if u in same]) == 1
    files = sorted((ws.data_dir / "koi").iterdir())
    assert len(files) == len(r.saved) == 7
    records = read_records(ws)
    assert sorted(ws.data_dir / rec.path for rec in records) == files
    for rec, path in ((rec, ws.data_dir / rec.path) for rec in records):
        assert path.name == rec.sha256[:16] + ".jpg" and sha256_file(path) == rec.sha256
        assert rec.label == "koi" and rec.query == "koi" and rec.backend == "fake" and rec.bytes == path.stat().st_size
        with Image.open(path) as img:
            img.load()
            assert img.format == "JPEG" and img.mode == "RGB" and max(img.size) <= 128
    exif = next(rec for rec in records if rec.url.endswith("/exif.jpg"))
    assert (exif.width, exif.height) == (96, 128)  # upright
    summary = report.summary()
    assert summary.splitlines()[0].startswith("koi: 7/50 images (7 new); 1 duplicate skipped; "
                                              "1 cross-class conflict")
    assert "11 failed" in summary and "search results ran out" in summary
    assert events[-1].stage == "done" and events[-1].done == 7
    assert any(e.stage == "download" for e in events)


@pytest.mark.parametrize(("labels", "error"), [
    (["../x"], "path separator"),
    ([""], "empty"),
    ([".hidden"], "starts with a dot"),
    (["a" * 300], "300 characters"),
    (["koi", "bad/label"], "path separator"),
    ([], "no label given"),
    (["café"], None),
], ids=["dotdot", "empty", "hidden", "300-chars", "one-bad-of-two", "none", "cafe-ok"])
def test_labels_are_checked_before_anything_is_fetched(ws, server, labels, error):
    backend = FakeSearch({"café": _hits(server, ["/more0.jpg"])})
    before = sum(server.hits.values())
    if error:
        with pytest.raises(LabelError, match=error):
            bootstrap(ws, labels, count=1, backend=backend, download_options=FAST)
        assert backend.calls == [] and sum(server.hits.values()) == before
        assert list(ws.data_dir.iterdir()) == []
    else:
        report = bootstrap(ws, labels, count=1, backend=backend, download_options=FAST)
        assert len(report.reports["café"].saved) == 1 and (ws.data_dir / "café").is_dir()


def test_near_copy_in_the_same_class_is_a_duplicate_not_a_conflict(carp_ws, server):
    server.routes["/carp-copy2.jpg"] = Route(_carp_copy())
    report = bootstrap(carp_ws, ["carp"], count=5, backend=FakeSearch({"carp": _hits(server, ["/carp-copy2.jpg"])}),
                       download_options=FAST)
    r = report.reports["carp"]
    assert r.saved == [] and r.conflicts == [] and r.existing == 1
    assert re.match(r"near-duplicate \(distance \d\) as carp/carp0.jpg", r.duplicates[0][1])


def _more(server, n: int, start: int = 0) -> list[SearchHit]:
    return _hits(server, [f"/more{i}.jpg" for i in range(start, start + n)])


def test_count_is_reached_across_query_templates_and_reruns_do_not_search_or_fetch_again(ws, server):
    backend = FakeSearch({"koi": _more(server, 3), "koi photo": _more(server, 6)})  # 3 shared URLs
    report = bootstrap(ws, ["koi"], count=5, backend=backend, download_options=FAST)
    assert len(report.reports["koi"].saved) == 5 and report.complete
    assert backend.calls == ["koi", "koi photo"]
    fetched = sum(server.hits.values())
    again = bootstrap(ws, ["koi"], count=5, backend=backend, download_options=FAST)
    assert again.reports["koi"].existing == 5 and again.reports["koi"].saved == [] and again.complete
    assert backend.calls == ["koi", "koi photo"] and sum(server.hits.values()) == fetched
    # asking for more: searches are served from the cache, ledger URLs are not fetched again
    more = bootstrap(ws, ["koi"], count=6, backend=backend, download_options=FAST)
    assert len(more.reports["koi"].saved) == 1 and more.complete
    assert backend.calls == ["koi", "koi photo"]
    assert sum(server.hits.values()) == fetched + 1


def _no_partial_files(ws) -> None:
    for path in ws.data_dir.rglob("*"):
        if path.is_file() and ws.meta_dir not in path.parents:
            assert not path.name.startswith("."), f"temp file left: {path}"
            with Image.open(path) as img:
                img.load()


def _ledger_consistent(ws) -> None:
    """Every image on disk has its ledger line (provenance is written before the image appears)."""
    recorded = {rec.path for rec in read_records(ws)}
    for path in (ws.data_dir / "koi").glob("*.jpg"):
        assert path.relative_to(ws.data_dir).as_posix() in recorded, f"image without provenance: {path}"


@pytest.mark.parametrize("where", ["in-save", "in-rename", "in-main-thread", "before-ledger"])
def test_a_crash_mid_run_leaves_no_partial_file_and_a_rerun_completes(ws, server, monkeypatch, where):
    """Ctrl-C / an exception at the 3rd image (while writing it, renaming it, deciding on it) or at the
    first ledger append: no partial file, no image without its ledger line; the rerun completes."""
    backend = FakeSearch({"koi": _more(server, 12)})
    calls = {"n": 0}
    nth = 1 if where == "before-ledger" else 3

    def failing(real):
        def wrapper(*args, **kwargs):
            if where == "in-rename" and not str(args[1]).endswith(".jpg"):
                return real(*args, **kwargs)  # the search cache is written atomically too
            calls["n"] += 1
            if calls["n"] == nth:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)
        return wrapper

    if where == "in-save":
        monkeypatch.setattr(bootstrap_mod, "save_image", failing(bootstrap_mod.save_image))
    elif where == "in-rename":
        import smarthub.atomicio as atomicio

        monkeypatch.setattr(atomicio.os, "replace", failing(os.replace))
    elif where == "in-main-thread":
        monkeypatch.setattr(bootstrap_mod.DatasetIndex, "match", failing(bootstrap_mod.DatasetIndex.match))
    else:
        monkeypatch.setattr(bootstrap_mod, "append_records", failing(bootstrap_mod.append_records))
    with pytest.raises(KeyboardInterrupt):
        bootstrap(ws, ["koi"], count=8, backend=backend, download_options=FAST)
    monkeypatch.undo()
    _no_partial_files(ws)
    _ledger_consistent(ws)
    on_disk = len(list((ws.data_dir / "koi").glob("*.jpg")))
    if where == "before-ledger":
        assert len(read_records(ws)) == on_disk  # the clean-up recorded the batch, then wrote it
    else:
        assert on_disk >= 2 and len(read_records(ws)) >= on_disk  # lines without files: allowed, never the reverse

    report = bootstrap(ws, ["koi"], count=8, backend=backend, download_options=FAST)
    assert report.complete
    files = list((ws.data_dir / "koi").glob("*.jpg"))
    assert len(files) == 8 and len({sha256_file(p) for p in files}) == 8
    _no_partial_files(ws)
    _ledger_consistent(ws)
    records = read_records(ws)
    assert len({r.sha256 for r in records}) == len(records)


def test_offline_search_raises_and_writes_nothing(ws):
    with pytest.raises(NetworkError, match="image search is unreachable"):
        bootstrap(ws, ["koi"], count=3, backend=DDGSBackend(retries=0, timeout_s=3))
    assert list(ws.data_dir.iterdir()) == []


def test_cli_without_network_is_one_line_and_exit_2(tmp_path: Path):
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "smarthub", "bootstrap", "grass carp", "koi", "--count", "3",
                           "--data", str(data), "--models", str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: image search is unreachable: ")
    assert lines[0].endswith("`--urls-file` downloads from a list")
    assert not data.exists() or list(data.rglob("*")) == []


def test_cli_bad_label_exit_2(tmp_path: Path, capsys):
    assert main(["bootstrap", "../x", "--data", str(tmp_path / "d")]) == 2
    assert "path separator" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_cli_urls_file_with_labels(tmp_path: Path, server, capsys):
    urls = tmp_path / "urls.csv"
    lines = [f"{server.url(f'/more{i}.jpg')},{'koi' if i < 4 else 'tilapia'}" for i in range(9)]
    lines.append(f"{server.url('/404.jpg')},koi")
    urls.write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    code = main(["bootstrap", "--urls-file", str(urls), "--count", "5", "--data", str(data), "--min-side", "32",
                 "--max-side", "96", "--timeout", "2"])
    out = capsys.readouterr().out
    assert code == 1, out  # koi has only 4 good URLs for 5 wanted
    assert f"failed    koi: {server.url('/404.jpg')}: HTTP 404 Not Found" in out
    assert "koi: 4/5 images (4 new); 1 failed: HTTP 404 Not Found ×1 — the URL list has no more usable URLs" in out
    assert "tilapia: 5/5 images (5 new)" in out
    assert {i.label for i in scan_dataset(data)} == {"koi", "tilapia"}
    assert main(["info", "--data", str(data)]) == 0
    assert "127.0.0.1" in capsys.readouterr().out


def test_cli_urls_file_without_labels_needs_one_label(tmp_path: Path, server, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text(server.url("/more0.jpg") + "\n")
    assert main(["bootstrap", "--urls-file", str(urls), "--data", str(tmp_path / "d")]) == 2
    assert "no `url,label` lines" in capsys.readouterr().err
    assert main(["bootstrap", "a", "b", "--urls-file", str(urls), "--data", str(tmp_path / "d")]) == 2
    assert "give one LABEL" in capsys.readouterr().err
    assert main(["bootstrap", "koi", "--urls-file", str(urls), "--data", str(tmp_path / "d"), "--count", "2",
                 "--min-side", "32"]) == 1  # one URL for two wanted: incomplete, said so
    assert "koi: 1/2 images" in capsys.readouterr().out


def test_bad_count_is_refused(ws):
    with pytest.raises(SmartHubError, match="--count must be at least 1"):
        bootstrap(ws, ["koi"], count=0, backend=FakeSearch({}))


@pytest.mark.slow
def test_cli_bootstrap_then_train(tmp_path: Path, server, capsys):
    """`--train`: one command collects two classes and exports a model (tiny: MobileNetV2, 32 px, 1 epoch)."""
    urls = tmp_path / "urls.csv"
    urls.write_text("".join(f"{server.url(f'/more{i}.jpg')},{'koi' if i % 2 else 'carp'}\n" for i in range(12)))
    data, models = tmp_path / "data", tmp_path / "models"
    code = main(["bootstrap", "--urls-file", str(urls), "--count", "6", "--data", str(data), "--models", str(models),
                 "--min-side", "32", "--max-side", "64", "--train", "--arch", "mobilenet_v2", "--epochs", "1",
                 "--train-size", "32", "--batch-size", "4", "--seed", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "carp: 6/6 images (6 new)" in out and "koi: 6/6 images (6 new)" in out
    assert (models / "export.pkl").is_file() and (models / "report.json").is_file()
    assert "validation accuracy" in out


def test_existing_images_are_indexed_from_the_ledger_without_rehashing(ws, server, monkeypatch):
    bootstrap(ws, ["koi"], count=4, backend=FakeSearch({"koi": _more(server, 4)}), download_options=FAST)
    from smarthub.collect import dedupe

    def no_rehash(path):
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(dedupe, "hash_image_file", no_rehash)
    index = dedupe.DatasetIndex.build(ws)
    assert len(index) == 4
    rec = read_records(ws)[0]
    match = index.match(rec.sha256, int(rec.phash, 16))
    assert match is not None and match.kind == "exact" and match.label == "koi"


@pytest.mark.parametrize(("argv", "error"), [
    (["--workers", "0"], "workers must be at least 1"),
    (["--max-side", "0"], "--max-side must be at least 1"),
    (["--count", "0"], "--count must be at least 1"),
    (["--safesearch", "strict"], None),  # argparse refuses it (exit 2, usage on stderr)
], ids=["workers", "max-side", "count", "safesearch"])
def test_cli_bad_options_exit_2_and_write_nothing(tmp_path: Path, argv, error, capsys):
    data = tmp_path / "data"
    if error is None:
        with pytest.raises(SystemExit) as info:
            main(["bootstrap", "koi", "--data", str(data), *argv])
        assert info.value.code == 2
    else:
        assert main(["bootstrap", "koi", "--data", str(data), *argv]) == 2
        assert error in capsys.readouterr().err
    assert not data.exists()


def test_should_stop_ends_the_run_cleanly(ws, server):
    events: list[BootstrapProgress] = []
    report = bootstrap(ws, ["koi"], count=10, backend=FakeSearch({"koi": _more(server, 10)}), download_options=FAST,
                       progress=events.append, should_stop=lambda: any(e.stage == "download" for e in events))
    assert report.stopped == "stopped on request" and not report.complete
    assert "stopped early: stopped on request; run it again to continue" in report.summary()
    _ledger_consistent(ws)
    assert len(read_records(ws)) == len(list((ws.data_dir / "koi").glob("*.jpg"))) >= 1


def test_split_layout_data_folder_is_refused(ws):
    for split in ("train", "valid"):
        (ws.data_dir / split / "koi").mkdir(parents=True)
    with pytest.raises(SmartHubError, match="uses train/ and valid/ split folders"):
        bootstrap(ws, ["koi"], count=1, backend=FakeSearch({}))
