"""Strict Labelme JSON codec: parse + validate, detections → Labelme, atomic save, edit stamps.

The files open in labelme 5.x-7.x and X-AnyLabeling. Unknown keys (top level and per shape)
survive a load/save round trip. Our files carry a `smarthub` key with a hash of the shapes we
wrote, so a rerun can tell a file a person edited from one it may refresh.
"""
from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smarthub import __version__
from smarthub.atomicio import atomic_write_json
from smarthub.errors import AnnotationError, SmartHubError
from smarthub.imaging import IMAGE_SUFFIXES

LABELME_VERSION = "5.5.0"
STAMP_KEY = "smarthub"
SHAPE_TYPES = {"rectangle": (2, 2), "polygon": (3, None), "point": (1, 1), "line": (2, 2),
               "linestrip": (2, None), "circle": (2, 2), "points": (1, None), "mask": (2, 2)}
_SHAPE_KEYS = ("label", "points", "group_id", "description", "shape_type", "flags", "mask")
_TOP_KEYS = ("version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth")


@dataclass
class Shape:
    """One Labelme shape; `extra` holds every other key (score, provenance, unknown keys)."""

    label: str
    points: list[list[float]]
    shape_type: str = "rectangle"
    group_id: int | None = None
    description: str = ""
    flags: dict[str, bool] = field(default_factory=dict)
    mask: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """The bounding box of the points (any point order)."""
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class LabelmeFile:
    """One Labelme annotation file (sizes and points in the EXIF-corrected image frame)."""

    image_path: str
    image_height: int
    image_width: int
    shapes: list[Shape] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)
    image_data: str | None = None
    version: str = LABELME_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stamp(self) -> dict[str, Any] | None:
        s = self.extra.get(STAMP_KEY)
        return s if isinstance(s, dict) else None


# ------------------------------------------------------------------ parse / dump (pure)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_shape(obj: Any, *, where: str) -> Shape:
    """Validate one shape dict; errors name `where` (e.g. 'a.json: shapes[3]')."""
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: must be an object, got {type(obj).__name__}")
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        raise AnnotationError(f"{where}: 'label' must be a non-empty string, got {label!r}")
    shape_type = obj.get("shape_type", "polygon")
    if shape_type is None:
        shape_type = "polygon"
    if shape_type not in SHAPE_TYPES:
        raise AnnotationError(f"{where}: unknown shape_type {shape_type!r} (one of {', '.join(SHAPE_TYPES)})")
    points = obj.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 and all(_is_num(v) for v in p)
                                               for p in points):
        raise AnnotationError(f"{where}: 'points' must be a list of [x, y] finite numbers, got {points!r}"[:300])
    lo, hi = SHAPE_TYPES[shape_type]
    if len(points) < lo or (hi is not None and len(points) > hi):
        need = f"exactly {lo}" if lo == hi else f"at least {lo}"
        raise AnnotationError(f"{where}: a {shape_type} needs {need} points, got {len(points)}")
    group_id = obj.get("group_id")
    if group_id is not None and (not isinstance(group_id, int) or isinstance(group_id, bool)):
        raise AnnotationError(f"{where}: 'group_id' must be an integer or null, got {group_id!r}")
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        raise AnnotationError(f"{where}: 'description' must be a string, got {description!r}")
    flags = obj.get("flags")
    if flags is not None and not (isinstance(flags, dict) and all(isinstance(k, str) and isinstance(v, bool)
                                                                  for k, v in flags.items())):
        raise AnnotationError(f"{where}: 'flags' must map names to true/false, got {flags!r}")
    mask = obj.get("mask")
    if mask is not None and not isinstance(mask, str):
        raise AnnotationError(f"{where}: 'mask' must be a base64 PNG string or null")
    return Shape(label=label, points=[[p[0], p[1]] for p in points], shape_type=shape_type, group_id=group_id,
                 description=description or "", flags=dict(flags or {}), mask=mask,
                 extra={k: v for k, v in obj.items() if k not in _SHAPE_KEYS})


