"""Constants and options the review tests share (the planted workspace fixture is in conftest.py)."""
from __future__ import annotations

from smarthub.clean import review

CLASSES = ("tshirt", "trouser", "pullover", "sneaker", "bag")
PER_CLASS = 60
IMAGE_PX = 64


def fast_options(**kw) -> review.ReviewOptions:
    from smarthub.model.options import TrainOptions

    return review.ReviewOptions(train=TrainOptions(arch="mobilenet_v2", size_px=IMAGE_PX, epochs=1), **kw)
