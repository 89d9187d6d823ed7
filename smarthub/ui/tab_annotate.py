"""Annotate tab: a folder inside the workspace (or uploaded images) → detector → Labelme JSON, drawn boxes, a zip;
a detector uploaded into the models folder; train-detector on corrected Labelme files with progress and Stop."""
from __future__ import annotations

import html
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr

from smarthub.errors import DatasetError, ModelError, SmartHubError
from smarthub.ui._common import StopSwitch, ok, problem, user_errors
from smarthub.workspace import Workspace

CONTROLS = {"--conf": "the 'confidence threshold' slider", "--iou": "the 'NMS IoU' slider",
            "--overwrite": "'Labelme files a person edited' = overwrite",
            "--merge": "'Labelme files a person edited' = merge", "--model": "the 'detector' box",
            "--arch": "the 'detector' box"}
GALLERY_LIMIT = 200
DETECTOR_SUFFIXES = (".pt", ".pth", ".onnx")
TRAIN_MODELS = ["auto", "mobilenet_v2", "yolov8n.yaml", "yolov8s.yaml", "yolov8n.pt"]
COUNT_HEADERS = ["class", "boxes", "images"]


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


def detector_choices(ws: Workspace) -> list[str]:
    """Detector run folders and uploaded detectors (relative to the models folder), then torchvision names."""
    from smarthub.annotate.detect import TORCHVISION_ARCHS
    from smarthub.annotate.train_detector import detectors_dir, list_runs

    runs = [p.relative_to(ws.models_dir).as_posix() for p in list_runs(ws.models_dir)]
    uploads = detectors_dir(ws.models_dir) / "uploads"
    files = sorted(p.relative_to(ws.models_dir).as_posix() for p in uploads.iterdir()
                   if p.suffix.lower() in DETECTOR_SUFFIXES) if uploads.is_dir() else []
    return runs + files + list(TORCHVISION_ARCHS)


def default_detector(ws: Workspace) -> str:
    """The last detector run that finished, else the first torchvision name."""
    from smarthub.annotate.detect import TORCHVISION_ARCHS
    from smarthub.annotate.train_detector import latest_run

    latest = latest_run(ws.models_dir)
    return latest.relative_to(ws.models_dir).as_posix() if latest else TORCHVISION_ARCHS[0]


def store_detector(ws: Workspace, file: Any) -> tuple[str, str]:
    """Validate an uploaded detector file and keep it in models/detectors/uploads/ (a new name, never
    overwriting); returns (message, its spec relative to the models folder). A file that is not a
    detector is refused and not kept."""
    from smarthub import fileops
    from smarthub.annotate import detect
    from smarthub.annotate.train_detector import detectors_dir

    if not file:
        raise ModelError("choose a detector file (.pt, .pth or .onnx) to upload")
    src = Path(getattr(file, "name", file))
    if src.suffix.lower() not in DETECTOR_SUFFIXES:
        raise ModelError(f"{src.name} is not a detector file: upload a .pt, .pth or .onnx file")
    uploads = detectors_dir(ws.models_dir) / "uploads"
    staged = uploads / f".partial-{secrets.token_hex(4)}"
    staged.mkdir(parents=True)
    try:
        shutil.copyfile(src, staged / src.name)
        detector = detect.load_detector(staged / src.name, detect.DetectorOptions(config_dir=ws.cache_dir / "ultralytics"))
        dst = uploads / src.name
        n = 1
        while dst.exists():
            dst = uploads / f"{src.stem}_{n}{src.suffix}"
            n += 1
        os.replace(staged / src.name, dst)
    finally:
        fileops.discard_folder(staged)
    spec = dst.relative_to(ws.models_dir).as_posix()
    classes = ", ".join(c for c in detector.class_names if c not in ("__background__", "N/A"))[:300]
    return f"stored {spec} ({type(detector).__name__}; classes: {classes})", spec


def count_rows(previews: Any) -> list[list[Any]]:
    """Per-class rows [class, boxes, images] for the counts table, plus images without boxes."""
    rows = [[lab, n, previews.images_per_label.get(lab, 0)] for lab, n in previews.boxes_per_label.items()]
    return rows + [["(no boxes)", 0, previews.images_without_boxes]]


