"""The library warnings a normal run would print, silenced one by one at the process's entry points (the CLI's
`main`, the app's start-up); nothing happens on import.

Each filter names the exact message, so any other warning still shows:
- fastai 2.8 decorates a few activations in `fastai/layers.py` with `torch.jit.script`, which torch 2.9+
  deprecates with a FutureWarning at import time: once in every process that trains, reviews or predicts.
- `fastai/tabular/core.py` (imported through fastai's callbacks) sets a pandas option that pandas 3 deprecates.
"""
from __future__ import annotations

import warnings

KNOWN: tuple[tuple[str, type[Warning]], ...] = (
    (r"`torch\.jit\.script` is deprecated", FutureWarning),
    (r"The 'mode\.chained_assignment' option is deprecated", Warning),
)


def quiet_library_warnings() -> None:
    """Install the filters for the KNOWN warnings (idempotent: warnings dedupes identical filters)."""
    for message, category in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)
