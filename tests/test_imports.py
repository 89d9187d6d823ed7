"""House rules: the core never imports the UI; importing smarthub is cheap and writes nothing."""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import smarthub

UI_MODULES = ("smarthub.ui", "smarthub.notebook")
HEAVY = ("torch", "torchvision", "fastai", "gradio", "ddgs", "ultralytics", "ipywidgets", "cleanlab", "sklearn",
         "matplotlib", "optuna")


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


# The layering of the package: each module belongs to a layer; imports point down only.
CORE = {"errors", "workspace", "atomicio", "imaging", "dataset", "fileops", "ledger", "trust", "outputs",
        "durations", "libwarnings"}
STAGES = {"collect", "model", "clean", "annotate"}
TOP = {"cli", "ui", "notebook", "demo", "weights", "__main__", "__init__"}
# which stages a stage may import besides the core (model/ is shared: clean and annotate need a classifier)
STAGE_MAY_IMPORT = {"collect": set(), "model": set(), "clean": {"model"}, "annotate": {"model"}}


def _layer(module: str) -> str:
    """'core', a stage name, or a top-level name, for a dotted smarthub module."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    if head in CORE:
        return "core"
    if head in STAGES or head in TOP:
        return head
    raise AssertionError(f"{module} belongs to no layer: add it to CORE, STAGES or TOP in this test")


def _imports_of(path: Path) -> set[str]:
    """Every smarthub module a file imports (top-level and inside functions), by parsing it."""
    import ast

    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("smarthub")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smarthub"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if node.module.count(".") == 0}
    return found


def test_imports_point_down_only() -> None:
    """Core imports no stage; stages import core (and model/ where allowed); nothing imports cli/ or ui/."""
    root = Path(smarthub.__file__).parent
    wrong = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        module = "smarthub." + ".".join(rel.parts).removesuffix(".__init__")
        if module == "smarthub.__init__":
            module = "smarthub"
        src = _layer(module)
        for target in _imports_of(path):
            if target == "smarthub":
                continue
            try:
                dst = _layer(target)
            except AssertionError:
                continue  # `from smarthub import X` adds smarthub.X for each name; a non-module name is no layer
            if dst == src:
                continue
            if dst in ("cli", "ui") and src not in ("__main__", "__init__", "cli", "ui"):
                wrong.append(f"{module} imports {target} (nothing imports the CLI or the UI)")
            elif src == "core" and dst != "core":
                wrong.append(f"{module} imports {target} (the core imports no stage)")
            elif src in STAGES and dst in STAGES and dst not in STAGE_MAY_IMPORT[src]:
                wrong.append(f"{module} imports {target} (stage {src} may import only the core and "
                             f"{sorted(STAGE_MAY_IMPORT[src]) or 'no other stage'})")
            elif src in STAGES and dst in TOP:
                wrong.append(f"{module} imports {target} (a stage imports nothing above it)")
    assert wrong == [], "\n".join(wrong)



def _module_file(module: str) -> Path | None:
    """The file of a dotted smarthub module (a package: its __init__.py); None when the name is no module."""
    root = Path(smarthub.__file__).parent
    rel = Path(*module.split(".")[1:]) if "." in module else None
    candidates = [root / rel.with_suffix(".py"), root / rel / "__init__.py"] if rel else [root / "__init__.py"]
    for path in candidates:
        if path.is_file():
            return path
    return None


def _reachable(module: str) -> set[str]:
    """Every smarthub module that importing `module` and calling its functions can import: the closure of its
    imports, function-level ones included (`from smarthub.pkg import mod` counts as smarthub.pkg.mod)."""
    import ast

    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # a.b.c runs the packages' __init__ first
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("smarthub")]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smarthub"):
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return seen


TRAINING = {"smarthub.model.train", "smarthub.model.fit", "smarthub.model.data", "smarthub.model.artefacts"}


@pytest.mark.parametrize("module", ["smarthub.model.inference", "smarthub.model.predict",
                                    "smarthub.annotate.preannotate"])
def test_prediction_does_not_reach_the_trainer(module: str) -> None:
    """model/ reads as a stack with inference below training: predicting and pre-annotating never import the
    trainer, its fit, its data pipeline or its artefact writers, not even inside a function."""
    reached = _reachable(module)
    assert "smarthub.model.inference" in reached
    assert sorted(reached & TRAINING) == []


def test_reachable_follows_function_level_imports() -> None:
    """The closure above is not vacuous: the fine-tune scorer imports the fit inside a function, and is found."""
    assert {"smarthub.model.fit", "smarthub.model.data"} <= _reachable("smarthub.clean.scorers")
    assert "smarthub.model.fit" in _reachable("smarthub.model.train")