def parse_labelme(obj: Any, *, source: str = "<labelme>") -> LabelmeFile:
    """Validate a decoded Labelme JSON object; errors name `source` and the field."""
    if not isinstance(obj, dict):
        raise AnnotationError(f"{source}: a Labelme file must be a JSON object")
    for key in ("shapes", "imagePath", "imageHeight", "imageWidth"):
        if key not in obj:
            raise AnnotationError(f"{source}: missing required key {key!r}")
    if not isinstance(obj["imagePath"], str) or not obj["imagePath"]:
        raise AnnotationError(f"{source}: 'imagePath' must be a non-empty string")
    for key in ("imageHeight", "imageWidth"):
        v = obj[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise AnnotationError(f"{source}: {key!r} must be a positive integer, got {v!r}")
    if not isinstance(obj["shapes"], list):
        raise AnnotationError(f"{source}: 'shapes' must be a list")
    image_data = obj.get("imageData")
    if image_data is not None and not isinstance(image_data, str):
        raise AnnotationError(f"{source}: 'imageData' must be base64 text or null")
    flags = obj.get("flags") or {}
    if not isinstance(flags, dict):
        raise AnnotationError(f"{source}: 'flags' must be an object")
    version = obj.get("version", LABELME_VERSION)
    if not isinstance(version, str):
        raise AnnotationError(f"{source}: 'version' must be a string")
    shapes = [parse_shape(s, where=f"{source}: shapes[{i}]") for i, s in enumerate(obj["shapes"])]
    return LabelmeFile(image_path=obj["imagePath"], image_height=obj["imageHeight"], image_width=obj["imageWidth"],
                       shapes=shapes, flags=dict(flags), image_data=image_data, version=version,
                       extra={k: v for k, v in obj.items() if k not in _TOP_KEYS})


def shape_to_dict(shape: Shape) -> dict[str, Any]:
    """The JSON object of one shape (standard keys first, then extras)."""
    d: dict[str, Any] = {"label": shape.label, "points": [[p[0], p[1]] for p in shape.points],
                         "group_id": shape.group_id, "description": shape.description,
                         "shape_type": shape.shape_type, "flags": dict(shape.flags), "mask": shape.mask}
    d.update({k: v for k, v in shape.extra.items() if k not in _SHAPE_KEYS})
    return d


def labelme_to_dict(lf: LabelmeFile) -> dict[str, Any]:
    """The JSON object of a Labelme file."""
    d: dict[str, Any] = {"version": lf.version, "flags": dict(lf.flags),
                         "shapes": [shape_to_dict(s) for s in lf.shapes], "imagePath": lf.image_path,
                         "imageData": lf.image_data, "imageHeight": lf.image_height, "imageWidth": lf.image_width}
    d.update({k: v for k, v in lf.extra.items() if k not in _TOP_KEYS})
    return d


def shapes_hash(shapes: list[Shape]) -> str:
    """Content hash of what a person sees (label, type, points to 0.01 px, group, flags, description).

    Insensitive to key order, int/float spelling and extra keys, so a file opened and saved
    unchanged in Labelme keeps its hash.
    """
    canon = [[s.label, s.shape_type, [[round(float(x), 2), round(float(y), 2)] for x, y in s.points],
              s.group_id, s.description or "", sorted(s.flags.items())] for s in shapes]
    return hashlib.sha256(json.dumps(canon, separators=(",", ":")).encode()).hexdigest()


def edit_state(lf: LabelmeFile) -> str:
    """'ours' (unchanged since we wrote it), 'edited' (a person changed our shapes or merged), or 'foreign'."""
    stamp = lf.stamp
    if stamp is None or "shapes_sha256" not in stamp:
        return "foreign"
    if stamp.get("merged") or stamp["shapes_sha256"] != shapes_hash(lf.shapes):
        return "edited"
    return "ours"


BOX_SHAPE_TYPES = frozenset({"rectangle", "polygon"})


def shape_boxes(lf: LabelmeFile) -> list[tuple[str, tuple[float, float, float, float], float | None]]:
    """(label, xyxy, score or None) for every rectangle, and the bounding box of every polygon."""
    out = []
    for s in lf.shapes:
        if s.shape_type in BOX_SHAPE_TYPES:
            score = s.extra.get("score")
            out.append((s.label, s.xyxy, float(score) if _is_num(score) else None))
    return out


def non_box_shapes(lf: LabelmeFile) -> tuple[int, dict[str, int]]:
    """(polygons that `shape_boxes` reads as their bounding box, {shape type: count} of shapes it drops)."""
    boxed = sum(1 for s in lf.shapes if s.shape_type == "polygon")
    dropped: dict[str, int] = {}
    for s in lf.shapes:
        if s.shape_type not in BOX_SHAPE_TYPES:
            dropped[s.shape_type] = dropped.get(s.shape_type, 0) + 1
    return boxed, dropped


def clip_xyxy(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to [0, width] x [0, height]."""
    out = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


def detections_to_labelme(det: Any, *, image_path: str, width: int, height: int,
                          provenance: dict[str, Any] | None = None, image_data: bytes | None = None,
                          decimals: int = 2) -> LabelmeFile:
    """Detections (in the EXIF-corrected frame of a width x height image) → a stamped LabelmeFile.

    Boxes are clipped; boxes with no area left are dropped. Each shape keeps `score`, and any
    extra per-box data (e.g. detector_label, classifier_score) as extra keys.
    """
    xyxy = clip_xyxy(det.xyxy, width, height).round(decimals)
    shapes = []
    for i in range(len(det)):
        x1, y1, x2, y2 = (float(v) for v in xyxy[i])
        if x2 <= x1 or y2 <= y1:
            continue
        extra: dict[str, Any] = {"score": round(float(det.confidence[i]), 4)}
        for key, values in det.data.items():
            v = values[i]
            extra[key] = round(float(v), 4) if isinstance(v, (float, np.floating)) else (
                v.item() if isinstance(v, np.generic) else v)
        shapes.append(Shape(label=det.labels[i], points=[[x1, y1], [x2, y2]], extra=extra))
    lf = LabelmeFile(image_path=image_path, image_height=int(height), image_width=int(width), shapes=shapes,
                     image_data=base64.b64encode(image_data).decode("ascii") if image_data is not None else None)
    stamp_file(lf, provenance or {})
    return lf


SILVER_FLAG = "silver"


def mark_silver(lf: LabelmeFile, min_conf: float) -> LabelmeFile:
    """Flag shapes scored >= min_conf as silver, and the image when it has boxes and all of them are."""
    for s in lf.shapes:
        score = s.extra.get("score")
        if _is_num(score):
            s.flags[SILVER_FLAG] = bool(score >= min_conf)
    lf.flags[SILVER_FLAG] = bool(lf.shapes) and all(s.flags.get(SILVER_FLAG) for s in lf.shapes)
    return lf


def stamp_file(lf: LabelmeFile, provenance: dict[str, Any], *, merged: bool = False) -> LabelmeFile:
    """Write our stamp (provenance + hash of the current shapes) into `lf.extra`."""
    stamp = {"tool": "smarthub", "tool_version": __version__, **provenance,
             "shapes_sha256": shapes_hash(lf.shapes)}
    if merged:
        stamp["merged"] = True
    lf.extra[STAMP_KEY] = stamp
    return lf


def relative_image_path(json_path: Path, image_path: Path) -> str:
    """imagePath as Labelme wants it: relative from the JSON's folder, POSIX separators."""
    return Path(os.path.relpath(Path(image_path).resolve(), Path(json_path).resolve().parent)).as_posix()


# ------------------------------------------------------------------ I/O edges


def load_labelme(path: Path) -> LabelmeFile:
    """Read and validate a Labelme file; AnnotationError names the file and `shapes[i]`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise AnnotationError(f"Labelme file not found: {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AnnotationError(f"{path} is not valid JSON: {e}") from e
    return parse_labelme(obj, source=str(path))


def save_labelme(path: Path, lf: LabelmeFile) -> Path:
    """Write a Labelme file atomically (temp file + os.replace); AnnotationError when it cannot."""
    path = Path(path)
    try:
        atomic_write_json(path, labelme_to_dict(lf))
    except SmartHubError as e:
        raise AnnotationError(str(e)) from e
    return path


def image_path_of(json_path: Path, lf: LabelmeFile) -> Path:
    """The image a Labelme file points at (imagePath resolved from the JSON's folder)."""
    return (Path(json_path).parent / lf.image_path.replace("\\", "/")).resolve()


def contained_image_path(json_path: Path, lf: LabelmeFile, root: Path) -> Path:
    """The image of a Labelme file, refused unless it resolves inside `root` and has an image suffix.

    Raises AnnotationError naming the JSON file and its imagePath (e.g. '../../etc/passwd').
    """
    image = image_path_of(json_path, lf)
    if not image.is_relative_to(Path(root).resolve()):
        raise AnnotationError(f"{json_path}: imagePath {lf.image_path!r} points outside {root}; "
                              f"keep images inside the Labelme folder")
    if image.suffix.lower() not in IMAGE_SUFFIXES:
        raise AnnotationError(f"{json_path}: imagePath {lf.image_path!r} is not an image "
                              f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    return image
