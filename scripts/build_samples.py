"""Rebuild the shipped demo sample from Debian's openclipart-png (public domain).

Run once by a maintainer: `python scripts/build_samples.py`. Not used at run time.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

SOURCE = Path("/usr/share/openclipart/png")
CLASSES = {"bird": "animals/birds", "fish": "animals/fish", "fruit": "food/fruit", "vehicle": "transportation/vehicles"}
PER_CLASS = 20
MAX_SIDE_PX = 128


def build(out_dir: Path) -> None:
    for label, sub in CLASSES.items():
        target = out_dir / label
        target.mkdir(parents=True, exist_ok=True)  # files are rewritten in place; delete stale ones by hand
        saved = 0
        for png in sorted((SOURCE / sub).rglob("*.png")):
            if saved >= PER_CLASS:
                break
            with Image.open(png) as im:
                im = im.convert("RGBA")
                if min(im.size) < 32:
                    continue
                flat = Image.new("RGB", im.size, (255, 255, 255))
                flat.paste(im, mask=im.getchannel("A"))
                flat.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX))
                flat.save(target / f"{png.stem[:40]}.jpg", quality=85)
                saved += 1


if __name__ == "__main__":
    build(Path(__file__).resolve().parent.parent / "smarthub" / "samples")
