"""The review signals in one table: every reason the review can show an image, what it means, how it is scored.

A signal is a pure function of `Evidence` (arrays over the scored images) returning a mask. What reads the table:
- `ranking.triage`: an image's kind is its signal of lowest `precedence` (wrong > duplicate > unsure > outlier >
  quality), '' when none;
- `review.queue`: each image's `Suspect.tags` are the signals with `tag=True` that flag it, and
  `ReviewResult.filter_counts` counts them;
- `records`: KINDS, FILTERS and QUALITY_ISSUES;
- `review.expand_filters` (what `--include` and the app's boxes accept), the CLI's `--include` help
  (`include_help`) and the Clean tab's "also show" boxes and kind menu (`FILTERS`, `KINDS`, `filter_count`).

A new signal is one `Signal(...)` line in SIGNALS, with its evidence read from a field of `Evidence` (add the field,
and fill it in `review.queue` from the `ReviewResult` field that holds it, when no present one carries it).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smarthub.errors import SmartHubError

if TYPE_CHECKING:  # numpy is imported where the masks are computed: the CLI's help reads this table
    import numpy as np

QUALITY = "quality"  # the filter that stands for every image-quality issue (cleanvision, `clean/quality.py`)


@dataclass(frozen=True)
class Evidence:
    """What the signals read, one row per scored image.

    labels: given class index; probs: out-of-sample probabilities [n, classes]; issues: cleanlab's label-issue
    mask (the default queue); threshold: the 'unsure' threshold; duplicate: a (near) duplicate filed under another
    class (from `ReviewResult.duplicate_of`); outlier: from `ReviewResult.outliers`; quality: the image-quality
    issues of each image (`ReviewResult.quality_by_sha`).
    """

    labels: np.ndarray
    probs: np.ndarray
    issues: np.ndarray
    threshold: float
    duplicate: np.ndarray  # boolean masks
    outlier: np.ndarray
    quality: Sequence[tuple[str, ...]] = ()

    @property
    def p_given(self) -> np.ndarray:
        import numpy as np

        return self.probs[np.arange(len(self.labels)), self.labels]

    def none(self) -> np.ndarray:
        """A mask that flags nothing."""
        import numpy as np

        return np.zeros(len(self.labels), dtype=bool)


@dataclass(frozen=True)
class Signal:
    """One reason to show an image.

    flags: the images it flags (a mask). tag: the mask is a tag of `Suspect.tags`, counted in
    `ReviewResult.filter_counts` and accepted by `--include`. filter: a box of its own in the app and a name in
    the CLI help. precedence: the signal is a `Suspect.kind`, the lowest precedence among an image's kinds
    wins (None: a tag only). kind_flags: the images of that kind when not `flags`. group: the filter
    that stands for this signal and the others of its group ('quality').
    """

    name: str
    description: str
    flags: Callable[[Evidence], np.ndarray]
    tag: bool = True
    filter: bool = True
    precedence: int | None = None
    kind_flags: Callable[[Evidence], np.ndarray] | None = None
    group: str = ""


def _quality_issue(name: str, description: str) -> Signal:
    def flags(ev: Evidence) -> np.ndarray:
        import numpy as np

        if not len(ev.quality):
            return ev.none()
        return np.fromiter((name in q for q in ev.quality), dtype=bool, count=len(ev.labels))
    return Signal(name, description, flags, filter=False, group=QUALITY)


def _any_quality(ev: Evidence) -> np.ndarray:
    import numpy as np

    if not len(ev.quality):
        return ev.none()
    return np.fromiter((bool(q) for q in ev.quality), dtype=bool, count=len(ev.labels))


# In display order: the kind menu, the filter boxes, the tags and the counts follow it.
SIGNALS: tuple[Signal, ...] = (
    Signal("wrong", "the most probable class is not the given one",
           lambda ev: ev.probs.argmax(axis=1) != ev.labels, tag=False, filter=False, precedence=0),
    Signal("unsure", "the given label's probability is below the threshold",
           lambda ev: ev.p_given < ev.threshold, precedence=2,
           kind_flags=lambda ev: (ev.p_given < ev.threshold) | ev.issues),
    Signal("duplicate", "a near duplicate of an image filed under another class",
           lambda ev: ev.duplicate, precedence=1),
    Signal("outlier", "unlike the rest of the images", lambda ev: ev.outlier, precedence=3),
    Signal(QUALITY, "any image-quality issue", _any_quality, tag=False, precedence=4),
    _quality_issue("blurry", "blurry"),
    _quality_issue("dark", "dark"),
    _quality_issue("light", "overexposed"),
    _quality_issue("low_information", "little content"),
    _quality_issue("odd_aspect_ratio", "an unusual aspect ratio"),
    _quality_issue("odd_size", "an unusual size"),
)


def _table(signals: Sequence[Signal] | None) -> Sequence[Signal]:
    """`signals`, or the registry as it is now (read at call time, so a signal added to SIGNALS shows everywhere)."""
    return SIGNALS if signals is None else signals


def by_name(name: str, signals: Sequence[Signal] | None = None) -> Signal:
    """The signal called `name` (KeyError when none is)."""
    signals = _table(signals)
    for s in signals:
        if s.name == name:
            return s
    raise KeyError(name)


def kinds(signals: Sequence[Signal] | None = None) -> tuple[str, ...]:
    """The `Suspect.kind` values, in display order."""
    signals = _table(signals)
    return tuple(s.name for s in signals if s.precedence is not None)


def filters(signals: Sequence[Signal] | None = None) -> tuple[str, ...]:
    """The filters a user turns on besides the default queue (a group stands for its members)."""
    signals = _table(signals)
    return tuple(s.name for s in signals if s.filter)


def tags(signals: Sequence[Signal] | None = None) -> tuple[str, ...]:
    """The signals that tag suspects and are counted, in display order."""
    signals = _table(signals)
    return tuple(s.name for s in signals if s.tag)


def members(group: str, signals: Sequence[Signal] | None = None) -> tuple[str, ...]:
    """The signals a group filter stands for."""
    signals = _table(signals)
    return tuple(s.name for s in signals if s.group == group)


# the registry's names as it was imported (records and older callers read these); the functions above read it live
KINDS = kinds()
FILTERS = filters()
TAGS = tags()
QUALITY_ISSUES = members(QUALITY)


class UnknownFilterError(SmartHubError):
    """A filter name the registry does not know; `name` and `known` let each shell phrase it."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown filter {name!r}: use {', '.join(known)}")
        self.name = name
        self.known = tuple(known)


