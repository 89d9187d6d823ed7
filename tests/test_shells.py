"""The shells (ui/, notebook.py) keep no core logic: they write no files of their own (the core writes: uploads
are staged by annotate/inputs.py, models by model/, …) and read the core's results by their types."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smarthub

ROOT = Path(smarthub.__file__).parent
# the app's own display cache (thumbnails, written atomically under the workspace cache) is the shell's business
ALLOWED = {("ui/_common.py", "atomic_write_with"), ("ui/_common.py", "mkdir"), ("ui/app.py", "mkdir")}
WRITES = {"copyfile", "copy2", "copytree", "write_text", "write_bytes", "atomic_write_json", "atomic_write_text",
          "atomic_write_bytes", "atomic_write_with", "mkdir", "dump"}
OS_MOVES = {"replace", "rename", "move", "copy"}  # only as os.X / shutil.X (str.replace is no write)


def _writes(source: str) -> list[str]:
    """Calls in `source` that write or move files: the names in WRITES, and `open(…)` for writing."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        owner = getattr(getattr(node.func, "value", None), "id", "")
        if name in WRITES or (name in OS_MOVES and owner in ("os", "shutil")):
            found.append(name)
        elif name == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)] + \
                [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
            if any(set(str(m)) & set("wax+") for m in modes):
                found.append("open")
    return found


def _getattr_reads(source: str) -> int:
    """`getattr(x, "name", default)` calls: reading a result by a string name instead of its type."""
    return sum(1 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
               and getattr(node.func, "id", "") == "getattr" and len(node.args) == 3
               and isinstance(node.args[1], ast.Constant) and node.args[1].value != "name")


@pytest.mark.parametrize("source, writes", [
    ("shutil.copyfile(a, b)", ["copyfile"]),
    ("os.replace(a, b)", ["replace"]),
    ("Path(p).write_text('x')", ["write_text"]),
    ("open(p, 'w')", ["open"]),
    ("open(p, mode='ab')", ["open"]),
    ("open(p)", []),
    ("text.replace('a', 'b')", []),
    ("x = 'shutil.copyfile(a, b)'", []),
], ids=["copy", "os-replace", "write-text", "open-w", "open-append", "open-read", "str-replace", "in-a-string"])
def test_the_checker_finds_writes(source: str, writes: list[str]) -> None:
    assert _writes(source) == writes


def test_the_shells_write_no_files_and_read_results_by_type() -> None:
    offenders, getattrs = [], []
    for path in sorted([*(ROOT / "ui").glob("*.py"), ROOT / "notebook.py"]):
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text(encoding="utf-8")
        offenders += [f"{rel}: {w}" for w in _writes(source) if (rel, w) not in ALLOWED]
        if rel in ("ui/tab_clean.py", "notebook.py") and _getattr_reads(source):
            getattrs.append(rel)
    assert offenders == [], "file writes belong in the core: " + "; ".join(offenders)
    assert getattrs == [], "read the core's results by their types: " + ", ".join(getattrs)
