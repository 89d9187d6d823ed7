"""Download: real HTTP server on 127.0.0.1, real images; each bad case gets the reason a user expects."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from http_server import (ImageServer, Route, animated_gif, cmyk_jpeg, encode, exif_rotated_jpeg, palette_png_with_transparency,
                         photo, png16, png_header_claiming)
from smarthub.collect.download import (DownloadOptions, Fetcher, download_images, fetch_and_normalise, fetch_many,
                               normalise_image, sniff_markup)
from smarthub.errors import ImageError, NetworkError

FAST = DownloadOptions(connect_timeout_s=2.0, read_timeout_s=1.5, total_timeout_s=8.0, max_bytes=300_000,
                       max_side_px=128, min_side_px=32, workers=8)


def _routes() -> dict[str, Route]:
    jpeg = encode(photo(1), "JPEG", quality=90)
    return {
        "/ok.jpg": Route(jpeg),
        "/404.jpg": Route(b"gone", "text/plain", status=404),
        "/500.jpg": Route(b"oops", "text/plain", status=500),
        "/reset.jpg": Route(behaviour="reset"),
        "/slow.jpg": Route(jpeg, delay_s=5.0),
        "/html.jpg": Route(b"<!DOCTYPE html><html><body>Access denied</body></html>", "image/jpeg"),
        "/page.html": Route(b"<html><head></head><body>hi</body></html>", "text/html"),
        "/truncated.jpg": Route(encode(photo(2, (400, 300)), "JPEG")[:3000]),
        "/zero.jpg": Route(b""),
        "/huge-body.jpg": Route(b"\xff\xd8" + b"\0" * 400_000),
        "/huge-stream.jpg": Route(b"\xff\xd8" + b"\0" * 400_000, behaviour="no_length"),
        "/bomb.png": Route(png_header_claiming(20000, 20000), "image/png"),
        "/drawing.svg": Route(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" '
                              b'height="10"><rect width="10" height="10"/></svg>', "image/svg+xml"),
        "/svg-as-png.png": Route(b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "image/png"),
        "/anim.gif": Route(animated_gif(3), "image/gif"),
        "/cmyk.jpg": Route(cmyk_jpeg(4)),
        "/16bit.png": Route(png16(5), "image/png"),
        "/palette.png": Route(palette_png_with_transparency(6), "image/png"),
        "/photo.webp": Route(encode(photo(7), "WEBP", quality=90), "image/webp"),
        "/exif.jpg": Route(exif_rotated_jpeg(8)[0]),
        "/tiny.png": Route(encode(photo(9, (20, 16)), "PNG"), "image/png"),
        "/large.jpg": Route(encode(photo(10, (600, 400)), "JPEG", quality=85)),
        "/loop-a": Route(behaviour="redirect", location="/loop-b"),
        "/loop-b": Route(behaviour="redirect", location="/loop-a"),
        "/hop1": Route(behaviour="redirect", location="/hop2"),
        "/hop2": Route(behaviour="redirect", location="/ok.jpg"),
        "/chain0": Route(behaviour="redirect", location="/chain1"),
        **{f"/chain{i}": Route(behaviour="redirect", location=f"/chain{i + 1}") for i in range(1, 10)},
        "/text.txt": Route(b"just some text, definitely no image", "image/jpeg"),
    }


@pytest.fixture(scope="module")
def server():
    with ImageServer(_routes()) as srv:
        yield srv


# path, expected: "ok" or a regex the reason must match, (w, h) expected when ok
CASES = [
    ("/ok.jpg", "ok", (128, 96)),
    ("/404.jpg", r"^HTTP 404", None),
    ("/500.jpg", r"^HTTP 500", None),
    ("/reset.jpg", r"^connection failed", None),
    ("/slow.jpg", r"^timed out", None),
    ("/html.jpg", r"^not an image: the server sent an HTML page \(image/jpeg\)", None),
    ("/page.html", r"^not an image: the server sent an HTML page \(text/html\)", None),
    ("/truncated.jpg", r"^truncated", None),
    ("/zero.jpg", r"^zero bytes$", None),
    ("/huge-body.jpg", r"^too large: 400,002 bytes, over the byte cap of 300,000", None),
    ("/huge-stream.jpg", r"^too large: more than the byte cap of 300,000 bytes", None),
    ("/bomb.png", r"^decompression bomb \((20000x20000 = )?400,000,000 pixels", None),
    ("/drawing.svg", r"^unsupported format: SVG", None),
    ("/svg-as-png.png", r"^unsupported format: SVG", None),
    ("/anim.gif", "ok", (120, 100)),
    ("/cmyk.jpg", "ok", (120, 100)),
    ("/16bit.png", "ok", (128, 96)),
    ("/palette.png", "ok", (120, 100)),
    ("/photo.webp", "ok", (128, 96)),
    ("/exif.jpg", "ok", (96, 128)),
    ("/tiny.png", r"^too small: 20x16 px \(--min-side 32\)", None),
    ("/large.jpg", "ok", (128, 85)),
    ("/loop-a", r"^redirect loop", None),
    ("/hop1", "ok", (128, 96)),
    ("/chain0", r"^too many redirects \(more than 5\)", None),
    ("/text.txt", r"^not an image \(the bytes are no known image format\)", None),
    ("/missing.jpg", r"^HTTP 404", None),
]


@pytest.mark.parametrize(("path", "expected", "size"), CASES, ids=[c[0].strip("/") for c in CASES])
def test_each_url_gets_the_expected_outcome(server, path, expected, size):
    fetcher = Fetcher(FAST)
    if expected == "ok":
        img = fetch_and_normalise(fetcher, server.url(path))
        assert (img.width, img.height) == size
        decoded = Image.open(io.BytesIO(img.data))
        decoded.load()
        assert decoded.format == "JPEG" and decoded.mode == "RGB" and decoded.size == size
        assert img.file_name == img.sha256[:16] + ".jpg"
    else:
        with pytest.raises((NetworkError, ImageError)) as info:
            fetch_and_normalise(fetcher, server.url(path))
        assert re.search(expected, str(info.value)), str(info.value)


def test_bomb_is_refused_without_allocating_it():
    """The 20000x20000 header is refused from its header alone (the body is a few dozen bytes)."""
    data = png_header_claiming(20000, 20000)
    assert len(data) < 200
    with pytest.raises(ImageError, match="decompression bomb"):
        normalise_image(data)
    with pytest.raises(ImageError, match=r"decompression bomb \(9000x9000 = 81,000,000 pixels, limit 80,000,000\)"):
        normalise_image(png_header_claiming(9000, 9000))


def test_exif_rotated_jpeg_is_saved_upright():
    data, upright = exif_rotated_jpeg(11)
    img = normalise_image(data, options=DownloadOptions(max_side_px=512, min_side_px=8))
    saved = np.asarray(Image.open(io.BytesIO(img.data)).convert("RGB"), dtype=np.float32)
    assert saved.shape[:2] == (160, 120)  # portrait, as a viewer shows it
    want = np.asarray(upright, dtype=np.float32)
    wrong = np.asarray(upright.transpose(Image.Transpose.ROTATE_180), dtype=np.float32)
    assert np.abs(saved - want).mean() < 6 < np.abs(saved - wrong).mean()


def test_palette_transparency_becomes_white_and_16bit_is_scaled_not_clipped():
    pal = np.asarray(Image.open(io.BytesIO(normalise_image(palette_png_with_transparency(6),
                                                           options=DownloadOptions(min_side_px=8)).data)))
    assert pal[:, :55].min() > 240  # the transparent half is white, not black
    ramp = np.asarray(Image.open(io.BytesIO(normalise_image(png16(5), options=DownloadOptions(min_side_px=8)).data)))
    row = ramp[48, :, 0].astype(int)
    assert row[0] < 10 and row[-1] > 245 and 100 < row[64] < 155  # a ramp, not all-white


def test_animated_gif_keeps_the_first_frame():
    data = animated_gif(3)
    first = Image.open(io.BytesIO(data)).convert("RGB")
    img = normalise_image(data, options=DownloadOptions(min_side_px=8))
    assert img.frames == 3
    saved = np.asarray(Image.open(io.BytesIO(img.data)).convert("RGB"), dtype=np.float32)
    assert np.abs(saved - np.asarray(first, dtype=np.float32)).mean() < 8


def test_keep_original_saves_the_bytes_unchanged():
    data = encode(photo(12, (300, 200)), "PNG")
    img = normalise_image(data, options=DownloadOptions(keep_original=True, min_side_px=8))
    assert img.data == data and img.suffix == ".png" and (img.width, img.height) == (300, 200)


@pytest.mark.parametrize(("head", "ctype", "kind"), [
    (b"<!doctype html><html>", "image/jpeg", "html"),
    (b"\xef\xbb\xbf  <html lang=en>", "", "html"),
    (b"<?xml version='1.0'?><svg>", "", "svg"),
    (b"\x89PNG\r\n", "image/svg+xml", "svg"),
    (b"\xff\xd8\xff\xe0", "image/jpeg", ""),
    (b"GIF89a", "text/html", "html"),
], ids=["html-as-jpeg", "bom-html", "svg-xml", "svg-content-type", "jpeg", "html-content-type"])
def test_sniff_markup(head, ctype, kind):
    assert sniff_markup(head, ctype) == kind


def test_download_images_saves_by_content_hash_and_skips_exact_duplicates(server, tmp_path: Path):
    urls = [server.url("/ok.jpg"), server.url("/hop1"), server.url("/404.jpg"), server.url("/cmyk.jpg")]
    report = download_images(urls, tmp_path / "koi", options=FAST)
    assert len(report.saved) == 2  # /hop1 redirects to the same image as /ok.jpg
    assert [u for u, _ in report.duplicates] == [server.url("/hop1")] or \
        [u for u, _ in report.duplicates] == [server.url("/ok.jpg")]
    assert report.failed == [(server.url("/404.jpg"), "HTTP 404 Not Found")]
    names = sorted(p.name for p in (tmp_path / "koi").iterdir())
    assert names == sorted(p.name for p in report.saved)
    assert all(re.fullmatch(r"[0-9a-f]{16}\.jpg", n) for n in names)


def test_fetch_many_respects_the_worker_limit_and_reports_every_url(server):
    urls = [(server.url(p), p) for p, *_ in CASES]
    outcomes = list(fetch_many(urls, options=FAST))
    assert sorted(o.tag for o in outcomes) == sorted(p for p, *_ in CASES)
    by_tag = {o.tag: o for o in outcomes}
    for path, expected, _ in CASES:
        assert by_tag[path].ok == (expected == "ok"), (path, by_tag[path].reason)


def test_decoding_never_holds_a_download_slot(monkeypatch):
    """With one download worker, the second URL is fetched while the first image is still being decoded."""
    import threading

    from smarthub.collect import download

    first, second = encode(photo(3), "JPEG"), encode(photo(5), "JPEG")
    with ImageServer({"/a.jpg": Route(first), "/b.jpg": Route(second)}) as srv:
        second_fetched = threading.Event()
        waits: list[bool] = []
        real = download.normalise_image

        def slow_normalise(data, **kwargs):
            if data == first:  # decoding the first image: wait until the second one has been fetched
                waits.append(second_fetched.wait(timeout=20))
            return real(data, **kwargs)

        real_fetch = download.Fetcher.fetch

        def fetch(self, url):
            out = real_fetch(self, url)
            if url.endswith("/b.jpg"):
                second_fetched.set()
            return out

        monkeypatch.setattr(download, "normalise_image", slow_normalise)
        monkeypatch.setattr(download.Fetcher, "fetch", fetch)
        urls = [(srv.url("/a.jpg"), "a"), (srv.url("/b.jpg"), "b")]
        outcomes = list(fetch_many(urls, options=DownloadOptions(workers=1)))
    assert waits == [True]  # the first decode waited for, and saw, the second fetch
    assert sorted(o.tag for o in outcomes) == ["a", "b"] and all(o.ok for o in outcomes)


def test_closing_fetch_many_early_cancels_what_has_not_started():
    jpeg = encode(photo(4), "JPEG")
    routes = {f"/{i}.jpg": Route(jpeg) for i in range(40)}
    with ImageServer(routes, latency_s=0.05) as srv:
        outcomes = fetch_many(((srv.url(p), p) for p in routes), options=DownloadOptions(workers=2))
        first = next(outcomes)
        outcomes.close()
        assert first.ok
        hits_after_close = sum(srv.hits.values())
    assert hits_after_close < 40  # not every URL was requested: the rest were cancelled
