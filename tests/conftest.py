"""Shared fixtures: an isolated torch cache (MobileNetV2 weights only), workspaces of real images."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

# before anything imports matplotlib, onnxruntime or ultralytics: the test run's own library caches (the
# pytest process imports them directly) go to a temporary folder, not to the developer's ~/.cache
_CACHES = Path(tempfile.gettempdir()) / f"smarthub-tests-{os.getuid()}"
os.environ.setdefault("XDG_CACHE_HOME", str(_CACHES / "cache"))
os.environ.setdefault("MPLCONFIGDIR", str(_CACHES / "matplotlib"))
os.environ.setdefault("YOLO_CONFIG_DIR", str(_CACHES / "ultralytics"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from helpers import fill_torch_home, make_image  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TORCH_HOME for the whole run: holds only torchvision's MobileNetV2 weights (no resnet18)."""
    home = fill_torch_home(tmp_path_factory.mktemp("torch_home"))
    os.environ["TORCH_HOME"] = str(home)
    return home


@pytest.fixture
def ws(tmp_path: Path):
    """An empty workspace (data/ and models/ under tmp_path)."""
    from smarthub.workspace import Workspace

    (tmp_path / "data").mkdir()
    return Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")


@pytest.fixture
def small_ws(ws):
    """A workspace with three classes of six distinct real images each."""
    colors = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}
    for c, (label, color) in enumerate(colors.items()):
        for i in range(6):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", color=color, pattern=c * 100 + i)
    return ws
