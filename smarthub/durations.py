"""Durations a person types ("90s", "5m", "1h30m", "2.5 min") as seconds, and seconds as a person reads them.

One small core module with no heavy imports: `smarthub train --budget`, the app's Train tab, `smarthub tune` and
the detector's training read budgets through `parse_duration`.
"""
from __future__ import annotations

import math
import re

from smarthub.errors import OptionError

_UNITS = {"h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0}
_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


class DurationError(OptionError):
    """A duration that cannot be read, or is not above zero; `field` names the option it was given for."""

    def __init__(self, message: str, *, field: str, owner: type | None = None) -> None:
        super().__init__(message, 
                            field=field, owner=owner)


def parse_duration(text: str | float | int, *, field: str = "budget", owner: type | None = None) -> float:
    """Seconds in `text`: a number of seconds ("90", 90), or numbers with units h/m/s (also min, sec, hours…),
    e.g. "5m", "1h30m", "2m 30s", "1.5h". Raises DurationError (naming `field` of the options record `owner`,
    which each shell names its own way) for anything else, and for zero, negative or non-finite durations."""
    place = "{" + field + "}"
    if isinstance(text, bool):
        raise DurationError(f"{place} must be a duration such as 90s, 5m or 1h30m (got {text!r})", 
                            field=field, owner=owner)
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        if raw.startswith("-"):
            raise DurationError(f"{place} must be above zero (got {text!r}): e.g. 90s, 5m or 1h30m", 
                            field=field, owner=owner)
        seconds, pos, units_seen = 0.0, 0, []
        while pos < len(raw):
            m = _PART.match(raw, pos)
            if not m or m.end() == pos:
                break
            unit = m.group(2) or ("s" if m.end() == len(raw) and not units_seen else "")
            if unit not in _UNITS:
                break
            units_seen.append(unit)
            seconds += float(m.group(1)) * _UNITS[unit]
            pos = m.end()
        if not raw or pos != len(raw):
            raise DurationError(f"{place} must be a duration such as 90s, 5m or 1h30m (got {text!r})", 
                            field=field, owner=owner)
    if not math.isfinite(seconds) or seconds <= 0:
        raise DurationError(f"{place} must be above zero (got {text!r}): e.g. 90s, 5m or 1h30m", 
                            field=field, owner=owner)
    return seconds


def format_duration(seconds: float) -> str:
    """'45 s', '2 min 05 s', '1 h 02 min' (rounded to the second)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
