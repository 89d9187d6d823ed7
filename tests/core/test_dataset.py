"""Label rules, dataset scanning and image verification on real files."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from helpers import make_image
from smarthub.dataset import (
    check_image, check_label_case, check_trainable, class_counts, dataset_fingerprint, has_split_layout, scan_dataset,
    validate_label, verify_dataset,
)
from smarthub.errors import DatasetError, ImageError, LabelError


@pytest.mark.parametrize(
    ("label", "error"),
    [
        ("tilapia", None),
        ("grass carp", None),
        ("café", None),
        ("鯉", None),
        ("x" * 100, None),
        ("", "empty"),
        ("../x", "path separator"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "dot"),
        (".", "dot"),
        (".hidden", "dot"),
        ("x" * 101, "characters long"),
        ("x" * 300, "characters long"),
        ("tab\there", "control"),
        ("new\nline", "control"),
        (" padded", "whitespace"),
        ("nul\x00", "path separator"),
    ],
    ids=["plain", "space", "cafe", "cjk", "100-chars", "empty", "dotdot-slash", "slash", "backslash", "dotdot",
         "dot", "hidden", "101-chars", "300-chars", "tab", "newline", "leading-space", "nul"],
)
def test_validate_label(label: str, error: str | None) -> None:
    if error is None:
        assert validate_label(label) == label
    else:
        with pytest.raises(LabelError, match=error):
            validate_label(label)


def test_validate_label_normalises_unicode() -> None:
    decomposed = "cafe\u0301"
    assert validate_label(decomposed) == "café"


def test_scan_skips_bookkeeping_hidden_and_invalid(small_ws) -> None:
    data = small_ws.data_dir
    make_image(data / ".smarthub" / "trash" / "op" / "cat" / "x.jpg")
    make_image(data / ".hidden" / "y.jpg")
    make_image(data / "cat" / ".thumb.jpg")
    (data / "cat" / "notes.txt").write_text("not an image")
    make_image(data / "café" / "z.png", fmt="PNG")
    items = scan_dataset(data)
    assert class_counts(items) == {"café": 1, "cat": 6, "dog": 6, "fish": 6}
    assert all(i.split == "" for i in items)
    assert [i.path for i in items] == sorted(i.path for i in items)


def test_scan_split_layout(ws) -> None:
    for split, n in (("train", 4), ("valid", 2)):
        for label in ("a", "b"):
            for i in range(n):
                make_image(ws.data_dir / split / label / f"{i}.jpg", pattern=i)
    assert has_split_layout(ws.data_dir)
    items = scan_dataset(ws.data_dir)
    assert {i.label for i in items} == {"a", "b"}
    assert sum(i.split == "train" for i in items) == 8
    assert sum(i.split == "valid" for i in items) == 4


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "no images found"),
    ],
    ids=["missing-dir", "empty-dir"],
)
def test_scan_errors(tmp_path: Path, setup, match: str) -> None:
    data = tmp_path / "data"
    setup(data)
    with pytest.raises(DatasetError, match=match):
        scan_dataset(data, require_images=True)


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ({}, "no images"),
        ({"cat": 5}, "only one class"),
        ({"cat": 5, "dog": 1}, "fewer than 2"),
        ({"cat": 2, "dog": 2}, None),
    ],
    ids=["none", "one-class", "one-image-class", "ok"],
)
def test_check_trainable(ws, counts: dict[str, int], match: str | None) -> None:
    for label, n in counts.items():
        for i in range(n):
            make_image(ws.data_dir / label / f"{i}.jpg", pattern=i)
    items = scan_dataset(ws.data_dir)
    if match is None:
        check_trainable(items)
    else:
        with pytest.raises(DatasetError, match=match):
            check_trainable(items)


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height (a decompression-bomb stand-in that costs nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
                     + chunk(b"IEND", b""))


def _truncated_jpeg(path: Path) -> None:
    make_image(path, size=(256, 256), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cmyk(path: Path) -> None:
    make_image(path, mode="CMYK", fmt="JPEG")


def _sixteen_bit(path: Path) -> None:
    import numpy as np
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "I;16").save(path)


def _palette_alpha(path: Path) -> None:
    img = Image.new("P", (32, 32))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(path, transparency=0)


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _exif_rotated(path: Path) -> None:
    img = Image.new("RGB", (40, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, exif=exif)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("ok.jpg", lambda p: make_image(p, fmt="JPEG"), None),
        ("cmyk.jpg", _cmyk, None),
        ("deep.png", _sixteen_bit, None),
        ("palette.png", _palette_alpha, None),
        ("anim.gif", _animated_gif, None),
        ("rotated.jpg", _exif_rotated, None),
        ("webp.webp", lambda p: make_image(p, fmt="WEBP"), None),
        ("zero.jpg", lambda p: p.write_bytes(b""), "zero bytes"),
        ("html.jpg", lambda p: p.write_text("<!doctype html><html><body>Not found</body></html>"), "not an image"),
        ("truncated.jpg", _truncated_jpeg, "truncated"),
        ("bomb.png", lambda p: _png_claiming_size(p, 20000, 20000), "decompression bomb"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_check_image_table(tmp_path: Path, name: str, make, reason: str | None) -> None:
    path = tmp_path / name
    make(path)
    if reason is None:
        w, h = check_image(path)
        assert w > 0 and h > 0
    else:
        with pytest.raises(ImageError, match=reason):
            check_image(path)


def test_verify_dataset_reports_each_problem(small_ws) -> None:
    data = small_ws.data_dir
    (data / "cat" / "empty.jpg").write_bytes(b"")
    (data / "dog" / "page.jpg").write_text("<html>oops</html>")
    _truncated_jpeg(data / "fish" / "cut.jpg")
    report = verify_dataset(data)
    assert report.checked == 21
    assert report.ok == 18
    reasons = {p.name: r for p, r in report.problems}
    assert reasons["empty.jpg"] == "zero bytes"
    assert reasons["page.jpg"].startswith("not an image")
    assert reasons["cut.jpg"].startswith("truncated")


def test_fingerprint_changes_with_content(small_ws) -> None:
    items = scan_dataset(small_ws.data_dir)
    before = dataset_fingerprint(items, small_ws.data_dir)
    assert before == dataset_fingerprint(scan_dataset(small_ws.data_dir), small_ws.data_dir)
    make_image(small_ws.data_dir / "cat" / "new.jpg", pattern=999)
    assert dataset_fingerprint(scan_dataset(small_ws.data_dir), small_ws.data_dir) != before


COMMITTED = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize("name", ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg", "chelsea_exif6.jpg",
                                  "coffee_cmyk.jpg"])
def test_committed_real_photos_verify(name: str) -> None:
    w, h = check_image(COMMITTED / name)
    assert max(w, h) <= 96


# ---------------------------------------------------------------- labels that differ only in case


@pytest.mark.parametrize(("label", "existing", "error"), [
    ("fish", ["fish", "bird"], None),
    ("koi", ["fish", "bird"], None),
    ("FISH", ["fish", "bird"], "differs only in case from the existing class 'fish': did you mean 'fish'?"),
    ("Fish", ["fish"], "did you mean 'fish'?"),
    ("STRASSE", ["straße"], "did you mean 'straße'?"),  # full case folding: ß is ss
    ("Straße", ["straße"], "did you mean 'straße'?"),
    ("fish", ["Fish", "fish"], None),  # an exact existing class stays allowed even when a twin exists
    ("café", ["CAFE\u0301"], "did you mean 'CAFÉ'?"),  # normalised before comparing
], ids=["same", "new", "upper", "capital", "sharp-s-folds", "sharp-s-capital", "exact-beside-twin", "nfd"])
def test_check_label_case(label: str, existing: list[str], error: str | None) -> None:
    if error is None:
        assert check_label_case(label, existing) == label
    else:
        with pytest.raises(LabelError, match=error):
            check_label_case(label, existing)


CASE_ROWS = [
    (["relabel", "{data}/dog/dog0.jpg", "FISH", "--new-class"], "did you mean 'fish'?"),
    (["relabel", "{data}/dog/dog0.jpg", "Fish", "--new-class"], "did you mean 'fish'?"),
    (["classes", "rename", "--data", "{data}", "dog", "Fish"], "did you mean 'fish'?"),
    (["classes", "merge", "--data", "{data}", "dog", "FISH"], "did you mean 'fish'?"),
    (["bootstrap", "Fish", "--urls-file", "{urls}"], "did you mean 'fish'?"),
    (["bootstrap", "koi", "KOI", "--urls-file", "{urls}"], "did you mean 'koi'?"),
]


@pytest.mark.parametrize(("argv", "message"), CASE_ROWS, ids=["relabel-new-class-upper", "relabel-new-class-capital",
                                                           "rename", "merge-target", "bootstrap",
                                                           "bootstrap-twins"])
def test_a_label_differing_only_in_case_is_refused_everywhere(small_ws, capsys: pytest.CaptureFixture[str],
                                                              argv: list[str], message: str) -> None:
    from smarthub.cli import main

    urls = small_ws.data_dir.parent / "urls.csv"
    urls.write_text("http://127.0.0.1:9/a.jpg,Fish\nhttp://127.0.0.1:9/b.jpg,koi\nhttp://127.0.0.1:9/c.jpg,KOI\n")
    before = sorted(p.relative_to(small_ws.data_dir) for p in small_ws.data_dir.rglob("*"))
    argv = [a.format(data=small_ws.data_dir, urls=urls) for a in argv]
    if argv[0] in ("relabel", "bootstrap"):
        argv += ["--data", str(small_ws.data_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p.relative_to(small_ws.data_dir) for p in small_ws.data_dir.rglob("*")) == before


def test_the_exact_name_of_an_existing_class_stays_allowed(small_ws) -> None:
    from smarthub import fileops

    fileops.relabel(small_ws, small_ws.data_dir / "dog" / "dog0.jpg", "fish")
    fileops.merge_classes(small_ws, "cat", "fish")
    fileops.rename_class(small_ws, "fish", "Fish")  # a class may change its own case (no other class is 'fish')
    assert fileops.class_names(small_ws) == ["Fish", "dog"]
    assert len(list((small_ws.data_dir / "Fish").iterdir())) == 13


# ---------------------------------------------------------------- only files inside the data folder


def _outside_layouts(data: Path, elsewhere: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Plant links of each kind; returns {kind: (items expected in addition, entries expected in `outside`)}."""
    secret = make_image(elsewhere / "secret.jpg", color=(10, 200, 10))
    make_image(elsewhere / "folder" / "far.jpg")
    (data / "fish" / "secret.jpg").symlink_to(secret)  # a file leaving the data folder
    (data / "fish" / "far").symlink_to(elsewhere / "folder", target_is_directory=True)  # a folder leaving it
    (data / "linked").symlink_to(elsewhere / "folder", target_is_directory=True)  # a whole class leaving it
    (data / "fish" / "twin.jpg").symlink_to(data / "bird" / "bird0.jpg")  # a link inside it: an image like any
    (data / "fish" / "dangling.jpg").symlink_to(elsewhere / "gone.jpg")  # a broken link leaving it
    return {"items": ["fish/twin.jpg"], "outside": ["fish/dangling.jpg", "fish/far", "fish/secret.jpg", "linked"]}


