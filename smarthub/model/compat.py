"""Loading models exported by smarthub's first version.

Those pickles name `smarthub.train.load_rgb`, `smarthub.train.item_label` (the first version's flat layout)
and `smarthub.dataset.ImageItem`. Today's exports name only fastai/torch names; this module keeps the two
old functions alive under a new home and maps the old names onto them while unpickling (`PICKLE_MODULE`,
given to `torch.load`). Nothing here is ever pickled into a new export.
"""
from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

from smarthub.dataset import ImageItem
from smarthub.imaging import as_rgb, open_rgb

# (module, name) in a first-version pickle → (module, name) today
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("smarthub.train", "load_rgb"): (__name__, "load_rgb"),
    ("smarthub.train", "item_label"): (__name__, "item_label"),
    ("smarthub.dataset", "ImageItem"): ("smarthub.dataset", "ImageItem"),
}


def load_rgb(x: object):  # noqa: ANN201 (fastai infers test-time input types from this signature)
    """The first version's image loader: ImageItem, path or PIL image → RGB PILImage, EXIF applied."""
    from fastai.vision.core import PILImage
    from PIL import Image

    if isinstance(x, Image.Image):
        return PILImage.create(as_rgb(x))
    return PILImage.create(open_rgb(x.path if isinstance(x, ImageItem) else Path(x)))


def item_label(x: ImageItem) -> str:
    """The first version's label getter."""
    return x.label


class CompatUnpickler(pickle.Unpickler):
    """An Unpickler that resolves the first version's names to today's."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = RENAMED.get((module, name), (module, name))
        return super().find_class(module, name)


def _load(file: Any, **kwargs: Any) -> Any:
    return CompatUnpickler(file, **kwargs).load()


# what torch.load(pickle_module=...) needs: Unpickler (subclassed by torch) and load
PICKLE_MODULE = types.SimpleNamespace(__name__="smarthub.model.compat", Unpickler=CompatUnpickler, load=_load)
