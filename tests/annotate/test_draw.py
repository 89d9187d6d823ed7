"""The boxes drawn for the app's gallery: planted boxes land on the right pixels in their label's colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from smarthub.annotate.draw import draw_boxes, draw_labelme_files, label_colour
from smarthub.annotate.labelme import LabelmeFile, Shape, save_labelme


def test_a_box_is_drawn_in_its_colour_with_a_tag() -> None:
    im = Image.new("RGB", (200, 100), (128, 128, 128))
    out = np.asarray(draw_boxes(im, [("cow", (40, 30, 120, 90), 0.87)], max_side_px=100))  # drawn at half size
    assert out.shape == (50, 100, 3)
    colour = np.array(label_colour("cow"))
    assert (out[44:47, 20:60] == colour).all(axis=2).any(axis=0).mean() > 0.9  # the bottom edge at y 90/2 = 45
    assert (out[40, 40] == (128, 128, 128)).all()  # inside the box: untouched
    assert (out[5:14, 20:40] == colour).all(axis=2).any()  # the tag above the box, in the same colour


def test_labelme_files_drawn_with_counts(tmp_path: Path) -> None:
    Image.new("RGB", (80, 60), (10, 20, 30)).save(tmp_path / "a.jpg")
    Image.new("RGB", (80, 60), (10, 20, 30)).save(tmp_path / "b.jpg")
    save_labelme(tmp_path / "a.json", LabelmeFile("a.jpg", 60, 80, [
        Shape("cow", [[1, 1], [30, 30]], extra={"score": 0.9}), Shape("cow", [[40, 5], [70, 50]]),
        Shape("calf", [[5, 35], [20, 55]])]))
    save_labelme(tmp_path / "b.json", LabelmeFile("b.jpg", 60, 80, []))
    (tmp_path / "c.json").write_text("{broken")
    p = draw_labelme_files(sorted(tmp_path.glob("*.json")), limit=1)
    assert p.boxes_per_label == {"calf": 1, "cow": 2} and p.images_per_label == {"calf": 1, "cow": 1}
    assert p.images_without_boxes == 1 and p.not_shown == 1 and [c for _, c in p.items] == ["a.jpg: 3 boxes"]
    assert [f.name for f, _ in p.failed] == ["c.json"]


def _contrast(a, b) -> float:
    def lum(c):
        v = [x / 255 for x in c]
        v = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in v]
        return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_tag_text_is_readable_on_every_label_colour() -> None:
    from smarthub.annotate.draw import PALETTE, tag_font_px, text_colour

    assert min(_contrast(c, text_colour(c)) for c in PALETTE) >= 4.5  # WCAG AA for normal text
    assert tag_font_px(640) >= 20 and tag_font_px(100) == 12


def test_a_tag_is_large_and_stays_inside_the_image() -> None:
    from smarthub.annotate.draw import text_colour

    light = next(lab for lab in (f"c{i}" for i in range(200)) if text_colour(label_colour(lab)) == (0, 0, 0))
    im = Image.new("RGB", (640, 480), (128, 128, 128))
    out = np.asarray(draw_boxes(im, [(light, (600, 0, 639, 100), 0.5)], max_side_px=640))  # top-right corner
    colour = np.array(label_colour(light))
    tag = (out == colour).all(axis=2)
    rows = np.flatnonzero(tag[:, 600:].sum(axis=1) > 15)  # the filled tag, not the 3 px box outline
    assert rows.max() - rows.min() >= 20  # a tag taller than the old 11 px bitmap font
    dark = (out[rows.min():rows.max(), 400:] < 60).all(axis=2)
    assert dark.sum() > 40  # black text on the light tag
    assert tag[rows.min():rows.max(), :600].any()  # shifted left to stay whole inside the image
