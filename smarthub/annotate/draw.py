"""See the boxes: Labelme files drawn on their images (labels and scores), for the app's gallery."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smarthub.errors import AnnotationError, ImageError
from smarthub.annotate.labelme import image_path_of, load_labelme, shape_boxes

if TYPE_CHECKING:
    from PIL import Image

MIN_SIDE_PX = 320
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128)]


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable colour per label (the same in every image and every session)."""
    return PALETTE[int(hashlib.sha1(label.encode()).hexdigest(), 16) % len(PALETTE)]


def draw_boxes(image: Image.Image, boxes: list[tuple[str, tuple[float, float, float, float], float | None]], *,
               max_side_px: int = 640) -> Image.Image:
    """A copy of `image` shrunk to `max_side_px` with each box drawn and tagged 'label 0.87'."""
    from PIL import ImageDraw, ImageFont

    im = image.convert("RGB").copy()
    scale = min(max_side_px, max(max(im.size), MIN_SIDE_PX)) / max(im.size)  # small images grow: legible tags
    if scale != 1.0:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))))
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default()
    width = max(1, round(max(im.size) / 300))
    for label, (x1, y1, x2, y2), score in boxes:
        colour = label_colour(label)
        xy = [x1 * scale, y1 * scale, x2 * scale, y2 * scale]
        draw.rectangle(xy, outline=colour, width=width)
        text = label if score is None else f"{label} {score:.2f}"
        l, t, r, b = draw.textbbox((0, 0), text, font=font)
        ty = xy[1] - (b - t) - 3 if xy[1] - (b - t) - 3 >= 0 else xy[1]
        draw.rectangle([xy[0], ty, xy[0] + (r - l) + 4, ty + (b - t) + 3], fill=colour)
        draw.text((xy[0] + 2, ty - t + 1), text, fill=(255, 255, 255), font=font)
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
    from smarthub.imaging import open_rgb

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
            image = open_rgb(image_path_of(path, lf), max_side_px=max_side_px * 2)
        except ImageError as e:
            out.failed.append((path, e.reason))
            continue
        sx = image.width / lf.image_width
        sy = image.height / lf.image_height
        scaled = [(lab, (x1 * sx, y1 * sy, x2 * sx, y2 * sy), s) for lab, (x1, y1, x2, y2), s in boxes]
        caption = f"{image_path_of(path, lf).name}: {len(boxes)} box{'es' if len(boxes) != 1 else ''}"
        out.items.append((draw_boxes(image, scaled, max_side_px=max_side_px), caption))
    out.boxes_per_label = dict(sorted(boxes_c.items()))
    out.images_per_label = dict(sorted(images_c.items()))
    return out
