"""The one source of training defaults: `TrainOptions` (read by the CLI, the app, the demo and review).

Kept free of heavy imports so `smarthub --help` can read the defaults without loading numpy or torch.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from smarthub.durations import DurationError
from smarthub.errors import OptionError
from smarthub.model.devices import DEFAULT_DEVICE, DEVICE_CHOICES
from smarthub.optionspec import check, option

# Measured in bench/train_speed.py: on a 2-core CPU, DataLoader worker processes compete with torch's
# compute threads and slow training down, so images are loaded in the main process by default.
DEFAULT_NUM_WORKERS = 0
# Stage 2 (fine-tuning from the fitted head): the peak learning rate of the head; the body gets a tenth of it,
# and BatchNorm stays on its ImageNet statistics (lpft.make_frozen_bn). Measured in bench/RESULTS.md (time to
# accuracy; openclipart drawings on 4 seeded splits, Fashion-MNIST): 2e-3 beat 1e-3 and 3e-3, a body at a third
# or a hundredth, label smoothing, and BatchNorm re-estimating its statistics (which lost 40 points in the first
# epoch on Fashion-MNIST: the fitted head no longer matches the features)
DEFAULT_FINETUNE_LR = 2e-3
FINETUNE_BODY_LR_DIV = 10
FINETUNE_PCT_START = 0.25  # share of the one-cycle schedule spent warming up to the peak rate (fastai's default)
# Stage 2 keeps the body's leading blocks frozen up to this output stride (the stem and the stride-2/4/8 blocks
# that see edges and textures; `lpft.frozen_early_layers`). On MobileNetV2 at 96 px stage 2 takes ~37 % less
# time with the same accuracy (bench/RESULTS.md, time to accuracy: openclipart 5 splits), which pays for the
# 5th and 6th epochs of DEFAULT_EPOCHS. 0 fine-tunes every layer.
DEFAULT_FREEZE_STRIDE = 8
# Stage-2 epochs: 6 (early blocks frozen) end 7.4 points above fastai's fine_tune(3) on openclipart drawings and
# 13.0 on Fashion-MNIST, in 0.78x and 0.95x its time (8 splits each); 5 epochs: +4.4 and +12.3 in 0.70x / 0.88x.
DEFAULT_EPOCHS = 6
# Training from scratch (no pretrained body): fit_one_cycle's peak rate
DEFAULT_SCRATCH_LR = 1e-3
# Kept free at the end of a budgeted run for the evaluation pass and the atomic writes (export.pkl, report…)
SAVE_ALLOWANCE_S = 3.0
AUG_STRENGTH_MAX = 3.0
PROMOTE_POLICIES = ("if-better", "always", "never")
FREEZE_STRIDES = (0, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class TrainOptions:
    """Everything that decides a training run (all of it is recorded in report.json).

    The recipe (pretrained): stage 1 fits a linear head on cached frozen-body embeddings (seconds); stage 2
    fine-tunes the whole network from that head for `epochs` epochs (one-cycle, head at `lr` or
    DEFAULT_FINETUNE_LR, body at a tenth, BatchNorm on its pretrained statistics) with fastai's
    `aug_transforms`, the body's blocks up to output stride `freeze_stride` kept frozen (0: none), stopping after
    `patience` fine-tuning epochs in a row that beat neither the best epoch nor the one before them, once the rate
    has annealed below half its peak (`stopping.make_keep_best`), and keeping the best epoch (the fitted head counts
    as epoch 0). Stage 2 goes on only while it pays (`probe`): its first steps must lower the validation loss
    below the head's (`stopping.fine_tuning_pays`), else the head is kept. `budget_s`: the whole run (check,
    embedding, head, fine-tuning, saving) plans its epochs to end within that many wall seconds on this machine
    (`stopping.plan_epochs`, from the probe's timing) and keeps the best model by then. `head_only` skips stage 2. From scratch (`pretrained=False`):
    `epochs` epochs of fit_one_cycle, best epoch kept. `device`: auto, cpu, cuda, cuda:N or mps (model/devices.py).
    The one source of these defaults, their ranges and help (smarthub/optionspec.py): the CLI, the app, the
    notebook and a distributed run's JSON read them here.
    """

    arch: str = option("mobilenet_v2", metavar="NAME", label="architecture",
                       help="model architecture: mobilenet_v2, resnet18/34/50, efficientnet_b0, convnext_tiny, "
                            "... or a timm name")
    epochs: int = option(DEFAULT_EPOCHS, metavar="N", range=(1, None), label="epochs", ui=(1, 30, 1),
                         help="fine-tuning epochs in total, after the head is fitted on cached embeddings; training "
                              "stops earlier when validation stops improving")
    size_px: int = option(224, flag="--size", metavar="PX", range=(16, 2048), label="image size (px)",
                          ui=(32, 512, 32),
                          help="image side in pixels")
    batch_size: int = option(32, metavar="N", range=(2, None), label="batch size", help="images per batch")
    valid_pct: float = option(0.2, metavar="FRACTION", label="validation share",
                              help="share of each class held out for validation when there are no train/ and valid/ "
                                   "folders")
    seed: int = option(42, metavar="N", help="random seed for the split and training")
    pretrained: bool = option(True, flag="--no-pretrained", label="start from ImageNet weights",
                              help="start from random weights (no ImageNet download needed; much less accurate)")
    num_workers: int = option(DEFAULT_NUM_WORKERS, flag="--workers", metavar="N", range=(0, None),
                              label="loader workers",
                              help=f"DataLoader worker processes (default {DEFAULT_NUM_WORKERS}: load in the main "
                                   f"process)")
    lr: float | None = option(None, metavar="RATE", label="learning rate",
                              help=f"peak learning rate (default {DEFAULT_FINETUNE_LR} fine-tuning, "
                                   f"{DEFAULT_SCRATCH_LR} from scratch)")
    head_only: bool = option(False, label="head only",
                             help="only fit the head on the cached embeddings (seconds), no fine-tuning")
    patience: int = option(2, metavar="N", range=(1, None), label="patience (epochs)",
                           help="stop after N fine-tuning epochs in a row that beat neither the best validation "
                                "accuracy nor the epoch before, once the rate has annealed below half its peak; "
                                "the best epoch, or the head, is kept")
    freeze_stride: int = option(DEFAULT_FREEZE_STRIDE, metavar="N", label="frozen depth (output stride)",
                                help=f"keep the body's early blocks up to output stride N "
                                     f"({', '.join(map(str, FREEZE_STRIDES))}) frozen while fine-tuning (default "
                                     f"{DEFAULT_FREEZE_STRIDE}: the stem and the early blocks; 0 fine-tunes every "
                                     f"layer)")
    device: str = option(DEFAULT_DEVICE, metavar="DEVICE", label="device",
                         help=f"where to run: {DEVICE_CHOICES} (default {DEFAULT_DEVICE}: the best one present; "
                              f"mixed precision on CUDA)")
    promote: str = option("if-better", choices=PROMOTE_POLICIES, label="use the new model",
                          help="make the new run the model in use: if its validation accuracy is not worse than the "
                               "promoted model's on the same images (default), always, or never (`smarthub models`)")
    probe: bool = option(True, flag="--always-fine-tune", label="fine-tune only while it pays",
                         help="always run the fine-tuning epochs (by default they are skipped when the head's "
                              "validation errors are within the noise of their count, and stopped after a short "
                              "probe when accuracy falls far below the head's; the head is kept then)")
    budget_s: float | None = option(None, flag="--budget", cli=False, label="time budget",
                                    help="wall seconds for the whole run (smarthub.durations.parse_duration)")
    aug_strength: float = option(1.0, cli=False, range=(0.0, AUG_STRENGTH_MAX), label="augmentation strength",
                                 help="fastai aug_transforms(mult=...): rotation, zoom, warp, lighting; 0: none "
                                      "(flip neither); 1 is fastai's aug_transforms")

    def __post_init__(self) -> None:
        check(self)
        if not 0.0 < self.valid_pct < 1.0:
            raise OptionError(f"{{valid_pct}} must be between 0 and 1, e.g. 0.2 (got {self.valid_pct})",
                              field="valid_pct", owner=TrainOptions)
        if self.lr is not None and not 0.0 < self.lr < 10.0:
            raise OptionError(f"{{lr}} must be a small positive number, e.g. 0.001 (got {self.lr})", field="lr",
                              owner=TrainOptions)
        if self.freeze_stride not in FREEZE_STRIDES:
            raise OptionError(f"{{freeze_stride}} must be one of {', '.join(map(str, FREEZE_STRIDES))} (got "
                              f"{self.freeze_stride}); 0 fine-tunes every layer", field="freeze_stride",
                              owner=TrainOptions)
        if self.budget_s is not None and not (self.budget_s > 0 and self.budget_s < float("inf")):
            raise DurationError(f"{{budget_s}} must be above zero, e.g. 90s, 5m or 1h30m (got {self.budget_s!r} s)",
                                field="budget_s", owner=TrainOptions)
        if self.head_only and not self.pretrained:
            raise OptionError("{head_only} needs a pretrained body (its embeddings are what the head is fitted on): "
                              "drop {pretrained}, or drop {head_only} to train from scratch", field="head_only",
                              owner=TrainOptions)

    @classmethod
    def from_json(cls, text: str) -> TrainOptions:
        """The record `to_json` wrote (a distributed run's processes receive their options this way)."""
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def recipe(self) -> str:
        """'head-only', 'lp-ft' (head, then fine-tune) or 'scratch'."""
        if not self.pretrained:
            return "scratch"
        return "head-only" if self.head_only else "lp-ft"
