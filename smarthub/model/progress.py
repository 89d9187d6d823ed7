"""What training tells its caller while it runs, and how it is stopped: the floor under model/'s training stack.

data (split, learner, image checks) → fit (LP-FT) → artefacts (report, files) → train (the job) all report
through `TrainProgress`; `should_stop()` ends a run with `TrainingStopped` before anything is written.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from smarthub.errors import SmartHubError

__all__ = ["ProgressFn", "StopFn", "TrainProgress", "TrainingStopped", "report_note", "report_stage"]


@dataclass(frozen=True)
class TrainProgress:
    """A progress report: stage ('checking images', 'resizing images', 'building', 'embedding', 'fitting the
    head', 'head', 'training', 'evaluating', 'saving', 'done'), epoch (1-based, 0 outside the epochs) of
    `epochs`, batch of `batches`, and the metrics so far (train_loss while in an epoch; train/valid loss,
    error_rate, accuracy at an epoch's end, and for 'head', the fitted head's)."""

    stage: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    metrics: dict = field(default_factory=dict)


ProgressFn = Callable[[TrainProgress], object]
StopFn = Callable[[], bool]


class TrainingStopped(SmartHubError):
    """Training was stopped on request before it finished; no artefact was written."""


def report_stage(progress: ProgressFn | None, stage: str, batch: int = 0, batches: int = 0) -> None:
    """A stage outside the epochs (batch of batches when it counts items), if anyone listens."""
    if progress is not None:
        progress(TrainProgress(stage, 0, 0, batch, batches, {}))


def report_note(progress: ProgressFn | None, message: str) -> None:
    """A one-line decision the person should read (stage 'note', metrics {'message': ...})."""
    if progress is not None:
        progress(TrainProgress("note", 0, 0, 0, 0, {"message": message}))
