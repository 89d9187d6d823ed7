"""The one image opener: every decode path in smarthub refuses the same bad files with the same reason."""
from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_image
from http_server import png_header_claiming
from smarthub.errors import ImageError
from smarthub.imaging import (ImageHashes, as_rgb, check_image, hash_image_file, open_image, open_rgb, phash_int,
                              pillow_open, thumbnail)

DATA = Path(__file__).parents[1] / "data"


def _png(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


BAD_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("zero-bytes", lambda d: _write(d / "empty.jpg", b""), r"zero bytes"),
    ("html-as-jpg", lambda d: _write(d / "page.jpg", b"<!doctype html><html><body>hi</body></html>"), r"not an image"),
    ("text", lambda d: _write(d / "notes.png", b"just some text, no pixels"), r"not an image"),
    ("truncated-png", lambda d: _write(d / "cut.png", _png((200, 200))[:80]), r"truncated|undecodable"),
    ("truncated-jpeg", lambda d: _write(d / "cut.jpg", (DATA / "coffee.jpg").read_bytes()[:1400]), r"truncated"),
    ("bomb-header", lambda d: _write(d / "bomb.png", png_header_claiming(20000, 20000)), r"decompression bomb"),
    ("over-our-limit", lambda d: _write(d / "big.png", png_header_claiming(9000, 9000)),
     r"decompression bomb \(9000x9000 = 81,000,000 pixels, limit 80,000,000\)"),
    ("missing", lambda d: d / "gone.jpg", r"missing"),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _decode_paths() -> list[tuple[str, Callable[[Path], object]]]:
    """Every function in smarthub that decodes an image file from disk."""
    from smarthub.annotate.preannotate import load_for_detection
    from smarthub.model.embeddings import load_image_array

    return [
        ("check_image", check_image),
        ("open_rgb", open_rgb),
        ("thumbnail", lambda p: thumbnail(p, max_side_px=64)),
        ("hash_image_file", hash_image_file),
        ("embeddings", lambda p: load_image_array(p, 32)),
        ("detection", lambda p: load_for_detection(p, max_side_px=640)),
    ]


@pytest.mark.parametrize("make,reason", [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES])
def test_every_decode_path_gives_the_same_reason_naming_the_file(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    seen = set()
    for name, decode in _decode_paths():
        with pytest.raises(ImageError, match=reason) as info:
            decode(path)
        err = info.value
        assert err.path is not None and Path(err.path).name == path.name, name
        assert str(err) == f"{err.path}: {err.reason}" and "\n" not in str(err), name
        seen.add(err.reason)
    assert len(seen) == 1, f"decode paths disagree about {path.name}: {seen}"


def test_bytes_are_named_by_the_caller_and_checked_alike() -> None:
    with pytest.raises(ImageError, match=r"^http://x/y\.png: zero bytes$"):
        open_image(b"", name="http://x/y.png")
    with pytest.raises(ImageError, match=r"^decompression bomb"):
        open_image(png_header_claiming(20000, 20000))


def test_exif_orientation_is_applied_once_and_sizes_are_upright() -> None:
    with Image.open(DATA / "chelsea_exif6.jpg") as stored:
        assert stored.getexif().get(0x0112) == 6
        stored_w, stored_h = stored.size
    rotated = open_image(DATA / "chelsea_exif6.jpg")
    assert rotated.size == rotated.image.size == (stored_h, stored_w)
    # reduced-scale decoding keeps the full upright size
    small = open_image(DATA / "chelsea_exif6.jpg", draft_px=32)
    assert small.size == rotated.size and max(small.image.size) < max(rotated.size)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "I;16", "RGBA", "L", "1"])
def test_every_mode_flattens_to_rgb(tmp_path: Path, mode: str) -> None:
    src = Image.new("RGB", (30, 20), (250, 10, 10))
    if mode == "I;16":
        img = Image.fromarray(np.full((20, 30), 60000, dtype=np.uint16))
    else:
        img = src.convert(mode)
    path = tmp_path / f"x.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    img.save(path)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (30, 20)
    assert as_rgb(img).mode == "RGB"


def test_animated_gif_decodes_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    opened = open_image(tmp_path / "a.gif")
    assert opened.frames == 2 and opened.image.convert("RGB").getpixel((5, 5))[0] > 200


def test_hashes_agree_with_imagehash_and_are_stable() -> None:
    """Our fast pHash (box-reduced first) stays within a few bits of imagehash.phash on real photos."""
    import imagehash

    from smarthub.imaging import hamming

    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        h = hash_image_file(DATA / name)
        assert isinstance(h, ImageHashes) and h == hash_image_file(DATA / name)
        with Image.open(DATA / name) as im:
            theirs = int(str(imagehash.phash(im.convert("RGB"))), 16)
        assert hamming(phash_int(open_rgb(DATA / name)), theirs) <= 6, name


def test_a_library_that_replaces_image_open_does_not_change_our_decoding(monkeypatch, tmp_path: Path) -> None:
    """Ultralytics assigns its own Image.open at import (it retries through pi-heif); ours stays Pillow's."""
    original = pillow_open()  # Pillow's own (an earlier test may have imported ultralytics already)
    assert original.__module__ == "PIL.Image"
    namespace = {"_image_open": Image.open}

    def image_open(fp, *args, **kwargs):  # shaped like ultralytics.utils.patches.image_open
        raise ModuleNotFoundError("No module named 'pi_heif'")

    patched = type(image_open)(image_open.__code__, namespace, "image_open")
    patched.__module__ = "ultralytics.utils.patches"
    monkeypatch.setattr(Image, "open", patched)
    assert pillow_open() is original
    with pytest.raises(ImageError, match="not an image"):
        check_image(_write(tmp_path / "t.png", b"text"))
    assert re.match(r"^\d+$", str(check_image(make_image(tmp_path / "ok.png"))[0]))
