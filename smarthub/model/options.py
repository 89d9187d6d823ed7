"""The one source of training defaults: `TrainOptions` (read by the CLI, the app, the demo and review).

Kept free of heavy imports so `smarthub --help` can read the defaults without loading numpy or torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from smarthub.durations import DurationError
from smarthub.errors import SmartHubError

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


@dataclass
class TrainOptions:
    """Everything that decides a training run (all of it is recorded in report.json).

    The recipe (pretrained): stage 1 fits a linear head on cached frozen-body embeddings (seconds); stage 2
    fine-tunes the whole network from that head for `epochs` epochs (one-cycle, head at `lr` or
    DEFAULT_FINETUNE_LR, body at a tenth, BatchNorm on its pretrained statistics) with fastai's
    `aug_transforms`, the body's blocks up to output stride `freeze_stride` kept frozen (0: none), stopping after
    `patience` fine-tuning epochs in a row that beat neither the best epoch nor the one before them, once the rate
    has annealed below half its peak (`lpft.make_keep_best`), and keeping the best epoch (the fitted head counts
    as epoch 0). Stage 2 goes on only while it pays (`probe`): its first steps must lower the validation loss
    below the head's (`lpft.fine_tuning_pays`), else the head is kept. `budget_s`: the whole run (check,
    embedding, head, fine-tuning, saving) plans its epochs to end within that many wall seconds on this machine
    (`lpft.plan_epochs`, from the probe's timing) and keeps the best model by then. `head_only` skips stage 2. From scratch (`pretrained=False`):
    `epochs` epochs of fit_one_cycle, best epoch kept. `device`: auto, cpu, cuda, cuda:N or mps (model/devices.py).
    """

    arch: str = "mobilenet_v2"
    epochs: int = DEFAULT_EPOCHS
    size_px: int = 224
    batch_size: int = 32
    valid_pct: float = 0.2
    seed: int = 42
    pretrained: bool = True
    num_workers: int = DEFAULT_NUM_WORKERS
    lr: float | None = None
    head_only: bool = False
    patience: int = 2
    freeze_stride: int = DEFAULT_FREEZE_STRIDE
    device: str = "auto"
    promote: str = "if-better"  # if-better | always | never (model/runs.py)
    probe: bool = True  # fine-tune only while it pays (lpft.fine_tuning_pays); False: always run stage 2
    budget_s: float | None = None  # wall seconds for the whole run (smarthub.durations.parse_duration)
    aug_strength: float = 1.0  # fastai aug_transforms(mult=...): rotation, zoom, warp, lighting; 0: none (flip neither)

    def __post_init__(self) -> None:
        if self.promote not in PROMOTE_POLICIES:
            raise SmartHubError(f"promote must be if-better, always or never (got {self.promote!r})")
        if self.epochs < 1:
            raise SmartHubError(f"epochs must be at least 1 (got {self.epochs})")
        if not 16 <= self.size_px <= 2048:
            raise SmartHubError(f"image size must be between 16 and 2048 px (got {self.size_px})")
        if self.batch_size < 2:
            raise SmartHubError(f"batch size must be at least 2 (got {self.batch_size})")
        if not 0.0 < self.valid_pct < 1.0:
            raise SmartHubError(f"valid_pct must be between 0 and 1, e.g. 0.2 (got {self.valid_pct})")
        if self.num_workers < 0:
            raise SmartHubError(f"num_workers must be 0 or more (got {self.num_workers})")
        if self.lr is not None and not 0.0 < self.lr < 10.0:
            raise SmartHubError(f"learning rate must be a small positive number, e.g. 0.001 (got {self.lr})")
        if self.patience < 1:
            raise SmartHubError(f"patience must be at least 1 epoch (got {self.patience})")
        if self.freeze_stride not in FREEZE_STRIDES:
            raise SmartHubError(f"freeze stride must be one of {', '.join(map(str, FREEZE_STRIDES))} (got "
                                f"{self.freeze_stride}); 0 fine-tunes every layer")
        if self.budget_s is not None and not (self.budget_s > 0 and self.budget_s < float("inf")):
            raise DurationError(f"budget must be above zero, e.g. 90s, 5m or 1h30m (got {self.budget_s!r} s)",
                                field="budget")
        if not 0.0 <= self.aug_strength <= AUG_STRENGTH_MAX:
            raise SmartHubError(f"augmentation strength must be between 0 and {AUG_STRENGTH_MAX:g} (got "
                                f"{self.aug_strength}); 1 is fastai's aug_transforms, 0 none")
        if self.head_only and not self.pretrained:
            raise SmartHubError("--head-only needs a pretrained body (its embeddings are what the head is fitted "
                                "on): drop --no-pretrained, or drop --head-only to train from scratch")

    @property
    def recipe(self) -> str:
        """'head-only', 'lp-ft' (head, then fine-tune) or 'scratch'."""
        if not self.pretrained:
            return "scratch"
        return "head-only" if self.head_only else "lp-ft"
