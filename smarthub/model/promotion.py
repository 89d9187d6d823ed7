"""What a promotion did, as facts (run ids, the policy, the comparison), for each shell to phrase its next step:
the CLI names its command (`smarthub models promote …`), the app its buttons (Promote, Undo last promotion).

`model/runs.py` decides, switches and records; this module reads its results into typed records.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smarthub.errors import SmartHubError
from smarthub.model import runs
from smarthub.workspace import Workspace


@dataclass(frozen=True)
class Promotion:
    """A promotion by hand: `run_id` is the model in use now; `previous` the one in use before (what undoing goes
    back to; None when there was none); `changed` False when `run_id` already was the model in use."""

    run_id: str
    previous: str | None
    changed: bool
    export_path: Path


def promote(ws: Workspace, run_id: str) -> Promotion:
    """`runs.promote` (run id or PREVIOUS), returning what it did.

    Raises:
        ModelError: unknown, deleted or broken run; nothing to undo. SmartHubError: a file cannot be written.
    """
    try:
        before = runs.read_pointer(ws)
    except SmartHubError:  # a broken pointer: runs.promote repairs it (or says what is wrong)
        before = None
    runs.promote(ws, run_id)
    after = runs.read_pointer(ws) or {}
    now = str(after.get("run_id") or run_id)
    changed = before is None or before.get("run_id") != now
    previous = after.get("previous") if changed else (before or {}).get("previous")
    return Promotion(run_id=now, previous=str(previous) if previous else None, changed=changed,
                     export_path=ws.export_path)


def outcome_of(promotion: Mapping[str, Any] | None) -> runs.RunOutcome | None:
    """The typed `runs.RunOutcome` from a training report's "promotion" entry (None when the report has none)."""
    if not promotion or "run_id" not in promotion:
        return None
    comparison = promotion.get("comparison")
    fields = set(runs.Comparison.__dataclass_fields__)
    return runs.RunOutcome(
        run_id=str(promotion["run_id"]), run_dir=Path(str(promotion.get("run_dir", ""))),
        policy=str(promotion.get("policy", "")), promoted=bool(promotion.get("promoted")),
        previous=promotion.get("previous"),
        comparison=runs.Comparison(**{k: v for k, v in comparison.items() if k in fields})
        if isinstance(comparison, Mapping) else None,
        message=str(promotion.get("message", "")))


def figures(outcome: runs.RunOutcome) -> str:
    """Both models' validation accuracy side by side, or why they cannot be compared ('' without a comparison)."""
    c = outcome.comparison
    if c is None:
        return ""
    if not c.comparable:
        return f"cannot compare with the promoted run {outcome.previous}: {c.reason}"
    where = (f"the same {c.n_shared} validation images" if c.same_set
             else f"the {c.n_shared} validation images both runs held out")
    return (f"validation accuracy {c.new_accuracy:.3f} (new) vs {c.current_accuracy:.3f} "
            f"(promoted run {outcome.previous}) on {where}")
