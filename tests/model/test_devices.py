"""Device selection is logic: tested here for machines we do not have (CUDA, several GPUs, Apple MPS)."""
from __future__ import annotations

import pytest

from smarthub.errors import ModelError
from smarthub.model.devices import Accelerators, choose_device, resolve_device

CPU_ONLY = Accelerators()
ONE_GPU = Accelerators(cuda_count=1)
TWO_GPUS = Accelerators(cuda_count=2)
MAC = Accelerators(mps=True)

CASES = [
    ("auto", CPU_ONLY, "cpu", None),
    ("auto", ONE_GPU, "cuda:0", None),
    ("auto", MAC, "mps", None),
    (None, TWO_GPUS, "cuda:0", None),
    ("cpu", TWO_GPUS, "cpu", None),
    ("cuda", ONE_GPU, "cuda:0", None),
    ("cuda:1", TWO_GPUS, "cuda:1", None),
    (" CUDA:1 ", TWO_GPUS, "cuda:1", None),
    ("mps", MAC, "mps", None),
    ("cuda", CPU_ONLY, None, r"no CUDA GPU here \(it has the CPU\); use --device auto or cpu"),
    ("cuda:2", TWO_GPUS, None, r"only 2 CUDA GPU\(s\) \(cuda:0 to cuda:1\)"),
    ("mps", ONE_GPU, None, r"no Apple GPU \(it has 1 CUDA GPU and the CPU\)"),
    ("gpu", ONE_GPU, None, r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"),
    ("cuda:x", ONE_GPU, None, r"unknown device"),
]


@pytest.mark.parametrize("spec,machine,expected,error", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_choose_device(spec, machine, expected, error) -> None:
    if error is None:
        assert choose_device(spec, machine) == expected
    else:
        with pytest.raises(ModelError, match=error):
            choose_device(spec, machine)


def test_this_machine_resolves_auto_to_what_torch_sees() -> None:
    import torch

    got = resolve_device("auto")
    assert got == ("cuda:0" if torch.cuda.is_available() else got)
    assert got in ("cpu", "mps") or got.startswith("cuda")