def test_scanners_skip_and_report_links_leaving_the_data_folder(tmp_path: Path) -> None:
    from smarthub.dataset import outside_note
    from smarthub.model.embeddings import scan_stat

    data, elsewhere = tmp_path / "ws" / "data", tmp_path / "elsewhere"
    for label in ("fish", "bird"):
        for i in range(2):
            make_image(data / label / f"{label}{i}.jpg", pattern=i)
    want = _outside_layouts(data, elsewhere)
    outside: list[Path] = []
    items = scan_dataset(data, outside=outside)
    rel = sorted(i.path.relative_to(data).as_posix() for i in items)
    assert rel == sorted(["bird/bird0.jpg", "bird/bird1.jpg", "fish/fish0.jpg", "fish/fish1.jpg", *want["items"]])
    assert sorted(p.relative_to(data).as_posix() for p in outside) == want["outside"]
    # the scanner of review and the Clean tab agrees, item for item
    outside_stat: list[Path] = []
    stat_items = [i for i, _ in scan_stat(data, outside=outside_stat)]
    assert stat_items == items
    assert sorted(p.relative_to(data).as_posix() for p in outside_stat) == want["outside"]
    note = outside_note(outside, data)
    assert note is not None and note.startswith("4 entries skipped: links leading outside the data folder")
    assert "\n" not in note and "and 1 more" in note


