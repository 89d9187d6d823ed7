"""What both searches share (`model/tune.py`, Optuna, and `annotate/tune_detector.py`, Ultralytics' tuner): the
best trial, the choice between the best trial's model and the final run (`choose_promoted`), and what a search
leaves in its run folder: the trials as CSV text, and a PNG of each trial's score with the best so far (trials
without a score marked at the bottom: failed in red, pruned in grey).

matplotlib is imported inside `trials_png` only.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from smarthub.errors import SmartHubError

T = TypeVar("T")


def best_trial(trials: Sequence[T], *, score: Callable[[T], float | None], seconds: Callable[[T], float],
               kept: str) -> T:
    """The completed trial with the highest score (the faster one on a tie).

    Raises:
        SmartHubError: no trial has a score; the message lists the first notes and ends with `kept` (what stays).
    """
    done = [t for t in trials if score(t) is not None]
    if not done:
        reasons = "; ".join(f"trial {getattr(t, 'number')}: {getattr(t, 'note')}" for t in trials[:3])
        raise SmartHubError(f"no tuning trial completed ({len(trials)} tried: {reasons}); {kept}")
    return max(done, key=lambda t: (score(t), -seconds(t)))


@dataclass(frozen=True)
class Promoted:
    """Which model a tuned run keeps ('final': the final run; 'trial': the best trial's own model), both validation
    scores, and the one line that says why."""

    promoted: str
    metric: str
    trial_score: float | None
    final_score: float | None
    line: str

    def to_json(self) -> dict[str, Any]:
        return {"promoted": self.promoted, "metric": self.metric, "trial_score": self.trial_score,
                "final_score": self.final_score, "why": self.line}


def choose_promoted(trial_score: float | None, final_score: float | None, *, metric: str,
                    why_not: str = "") -> Promoted:
    """The better on validation of the best trial's model and the final run (pure). The final run must be higher:
    a tie keeps the trial's model. `why_not`: why there is no final score (no final run, or it failed)."""
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    if final_score is not None and (trial_score is None or final_score > trial_score):
        return Promoted("final", metric, trial_score, final_score, f"the final run is better: validation {metric} "
                                                                   f"{f(final_score)} against the best trial's "
                                                                   f"{f(trial_score)}")
    reason = why_not or ("the final run has no validation score" if final_score is None
                         else f"the final run reached {f(final_score)}, not better")
    return Promoted("trial", metric, trial_score, final_score,
                    f"kept the best trial's model (validation {metric} {f(trial_score)}): {reason}")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """`header` and `rows` as CSV text ("\\n" line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def trials_png(trials: Sequence[tuple[int, float | None, str]], *, ylabel: str, title: str,
               ylim: tuple[float, float] | None = None) -> bytes:
    """A PNG of (number, score or None, state) per trial: the scores, the best so far as a step line, and an x at
    the bottom for each trial without a score (red when its state is 'failed', grey otherwise)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    done = [(n, s) for n, s, _ in trials if s is not None]
    ax.plot([n for n, _ in done], [s for _, s in done], "o", label="trial")
    best, xs, ys = -math.inf, [], []
    for number, score, _ in trials:
        best = max(best, score) if score is not None else best
        if best > -math.inf:
            xs.append(number)
            ys.append(best)
    ax.step(xs, ys, where="post", label="best so far")
    for number, score, state in trials:
        if score is None:
            ax.plot([number], [0.0], "x", color="red" if state == "failed" else "grey")
    ax.set(xlabel="trial", ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
