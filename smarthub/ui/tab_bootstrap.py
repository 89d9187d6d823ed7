"""Bootstrap tab: labels and a count → live progress → the collection report."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from smarthub.collect.options import BootstrapOptions
from smarthub.errors import LabelError
from smarthub.optionspec import controls, labels
from smarthub.ui._common import StopSwitch, parse_labels, problem, user_errors
from smarthub.workspace import Workspace

LABELS = labels(BootstrapOptions)  # a refused option is named by its control's label


def run_bootstrap(ws: Workspace, labels_text: str, count: int, urls_file: Any = None,
                  progress: gr.Progress | None = None, stop: StopSwitch | None = None) -> str:
    """Collect images for each label with the bootstrap core; returns the report as text.

    `stop()` turning true (the Stop button) ends the run between images; what was saved stays, with its
    provenance, and a rerun completes it.
    """
    if stop is not None:
        stop.reset()
    with user_errors(LABELS):
        labels = parse_labels(labels_text)
        if not labels:
            raise LabelError("type at least one label, e.g. 'grass carp, tilapia' (one per line or comma-separated)")
        from smarthub.collect import bootstrap
        backend = None
        if urls_file is not None:
            from smarthub.collect import search
            backend = search.UrlListBackend(Path(getattr(urls_file, "name", urls_file)))

        def cb(p: Any) -> None:
            if progress is None:
                return
            total = getattr(p, "total", 0) or 0
            desc = f"{p.label}: {p.stage}" + (f" — {p.message}" if getattr(p, "message", "") else "")
            progress((p.done, total) if total else None, desc=desc)

        report = bootstrap.bootstrap(ws, labels, count=int(count), backend=backend, progress=cb, should_stop=stop)
    return report.summary()


def build(ws: Workspace) -> None:
    """Create the Bootstrap tab's widgets inside the current gr.Tab and wire the handler."""
    gr.Markdown(f"Collect images from an image search (or your own URL list) into "
                f"`{html.escape(str(ws.data_dir))}/<label>/`: verified, normalised, de-duplicated, with provenance.")
    with gr.Row():
        labels = gr.Textbox(label="labels", placeholder="grass carp, tilapia, koi", lines=3,
                            info="one per line or comma-separated", elem_id="sh-boot-labels")
        with gr.Column():
            count = gr.Slider(**controls(BootstrapOptions)["count"].slider(), elem_id="sh-boot-count")
            urls = gr.File(label="URL list (optional: one URL per line, or url,label CSV)",
                           file_types=[".txt", ".csv"], elem_id="sh-boot-urls")
    with gr.Row():
        run = gr.Button("Collect images", variant="primary", elem_id="sh-boot-run")
        stop_b = gr.Button("Stop", variant="stop", elem_id="sh-boot-stop")
    status = gr.Markdown(elem_id="sh-boot-status")
    report = gr.Textbox(label="report", lines=12, interactive=False, elem_id="sh-boot-report")

    switch = StopSwitch()

    def on_run(text: str, n: float, f: Any, progress=gr.Progress()):
        try:
            return run_bootstrap(ws, text, int(n), f, progress, switch), ""
        except gr.Error as e:  # stays on the page (a toast would vanish)
            return gr.skip(), problem(e)

    def on_stop() -> None:
        switch.stop()
        gr.Info("stopping after the images in flight; what was saved stays")

    run.click(on_run, [labels, count, urls], [report, status])
    stop_b.click(on_stop, None, None)
