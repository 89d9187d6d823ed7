"""Linear probing, then fine-tuning (LP-FT): the head, fitted on frozen-body embeddings, starts the fine-tune.

The Learner's head is `custom_head = AdaptiveAvgPool2d(1) → Flatten → Linear`, exactly the pooled features
`archs.feature_extractor` (and so the embeddings cache) computes: the logistic regression fitted on cached
embeddings *is* the Learner's head, with no approximation (the pickle names only torch modules).
`KeepBest` is the early-stopping callback of stage 2: it keeps the best epoch's weights in memory (no files).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from smarthub.errors import SmartHubError

# L2 penalty of the head fit (mean cross-entropy + wd/2 * |W|^2 on standardised features). On the embeddings of
# bench/time_to_accuracy.py's two datasets the head's validation accuracy is flat (within one image) from 1e-3
# to 3e-2 (bench/RESULTS.md, time to accuracy)
HEAD_WEIGHT_DECAY = 3e-3
HEAD_MAX_ITER = 200
# The stage-2 probe (`fine_tuning_pays`): judged after this share of the first epoch's steps (at least
# PROBE_MIN_STEPS), on validation accuracy against the head's, with a tolerance of PROBE_TOLERANCE_SE standard
# errors for the warm-up's dip; measured in bench/RESULTS.md (time to accuracy)
PROBE_EPOCH_SHARE = 0.15
PROBE_MIN_STEPS = 3
PROBE_TOLERANCE_SE = 4.0
# Stage 2 is skipped when the head's validation errors are within this many standard deviations of their count
# (`little_to_gain`): a gain could not be told from noise
HEADROOM_Z = 2.0


@dataclass(frozen=True)
class LinearHead:
    """weight [n_classes, n_features] and bias [n_classes] acting on raw (unstandardised) features."""

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, feats: np.ndarray) -> np.ndarray:
        return np.asarray(feats, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias


@dataclass(frozen=True)
class HeadScore:
    """Validation loss (mean cross-entropy) and accuracy of a head."""

    valid_loss: float
    accuracy: float


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (the previous count is restored after).

    L-BFGS on a head is hundreds of tiny ops: a second OpenMP thread saves nothing when the machine is idle and,
    when another job holds a core, each op waits for the descheduled thread. Measured on 800 × 1280
    embeddings with load ~3 on 2 cores: 1.1 s on one thread, 26-45 s on two (bench/RESULTS.md, time to accuracy).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_linear_head(feats: np.ndarray, labels: np.ndarray, n_classes: int, *,
                    weight_decay: float = HEAD_WEIGHT_DECAY, max_iter: int = HEAD_MAX_ITER) -> LinearHead:
    """Multinomial logistic regression (full-batch L-BFGS, deterministic) on standardised features, folded back
    into one Linear layer on the raw features (on one torch thread: `one_torch_thread`)."""
    with one_torch_thread():
        return _fit_linear_head(feats, labels, n_classes, weight_decay=weight_decay, max_iter=max_iter)


def _fit_linear_head(feats: np.ndarray, labels: np.ndarray, n_classes: int, *, weight_decay: float,
                     max_iter: int) -> LinearHead:
    import torch

    x = torch.as_tensor(np.asarray(feats, dtype=np.float32))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    w = torch.zeros(n_classes, x.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        weight = w / std
        bias = b - weight @ mean
    return LinearHead(weight=weight.numpy().astype(np.float32), bias=bias.numpy().astype(np.float32))


def score_head(head: LinearHead, feats: np.ndarray, labels: np.ndarray) -> HeadScore:
    """Mean cross-entropy and accuracy of `head` on (feats, labels) (pure numpy)."""
    if len(labels) == 0:
        return HeadScore(valid_loss=float("nan"), accuracy=float("nan"))
    logits = head.logits(feats)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    labels = np.asarray(labels, dtype=int)
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    acc = float((logits.argmax(axis=1) == labels).mean())
    return HeadScore(valid_loss=loss, accuracy=acc)


def linear_head_module(n_features: int, n_classes: int) -> Any:
    """pool → flatten → Linear: the Learner's head in the LP-FT recipe (torch modules only)."""
    import torch.nn as nn

    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(n_features, n_classes))


