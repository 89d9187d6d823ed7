"""Stage 2's decisions: whether fine-tuning runs at all, how long, and which epoch is kept.

Pure rules (`little_to_gain`, `fine_tuning_pays`, `plan_epochs`, `earliest_stop`) take scores and timings and
return decisions; the fastai callbacks (`make_keep_best`, `make_probe`, `make_deadline`) apply them inside a
fit. `KeepBest` keeps the best epoch's weights in memory (no files). Measured in bench/RESULTS.md (time to
accuracy).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from smarthub.errors import SmartHubError
from smarthub.model.lpft import HeadScore

# The stage-2 probe (`fine_tuning_pays`): judged after this share of the first epoch's steps (at least
# PROBE_MIN_STEPS), on validation accuracy against the head's, with a tolerance of PROBE_TOLERANCE_SE standard
# errors for the warm-up's dip; measured in bench/RESULTS.md (time to accuracy)
PROBE_EPOCH_SHARE = 0.15
PROBE_MIN_STEPS = 3
PROBE_TOLERANCE_SE = 4.0
# Stage 2 is skipped when fixing FIXABLE_SHARE of the head's validation errors would stay within HEADROOM_Z
# standard deviations of their count (`little_to_gain`): the gain could not be told from noise. The share is
# above the most any kept fine-tune fixed on bench/time_to_accuracy.py's 16 splits (0-39 %, mean 22 %)
HEADROOM_Z = 2.0
FIXABLE_SHARE = 0.5


def earliest_stop(epochs: int, pct_start: float) -> int:
    """The first epoch after which a one-cycle fit (warm-up for `pct_start` of it, then cosine annealing) may
    stop early: the one whose end finds the rate below half its peak. Before it, accuracy dips and recovers."""
    return min(epochs, math.ceil(epochs * (pct_start + (1.0 - pct_start) / 2)))


def make_keep_best(*, baseline: HeadScore | None, patience: int, earliest: int = 0) -> Any:
    """A fastai Callback that, after each epoch, keeps the best weights so far in memory (best = highest
    validation accuracy, then lowest validation loss; `baseline` is the fitted head's score, epoch 0), ends the
    fit after `patience` epochs in a row that improved neither on the best fine-tuning epoch nor on the epoch
    before them (never before epoch `earliest`: see `earliest_stop`), and restores the best weights (the
    head's, if no epoch beat it) when the fit ends.

    The stop compares fine-tuning epochs with each other, not with the head, and a run that is still climbing
    is not stalled: at the one-cycle peak the first epochs dip below the head and climb past it as the rate
    anneals (bench/RESULTS.md, time to accuracy)."""
    from fastai.callback.core import Callback, CancelFitException

    class KeepBest(Callback):
        order = 75  # after Recorder (50) and the progress callback (70) have the epoch: a stop here loses no row

        def __init__(self) -> None:
            self.best_key = (-math.inf, -math.inf) if baseline is None else (baseline.accuracy, -baseline.valid_loss)
            self.best_epoch = 0
            self.tuned_key = (-math.inf, -math.inf)  # the best fine-tuning epoch's
            self.last_key = (-math.inf, -math.inf)  # the previous epoch's
            self.stalled = 0  # epochs in a row that beat neither
            self.best_state: dict | None = None
            self.epochs_run = 0
            self.stopped_early = False
            self.moved = False  # weights changed since the last epoch's end (a fit cut short mid-epoch)

        def before_fit(self) -> None:
            if baseline is not None:
                self.best_state = copy.deepcopy(_unwrapped(self.learn.model).state_dict())

        def after_batch(self) -> None:
            if self.training:
                self.moved = True

        def after_epoch(self) -> None:
            self.epochs_run += 1
            self.moved = False
            rec = self.learn.recorder
            names = list(rec.metric_names[1:])
            values = dict(zip(names, rec.final_record))
            acc, loss = values.get("accuracy"), values.get("valid_loss")
            key = (float(acc) if acc is not None else -math.inf, -float(loss) if loss is not None else -math.inf)
            if key > self.best_key:
                self.best_key, self.best_epoch = key, self.epochs_run
                self.best_state = copy.deepcopy(_unwrapped(self.learn.model).state_dict())
            self.stalled = 0 if key > self.tuned_key or key > self.last_key else self.stalled + 1
            self.tuned_key, self.last_key = max(self.tuned_key, key), key
            if self.stalled >= patience and earliest <= self.epochs_run < self.n_epoch:
                self.stopped_early = True
                raise CancelFitException()

        def after_fit(self) -> None:
            if self.best_state is not None and (self.best_epoch != self.epochs_run or self.moved):
                _unwrapped(self.learn.model).load_state_dict(self.best_state)
            self.best_state = None

    return KeepBest()


@dataclass(frozen=True)
class ProbeOutcome:
    """What the first `steps` fine-tuning steps showed: the validation score then, whether it beat the fitted head
    (`pays`), and the measured seconds per training step and per validation pass (for a budget's plan)."""

    steps: int
    score: HeadScore
    pays: bool
    step_s: float
    valid_s: float


def probe_length(steps_per_epoch: int) -> int:
    """How many stage-2 steps the probe runs before judging: PROBE_EPOCH_SHARE of an epoch, at least
    PROBE_MIN_STEPS (never more than an epoch)."""
    return max(1, min(steps_per_epoch, max(PROBE_MIN_STEPS, math.ceil(PROBE_EPOCH_SHARE * steps_per_epoch))))


def head_errors(head: HeadScore, n_valid: int) -> tuple[int, float]:
    """(validation images the head gets wrong, the noise of that count: HEADROOM_Z standard deviations of a
    binomial count at the head's accuracy)."""
    p = min(max(head.accuracy, 0.0), 1.0) if not math.isnan(head.accuracy) else 0.0
    return round((1.0 - p) * n_valid), HEADROOM_Z * math.sqrt(n_valid * p * (1.0 - p))


def little_to_gain(head: HeadScore, *, n_valid: int) -> bool:
    """True when a fine-tune that fixed FIXABLE_SHARE of the head's validation errors (more than any did on the
    bench) would still be within the noise of their count (`head_errors`): it could not show a gain on this
    validation set, so stage 2 is skipped.

    Measured in bench/RESULTS.md (time to accuracy): on the photo set (crops of eight photos) the head gets 47
    of 48 right and no fine-tuning epoch beats it; on the shipped demo (16 validation images, 96 px) the head
    gets 10 right and none of six fine-tuning epochs beats it; on Fashion-MNIST and openclipart the head leaves
    31-42 errors, half of which is above their noise (10-11) with room to spare, and fine-tuning gains 2-10
    points."""
    errors, noise = head_errors(head, n_valid)
    return n_valid > 0 and FIXABLE_SHARE * errors <= noise


def skip_reason(head: HeadScore, *, n_valid: int) -> str | None:
    """The line that says why stage 2 is skipped (`little_to_gain`), or None when it runs."""
    if not little_to_gain(head, n_valid=n_valid):
        return None
    errors, noise = head_errors(head, n_valid)
    if errors <= noise:
        return (f"the head gets {errors} of {n_valid} validation images wrong, within the noise of that count "
                f"(±{noise:.1f}): fine-tuning could not show a gain; kept the head")
    return (f"the head gets {errors} of {n_valid} validation images wrong: fixing {FIXABLE_SHARE:.0%} of them, "
            f"more than fine-tuning fixed on the benchmarks, would be within the noise of that count "
            f"(±{noise:.1f}): fine-tuning could not show a gain; kept the head")


def fine_tuning_pays(head: HeadScore, probe: HeadScore, *, n_valid: int) -> bool:
    """The stop rule after the probe: fine-tuning goes on unless its validation accuracy has fallen more than
    PROBE_TOLERANCE_SE standard errors (of the head's accuracy on `n_valid` images, at least one image's worth)
    below the head's.

    Measured in bench/RESULTS.md (time to accuracy): at the one-cycle warm-up the first epochs of Fashion-MNIST
    and openclipart dip a few points below the head and climb past it later (Fashion-MNIST split 42: 0.765 and
    0.730 after 4 and 8 of 25 steps, head 0.795, kept 0.845), so a probe cannot ask for a win yet; it catches a
    fine-tune that collapses (a rate far too high, a recipe that does not suit the data)."""
    if math.isnan(probe.accuracy) or n_valid <= 0:
        return False
    p = min(max(head.accuracy, 0.0), 1.0)
    se = max(math.sqrt(p * (1.0 - p) / n_valid), 1.0 / n_valid)
    return probe.accuracy >= head.accuracy - PROBE_TOLERANCE_SE * se


def make_probe(*, at_step: int, baseline: HeadScore, n_valid: int, on_probe: Any) -> Any:
    """A fastai Callback that, after `at_step` training steps, scores the model on the validation set
    (`valid_score`), times the steps and that pass, and hands a ProbeOutcome to `on_probe(outcome)`; when that
    returns False the fit ends there (make_keep_best then restores the best weights: the head's)."""
    import time

    from fastai.callback.core import Callback, CancelFitException

    class Probe(Callback):
        order = 80  # after KeepBest (75) has seen the batch

        def __init__(self) -> None:
            self.steps = 0
            self.first_done = 0.0
            self.outcome: ProbeOutcome | None = None
            self.cancelled = False

        def after_batch(self) -> None:
            if not self.training or self.outcome is not None:
                return
            self.steps += 1
            now = time.monotonic()
            if self.steps == 1:
                self.first_done, self.started = now, now
            if self.steps < at_step:
                return
            timed = self.steps - 1
            step_s = (now - self.first_done) / timed if timed else now - self.started
            t0 = time.monotonic()
            score = valid_score(self.learn)
            valid_s = time.monotonic() - t0
            self.outcome = ProbeOutcome(steps=self.steps, score=score, pays=fine_tuning_pays(baseline, score, n_valid=n_valid),
                                        step_s=step_s, valid_s=valid_s)
            if not on_probe(self.outcome):
                self.cancelled = True
                raise CancelFitException()

        def before_batch(self) -> None:
            if self.training and self.steps == 0:
                self.started = time.monotonic()

    return Probe()


class BudgetError(SmartHubError):
    """The time budget cannot hold even the fitted head; `minimum_s` is what this run needs at least here."""

    def __init__(self, message: str, *, minimum_s: float) -> None:
        super().__init__(message)
        self.field = "budget"
        self.minimum_s = minimum_s


@dataclass(frozen=True)
class EpochPlan:
    """How many fine-tuning epochs fit in what is left of a budget (0: keep the head), and why."""

    epochs: int
    epoch_s: float
    left_s: float
    reason: str


def plan_epochs(*, budget_s: float, elapsed_s: float, step_s: float, steps_per_epoch: int, valid_s: float,
                finish_s: float, max_epochs: int) -> EpochPlan:
    """Fine-tuning epochs that end within `budget_s` (pure): an epoch is `steps_per_epoch` steps of `step_s`
    and a validation pass of `valid_s`; `elapsed_s` is spent, `finish_s` is kept for evaluating and saving; at
    most `max_epochs`."""
    epoch_s = max(steps_per_epoch * step_s + valid_s, 1e-9)
    left_s = budget_s - elapsed_s - finish_s
    fits = int(left_s // epoch_s) if left_s > 0 else 0
    epochs = max(0, min(max_epochs, fits))
    if epochs == 0:
        reason = (f"the budget leaves {max(left_s, 0.0):.0f} s, less than one fine-tuning epoch (about {epoch_s:.0f} s "
                  f"here): kept the head")
    elif epochs < max_epochs:
        reason = f"{epochs} of {max_epochs} fine-tuning epochs fit in the budget (about {epoch_s:.0f} s each here)"
    else:
        reason = f"all {max_epochs} fine-tuning epochs fit in the budget (about {epoch_s:.0f} s each here)"
    return EpochPlan(epochs=epochs, epoch_s=epoch_s, left_s=left_s, reason=reason)


def check_head_fits(*, budget_s: float, head_s: float, finish_s: float) -> None:
    """Raise BudgetError when the head alone (`head_s` so far, plus `finish_s` to evaluate and save) overruns
    `budget_s`, saying the least budget that would do on this machine."""
    minimum = math.ceil(head_s + finish_s)
    if head_s + finish_s > budget_s:
        raise BudgetError(f"a budget of {budget_s:g} s is too short: the head alone needs about {minimum} s here "
                          f"(image check, embedding, fit, saving); give at least {minimum} s, or drop the budget; "
                          f"nothing was written, the previous model is unchanged", minimum_s=minimum)


def make_deadline(*, deadline: float, finish_s: float) -> Any:
    """A fastai Callback that ends the fit when the budget's `deadline` (time.monotonic) would be passed: after an
    epoch when another one (as long as the last) and the finishing work (`finish_s`) no longer fit, and within an
    epoch when only the finishing work still fits (make_keep_best then restores the best epoch)."""
    import time

    from fastai.callback.core import Callback, CancelFitException

    class Deadline(Callback):
        order = 85

        def __init__(self) -> None:
            self.epoch_start = 0.0
            self.hit = False

        def before_epoch(self) -> None:
            self.epoch_start = time.monotonic()

        def after_batch(self) -> None:
            if self.training and time.monotonic() + finish_s > deadline:
                self.hit = True
                raise CancelFitException()

        def after_epoch(self) -> None:
            now = time.monotonic()
            if self.epoch < self.n_epoch - 1 and now + (now - self.epoch_start) + finish_s > deadline:
                self.hit = True
                raise CancelFitException()

    return Deadline()


def valid_score(learner: Any) -> HeadScore:
    """Mean cross-entropy and accuracy of the Learner's model on its validation set, taken in the middle of a
    fit (no augmentation, inference mode); every module's training flag and the random generators are put back
    after, so the fit goes on exactly as it would have (a DataLoader draws its base seed from torch's generator,
    and the next batches' augmentation would shift)."""
    import random

    import torch

    model = learner.model
    flags = [(m, m.training) for m in model.modules()]
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    try:
        with torch.inference_mode():
            for xb, yb in learner.dls.valid:
                out = model(xb).as_subclass(torch.Tensor).float()  # fastai's tensor subclasses refuse plain torch functions
                yb = yb.as_subclass(torch.Tensor).long()
                loss_sum += float(torch.nn.functional.cross_entropy(out, yb, reduction="sum"))
                correct += int((out.argmax(dim=1) == yb).sum())
                n += len(yb)
    finally:
        for m, was_training in flags:
            m.training = was_training
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])
    if n == 0:
        return HeadScore(valid_loss=float("nan"), accuracy=float("nan"))
    return HeadScore(valid_loss=loss_sum / n, accuracy=correct / n)


def _unwrapped(model: Any) -> Any:
    """The module inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)
