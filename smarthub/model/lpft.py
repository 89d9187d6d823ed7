"""Linear probing, then fine-tuning (LP-FT): the head, fitted on frozen-body embeddings, starts the fine-tune.

The Learner's head is `custom_head = AdaptiveAvgPool2d(1) → Flatten → Linear`, exactly the pooled features
`archs.feature_extractor` (and so the embeddings cache) computes: the logistic regression fitted on cached
embeddings *is* the Learner's head, with no approximation (the pickle names only torch modules).
When stage 2 runs, how long, and which epoch is kept is decided in `model/stopping.py`.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

# L2 penalty of the head fit (mean cross-entropy + wd/2 * |W|^2 on standardised features). On the embeddings of
# bench/time_to_accuracy.py's two datasets the head's validation accuracy is flat (within one image) from 1e-3
# to 3e-2 (bench/RESULTS.md, time to accuracy)
HEAD_WEIGHT_DECAY = 3e-3
HEAD_MAX_ITER = 200


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
