"""THE image opener and the image helpers every stage shares: decode, orient, flatten, hash, shrink.

One rule for what "readable" means, one pixel limit, one EXIF rule and one mapping of decoder exceptions to
`ImageError(path, reason)`. Every decode in smarthub goes through `open_image` (or `decode_bytes` for bytes
that are not a file yet). Pillow is imported inside the functions: importing this module is cheap.
"""
from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smarthub.errors import ImageError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_IMAGE_PIXELS = 80_000_000  # a decompression bomb is anything larger (80 MP: a large camera photo fits)
SUPPORTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "I;16",
                             "I;16B", "I;16L", "I;16N", "F", "La", "RGBa"})
EXIF_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def is_image_file(path: Path) -> bool:
    """True for a regular file with an image suffix (not a hidden file, not a temp file)."""
    name = path.name
    return path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and path.is_file()


@contextmanager
def _decoding(path: Path | str | None, *, max_pixels: int) -> Iterator[None]:
    """Map every decoder failure inside the block to ImageError(path, reason); the one exception table."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except FileNotFoundError as e:
        raise ImageError("missing (deleted or moved meanwhile)", path=path) from e
    except IsADirectoryError as e:
        raise ImageError("not a file (a folder)", path=path) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = _PIXELS_RE.search(str(e))
        pixels = f"{int(m.group(1)):,} pixels" if m else "too many pixels"
        raise ImageError(f"decompression bomb ({pixels}, limit {max_pixels:,})", path=path) from e
    except UnidentifiedImageError as e:
        raise ImageError("not an image (the bytes are no known image format)", path=path) from e
    except MemoryError as e:
        raise ImageError("too large to decode in memory", path=path) from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or "broken data stream" in msg or isinstance(e, EOFError):
            raise ImageError(f"truncated ({msg})", path=path) from e
        if isinstance(e, PermissionError):
            raise ImageError(f"unreadable file ({e.strerror or msg})", path=path) from e
        raise ImageError(f"undecodable ({type(e).__name__}: {msg})", path=path) from e


def _check_header(img: Image.Image, *, max_pixels: int, path: Path | str | None) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(f"decompression bomb ({width}x{height} = {width * height:,} pixels, "
                         f"limit {max_pixels:,})", path=path)
    if width < 1 or height < 1:
        raise ImageError(f"empty image ({width}x{height})", path=path)
    if img.mode not in SUPPORTED_MODES:
        raise ImageError(f"unsupported mode {img.mode}", path=path)


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """Full-resolution (width, height) after EXIF orientation, read from the header (no decode)."""
    w, h = img.size
    return (h, w) if exif_orientation(img) in _SWAPS_AXES else (w, h)


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def pillow_open() -> Any:
    """Pillow's own `Image.open`, also when a library replaced it process-wide.

    Ultralytics assigns its own `Image.open` at import (it retries unknown formats through pi-heif, which it
    then tries to install): after a YOLO run in the same process every decode would go through it. smarthub
    decodes with Pillow's function, whatever was imported before.
    """
    from PIL import Image

    opener = Image.open
    while getattr(opener, "__module__", "PIL.Image") != "PIL.Image":
        original = getattr(opener, "__globals__", {}).get("_image_open")
        if original is None or original is opener:
            break
        opener = original
    return opener


@dataclass(frozen=True)
class OpenedImage:
    """A decoded, upright image and facts about its file."""

    image: Image.Image      # EXIF orientation applied; mode as stored (flatten_to_rgb for RGB)
    size: tuple[int, int]   # full-resolution (width, height), upright, even when decoded at reduced scale
    format: str             # Pillow's format name ("JPEG", "PNG", ...), "" when unknown
    frames: int             # 1 for still images


def open_image(source: Path | str | bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, draft_px: int | None = None,
               draft_for: Callable[[tuple[int, int]], tuple[int, int] | None] | None = None,
               name: str | None = None) -> OpenedImage:
    """Fully decode an image file (or bytes) and apply its EXIF orientation: THE opener.

    Args:
        source: a file path, or the image's bytes.
        max_pixels: refuse larger images (decompression bombs) before decoding them.
        draft_px: JPEGs only: decode at a reduced scale whose sides stay >= this (fast thumbnails, hashes).
        draft_for: JPEGs only: given the stored (width, height), the smallest size to decode at (None: full).
        name: how to name bytes in errors (a URL, an upload's name).

    Raises:
        ImageError: with `path` and `reason`: zero bytes, missing, not an image, truncated, decompression
            bomb, unsupported mode, unreadable.
    """
    from PIL import ImageOps

    path: Path | str | None = name if isinstance(source, bytes) else Path(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("zero bytes", path=path)
        fp: Any = io.BytesIO(source)
    else:
        try:
            if path.stat().st_size == 0:
                raise ImageError("zero bytes", path=path)
        except FileNotFoundError as e:
            raise ImageError("missing (deleted or moved meanwhile)", path=path) from e
        except OSError as e:
            raise ImageError(f"unreadable file ({e.strerror or e})", path=path) from e
        fp = path
    with _decoding(path, max_pixels=max_pixels):
        with pillow_open()(fp) as img:
            _check_header(img, max_pixels=max_pixels, path=path)
            size = oriented_size(img)
            fmt = img.format or ""
            frames = int(getattr(img, "n_frames", 1) or 1)
            target = draft_for(img.size) if draft_for is not None else None  # may refuse the image
            if draft_px is not None:
                target = (draft_px, draft_px)
            if target is not None and fmt == "JPEG":
                img.draft("RGB", target)
            img.load()  # the full decode: truncation and corrupt data surface here
            ImageOps.exif_transpose(img, in_place=True)  # pixels are in memory: no copy needed
    return OpenedImage(img, size, fmt, frames)


def check_image(path: Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """Fully decode the image at `path`; return its upright (width, height). Raises ImageError."""
    return open_image(path, max_pixels=max_pixels).size


def open_rgb(source: Path | str | bytes, *, max_side_px: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS,
             name: str | None = None) -> Image.Image:
    """`open_image` flattened to RGB (alpha on white), shrunk so its longest side is <= max_side_px when given."""
    opened = open_image(source, max_pixels=max_pixels, draft_px=max_side_px, name=name)
    return flatten_to_rgb(opened.image, max_side_px=max_side_px)


def as_rgb(img: Image.Image) -> Image.Image:
    """An in-memory PIL image (an upload, a crop) upright and RGB, with the same rules as the opener."""
    from PIL import ImageOps

    with _decoding(None, max_pixels=MAX_IMAGE_PIXELS):
        _check_header(img, max_pixels=MAX_IMAGE_PIXELS, path=None)
        return flatten_to_rgb(ImageOps.exif_transpose(img))


def flatten_to_rgb(img: Image.Image, *, max_side_px: int | None = None) -> Image.Image:
    """RGB version of a PIL image: alpha composited on white, palette transparency honoured,
    16-bit and float data scaled to 8 bits, CMYK/YCbCr/L converted; shrunk first (cheaper
    than compositing at full size) so the longest side is at most `max_side_px` when given."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        import numpy as np

        arr = np.asarray(img)
        if mode == "F":
            arr = arr.astype(np.float64)
            top = float(arr.max()) if arr.size else 1.0
            arr8 = np.clip(arr * (255.0 if top <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            top = int(arr.max()) if arr.size else 0
            if top <= 255:
                arr8 = np.clip(arr, 0, 255).astype(np.uint8)
            else:  # 16-bit range: scale 0..65535 → 0..255 (Pillow's own convert would clip at 255)
                arr8 = ((np.clip(arr, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        img, mode = Image.fromarray(arr8, "L"), "L"
    if "transparency" in img.info or mode in ("LA", "La", "PA", "RGBa"):
        img, mode = img.convert("RGBA"), "RGBA"
    elif mode in ("P", "1"):
        img, mode = img.convert("RGB"), "RGB"
    if max_side_px is not None and max(img.size) > max_side_px:
        img = img.copy() if img.mode == mode else img
        img.thumbnail((max_side_px, max_side_px), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if mode != "RGB":
        return img.convert("RGB")
    return img


def thumbnail(source: Path | str | bytes, *, max_side_px: int) -> Image.Image:
    """An RGB thumbnail whose longest side is <= max_side_px (JPEGs decoded at reduced scale). Raises ImageError."""
    return open_rgb(source, max_side_px=max_side_px)


def encode_jpeg(img: Image.Image, *, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of an image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def scale_to_fit(size: tuple[int, int], *, max_side_px: int | None) -> float:
    """The factor (<= 1) that makes the longest side of `size` at most `max_side_px`."""
    if max_side_px is None or max(size) <= max_side_px:
        return 1.0
    return max_side_px / max(size)


def draft_target(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The JPEG draft size for decoding `size` at `scale` (never below the target)."""
    return math.ceil(size[0] * scale), math.ceil(size[1] * scale)


# ----------------------------------------------------------------------------------------------- hashing

HASH_BITS = 64


def phash_int(img: Image.Image) -> int:
    """The 64-bit perceptual hash of a PIL image as an int: `imagehash.phash`'s recipe (grey, 32x32 Lanczos,
    2-D DCT-II, the 8x8 low frequencies against their median), within a few bits of its result.

    The image is first box-reduced to 128x128 (cheap) so the Lanczos resize does not run over
    the full image, and the DCT is a 32x32 matrix product (no scipy import, ~10x less CPU).
    """
    import numpy as np
    from PIL import Image

    grey = img.convert("L")
    if grey.size != (128, 128):
        grey = grey.resize((128, 128), Image.Resampling.BOX)
    pixels = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    basis = _dct_basis()
    low = (basis @ pixels @ basis.T)[:8, :8]  # scipy's unnormalised DCT-II differs by a factor of 4 only
    bits = (low > np.median(low)).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


_DCT_BASIS: list[Any] = []


def _dct_basis() -> Any:
    """Rows 0..7 of the 32-point DCT-II basis (cached)."""
    if not _DCT_BASIS:
        import numpy as np

        k = np.arange(8)[:, None]
        n = np.arange(32)[None, :]
        _DCT_BASIS.append(np.cos(np.pi * (2 * n + 1) * k / 64.0))
    return _DCT_BASIS[0]


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


def phash_hex(value: int) -> str:
    """A 64-bit hash as 16 hex digits."""
    return f"{value:016x}"


@dataclass(frozen=True)
class ImageHashes:
    """Hashes of one image file: sha256 of its bytes, pHash of its (upright, RGB) pixels, upright size."""

    sha256: str
    phash: int
    width: int
    height: int


def hash_image_file(path: Path) -> ImageHashes:
    """Hash one image file (JPEGs decoded at reduced scale: the pHash only needs 32x32). Raises ImageError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImageError("missing (deleted or moved meanwhile)", path=path) from e
    except OSError as e:
        raise ImageError(f"unreadable file ({e.strerror or e})", path=path) from e
    opened = open_image(data, draft_px=256, name=str(path))
    return ImageHashes(hashlib.sha256(data).hexdigest(), phash_int(flatten_to_rgb(opened.image)), *opened.size)
