"""Options records: one frozen dataclass per job is the only source of its defaults, choices, ranges and help.

A record declares each field with `option(default, help=…, …)`; then
- `add_arguments(parser, Record)` builds the command line's flags (type, default, choices, help with the default),
- `from_args(Record, namespace)` builds the record back from the parsed flags,
- `controls(Record)` gives the app and the notebook each field's value, range or choices and label,
- `check(record)` (called from a record's `__post_init__`) refuses a value outside its choices or range with an
  OptionError naming the field, which the CLI prints as the `--flag` and the app as the control's label.

Kept free of heavy imports: `smarthub --help` reads every record.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from smarthub.errors import OPTION_META, OptionError, option_flag

__all__ = ["Control", "OptionError", "Spec", "add_arguments", "check", "controls", "default", "flag_of", "from_args",
           "labels", "option", "spec_of"]

_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class Spec:
    """What the shells need to know about one option (kept in the dataclass field's metadata)."""

    help: str
    flag: str | None = None  # the command line's flag (default: --field-name; a bool defaulting to True needs one)
    label: str | None = None  # the app's and the notebook's label (default: the field name in words)
    choices: tuple[Any, ...] | None = None
    range: tuple[float, float] | None = None  # inclusive bounds, checked by `check` (either may be None)
    cli: bool = True  # False: not a flag (set by the command from other flags, or by code)
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # argparse `type` for fields that are not int/float/str
    ui: tuple[float, float, float] | None = None  # the app's slider (min, max, step) where narrower than `range`


def option(default: Any, *, help: str, flag: str | None = None, label: str | None = None,
           choices: Iterable[Any] | None = None, range: tuple[float | None, float | None] | None = None,
           cli: bool = True, metavar: str | None = None, parse: Callable[[str], Any] | None = None,
           ui: tuple[float, float, float] | None = None) -> Any:
    """A record field with its default and what the shells show of it (see `Spec`)."""
    spec = Spec(help=help, flag=flag, label=label, choices=tuple(choices) if choices is not None else None,
                range=range, cli=cli, metavar=metavar, parse=parse, ui=ui)  # type: ignore[arg-type]
    return dataclasses.field(default=default, metadata={OPTION_META: spec})


def spec_of(record: Any, name: str) -> Spec:
    """The Spec of field `name` of a record (class or instance)."""
    for f in dataclasses.fields(record):
        if f.name == name:
            spec = f.metadata.get(OPTION_META)
            if spec is None:
                break
            return spec
    raise KeyError(f"{getattr(record, '__name__', type(record).__name__)} has no option {name!r}")


def _options(record: Any) -> list[tuple[dataclasses.Field, Spec]]:
    return [(f, f.metadata[OPTION_META]) for f in dataclasses.fields(record) if OPTION_META in f.metadata]


def default(record: type, name: str) -> Any:
    """The declared default of field `name` of `record`."""
    return next(f.default for f in dataclasses.fields(record) if f.name == name)


def flag_of(record: type, name: str) -> str:
    """The command line's flag of field `name` (what an OptionError on it prints)."""
    return option_flag(record, name)


def label_of(record: type, name: str) -> str:
    """The app's label of field `name`."""
    spec = spec_of(record, name)
    return spec.label or name.replace("_", " ")


def labels(*records: type) -> dict[str, str]:
    """field → label of every option of `records` (the app's user_errors names a refused option by it)."""
    return {f.name: label_of(r, f.name) for r in records for f, _ in _options(r)}


def _type_of(f: dataclasses.Field, spec: Spec) -> Callable[[str], Any] | None:
    if spec.parse is not None:
        return spec.parse
    base = str(f.type).replace(" | None", "").replace("None | ", "").strip()
    return _TYPES.get(base)


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_arguments(parser: argparse.ArgumentParser | Any, record: type, *, only: Collection[str] | None = None,
                  skip: Collection[str] = (), flags: dict[str, str] | None = None) -> None:
    """Add a flag for each command-line option of `record` (all, or those in `only`, minus `skip`).

    `flags` renames a field's flag for this command (e.g. {"size_px": "--train-size"}); the destination stays
    the field name, so `from_args` works. The help ends with the default unless it says it already or the
    default is None (the help says what leaving it out means).
    """
    for f, spec in _options(record):
        if not spec.cli or (only is not None and f.name not in only) or f.name in skip:
            continue
        flag = (flags or {}).get(f.name) or flag_of(record, f.name)
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                                default=f.default, help=spec.help)
            continue
        shown = "" if "(default" in spec.help or f.default is None else f" (default {_shown(f.default)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": f.default, "help": spec.help + shown}
        kind = _type_of(f, spec)
        if kind is not None:
            kwargs["type"] = kind
        if spec.choices is not None and spec.parse is None:
            kwargs["choices"] = spec.choices
        elif spec.metavar:
            kwargs["metavar"] = spec.metavar
        parser.add_argument(flag, **kwargs)


def from_args(record: type, namespace: argparse.Namespace, **overrides: Any) -> Any:
    """`record` from the flags `add_arguments` added (fields without a flag keep their default), then `overrides`."""
    values = {f.name: getattr(namespace, f.name) for f, spec in _options(record)
              if spec.cli and hasattr(namespace, f.name)}
    return record(**{**values, **overrides})


@dataclass(frozen=True)
class Control:
    """One option as the app and the notebook show it."""

    name: str
    label: str
    value: Any
    help: str
    choices: tuple[Any, ...] | None
    minimum: float | None
    maximum: float | None
    step: float | None

    def slider(self) -> dict[str, Any]:
        """Keyword arguments of a slider for this option (gr.Slider(**c.slider()), ipywidgets alike)."""
        return {"minimum": self.minimum, "maximum": self.maximum, "value": self.value, "step": self.step,
                "label": self.label}


def controls(record: Any) -> dict[str, Control]:
    """name → Control for each option of `record` (a class: its defaults; an instance: its values)."""
    out = {}
    for f, spec in _options(record):
        low, high = spec.range if spec.range is not None else (None, None)
        step = None
        if spec.ui is not None:
            low, high, step = spec.ui
        value = getattr(record, f.name) if not isinstance(record, type) else f.default
        out[f.name] = Control(name=f.name, label=label_of(type(record) if not isinstance(record, type) else record,
                                                          f.name),
                              value=value, help=spec.help, choices=spec.choices, minimum=low, maximum=high,
                              step=step)
    return out


def check(record: Any) -> None:
    """Refuse a field outside its declared choices or range (OptionError naming the field); None is allowed
    where the default is None."""
    for f, spec in _options(record):
        value = getattr(record, f.name)
        if value is None and f.default is None:
            continue
        if spec.choices is not None and value not in spec.choices:
            raise OptionError(f"{{{f.name}}} must be one of {', '.join(map(_shown, spec.choices))} (got {value!r})",
                              field=f.name, owner=type(record))
        if spec.range is not None:
            low, high = spec.range
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise OptionError(f"{{{f.name}}} must be a number (got {value!r})", field=f.name,
                                  owner=type(record)) from None
            if (low is not None and number < low) or (high is not None and number > high) or number != number:
                raise OptionError(f"{{{f.name}}} must be {_bounds(low, high)} (got {_shown(value)})", field=f.name,
                                  owner=type(record))


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"between {_shown(low)} and {_shown(high)}"
    return f"at least {_shown(low)}" if low is not None else f"at most {_shown(high)}"
