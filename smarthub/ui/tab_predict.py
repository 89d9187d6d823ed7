"""Predict tab: upload images → top-k labels with probabilities from the exported model."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from smarthub.errors import ImageError, ModelError
from smarthub.ui._common import problem, user_errors
from smarthub.workspace import Workspace


@dataclass
class LoadedModel:
    """The classifier of this browser session and the file stamp it was loaded from."""

    stamp: tuple[int, int]
    learner: Any


def load_model(ws: Workspace, cached: LoadedModel | None) -> LoadedModel:
    """The exported classifier, reloaded only when models/export.pkl changed since `cached`."""
    path = ws.export_path
    if not path.is_file():
        raise ModelError(f"no model at {path}: train one in the Train tab (or `smarthub train`) first")
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    if cached is not None and cached.stamp == stamp:
        return cached
    from smarthub.model.inference import load_classifier

    return LoadedModel(stamp=stamp, learner=load_classifier(path))


def open_rgb(path: Path):
    """Open an uploaded image as RGB (EXIF orientation applied); ImageError names the file."""
    from smarthub.imaging import open_rgb as decode

    return decode(Path(path))


def top_k(learner: Any, images: list[Any], k: int) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) per image, best first."""
    from smarthub.model.predict import predict_pil

    preds = predict_pil(learner, images, top_k=k)
    return [[(str(lab), float(p)) for lab, p in pred.top] for pred in preds]


def run_predict(ws: Workspace, cached: LoadedModel | None, files: list[Any] | None, k: int
                ) -> tuple[LoadedModel | None, dict[str, float] | None, list[list[Any]]]:
    """(model state, label confidences of the first image, table rows for all images)."""
    with user_errors():
        paths = [Path(getattr(f, "name", f)) for f in (files or [])]
        if not paths:
            raise ImageError("upload one or more images first")
        model = load_model(ws, cached)
        images = [open_rgb(p) for p in paths]
        tops = top_k(model.learner, images, int(k))
    rows = [[html.escape(p.name), rank + 1, label, round(prob, 4)]
            for p, top in zip(paths, tops) for rank, (label, prob) in enumerate(top)]
    return model, dict(tops[0]), rows


def build(ws: Workspace) -> None:
    """Create the Predict tab's widgets inside the current gr.Tab and wire the handler."""
    model = gr.State(None)
    with gr.Row():
        with gr.Column():
            files = gr.File(file_count="multiple", file_types=["image"], label="images", elem_id="sh-predict-files")
            k = gr.Slider(1, 10, value=3, step=1, label="top k")
            run = gr.Button("Predict", variant="primary", elem_id="sh-predict")
            status = gr.Markdown(elem_id="sh-predict-status")
        with gr.Column():
            best = gr.Label(label="first image", elem_id="sh-predict-label")
            table = gr.Dataframe(headers=["image", "rank", "label", "probability"], interactive=False,
                                 label="all images", elem_id="sh-predict-table")

    def on_predict(m, f, kk):
        try:
            return (*run_predict(ws, m, f, int(kk)), "")
        except gr.Error as e:  # stays on the page (a toast would vanish)
            return gr.skip(), gr.skip(), gr.skip(), problem(e)

    run.click(on_predict, [model, files, k], [model, best, table, status], show_progress_on=[best])  # one bar per job