def test_info_prints_the_links_it_skipped_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from smarthub.cli import main

    data = tmp_path / "data"
    for label in ("fish", "bird"):
        make_image(data / label / f"{label}0.jpg")
    (data / "fish" / "secret.jpg").symlink_to(make_image(tmp_path / "elsewhere" / "secret.jpg"))
    assert main(["info", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "outside the data folder" in line]
    assert lines == [f"1 entry skipped: links leading outside the data folder {data} (fish/secret.jpg); smarthub "
                     f"reads only files inside it"]
    assert "2 images in 2 classes" in out


def test_images_moved_while_training_starts_are_not_called_unreadable(small_ws) -> None:
    """Another process renames a class between the scan and the image check of a starting `train`."""
    from smarthub import fileops
    from smarthub.model.data import check_images_cached

    items = scan_dataset(small_ws.data_dir)
    fileops.rename_class(small_ws, "dog", "puppy")  # what `smarthub classes rename` in another shell does
    with pytest.raises(DatasetError, match=r"^6 images moved or removed while training started \(e\.g\. .*dog0\.jpg\)"
                                           r": another command changed the data folder; run train again$"):
        check_images_cached(small_ws, items)
    (small_ws.data_dir / "cat" / "cat0.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"1 unreadable image.*cat0\.jpg.*verify --quarantine"):
        check_images_cached(small_ws, scan_dataset(small_ws.data_dir))  # a broken image is still called so