def body_features(learner: Any) -> int:
    """Number of features the Learner's body outputs (the Linear layer's input width)."""
    return int(learner.model[1][-1].in_features)


def set_head(learner: Any, head: LinearHead) -> None:
    """Copy a fitted head into the Learner's Linear layer."""
    import torch

    linear = learner.model[1][-1]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(head.weight))
        linear.bias.copy_(torch.as_tensor(head.bias))


def learner_features(learner: Any, items: list) -> np.ndarray:
    """Pooled body features of `items` computed through the Learner itself (validation transforms, no
    augmentation): the stage-1 input when no embeddings cache is at hand (review's K folds, timm archs)."""
    import torch

    body = learner.model[0]
    pool = learner.model[1][:2]
    dl = learner.dls.test_dl(items, num_workers=0)
    learner.model.eval()
    out = []
    with torch.inference_mode():
        for (xb,) in dl:
            out.append(pool(body(xb)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, body_features(learner)), np.float32)


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
    """True when the head's validation errors are no more than the noise of their count (`head_errors`): even
    a fine-tune that fixed every one could not show a gain on this validation set, so stage 2 is skipped.

    Measured in bench/RESULTS.md (time to accuracy): on the photo set (crops of eight photos) the head gets 47
    of 48 right and no fine-tuning epoch beats it (epoch 1 ties it, later ones fall to 0.90-0.96); on
    Fashion-MNIST and openclipart it leaves 31-41 errors, far above their noise (10-11), and fine-tuning gains
    3-8 points."""
    errors, noise = head_errors(head, n_valid)
    return n_valid > 0 and errors <= noise


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


@contextmanager
def frozen_early_layers(learner: Any, max_stride: int, *, probe_px: int = 64) -> Iterator[int]:
    """Inside the block, the body's leading blocks whose output stride is at most `max_stride` (the stem and the
    early, high-resolution blocks: edges and textures, the most compute per parameter) take no gradient; yields
    how many blocks are frozen and makes every parameter trainable again after.

    Blocks are the children of the body (descending through single-child Sequentials: torchvision's
    `features`); strides are measured by a forward pass of a `probe_px` image through them in turn. A body that
    is not a chain of blocks (a timm wrapper, a transformer) freezes nothing. The last block always trains.
    Backpropagation stops at the first trainable block, so a step skips the frozen blocks' backward pass.
    """
    blocks = leading_blocks(learner.model[0], max_stride, probe_px=probe_px) if max_stride > 0 else []
    for block in blocks:
        block.requires_grad_(False)
    try:
        yield len(blocks)
    finally:
        for block in blocks:
            block.requires_grad_(True)


def leading_blocks(body: Any, max_stride: int, *, probe_px: int = 64) -> list:
    """The body's leading blocks (see `frozen_early_layers`) whose output stride is at most `max_stride`."""
    import torch
    import torch.nn as nn

    blocks = list(body.children())
    while len(blocks) == 1 and isinstance(blocks[0], nn.Sequential):
        blocks = list(blocks[0].children())
    if len(blocks) < 2 or not isinstance(body, nn.Sequential):
        return []
    param = next(body.parameters(), None)
    x = torch.zeros(1, 3, probe_px, probe_px, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    was_training = body.training
    picked = []
    body.eval()
    try:
        with torch.no_grad():
            for block in blocks[:-1]:
                x = block(x)
                if not isinstance(x, torch.Tensor) or x.dim() != 4 or probe_px / x.shape[-1] > max_stride:
                    break
                picked.append(block)
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return []  # not a plain chain of blocks
    finally:
        body.train(was_training)
    return picked


def make_frozen_bn() -> Any:
    """A fastai Callback that keeps every BatchNorm layer on its running statistics while training (affine
    weights still learn): the fine-tune starts from exactly the network the head was fitted on, and small
    augmented batches do not disturb the ImageNet statistics."""
    import torch.nn as nn
    from fastai.callback.core import Callback
    from fastai.callback.training import bn_types

    kinds = (*bn_types, nn.SyncBatchNorm)

    class FrozenBatchNorm(Callback):
        order = 15  # after TrainEvalCallback (-10) has put the model in training mode

        def before_train(self) -> None:
            for m in self.learn.model.modules():
                if isinstance(m, kinds):
                    m.eval()

    return FrozenBatchNorm()


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
