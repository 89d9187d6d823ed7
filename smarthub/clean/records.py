"""What a review hands out: Suspect and Entry records, and suspects written as .csv or .json."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smarthub.atomicio import atomic_write_json, atomic_write_text
from smarthub.clean.signals import FILTERS, KINDS, QUALITY_ISSUES
from smarthub.errors import SmartHubError
from smarthub.ledger import SOURCE_FIELDS, provenance_for_data_dir

__all__ = ["FILTERS", "KINDS", "QUALITY_ISSUES", "SUSPECT_FIELDS", "Entry", "Suspect", "suspect_rows",
           "write_suspects"]  # KINDS, FILTERS, QUALITY_ISSUES: the signal registry's (clean/signals.py)


@dataclass(frozen=True)
class Suspect:
    """An image the review shows.

    kind and tags: the signals of `clean/signals.py` (SIGNALS) that flag the image.
    kind: wrong (predicted ≠ given), unsure (predicted = given but p_given < threshold, or flagged by
    cleanlab), duplicate (near duplicate of an image filed under another class), outlier (unlike the rest),
    quality (an image-quality issue only).
    tags: every reason that applies: "issue" (in the estimated label issues: the default queue), "unsure",
    "duplicate", "outlier", and the image-quality issues (QUALITY_ISSUES).
    split: "valid" when scored out-of-sample (the scorer never saw its label), "train" when in-sample.
    score: cleanlab label quality in [0, 1], lower is worse.
    suggested / p_suggested: the most probable class other than the given one (the label the page offers;
    the `a` key accepts it) and its probability.
    """

    path: Path
    given: str
    predicted: str
    p_given: float
    p_predicted: float
    score: float
    kind: str
    split: str
    sha256: str = ""
    duplicate_of: Path | None = None
    tags: tuple[str, ...] = ()
    suggested: str = ""
    p_suggested: float = 0.0


@dataclass(frozen=True)
class Entry:
    """One image of the dataset as the ranking sees it."""

    path: Path
    label: str
    sha256: str


SUSPECT_FIELDS = ("path", "given", "predicted", "p_given", "p_predicted", "suggested", "p_suggested", "score",
                  "kind", "split", "sha256", "duplicate_of", "tags")


def suspect_rows(suspects: Iterable[Suspect], *, base: Path | None = None) -> list[dict[str, Any]]:
    """Suspects as plain dicts (paths relative to `base` when inside it)."""
    def show(p: Path | None) -> str:
        if p is None:
            return ""
        return p.relative_to(base).as_posix() if base is not None and p.is_relative_to(base) else str(p)

    return [{"path": show(s.path), "given": s.given, "predicted": s.predicted, "p_given": round(s.p_given, 4),
             "p_predicted": round(s.p_predicted, 4), "suggested": s.suggested,
             "p_suggested": round(s.p_suggested, 4), "score": round(s.score, 4), "kind": s.kind, "split": s.split,
             "sha256": s.sha256, "duplicate_of": show(s.duplicate_of), "tags": " ".join(s.tags)} for s in suspects]


def write_suspects(suspects: Sequence[Suspect], out: Path, *, base: Path | None = None) -> Path:
    """Write suspects worst first to .csv or .json, atomically.

    Raises:
        SmartHubError: other suffix.
    """
    import csv
    import io

    out = Path(out)
    sources = provenance_for_data_dir(base)  # where each image came from, when the ledger knows
    rows = [{**row, **sources.columns(sha256=s.sha256, path=s.path)}
            for row, s in zip(suspect_rows(suspects, base=base), suspects)]
    if out.suffix.lower() == ".json":
        atomic_write_json(out, rows)
    elif out.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SUSPECT_FIELDS + SOURCE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    else:
        raise SmartHubError(f"--out {out}: use a .csv or .json file name")
    return out
