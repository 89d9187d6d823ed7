"""More than one GPU or machine: fastai's own distributed training through Hugging Face `accelerate`.

`accelerate launch -m smarthub train ...` (or `smarthub train --distributed N`, which runs that command)
starts one process per device; torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) tells each process
its place. Every rank builds the same seeded split and the same Learner; fastai's `DistributedTrainer`
wraps the model in DistributedDataParallel and gives each rank its share of every batch; only rank 0
writes the model and the reports, after leaving the distributed stage.

The one adaptation (documented in the README): fastai's `DistributedDL._broadcast` moves the batch order to
CUDA because NCCL only takes CUDA tensors. On the CPU the backend is gloo, which takes CPU tensors, so the
subclass below broadcasts on the CPU unless the backend is NCCL; and BatchNorm is synchronised
(`sync_bn`) on CUDA only (SyncBatchNorm has no CPU kernel). fastai's own tests patch the same method.
"""
from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from smarthub.errors import SmartHubError


def world_size() -> int:
    """Number of processes in this training job (1 when not launched distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """True for the process that writes models and reports (rank 0)."""
    return rank() == 0


def rank_device(device: str) -> str:
    """The device of this rank: with CUDA, one GPU per local rank; otherwise the device itself."""
    if is_distributed() and device.startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _state(device: str) -> Any:
    from accelerate import PartialState

    return PartialState(cpu=not device.startswith("cuda"))  # gloo on the CPU, NCCL on GPUs


@contextmanager
def main_process_first(device: str) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (shared caches are written once)."""
    if not is_distributed():
        yield
        return
    with _state(device).main_process_first():
        yield


def trainer_callback(device: str) -> Any:
    """fastai's DistributedTrainer, with a DistributedDL that broadcasts on the CPU under gloo."""
    import torch
    import torch.distributed as dist
    from fastai.distributed import DistributedDL, DistributedTrainer

    class GlooDistributedDL(DistributedDL):
        """fastai's DistributedDL; the batch order is broadcast on CUDA only when the backend is NCCL."""

        def _broadcast(self, t: Any, rank: int) -> list:
            t = torch.LongTensor(t)
            if dist.get_backend() == "nccl":
                t = t.cuda()
            dist.broadcast(t, rank)
            return t.cpu().tolist()

    class Trainer(DistributedTrainer):
        def _wrap_dl(self, dl: Any) -> Any:
            if isinstance(dl, DistributedDL):
                return dl
            return GlooDistributedDL(dl, device=self.learn.dls.device)

    _state(device)  # joins the process group before the trainer's Accelerator looks for it
    return Trainer(sync_bn=device.startswith("cuda"), cpu=not device.startswith("cuda"))


def free_port() -> int:
    """A free TCP port on this machine for the rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_command(n_processes: int, smarthub_argv: Sequence[str]) -> list[str]:
    """`accelerate launch` running `python -m smarthub ARGV` in `n_processes` processes on this machine."""
    if n_processes < 2:
        raise SmartHubError(f"--distributed needs at least 2 processes (got {n_processes}); leave it out for one")
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
            "--num_processes", str(n_processes), "--main_process_port", str(free_port()),
            "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "smarthub", *smarthub_argv]
