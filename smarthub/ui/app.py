"""The Gradio app: one Blocks with a tab per job, each built by its own module."""
from __future__ import annotations

import html
import os
from pathlib import Path

import gradio as gr

from smarthub.ui import tab_annotate, tab_bootstrap, tab_clean, tab_predict, tab_train
from smarthub.ui._common import thumbs_dir
from smarthub.workspace import Workspace

CSS = """
#sh-gallery .caption-label { max-width: 100%; white-space: normal; font-size: 0.75rem; opacity: 0.9;
                             line-height: 1.1; }
#sh-counts, #sh-status { min-height: 1.5em; }
#sh-status, #sh-boot-status, #sh-train-status, #sh-predict-status, #sh-ann-status { font-size: 1rem; }
/* the review's progress in the narrow column under 'Run review': gradio places its step counter absolutely, on top
   of the bar; here it flows below the bar instead (the column is tall enough for three lines) */
#sh-run-progress .progress-text.meta-text-center { position: static; transform: none; }
"""


def build_app(ws: Workspace, *, title: str = "smarthub", selected_tab: str | None = None) -> gr.Blocks:
    """Build (not launch) the app for workspace `ws`.

    `selected_tab` names the tab shown first ("Clean", "Train", ...); default is Clean, or Bootstrap while
    the data folder holds no image yet.
    """
    # Thumbnails are content-keyed (a changed image gets a new file), so gradio may serve them in place
    # instead of copying each one into its cache on every page render (the copy was most of an action's time).
    thumbs = thumbs_dir(ws)
    thumbs.mkdir(parents=True, exist_ok=True)
    gr.set_static_paths([thumbs])
    # delete_cache: gradio's own copies of uploads and outputs older than a day (never a user's image)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(f"## smarthub · data `{html.escape(str(ws.data_dir))}` · models `{html.escape(str(ws.models_dir))}`")
        with gr.Tabs(selected=selected_tab or ("Clean" if has_images(ws) else "Bootstrap")):
            with gr.Tab("Bootstrap", id="Bootstrap", elem_id="sh-tab-bootstrap"):
                tab_bootstrap.build(ws)
            with gr.Tab("Train", id="Train", elem_id="sh-tab-train"):
                tab_train.build(ws)
            with gr.Tab("Clean", id="Clean", elem_id="sh-tab-clean"):
                tab_clean.build(ws)
            with gr.Tab("Predict", id="Predict", elem_id="sh-tab-predict"):
                tab_predict.build(ws)
            with gr.Tab("Annotate", id="Annotate", elem_id="sh-tab-annotate"):
                tab_annotate.build(ws)
    return app


def has_images(ws: Workspace) -> bool:
    """True as soon as one image is found in a class folder (stops at the first: cheap on big folders)."""
    from smarthub.dataset import is_image_file

    if not ws.data_dir.is_dir():
        return False
    for root, dirs, files in os.walk(ws.data_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if Path(root) != ws.data_dir and any(is_image_file(Path(root) / f) for f in files):
            return True
    return False


HEAD = tab_clean.SHORTCUTS_JS
