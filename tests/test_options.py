"""Options records (smarthub/optionspec.py): each default lives in its record, and each shell names a refused
option its own way."""
from __future__ import annotations

import argparse
import ast
import re
import dataclasses
from pathlib import Path

import pytest

import smarthub
from smarthub.annotate.options import DetectOptions, DetectorTrainOptions, ExportOptions
from smarthub.clean.options import ReviewOptions
from smarthub.collect.options import BootstrapOptions
from smarthub.errors import OptionError
from smarthub.model.options import TrainOptions
from smarthub.optionspec import add_arguments, controls, from_args, labels
from smarthub.ui import DEFAULT_HOST, DEFAULT_PORT

RECORDS = (TrainOptions, ReviewOptions, DetectOptions, DetectorTrainOptions, ExportOptions, BootstrapOptions)
RECORD_MODULES = {"model/options.py", "clean/options.py", "annotate/options.py", "collect/options.py",
                  "optionspec.py", "ui/__init__.py"}
# names under which a record's field is passed around elsewhere
# a literal equal to a record's default that is not that option (file, name): why
NOT_THE_OPTION = {
    ("annotate/scenes.py", "seed"): "the seed of the synthetic demo scenes, not a split's",
    ("clean/neighbours.py", "seed"): "the seed of the neighbour index's sampling",
    ("model/tune.py", "seed"): "Optuna's sampler seed",
    ("collect/search.py", "timeout_s"): "the search engine's timeout, not the downloads'",
    ("annotate/export.py", "fmt"): "export_yolo names the format it writes",
    ("model/lpft.py", "num_workers"): "inference loaders always load in the main process",
    ("model/inference.py", "num_workers"): "inference loaders always load in the main process",
}
ALIASES = {"size_px": ("size", "image_size_px"), "arch": ("embedder",), "near_threshold": ("threshold",),
           "timeout_s": ("timeout",), "max_side_px": ("max_side",), "min_side_px": ("min_side",)}


