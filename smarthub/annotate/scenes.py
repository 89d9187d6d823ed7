"""Detection scenes composed from drawings: the demo's training data, and planted truth for tests and benches.

Each scene is a background (a crop of a photo, or generated texture) with 1-3 drawings pasted at random
sizes and places without overlap; the boxes are written as a Labelme file beside the JPEG.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

from smarthub.errors import ImageError
from smarthub.imaging import IMAGE_SUFFIXES, open_image

if TYPE_CHECKING:
    from PIL import Image


def cutout(image: Image.Image, *, white_below: int = 235, max_side_px: int = 256) -> Image.Image:
    """The drawing as RGBA trimmed to its visible pixels (near-white becomes transparent when there is no alpha)."""
    import numpy as np
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        im = image.convert("RGBA")
    else:
        rgb = np.asarray(image.convert("RGB"))
        alpha = np.where(rgb.min(axis=2) < white_below, 255, 0).astype(np.uint8)
        im = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    bbox = im.getchannel("A").getbbox()
    if bbox is not None:
        im = im.crop(bbox)
    im.thumbnail((max_side_px, max_side_px))
    return im


def load_drawings(folder: Path, *, limit: int | None = None, max_side_px: int = 256,
                  failed: list[tuple[Path, str]] | None = None) -> list[Image.Image]:
    """The drawings of one class folder as RGBA cutouts (sorted by name, the first `limit`).

    Unreadable files (e.g. a drawing too large to decode) are skipped and, when `failed` is given, listed there;
    without `failed` they raise ImageError.
    """
    out = []
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            im = cutout(open_image(path).image, max_side_px=max_side_px)
        except ImageError as e:
            if failed is None:
                raise
            failed.append((path, e.reason))
            continue
        if im.getchannel("A").getbbox() is not None and min(im.size) >= 8:
            out.append(im)
        if limit is not None and len(out) >= limit:
            break
    return out


def texture_backgrounds(n: int, *, size: tuple[int, int] = (256, 256), seed: int = 0) -> list[Image.Image]:
    """Generated backgrounds (smooth colour gradients with noise and stripes) when no photo is at hand."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    out = []
    for _ in range(n):
        a, b = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
        base = a * (1 - t) + b * t
        arr = np.broadcast_to(base, (h, w, 3)) + rng.normal(0, 18, (h, w, 3))
        if rng.random() < 0.5:
            arr = arr + 25 * np.sin(np.arange(w)[None, :, None] / rng.uniform(3, 12))
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(1))
        out.append(im)
    return out


def compose_scenes(folder: Path, n: int, drawings: dict[str, list[Image.Image]], backgrounds: list[Image.Image], *,
                   size: tuple[int, int] = (160, 128), seed: int = 0, objects: tuple[int, int] = (1, 3),
                   side_frac: tuple[float, float] = (0.25, 0.55), prefix: str = "scene",
                   truth: bool = True) -> int:
    """Write n JPEG scenes (and their Labelme truth when `truth`) into `folder`; return the number of boxes."""
    from PIL import Image

    from smarthub.annotate.labelme import LabelmeFile, Shape, save_labelme

    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    n_boxes = 0
    for i in range(n):
        photo = rng.choice(backgrounds)
        scale = rng.uniform(0.4, 1.0)
        cw, ch = max(1, int(min(photo.width, w / scale))), max(1, int(min(photo.height, h / scale)))
        x0, y0 = rng.randint(0, photo.width - cw), rng.randint(0, photo.height - ch)
        im = photo.crop((x0, y0, x0 + cw, y0 + ch)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
        shapes: list[Shape] = []
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(*objects)):
            label = rng.choice(sorted(drawings))
            d = rng.choice(drawings[label]).copy()
            side = rng.randint(int(side_frac[0] * min(w, h)), int(side_frac[1] * min(w, h)))
            d.thumbnail((side, side))
            for _attempt in range(20):
                x, y = rng.randint(0, w - d.width), rng.randint(0, h - d.height)
                box = (x, y, x + d.width, y + d.height)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
                    break
            else:
                continue
            im.paste(d, (x, y), d)
            boxes.append(box)
            shapes.append(Shape(label=label, points=[[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]))
        name = f"{prefix}{i:04d}"
        im.save(folder / f"{name}.jpg", quality=90)
        if truth:
            save_labelme(folder / f"{name}.json", LabelmeFile(image_path=f"{name}.jpg", image_height=h, image_width=w,
                                                            shapes=shapes))
        n_boxes += len(shapes)
    return n_boxes