def run_annotate(ws: Workspace, folder: str, files: list[Any] | None, detector_spec: str, conf: float,
                 iou: float, use_classifier: bool, existing: str,
                 progress: gr.Progress | None = None) -> tuple[str, str | None, list[Any], list[list[Any]]]:
    """Annotate, draw and zip; returns (report text, zip path, gallery items, per-class count rows)."""
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
        from smarthub.annotate.draw import draw_labelme_files

        if progress is not None:
            progress(None, desc="drawing the boxes")
        previews = draw_labelme_files(report.written, limit=GALLERY_LIMIT)
    where = report.out_dir or report.images_dir or images_dir
    text = f"{report.summary()}\nLabelme files in: {where}"
    if previews.not_shown:
        text += f"\ngallery: the first {len(previews.items)} images shown, {previews.not_shown} more in the zip"
    return text, (str(zipped) if zipped else None), previews.items, count_rows(previews)


def td_budget() -> str:
    from smarthub.annotate.train_detector import DEFAULT_BUDGET

    return DEFAULT_BUDGET


def run_train_detector(ws: Workspace, folder: str, model: str, epochs: int, imgsz: int,
                       progress: gr.Progress | None = None, stop: StopSwitch | None = None) -> tuple[str, str | None]:
    """Train a detector on a Labelme folder inside the workspace; returns (summary Markdown, PR curves PNG).

    Stop ends training after the current batch: nothing is written and the previous detector stays.
    """
    from smarthub.annotate import train_detector as td

    if stop is not None:
        stop.reset()

    def cb(p: Any) -> None:
        if progress is None:
            return
        if p.stage == "train" and p.batches:
            progress(((p.epoch - 1) * p.batches + p.batch) / (p.epochs * p.batches),
                     desc=f"epoch {p.epoch}/{p.epochs}, batch {p.batch}/{p.batches}")
        else:
            progress(None, desc={"split": "reading the Labelme files", "evaluate": "measuring on validation"}
                     .get(p.stage, p.line()))

    with user_errors():
        if not (folder or "").strip():
            raise DatasetError("type the Labelme folder (inside the workspace) to train on")
        labelme_dir = inside_workspace(ws, folder, what="Labelme folder")
        options = td.DetectorTrainOptions(model=(model or "").strip() or "auto", epochs=int(epochs) or None,
                                          imgsz=int(imgsz))
        try:
            run = td.train_detector(labelme_dir, ws.models_dir, options, progress=cb, should_stop=stop)
        except td.TrainingStopped as e:
            return f"**Stopped:** {html.escape(str(e))}.", None
    spec = run.run_dir.relative_to(ws.models_dir).as_posix()
    text = f"**Done:** detector `{spec}` (now the default detector above)\n\n```\n{run.summary()}\n```"
    return text, str(run.run_dir / "pr_curves.png")


