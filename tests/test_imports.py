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


# Calls that rename or remove files, and the only modules allowed to make them: the fileops package (the user's
# images, journaled), atomicio (its own temp files) and staging (the folders and files smarthub writes whole).
MOVERS = ("fileops/", "atomicio.py", "staging.py")
MOVING_FUNCTIONS = {"os": {"rename", "replace", "renames", "remove", "unlink", "rmdir", "removedirs"},
                    "shutil": {"move", "rmtree"}}
MOVING_METHODS = {"unlink", "rmdir"}  # Path.unlink(), Path.rmdir()
MOVING_ONE_ARG_METHODS = {"rename", "replace"}  # Path.rename(target), Path.replace(target); str.replace has 2 args


def _moving_calls(source: str) -> list[str]:
    """Each call in `source` that renames or removes a file (`os.replace(…)`, `shutil.rmtree(…)`,
    `path.unlink()`, `path.rename(target)`, `from os import remove` …), as `line: code`."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module in MOVING_FUNCTIONS:
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if a.name in MOVING_FUNCTIONS[node.module]]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, name = node.func.value, node.func.attr
        if isinstance(owner, ast.Name) and owner.id in MOVING_FUNCTIONS:
            moving = name in MOVING_FUNCTIONS[owner.id]
        elif isinstance(owner, ast.Name) and owner.id == "dataclasses":
            moving = False  # dataclasses.replace(record, field=…)
        else:
            moving = name in MOVING_METHODS or (name in MOVING_ONE_ARG_METHODS and len(node.args) == 1)
        if moving:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(("source", "moves"), [
    ("import os\ndef f(p):\n    os.replace(p, p.with_name('x.jpg'))\n", True),
    ("import shutil\nshutil.rmtree(folder)\n", True),
    ("from os import remove\n", True),
    ("Path('cat/a.jpg').unlink(missing_ok=True)\n", True),
    ("image.rename(image.with_suffix('.png'))\n", True),
    ("folder.rmdir()\n", True),
    ("name.replace('-', '_')\ndataclasses.replace(options, size=3)\nwhen.replace(tzinfo=utc)\n", False),
    ("shutil.copyfile(a, b)\nos.link(a, b)\n", False),
], ids=["os.replace", "rmtree", "from-os-import", "Path.unlink", "Path.rename", "rmdir", "str-replace", "copy-link"])
def test_moving_calls_are_found(source: str, moves: bool) -> None:
    """The checker below finds what it must (so it can fail) and leaves string and record edits alone."""
    assert bool(_moving_calls(source)) is moves


def test_only_fileops_moves_or_removes_files() -> None:
    """Only fileops/, atomicio.py and staging.py rename or remove files (parsed, comments and docstrings aside)."""
    root = Path(smarthub.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(MOVERS):
            continue
        offenders += [f"{rel}:{call}" for call in _moving_calls(path.read_text(encoding="utf-8"))]
    assert offenders == [], ("only smarthub/fileops/ (user images), atomicio.py (its temp files) and staging.py "
                             "(folders smarthub writes whole) may move or remove files:\n" + "\n".join(offenders))
    assert {p.name for p in (root / "fileops").glob("*.py")} >= {"__init__.py", "journal.py", "lock.py"}


def _module_files() -> dict[str, Path]:
    """Every smarthub module by dotted name (a package by its own name), with its file."""
    root = Path(smarthub.__file__).parent
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports_in(source: str, *, package: str, files: dict[str, Path] | set[str]) -> set[str]:
    """The smarthub modules `source` imports, from every import statement (at the top, inside functions, under
    `if TYPE_CHECKING:`). `from a.b import c` points at the module a.b.c when c is one, else at a.b; an import of a
    package's submodule points at that submodule, not at the package's __init__. `package`: where `source` lives
    (for relative imports)."""
    import ast

    def known(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets |= {known(a.name) for a in node.names if a.name.split(".")[0] == "smarthub"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..a import b
                up = package
                for _ in range(node.level - 1):
                    up = up.rpartition(".")[0]
                base = f"{up}.{base}" if base else up
            if base.split(".")[0] == "smarthub":
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else known(base) for a in node.names}
    return targets - {""}


def _import_graph() -> dict[str, set[str]]:
    """module → the smarthub modules it imports (see `_imports_in`), for every module of the package."""
    files = _module_files()
    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = _imports_in(path.read_text(encoding="utf-8"), package=package, files=files) - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a → … → a) through each strongly connected group of `graph` (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for group in groups:  # walk from the group's first module back to it, inside the group (breadth first)
        start = min(group)
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & group):
                if w == start:
                    queue = []
                    cycles.append(paths[v] + [start])
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return sorted(cycles)


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    files = {"smarthub", "smarthub.trust", "smarthub.ledger", "smarthub.fileops", "smarthub.fileops.lock"}
    source = ("from smarthub.fileops import lock\nimport smarthub.fileops.lock.x\n"
              "def f():\n    from smarthub.ledger import now_iso\n    from . import trust\n")
    assert _imports_in(source, package="smarthub", files=files) == {"smarthub.fileops.lock", "smarthub.ledger",
                                                                     "smarthub.trust"}


def test_no_import_cycle() -> None:
    """smarthub's own imports, including those inside functions, form no cycle (each is printed if one does)."""
    graph = _import_graph()
    assert {"smarthub.atomicio", "smarthub.trust", "smarthub.staging", "smarthub.fileops.moves"} <= set(graph)
    cycles = _cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


# The layering of the package: each module belongs to a layer; imports point down only.
CORE = {"errors", "workspace", "atomicio", "imaging", "dataset", "fileops", "ledger", "trust", "outputs",
        "durations", "libwarnings", "staging", "optionspec", "trials"}
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


def test_no_module_over_400_lines_without_a_reason_at_its_top() -> None:
    """Small modules (STYLE.md): a module over ~400 lines says why in its docstring ("Over 400 lines on purpose")."""
    import ast

    root = Path(smarthub.__file__).parent
    unexplained = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 420 and "Over 400 lines on purpose:" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(f"{path.relative_to(root)} ({text.count(chr(10))} lines)")
    assert unexplained == [], "split these modules or say why at their top: " + "; ".join(unexplained)
