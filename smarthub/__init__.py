"""smarthub: bootstrap, train, clean and pre-annotate image datasets.

Importing this package is cheap: heavy libraries (torch, fastai, gradio, ddgs)
are imported inside the functions that need them.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