def build(ws: Workspace) -> None:
    """Create the Annotate tab's widgets inside the current gr.Tab and wire the handler."""
    from smarthub.annotate.detect import TORCHVISION_ARCHS

    names = detector_choices(ws)
    with gr.Row():
        with gr.Column():
            folder = gr.Textbox(label="images folder inside the workspace",
                                placeholder="e.g. unlabelled/batch1 (relative to the data folder)",
                                elem_id="sh-ann-folder")
            files = gr.File(file_count="multiple", file_types=["image"], label="…or upload images",
                            elem_id="sh-ann-files")
        with gr.Column():
            detector = gr.Dropdown(names, value=default_detector(ws), allow_custom_value=True,
                                   label="detector (a trained run, an uploaded file, a torchvision name, or a path "
                                         "inside the models folder)",
                                   elem_id="sh-ann-detector")
            upload = gr.File(file_count="single", file_types=list(DETECTOR_SUFFIXES),
                             label="…or upload a detector file (kept in models/detectors/uploads)",
                             elem_id="sh-ann-upload")
            conf = gr.Slider(0.01, 0.99, value=0.25, step=0.01, label="confidence threshold",
                             info="a trained run (detectors/…) uses its tuned per-class thresholds instead")
            iou = gr.Slider(0.1, 0.95, value=0.7, step=0.05, label="NMS IoU")
            use_classifier = gr.Checkbox(value=False, label="classify boxes with models/export.pkl")
            existing = gr.Radio(["skip", "overwrite", "merge"], value="skip",
                                label="Labelme files a person edited", info="skip keeps their work untouched")
    run = gr.Button("Annotate", variant="primary", elem_id="sh-ann-run")
    status = gr.Markdown(elem_id="sh-ann-status")
    report = gr.Textbox(label="report", lines=8, interactive=False, elem_id="sh-ann-report")
    with gr.Row():
        counts = gr.Dataframe(headers=COUNT_HEADERS, label="boxes per class", interactive=False,
                              elem_id="sh-ann-counts", scale=1)
        download = gr.File(label="Labelme JSON (zip)", interactive=False, elem_id="sh-ann-zip", scale=1)
    gallery = gr.Gallery(label="boxes found (click an image to open it large)", columns=4, height="auto",
                         object_fit="contain", preview=False, elem_id="sh-ann-gallery")

    with gr.Accordion("Train a detector on corrected Labelme files", open=False, elem_id="sh-det-train-box"):
        with gr.Row():
            lm_folder = gr.Textbox(label="Labelme folder inside the workspace", placeholder="e.g. batch1 (corrected)",
                                   elem_id="sh-det-folder")
            model = gr.Dropdown(TRAIN_MODELS + list(TORCHVISION_ARCHS), value=TRAIN_MODELS[0], allow_custom_value=True,
                                label="start (auto: the best pretrained weights cached; .yaml: from scratch)",
                                elem_id="sh-det-model")
            epochs = gr.Slider(0, 300, value=0, step=1, label="epochs (0: stop when validation stops improving, "
                               f"within {td_budget()})", elem_id="sh-det-epochs")
            imgsz = gr.Slider(64, 1280, value=320, step=32, label="image size (px)", elem_id="sh-det-imgsz")
        with gr.Row():
            train_b = gr.Button("Train detector", variant="primary", elem_id="sh-det-train")
            stop_b = gr.Button("Stop", variant="stop", elem_id="sh-det-stop")
        train_summary = gr.Markdown(elem_id="sh-det-summary")
        pr_curves = gr.Image(type="filepath", label="validation PR curves", interactive=False, elem_id="sh-det-pr")

    switch = StopSwitch()

    def on_run(fo, fi, d, c, i, u, e, progress=gr.Progress()):
        try:
            return (*run_annotate(ws, fo, fi, d, c, i, u, e, progress), "")
        except gr.Error as err:  # stays on the page (a toast would vanish)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), problem(err)

    def on_upload(f):
        try:
            with user_errors(CONTROLS):
                message, spec = store_detector(ws, f)
        except gr.Error as err:  # stays on the page (a toast would vanish)
            return gr.skip(), None, problem(err)
        return gr.update(choices=detector_choices(ws), value=spec), None, ok(message)

    def on_train(fo, m, e, s, progress=gr.Progress()):
        try:
            text, png = run_train_detector(ws, fo, m, int(e), int(s), progress, switch)
        except gr.Error as err:
            return gr.skip(), gr.skip(), gr.skip(), problem(err)
        return text, png, gr.update(choices=detector_choices(ws), value=default_detector(ws)), ""

    def on_stop() -> None:
        switch.stop()
        gr.Info("stopping after the current batch; the previous detector stays as it is")

    run.click(on_run, [folder, files, detector, conf, iou, use_classifier, existing],
              [report, download, gallery, counts, status], show_progress_on=[report])  # one bar per job
    upload.upload(on_upload, [upload], [detector, upload, status])
    train_b.click(on_train, [lm_folder, model, epochs, imgsz], [train_summary, pr_curves, detector, status],
                  show_progress_on=[train_summary])
    stop_b.click(on_stop, None, None)
