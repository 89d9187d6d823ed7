"""House rules: the core never imports the UI; importing smarthub is cheap and writes nothing."""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import smarthub

UI_MODULES = ("smarthub.ui", "smarthub.notebook")
HEAVY = ("torch", "torchvision", "fastai", "gradio", "ddgs", "ultralytics", "ipywidgets", "cleanlab", "sklearn",
         "matplotlib")


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(smarthub.__path__, prefix="smarthub."):
        if not info.name.startswith(UI_MODULES) and info.name != "smarthub.__main__":
            names.append(info.name)
    return sorted(names)


def test_core_modules_import_without_gradio_and_nothing_heavy(tmp_path: Path) -> None:
    """Every core module imports with gradio/ipywidgets made unimportable, and pulls in no heavy library."""
    modules = core_modules()
    assert "smarthub.fileops" in modules and "smarthub.cli" in modules
    script = f"""
import importlib, json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('gradio', 'ipywidgets'):
            raise ImportError('blocked by test: ' + name)
        return None
sys.meta_path.insert(0, Block())
for name in {modules!r}:
    importlib.import_module(name)
import smarthub.cli
smarthub.cli.build_parser()
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
"""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    # importing wrote nothing: not in the current folder, not in $HOME
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]
    assert list(home.iterdir()) == []


def test_only_ui_imports_gradio_and_only_notebook_imports_ipywidgets() -> None:
    root = Path(smarthub.__file__).parent
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        if not rel.startswith("ui/"):
            assert "import gradio" not in text and "from gradio" not in text, rel
        if rel != "notebook.py":
            assert "import ipywidgets" not in text and "from ipywidgets" not in text, rel


def test_only_fileops_moves_or_removes_files() -> None:
    root = Path(smarthub.__file__).parent
    forbidden = ("shutil.move", "os.rename(", "os.remove(", ".unlink(", "shutil.rmtree", "os.unlink(")
    allowed = {"fileops.py", "atomicio.py"}  # atomicio only removes its own temp files
    offenders = []
    for path in root.rglob("*.py"):
        if path.name in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.relative_to(root)}: {f}" for f in forbidden if f in text]
    assert offenders == [], "only fileops.py may move or remove files: " + "; ".join(offenders)
