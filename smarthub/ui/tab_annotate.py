"""Annotate tab: a folder inside the workspace (or uploaded images) → detector → Labelme JSON + a zip."""
from __future__ import annotations

import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr

from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.ui._common import problem, user_errors
from smarthub.workspace import Workspace

CONTROLS = {"--conf": "the 'confidence threshold' slider", "--iou": "the 'NMS IoU' slider",
            "--overwrite": "'Labelme files a person edited' = overwrite",
            "--merge": "'Labelme files a person edited' = merge", "--model": "the 'detector' box",
            "--arch": "the 'detector' box"}


def runs_dir(ws: Workspace) -> Path:
    return ws.cache_dir / "annotate"


def inside_workspace(ws: Workspace, text: str, *, what: str) -> Path:
    """Resolve a path typed in the page (relative to the data folder) and refuse anything outside the workspace."""
    path = Path(text.strip()).expanduser()
    if not path.is_absolute():
        path = ws.data_dir / path
    if not ws.contains(path):
        raise DatasetError(f"{what} {text.strip()!r} is outside the workspace ({ws.data_dir} or {ws.models_dir}); "
                           f"the app only reads files inside it")
    return path


def resolve_detector(ws: Workspace, spec: str) -> str:
    """A torchvision detector name as is, or a checkpoint path that must lie inside the workspace."""
    spec = (spec or "").strip()
    if not spec:
        raise ModelError("choose a detector name or type the path of a checkpoint inside the models folder")
    from smarthub.annotate import detect
    if spec in getattr(detect, "TORCHVISION_ARCHS", ()):
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = ws.models_dir / path
    if not ws.contains(path):
        raise ModelError(f"detector checkpoint {spec!r} must be inside the workspace (e.g. {ws.models_dir}/detector.pt)")
    return str(path)


def stage_uploads(ws: Workspace, files: list[Any]) -> Path:
    """Copy uploaded images into a fresh run folder inside the workspace cache; returns the folder."""
    run = runs_dir(ws) / (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3))
    images = run / "images"
    images.mkdir(parents=True)
    for f in files:
        src = Path(getattr(f, "name", f))
        dst = images / src.name
        n = 1
        while dst.exists():
            dst = images / f"{src.stem}_{n}{src.suffix}"
            n += 1
        shutil.copyfile(src, dst)
    return images


def run_annotate(ws: Workspace, folder: str, files: list[Any] | None, detector_spec: str, conf: float,
                 iou: float, use_classifier: bool, existing: str,
                 progress: gr.Progress | None = None) -> tuple[str, str | None]:
    """Annotate and zip; returns (report text, zip path)."""
    with user_errors(CONTROLS):
        from smarthub.annotate import preannotate as annotate
        from smarthub.annotate import detect
        if files:
            images_dir, out_dir = stage_uploads(ws, files), None
        elif folder and folder.strip():
            images_dir = inside_workspace(ws, folder, what="folder")
            out_dir = None
        else:
            raise DatasetError("type a folder inside the workspace or upload images first")
        spec = resolve_detector(ws, detector_spec)
        classifier = None
        if use_classifier:
            if not ws.export_path.is_file():
                raise ModelError(f"no classifier at {ws.export_path}: train one first or untick 'classify boxes'")
            classifier = ws.export_path
        if progress is not None:
            progress(None, desc="loading the detector")
        detector = detect.load_detector(spec, detect.DetectorOptions(
            conf=float(conf), iou=float(iou), config_dir=ws.cache_dir / "ultralytics"))

        def cb(done: int, total: int) -> None:
            if progress is not None:
                progress((done, total), desc="annotating")

        report = annotate.annotate_folder(images_dir, detector, out_dir=out_dir, overwrite=existing == "overwrite",
                                          merge=existing == "merge", classifier=classifier, progress=cb)
        zip_dir = runs_dir(ws) / "zips"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        zipped = annotate.zip_outputs(report, zip_path=zip_dir / f"annotations-{stamp}.zip") if report.written else None
    where = report.out_dir or report.images_dir or images_dir
    return f"{report.summary()}\nLabelme files in: {where}", (str(zipped) if zipped else None)


def build(ws: Workspace) -> None:
    """Create the Annotate tab's widgets inside the current gr.Tab and wire the handler."""
    from smarthub.annotate.detect import TORCHVISION_ARCHS

    names = list(TORCHVISION_ARCHS)
    with gr.Row():
        with gr.Column():
            folder = gr.Textbox(label="images folder inside the workspace",
                                placeholder="e.g. unlabelled/batch1 (relative to the data folder)",
                                elem_id="sh-ann-folder")
            files = gr.File(file_count="multiple", file_types=["image"], label="…or upload images",
                            elem_id="sh-ann-files")
        with gr.Column():
            detector = gr.Dropdown(names, value=names[0] if names else None, allow_custom_value=True,
                                   label="detector (name, or a checkpoint path inside the models folder)",
                                   elem_id="sh-ann-detector")
            conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="confidence threshold")
            iou = gr.Slider(0.1, 0.95, value=0.7, step=0.05, label="NMS IoU")
            use_classifier = gr.Checkbox(value=False, label="classify boxes with models/export.pkl")
            existing = gr.Radio(["skip", "overwrite", "merge"], value="skip",
                                label="Labelme files a person edited", info="skip keeps their work untouched")
    run = gr.Button("Annotate", variant="primary", elem_id="sh-ann-run")
    status = gr.Markdown(elem_id="sh-ann-status")
    report = gr.Textbox(label="report", lines=8, interactive=False, elem_id="sh-ann-report")
    download = gr.File(label="Labelme JSON (zip)", interactive=False, elem_id="sh-ann-zip")

    def on_run(fo, fi, d, c, i, u, e, progress=gr.Progress()):
        try:
            return (*run_annotate(ws, fo, fi, d, c, i, u, e, progress), "")
        except gr.Error as err:  # stays on the page (a toast would vanish)
            return gr.skip(), gr.skip(), problem(err)

    run.click(on_run, [folder, files, detector, conf, iou, use_classifier, existing], [report, download, status],
              show_progress_on=[report])  # one bar per job