def _literal(node: ast.AST) -> object:
    """The value of a literal constant (or a tuple of them), else a marker that equals nothing."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
    return value


_NOT_LITERAL = object()


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return False  # flags and "not given" are everywhere; a copied number, word or tuple is what drifts
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def record_defaults() -> dict[str, list[object]]:
    """name → the literal defaults records give it (every field, under its own name and its aliases)."""
    out: dict[str, list[object]] = {"port": [DEFAULT_PORT], "host": [DEFAULT_HOST]}
    for record in RECORDS:
        for f in dataclasses.fields(record):
            if f.default is dataclasses.MISSING:
                continue
            for name in (f.name, *ALIASES.get(f.name, ())):
                out.setdefault(name, []).append(f.default)
    return out


def literal_copies(source: str, where: str, defaults: dict[str, list[object]]) -> list[str]:
    """'file:line name=value' for each literal equal to a record's default for that name: a parameter's
    default, a keyword argument, a class attribute, or `.get("name", value)`."""
    found = []

    def check(name: str, node: ast.AST) -> None:
        if (where, name) in NOT_THE_OPTION:
            return
        value = _literal(node)
        if value is not _NOT_LITERAL and any(_same(value, d) for d in defaults.get(name, ())):
            found.append(f"{where}:{node.lineno} {name}={value!r}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            positional = a.posonlyargs + a.args
            for arg, default in zip(positional[len(positional) - len(a.defaults):], a.defaults):
                check(arg.arg, default)
            for arg, default in zip(a.kwonlyargs, a.kw_defaults):
                if default is not None:
                    check(arg.arg, default)
        elif isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg is not None:
                    check(kw.arg, kw.value)
            if (isinstance(node.func, ast.Attribute) and node.func.attr == "get" and len(node.args) == 2
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                check(node.args[0].value, node.args[1])
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
                    check(stmt.target.id, stmt.value)
    return found


def test_no_record_default_is_copied_outside_its_record() -> None:
    root = Path(smarthub.__file__).parent
    defaults = record_defaults()
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel not in RECORD_MODULES:
            found += literal_copies(path.read_text(encoding="utf-8"), rel, defaults)
    assert found == [], "defaults copied outside their record (import the record's default instead):\n" + \
        "\n".join(found)


@pytest.mark.parametrize("snippet,expected", [
    ("def review(ws, *, folds: int = 5): ...", ["x.py:1 folds=5"]),
    ("def f(threshold=0.6): ...", ["x.py:1 threshold=0.6"]),
    ("run(conf=0.25, iou=0.7)", ["x.py:1 conf=0.25", "x.py:1 iou=0.7"]),
    ("report.get('valid_pct', 0.2)", ["x.py:1 valid_pct=0.2"]),
    ("class O:\n    seed: int = 42\n", ["x.py:2 seed=42"]),
    ("p.add_argument('--port', default=7860)\nserve(port=7860)", ["x.py:2 port=7860"]),
    ("split_items(items, split=(0.8, 0.2, 0.0))", ["x.py:1 split=(0.8, 0.2, 0.0)"]),
    ("def embed(*, embedder='mobilenet_v2', size=224): ...", ["x.py:1 embedder='mobilenet_v2'", "x.py:1 size=224"]),
    ("def f(folds=TrainDefaults.folds, threshold=0.5, device=None, head_only=False): ...", []),
], ids=["parameter", "positional-default", "keywords", "dict-get", "class-attribute", "port", "split-tuple",
        "aliases", "not-copies"])
def test_the_copy_finder_finds_a_planted_copy(snippet: str, expected: list[str]) -> None:
    assert literal_copies(snippet, "x.py", record_defaults()) == expected


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.__name__)
def test_records_are_frozen_and_their_flags_round_trip(record: type) -> None:
    default = record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(default, dataclasses.fields(record)[0].name, None)
    parser = argparse.ArgumentParser()
    parser.add_argument("positional", nargs="*")
    add_arguments(parser, record)
    assert from_args(record, parser.parse_args([])) == default  # the flags' defaults are the record's
    for name, c in controls(record).items():  # the app's controls start at the record's values, inside their range
        assert c.value == getattr(default, name)
        if c.minimum is not None and c.value is not None and not isinstance(c.value, (tuple, frozenset)):
            assert c.minimum <= c.value <= (c.maximum if c.maximum is not None else c.value)


@pytest.mark.parametrize("record,argv,field,cli_text,app_text", [
    (ReviewOptions, ["--folds", "1"], "folds", "--folds must be between 2 and 20 (got 1)",
     "'folds' must be between 2 and 20 (got 1)"),
    (TrainOptions, ["--size", "8"], "size_px", "--size must be between 16 and 2048 (got 8)",
     "'image size (px)' must be between 16 and 2048 (got 8)"),
    (DetectorTrainOptions, ["--tune", "f1", "--min-precision", "2"], "min_precision",
     "--min-precision must be in (0, 1], got 2.0", "'min precision' must be in (0, 1], got 2.0"),
    (BootstrapOptions, ["--count", "0"], "count", "--count must be at least 1 (got 0)",
     "'images per label' must be at least 1 (got 0)"),
], ids=["review-folds", "train-size-renamed-flag", "detector-min-precision", "bootstrap-count"])
def test_a_refused_option_is_named_by_each_shell(record: type, argv: list[str], field: str, cli_text: str,
                                                 app_text: str) -> None:
    from smarthub.ui._common import app_message

    parser = argparse.ArgumentParser()
    parser.add_argument("positional", nargs="*")
    add_arguments(parser, record)
    with pytest.raises(OptionError, match=re.escape(cli_text)) as caught:
        from_args(record, parser.parse_args(argv))
    e = caught.value
    assert (e.field, e.owner) == (field, record) and e.args[0].startswith("{" + field + "}")  # the core names no flag
    assert str(e) == cli_text
    assert app_message(e, labels(record)) == app_text


def test_distributed_processes_receive_the_options_whole() -> None:
    from smarthub.cli.train import train_argv
    from smarthub.workspace import Workspace

    options = TrainOptions(arch="resnet18", epochs=3, lr=0.004, head_only=True, probe=False, aug_strength=0.5,
                           device="cpu", promote="never")
    argv = train_argv(Workspace(data_dir=Path("d"), models_dir=Path("m")), options)
    assert argv[:5] == ["train", "--data", "d", "--models", "m"] and argv[5] == "--options-json"
    assert TrainOptions.from_json(argv[6]) == options  # every field, aug_strength too (no flag for it)
