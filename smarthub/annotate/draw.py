"""See the boxes: Labelme files drawn on their images (labels and scores), for the app's gallery."""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smarthub.annotate.labelme import image_path_of, load_labelme, shape_boxes
from smarthub.annotate.scored import ScoredBatch, Thresholds, filter_shapes, score_of
from smarthub.errors import AnnotationError, ImageError
from smarthub.imaging import open_rgb

if TYPE_CHECKING:
    from PIL import Image

Box = tuple[str, tuple[float, float, float, float], "float | None"]
MIN_SIDE_PX = 320
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable colour per label (the same in every image and every session)."""
    return PALETTE[int(hashlib.sha1(label.encode()).hexdigest(), 16) % len(PALETTE)]


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `background` (WCAG relative luminance)."""
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (0, 0, 0) if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else (255, 255, 255)


def tag_font_px(image_side_px: int) -> int:
    """Label text height: about 1/30 of the drawn image's long side, at least 12 px (legible in a thumbnail)."""
    return max(12, round(image_side_px / 30))


def draw_boxes(image: Image.Image, boxes: list[tuple[str, tuple[float, float, float, float], float | None]], *,
               max_side_px: int = 640) -> Image.Image:
    """A copy of `image` shrunk to `max_side_px` with each box drawn and tagged 'label 0.87'.

    Tags are set in a scalable font sized to the image, on a filled box of the label's colour, in black or
    white by contrast, kept inside the image (above the box, else inside its top edge).
    """
    from PIL import ImageDraw, ImageFont

    im = image.convert("RGB").copy()
    scale = min(max_side_px, max(max(im.size), MIN_SIDE_PX)) / max(im.size)  # small images grow: legible tags
    if scale != 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    draw = ImageDraw.Draw(im)
    try:
        font = ImageFont.load_default(size=tag_font_px(max(im.size)))
    except (OSError, ValueError):  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    width = max(2, round(max(im.size) / 250))
    pad = max(2, width)
    for label, (x1, y1, x2, y2), score in boxes:
        colour = label_colour(label)
        xy = [x1 * scale, y1 * scale, x2 * scale, y2 * scale]
        draw.rectangle(xy, outline=colour, width=width)
        text = label if score is None else f"{label} {score:.2f}"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        tw, th = r - l + 2 * pad, b - t + 2 * pad
        tx = min(max(0.0, xy[0]), max(0.0, im.width - tw))
        ty = xy[1] - th if xy[1] - th >= 0 else min(max(0.0, xy[1]), max(0.0, im.height - th))
        draw.rectangle([tx, ty, tx + tw, ty + th], fill=colour)
        draw.text((tx + pad - l, ty + pad - t), text, fill=text_colour(colour), font=font)
    return im


@dataclass
class Previews:
    """Drawn images with captions, boxes per class, and images that could not be drawn."""

    items: list[tuple[Image.Image, str]] = field(default_factory=list)
    boxes_per_label: dict[str, int] = field(default_factory=dict)
    images_per_label: dict[str, int] = field(default_factory=dict)
    images_without_boxes: int = 0
    not_shown: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


def draw_labelme_files(json_paths: list[Path], *, limit: int = 200, max_side_px: int = 640) -> Previews:
    """Draw the boxes of each Labelme file on its image (the first `limit`); count boxes of all files."""
    out = Previews()
    boxes_c: Counter[str] = Counter()
    images_c: Counter[str] = Counter()
    for n, path in enumerate(sorted(json_paths)):
        try:
            lf = load_labelme(path)
        except AnnotationError as e:
            out.failed.append((path, str(e)))
            continue
        boxes = shape_boxes(lf)
        boxes_c.update(b[0] for b in boxes)
        images_c.update({b[0] for b in boxes})
        out.images_without_boxes += not boxes
        if n >= limit:
            out.not_shown += 1
            continue
        try:
            drawn = draw_image_file(image_path_of(path, lf), (lf.image_width, lf.image_height), boxes,
                                    max_side_px=max_side_px)
        except ImageError as e:
            out.failed.append((path, e.reason))
            continue
        out.items.append((drawn, caption_of(image_path_of(path, lf).name, len(boxes))))
    out.boxes_per_label = dict(sorted(boxes_c.items()))
    out.images_per_label = dict(sorted(images_c.items()))
    return out


def caption_of(name: str, boxes: int) -> str:
    return f"{name}: {boxes} box{'es' if boxes != 1 else ''}"


def draw_image_file(path: Path, size: tuple[int, int], boxes: list[Box], *, max_side_px: int = 640) -> Image.Image:
    """Decode an image (EXIF-corrected, reduced) and draw boxes given in its full `size` (width, height) frame."""
    image = open_rgb(path, max_side_px=max_side_px * 2)
    sx, sy = image.width / size[0], image.height / size[1]
    scaled = [(lab, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), s) for lab, (x1, y1, x2, y2), s in boxes]
    return draw_boxes(image, scaled, max_side_px=max_side_px)


def draw_scored(scored: ScoredBatch, thresholds: Thresholds, order: Sequence[int], *, limit: int = 200,
                max_side_px: int = 640) -> Previews:
    """The scored boxes of a batch at `thresholds`, drawn for the first `limit` images in `order`; counts of all.

    No detector and no Labelme file involved: moving a threshold only filters and redraws.
    """
    out = Previews()
    boxes_c: Counter[str] = Counter()
    images_c: Counter[str] = Counter()
    for n, i in enumerate(order):
        item = scored.images[i]
        kept = filter_shapes(item.shapes, thresholds)
        boxes_c.update(s.label for s in kept)
        images_c.update({s.label for s in kept})
        out.images_without_boxes += not kept
        if n >= limit:
            out.not_shown += 1
            continue
        boxes = [(s.label, s.xyxy, score_of(s)) for s in kept]
        try:
            drawn = draw_image_file(scored.image_path(item), (item.width, item.height), boxes, max_side_px=max_side_px)
        except ImageError as e:
            out.failed.append((scored.image_path(item), e.reason))
            continue
        out.items.append((drawn, caption_of(Path(item.image).name, len(kept))))
    out.boxes_per_label = dict(sorted(boxes_c.items()))
    out.images_per_label = dict(sorted(images_c.items()))
    return out
