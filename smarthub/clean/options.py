"""The one source of review's defaults: `ReviewOptions` (read by `smarthub review`, the Clean tab and the notebook).

Kept free of heavy imports so `smarthub --help` can read it (smarthub/optionspec.py).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smarthub.clean import signals
from smarthub.errors import OptionError
from smarthub.model.options import TrainOptions
from smarthub.optionspec import check, default, option

METHODS = ("fast", "finetune", "model")
# The one documented default embedder (CLI, app and notebook): the trained model's arch and image size from
# models/report.json when a model exists, else TrainOptions' arch and size (MobileNetV2 at 224 px: its ImageNet
# weights work offline).
DEFAULT_EMBEDDER: str = default(TrainOptions, "arch")
DEFAULT_SIZE_PX: int = default(TrainOptions, "size_px")


def expand_filters(include: Iterable[str]) -> frozenset[str]:
    """Filter names → tags (a group such as 'quality' stands for its members; clean/signals.py's registry);
    unknown names are refused, naming the option."""
    try:
        return signals.expand_filters(include)
    except signals.UnknownFilterError as e:
        raise OptionError(f"unknown filter {e.name!r} for {{include}}: use {', '.join(e.known)}", field="include",
                          owner=ReviewOptions) from e


@dataclass(frozen=True)
class ReviewOptions:
    """How to score and what to show.

    method fast | finetune | model; K folds; the 'unsure' threshold; train: the embedder (arch, size) and
    fine-tune settings (None: `review.default_train_options`); include: filters shown besides the estimated label
    issues (unsure, duplicate, outlier, quality or one quality issue); show_all: rank every image.
    """

    method: str = option("fast", choices=METHODS, cli=False, label="review method",
                         help="fast: cross-validated linear head on embeddings (seconds); finetune: K-fold "
                              "fine-tunes (slow); model: the exported model (in-sample on its training images)")
    folds: int = option(5, range=(2, 20), ui=(2, 10, 1), metavar="K", label="folds", help="cross-validation folds")
    threshold: float = option(0.6, ui=(0.05, 0.95, 0.05), label="unsure below p(given)",
                              help="below this probability of its label an image is 'unsure'")
    train: TrainOptions | None = option(None, cli=False, help="the embedder and fine-tune settings")
    limit: int | None = option(None, range=(1, None), metavar="N", label="limit", help="keep only the N worst")
    include: frozenset[str] = option(frozenset(), cli=False, label="also show",
                                     help="filters shown besides the estimated label errors")
    show_all: bool = option(False, flag="--all", label="all images", help="list every image, worst first")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise OptionError(f"unknown review method {self.method!r}: use one of {', '.join(METHODS)}",
                              field="method", owner=ReviewOptions)
        check(self)
        if not 0.0 < float(self.threshold) < 1.0:
            raise OptionError(f"{{threshold}} must be between 0 and 1, got {self.threshold}", field="threshold",
                              owner=ReviewOptions)
        object.__setattr__(self, "include", expand_filters(self.include))
