"""The planted-noise workspace the review tests share: real Fashion-MNIST images, a seeded 10 % mislabelled."""
from __future__ import annotations

from pathlib import Path

import pytest

from clean_setup import CLASSES, IMAGE_PX, PER_CLASS
from helpers import plant_label_noise
from smarthub.workspace import Workspace

@pytest.fixture(scope="session")
def planted(tmp_path_factory, torch_home) -> tuple[Workspace, set[Path]]:
    """5 classes x 60 images at 64 px with 30 moved into wrong folders (the moved paths returned)."""
    root = tmp_path_factory.mktemp("planted")
    ws = Workspace(data_dir=root / "data", models_dir=root / "models")
    moved = plant_label_noise(ws.data_dir, classes=CLASSES, per_class=PER_CLASS, size_px=IMAGE_PX, seed=0)
    return ws, moved
