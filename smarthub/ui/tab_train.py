"""Train tab: architecture, epochs, image size → live progress → accuracy, per-class table, confusion matrix."""
from __future__ import annotations

import html
from typing import Any

import gradio as gr

from smarthub.atomicio import read_json
from smarthub.errors import SmartHubError
from smarthub.model.options import TrainOptions
from smarthub.ui._common import StopSwitch, user_errors
from smarthub.workspace import Workspace

ARCHS = ["mobilenet_v2", "resnet18", "resnet34", "resnet50", "efficientnet_b0", "convnext_tiny"]
PER_CLASS_HEADERS = ["class", "precision", "recall", "F1", "support"]


def report_views(ws: Workspace, report: dict[str, Any] | None) -> tuple[str, list[list[Any]], str | None]:
    """(summary markdown, per-class rows, confusion image path) for a training report (None: no model yet)."""
    if not report:
        return "No model yet: choose options and press **Train**.", [], None
    acc = report.get("valid_accuracy")
    lines = [
        f"**Validation accuracy: {acc:.1%}**" if isinstance(acc, (int, float)) else "**Validation accuracy: n/a**",
        f"arch {html.escape(str(report.get('arch')))} · {report.get('epochs')} epochs · "
        f"{report.get('size_px')} px · pretrained {report.get('pretrained')} · "
        f"{report.get('n_train')} train / {report.get('n_valid')} valid images"
        + (f" · {report['seconds']:.0f} s" if isinstance(report.get("seconds"), (int, float)) else ""),
        f"classes: {html.escape(', '.join(map(str, report.get('vocab', []))))}",
        f"model: `{html.escape(str(ws.export_path))}`",
    ]
    folders = folder_classes(ws)
    vocab = [str(v) for v in report.get("vocab", [])]
    if folders and vocab and sorted(folders) != sorted(vocab):
        lines.insert(0, f"**Problem:** the model's classes ({html.escape(', '.join(vocab))}) differ from the data "
                        f"folders ({html.escape(', '.join(folders))}): train again before predicting or reviewing "
                        f"with the model")
    rows = [[label, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")]
            for label, m in (report.get("per_class") or {}).items()]
    confusion = str(ws.confusion_path) if ws.confusion_path.is_file() else None
    return "  \n".join(lines), rows, confusion


def folder_classes(ws: Workspace) -> list[str]:
    """Class folder names of the data folder (train/valid layouts: the union), without reading images."""
    from smarthub.dataset import SPLIT_NAMES, has_split_layout

    if not ws.data_dir.is_dir():
        return []
    roots = [ws.data_dir / s for s in SPLIT_NAMES] if has_split_layout(ws.data_dir) else [ws.data_dir]
    return sorted({p.name for r in roots for p in r.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and any(not c.name.startswith(".") for c in p.iterdir())})


def current_report(ws: Workspace) -> dict[str, Any] | None:
    """The saved training report, or None when there is none (a broken one raises SmartHubError)."""
    if not ws.report_path.is_file():
        return None
    return read_json(ws.report_path, what="training report")


def show_current(ws: Workspace) -> tuple[str, list[list[Any]], str | None]:
    try:
        return report_views(ws, current_report(ws))
    except SmartHubError as e:
        return f"**Problem:** {html.escape(str(e))}", [], None


def defaults(ws: Workspace) -> dict[str, Any]:
    """Form defaults: the current model's settings when there is one, else TrainOptions' defaults."""
    d = TrainOptions()
    out: dict[str, Any] = {"arch": d.arch, "epochs": d.epochs, "size_px": d.size_px, "pretrained": d.pretrained}
    try:
        report = current_report(ws) or {}
    except SmartHubError:
        report = {}
    for key, kind in (("arch", str), ("epochs", int), ("size_px", int), ("pretrained", bool)):
        if isinstance(report.get(key), kind):
            out[key] = report[key]
    return out


def progress_text(p: Any) -> tuple[float | None, str]:
    """(fraction done or None, one line) for a train.TrainProgress."""
    metrics = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in (p.metrics or {}).items())
    if p.epochs and p.epoch:
        frac = ((p.epoch - 1) + (p.batch / p.batches if p.batches else 0.0)) / p.epochs
        return min(max(frac, 0.0), 1.0), f"{p.stage}: epoch {p.epoch}/{p.epochs} batch {p.batch}/{p.batches} {metrics}"
    if p.batches:
        return p.batch / p.batches, f"{p.stage}: {p.batch}/{p.batches}"
    return None, p.stage


def run_train(ws: Workspace, arch: str, epochs: int, size_px: int, pretrained: bool,
              progress: gr.Progress | None = None,
              stop: StopSwitch | None = None) -> tuple[str, list[list[Any]], str | None]:
    """Train with the core and return the report views; errors become gr.Error.

    `stop()` turning true (the Stop button) ends training after the current batch: nothing is written and
    the views show the previous model under a 'Stopped' line.
    """
    def cb(p: Any) -> None:
        if progress is not None:
            frac, text = progress_text(p)
            progress(frac, desc=text)

    if stop is not None:
        stop.reset()
    with user_errors():
        from smarthub.model import train
        options = train.TrainOptions(arch=(arch or "").strip(), epochs=int(epochs), size_px=int(size_px),
                                     pretrained=bool(pretrained))
        try:
            result = train.train(ws, options, progress=cb, should_stop=stop)
        except train.TrainingStopped as e:
            summary, rows, confusion = show_current(ws)
            return f"**Stopped:** {html.escape(str(e))}.\n\n{summary}", rows, confusion
    return report_views(ws, result.report)


def build(ws: Workspace) -> None:
    """Create the Train tab's widgets inside the current gr.Tab and wire the handlers."""
    summary0, rows0, confusion0 = show_current(ws)
    d = defaults(ws)
    with gr.Row():
        arch = gr.Dropdown(ARCHS, value=d["arch"], allow_custom_value=True, label="architecture", elem_id="sh-train-arch",
                           info="torchvision name (timm names work when timm is installed)")
        epochs = gr.Slider(1, 30, value=d["epochs"], step=1, label="epochs", elem_id="sh-train-epochs")
        size = gr.Slider(32, 512, value=d["size_px"], step=32, label="image size (px)", elem_id="sh-train-size")
        pretrained = gr.Checkbox(value=d["pretrained"], label="start from ImageNet weights",
                                 info="offline, only cached weights work (`smarthub weights add`)")
    with gr.Row():
        run = gr.Button("Train", variant="primary", elem_id="sh-train")
        stop_b = gr.Button("Stop", variant="stop", elem_id="sh-train-stop")
        reload = gr.Button("Show current model", elem_id="sh-train-reload")
    summary = gr.Markdown(summary0, elem_id="sh-train-summary")
    with gr.Row():
        table = gr.Dataframe(value=rows0, headers=PER_CLASS_HEADERS, label="per class (validation)",
                             interactive=False, elem_id="sh-train-table")
        confusion = gr.Image(value=confusion0, type="filepath", label="confusion matrix", interactive=False,
                             elem_id="sh-train-confusion")

    switch = StopSwitch()

    def on_train(a: str, e: float, s: float, p: bool, progress=gr.Progress()):
        return run_train(ws, a, int(e), int(s), p, progress, switch)

    def on_stop() -> None:
        switch.stop()
        gr.Info("stopping after the current batch; the previous model stays as it is")

    def on_reload():
        return show_current(ws)

    run.click(on_train, [arch, epochs, size, pretrained], [summary, table, confusion])
    reload.click(on_reload, None, [summary, table, confusion])
    stop_b.click(on_stop, None, None)
