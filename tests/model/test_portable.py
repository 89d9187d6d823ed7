"""export.pkl is a plain fastai Learner: it loads and predicts in a process where smarthub cannot be imported,
with the same figures as `smarthub predict`; models exported by the first version still load in smarthub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.workspace import Workspace

FIRST_VERSION = Path(__file__).parent.parent / "data" / "first_version"

# a fresh interpreter in which every `smarthub` import fails, loading with fastai alone
PLAIN_FASTAI = r"""
import importlib.abc, json, sys

class BlockSmartHub(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "smarthub" or name.startswith("smarthub."):
            raise ImportError(f"smarthub is not installed here ({name})")
        return None

sys.meta_path.insert(0, BlockSmartHub())
import warnings
warnings.simplefilter("ignore")
from fastai.learner import load_learner

learn = load_learner(sys.argv[1])
rows = []
for path in sys.argv[2:]:
    with learn.no_bar():
        label, _, probs = learn.predict(path)
    rows.append({"label": str(label), "probs": [float(p) for p in probs]})
try:
    import smarthub  # noqa: F401
    blocked = False
except ImportError:
    blocked = True
print(json.dumps({"vocab": [str(v) for v in learn.dls.vocab], "rows": rows, "blocked": blocked}))
"""


def _pickled_modules(export: Path) -> set[str]:
    """The modules the export's pickles name (GLOBAL and STACK_GLOBAL opcodes): what unpickling must import.
    Paths inside pickled data (fastai keeps a module's __file__, e.g. under a checkout named smarthub/) are not."""
    import pickletools

    modules: set[str] = set()
    with zipfile.ZipFile(export) as z:
        for name in z.namelist():
            if not name.endswith(".pkl"):
                continue
            strings: list[str] = []
            for op, arg, _ in pickletools.genops(z.read(name)):
                if op.name == "GLOBAL":
                    modules.add(str(arg).split(" ")[0])
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    modules.add(strings[-2])
                if isinstance(arg, str):
                    strings.append(arg)
    return modules


def _pickled_names(export: Path) -> bytes:
    with zipfile.ZipFile(export) as z:
        return b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))


@pytest.fixture(scope="module")
def lpft_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A real LP-FT model (MobileNetV2 offline weights, 32 px) on a train/valid folder layout."""
    root = tmp_path_factory.mktemp("portable")
    ws = Workspace(root / "data", root / "models")
    for split, n, offset in (("train", 8, 0), ("valid", 3, 200)):
        write_fashion_folders(ws.data_dir / split, per_class=n, classes=("trouser", "bag", "sneaker"), size_px=28,
                              offset=offset)
    assert main(["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--size", "32",
                 "--batch-size", "8", "--epochs", "1"]) == 0
    return ws


def test_export_loads_with_fastai_alone_and_matches_smarthub_predict(lpft_ws: Workspace, tmp_path: Path,
                                                                      capsys) -> None:
    ws = lpft_ws
    assert [m for m in _pickled_modules(ws.export_path) if m.split(".")[0] == "smarthub"] == []
    images = sorted((ws.data_dir / "valid").rglob("*.png"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_FASTAI, str(ws.export_path), *map(str, images)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plain["blocked"] is True

    capsys.readouterr()
    assert main(["predict", *map(str, images), "--model", str(ws.export_path), "--top-k", "3", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert plain["vocab"] == ["bag", "sneaker", "trouser"]
    for row, pred in zip(plain["rows"], ours):
        assert row["label"] == pred["top"][0]["label"]
        by_label = {t["label"]: t["prob"] for t in pred["top"]}
        np.testing.assert_allclose(row["probs"], [by_label[v] for v in plain["vocab"]], atol=1e-5)


def test_first_version_model_loads_through_the_shim(tmp_path: Path) -> None:
    """A real export of the first version (tests/data/README.md) predicts as it did then."""
    import torch

    from smarthub.model.predict import predict

    model = FIRST_VERSION / "export_v1.pkl"
    names = _pickled_names(model)
    assert b"smarthub.train\nload_rgb" in names and b"smarthub.dataset\nImageItem" in names
    assert {"smarthub.train", "smarthub.dataset"} <= _pickled_modules(model)  # the module finder sees them
    with pytest.raises(ModuleNotFoundError, match="smarthub.train"):  # why the shim exists
        torch.load(model, map_location="cpu", weights_only=False)
    expected = json.loads((FIRST_VERSION / "predictions_v1.json").read_text())
    preds = predict(model, [FIRST_VERSION / e["path"] for e in expected], top_k=2)
    for e, p in zip(expected, preds):
        assert [t["label"] for t in e["top"]] == [lab for lab, _ in p.top]
        np.testing.assert_allclose([t["prob"] for t in e["top"]], [prob for _, prob in p.top], atol=1e-5)