def expand_filters(include: Iterable[str], signals: Sequence[Signal] | None = None) -> frozenset[str]:
    """Filter names → tags (a group stands for its members); unknown names are refused."""
    signals = _table(signals)
    groups = {s.name for s in signals if members(s.name, signals)}
    known = filters(signals) + tuple(t for t in tags(signals) if t not in filters(signals))
    out: set[str] = set()
    for name in include:
        name = name.strip()
        if not name:
            continue
        if name in groups:
            out.update(members(name, signals))
        elif name in known:
            out.add(name)
        else:
            raise UnknownFilterError(name, known)
    return frozenset(out)


def filter_count(name: str, counts: Mapping[str, int], signals: Sequence[Signal] | None = None) -> int | None:
    """Images a filter shows from `ReviewResult.filter_counts` (a group: the sum of its members); None when
    the counts do not say (no review yet)."""
    signals = _table(signals)
    if not counts:
        return None
    group = members(name, signals)
    return sum(counts.get(m, 0) for m in group) if group else counts.get(name)


def include_help(signals: Sequence[Signal] | None = None) -> str:
    """The list of filters for the CLI's --include help: each with its description, a group with its members."""
    signals = _table(signals)
    parts = []
    for s in signals:
        if not s.filter:
            continue
        group = members(s.name, signals)
        extra = f"; or one of {', '.join(group)}" if group else ""
        parts.append(f"{s.name} ({s.description}{extra})")
    return ", ".join(parts)


def tag_masks(ev: Evidence, signals: Sequence[Signal] | None = None) -> dict[str, np.ndarray]:
    """Each tag signal's mask over the scored images, in display order."""
    import numpy as np

    signals = _table(signals)
    return {s.name: np.asarray(s.flags(ev), dtype=bool) for s in signals if s.tag}


def kind_of(ev: Evidence, signals: Sequence[Signal] | None = None) -> np.ndarray:
    """Each image's kind: the flagging kind signal of lowest precedence, '' when none flags it."""
    import numpy as np

    signals = _table(signals)
    kind = np.full(len(ev.labels), "", dtype=object)
    ranked = sorted((s for s in signals if s.precedence is not None), key=lambda s: -int(s.precedence or 0))
    for s in ranked:  # highest precedence number first: a lower one overwrites it
        kind[np.asarray((s.kind_flags or s.flags)(ev), dtype=bool)] = s.name
    return kind
