"""Image-quality issues (CleanVision): planted blurry and dark copies of real photos are flagged, cached, filtered."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clean_setup import fast_options
from smarthub.clean import review
from smarthub.clean.quality import quality_issues
from smarthub.dataset import sha256_file
from smarthub.errors import SmartHubError
from smarthub.model.embeddings import review_cache_dir
from smarthub.workspace import Workspace

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "brick")


def photo(name: str, size: int = 128) -> Image.Image:
    import skimage.data as skd

    return Image.fromarray(getattr(skd, name)()).convert("RGB").resize((size, size), Image.BILINEAR)


def plant_bad_photos(folder: Path) -> dict[str, Path]:
    """Sharp photos plus a blurred and a darkened copy of the astronaut; returns name → path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in PHOTOS:
        out[name] = folder / f"{name}.png"
        photo(name).save(out[name])
    sharp = photo("astronaut")
    out["blurry"] = folder / "blurry.png"
    sharp.filter(ImageFilter.GaussianBlur(4)).save(out["blurry"])
    out["dark"] = folder / "dark.png"
    Image.fromarray((np.asarray(sharp) * 0.08).astype(np.uint8)).save(out["dark"])
    return out


def test_planted_blurry_and_dark_images_are_flagged_and_cached(ws):
    paths = plant_bad_photos(ws.data_dir / "photo")
    shas = [sha256_file(p) for p in paths.values()]
    found = quality_issues(ws, list(paths.values()), shas)
    by_name = {name: found[s] for name, s in zip(paths, shas)}
    assert "blurry" in by_name["blurry"] and "dark" in by_name["dark"]
    assert all("blurry" not in by_name[n] and "dark" not in by_name[n] for n in PHOTOS)
    cached = json.loads((review_cache_dir(ws) / "quality.json").read_text())["issues"]
    assert set(cached) == set(shas)
    # a second call reads the cache: removing the files does not matter
    for p in paths.values():
        p.unlink()
    assert quality_issues(ws, list(paths.values()), shas) == found


def test_quality_filters_in_the_review_have_counts_and_list_their_images(planted, tmp_path):
    src_ws, _ = planted
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(src_ws.data_dir, ws.data_dir)
    bad = plant_bad_photos(tmp_path / "photos")
    for name in ("blurry", "dark"):
        shutil.copy(bad[name], ws.data_dir / "bag" / f"{name}.png")
    result = review.review(ws, fast_options())
    assert result.filter_counts["blurry"] >= 1 and result.filter_counts["dark"] >= 1
    with_quality = review.review(ws, fast_options(include={"quality"}))
    tagged = {s.path.name: s.tags for s in with_quality.suspects}
    assert "blurry" in tagged["blurry.png"] and "dark" in tagged["dark.png"]
    only_dark = review.requeue(ws, result, include=["dark"])
    assert "dark.png" in {s.path.name for s in only_dark.suspects}
    assert all("dark" in s.tags or "issue" in s.tags for s in only_dark.suspects)


def test_unknown_filter_is_refused():
    with pytest.raises(SmartHubError, match="unknown filter 'sharpness'"):
        fast_options(include={"sharpness"})
