"""Which device a job runs on: `--device auto|cpu|cuda|cuda:N|mps`, one rule for train, predict, review and annotate.

`auto` takes the best device present (CUDA, then Apple's MPS, then the CPU); an explicit request for a device
that is not there is a ModelError naming what is. Nothing in smarthub pins the CPU: every job asks here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from smarthub.errors import ModelError

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"
DEFAULT_DEVICE = "auto"
_SPEC_RE = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


@dataclass(frozen=True)
class Accelerators:
    """What the machine offers (a pure record, so the choice below is testable without the hardware)."""

    cuda_count: int = 0
    mps: bool = False


def available() -> Accelerators:
    """Ask torch what this machine has."""
    import torch

    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend is not None and mps_backend.is_available())
    return Accelerators(cuda_count=torch.cuda.device_count() if torch.cuda.is_available() else 0, mps=mps)


def choose_device(spec: str | None, accelerators: Accelerators) -> str:
    """The torch device string for `spec` on a machine with `accelerators` (pure).

    Raises:
        ModelError: an unknown spec, or a device the machine does not have (the message lists what it has).
    """
    text = (spec or DEFAULT_DEVICE).strip().lower()
    m = _SPEC_RE.match(text)
    if m is None:
        raise ModelError(f"unknown device {spec!r}: use {DEVICE_CHOICES}")
    have = describe(accelerators)
    if text == "auto":
        if accelerators.cuda_count:
            return "cuda:0"
        return "mps" if accelerators.mps else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not accelerators.mps:
            raise ModelError(f"--device mps asked for, but this machine has no Apple GPU (it has {have}); "
                             f"use --device auto")
        return "mps"
    index = int(m.group(2) or 0)
    if accelerators.cuda_count == 0:
        raise ModelError(f"--device {text} asked for, but torch sees no CUDA GPU here (it has {have}); use "
                         f"--device auto or cpu, or install a CUDA build of torch")
    if index >= accelerators.cuda_count:
        raise ModelError(f"--device {text} asked for, but there are only {accelerators.cuda_count} CUDA GPU(s) "
                         f"(cuda:0 to cuda:{accelerators.cuda_count - 1})")
    return f"cuda:{index}"


def describe(accelerators: Accelerators) -> str:
    """'the CPU', '2 CUDA GPUs and the CPU', ..."""
    parts = []
    if accelerators.cuda_count:
        parts.append(f"{accelerators.cuda_count} CUDA GPU{'s' if accelerators.cuda_count > 1 else ''}")
    if accelerators.mps:
        parts.append("an Apple GPU (mps)")
    parts.append("the CPU")
    return " and ".join([", ".join(parts[:-1]), parts[-1]]) if len(parts) > 1 else parts[0]


def resolve_device(spec: str | None = DEFAULT_DEVICE) -> str:
    """The device string to run on for `spec` on this machine. Raises ModelError (see choose_device)."""
    return choose_device(spec, available())


def torch_device(spec: str | None = DEFAULT_DEVICE) -> Any:
    """`resolve_device` as a torch.device."""
    import torch

    return torch.device(resolve_device(spec))


def uses_mixed_precision(device: str) -> bool:
    """Mixed precision (fp16 autocast) pays off on CUDA only."""
    return device.startswith("cuda")
