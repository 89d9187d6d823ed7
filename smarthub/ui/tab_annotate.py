"""Annotate tab: a batch folder (or uploaded images) → detector → Labelme JSON, drawn boxes, a zip;
a live threshold (global, and per class for a tuned run) that filters the scored boxes without running the
detector again, then writes the Labelme files at the chosen thresholds; a detector uploaded into the models
folder; train-detector on corrected Labelme files with progress and Stop."""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from smarthub.annotate import inputs
from smarthub.annotate.inputs import (DETECTOR_SUFFIXES, default_detector, detector_choices,  # noqa: F401 (re-exported)
                                      inside_workspace, new_zip_path, resolve_detector, runs_dir)
from smarthub.annotate.draw import Previews, draw_scored
from smarthub.annotate.next_images import GALLERY_SORTS, gallery_order
from smarthub.annotate.options import DetectOptions, DetectorTrainOptions
from smarthub.annotate.scored import DEFAULT_FLOOR, ScoredBatch, Thresholds
from smarthub.errors import DatasetError, ModelError
from smarthub.optionspec import controls, default, labels
from smarthub.ui._common import StopSwitch, ok, problem, user_errors
from smarthub.workspace import Workspace

LABELS = labels(DetectOptions, DetectorTrainOptions)  # a refused option is named by its control's label
GALLERY_LIMIT = 200
TRAIN_MODELS = ["auto", "mobilenet_v2", "yolov8n.yaml", "yolov8s.yaml", "yolov8n.pt"]
COUNT_HEADERS = ["class", "boxes", "images"]
CLASS_SLIDERS = 6  # per-class threshold sliders shown for a run with tuned thresholds (other classes: the global)


@dataclass
class BatchView:
    """One session's pre-annotated batch (gr.State): its scored boxes, embeddings for sorting, the thresholds
    its Labelme files are written at, and the classes that have their own slider."""

    scored: ScoredBatch
    embeddings: np.ndarray | None
    written: Thresholds
    classes: list[str]


def upload_paths(files: list[Any] | None) -> list[Path]:
    """The paths of gradio's uploaded files (file objects or plain paths)."""
    return [Path(getattr(f, "name", f)) for f in (files or [])]


def store_detector(ws: Workspace, file: Any) -> tuple[str, str]:
    """Keep an uploaded detector (`inputs.store_detector`); returns (the status line, its spec)."""
    stored = inputs.store_detector(ws, upload_paths([file])[0] if file else None)
    classes = ", ".join(stored.classes)[:300]
    return f"stored {stored.spec} ({stored.kind}; classes: {classes})", stored.spec


def count_rows(previews: Previews) -> list[list[Any]]:
    """Per-class rows [class, boxes, images] for the counts table, plus images without boxes."""
    rows = [[lab, n, previews.images_per_label.get(lab, 0)] for lab, n in previews.boxes_per_label.items()]
    return rows + [["(no boxes)", 0, previews.images_without_boxes]]


def annotate_batch(ws: Workspace, folder: str, files: list[Any] | None, detector_spec: str, conf: float,
                   iou: float, use_classifier: bool, existing: str,
                   progress: gr.Progress | None = None) -> tuple[str, str | None, BatchView]:
    """Run the detector once (every box down to the floor, scored), write the Labelme files at `conf` (or the
    run's tuned per-class thresholds), the ranking and a zip; returns (report text, zip path, the batch view)."""
    with user_errors(LABELS):
        from smarthub.annotate import preannotate as annotate
        from smarthub.annotate.next_images import write_ranking
        from smarthub.annotate.scored import scoring_detector
        from smarthub.workspace import batch_placement_warning

        warning = None
        if files:
            images_dir, out_dir = inputs.stage_uploads(ws, upload_paths(files)), None
        elif folder and folder.strip():
            images_dir = inside_workspace(ws, folder, what="folder")
            out_dir = None
            warning = batch_placement_warning(ws, images_dir)
        else:
            raise DatasetError("type a batch folder (in the batches folder) or upload images first")
        spec = resolve_detector(ws, detector_spec)
        classifier = None
        if use_classifier:
            if not ws.export_path.is_file():
                raise ModelError(f"no classifier at {ws.export_path}: train one first or untick 'classify boxes'")
            classifier = ws.export_path
        if progress is not None:
            progress(None, desc="loading the detector")
        detector, thresholds, tuned = scoring_detector(spec, DetectOptions(
            conf=float(conf), iou=float(iou), config_dir=ws.cache_dir / "ultralytics"), floor=DEFAULT_FLOOR)

        def cb(done: int, total: int) -> None:
            if progress is not None:
                progress((done, total), desc="annotating")

        report = annotate.annotate_folder(images_dir, detector, out_dir=out_dir, overwrite=existing == "overwrite",
                                          merge=existing == "merge", classifier=classifier, progress=cb,
                                          thresholds=thresholds, thresholds_tuned=tuned)
        zipped = annotate.zip_outputs(report, zip_path=new_zip_path(ws)) if report.written else None
        scored = report.scored
        assert scored is not None  # annotate_folder records scored boxes whenever thresholds are given
        if progress is not None:
            progress(None, desc="ranking the images to correct next")
        ranking = write_ranking(scored, thresholds) if scored.images else None
    where = report.out_dir or report.images_dir or images_dir
    text = f"{report.summary()}\nLabelme files in: {where}"
    if ranking is not None:
        text += f"\nnext images to correct: {ranking.path} (first: {', '.join(r.image for r in ranking.rows[:3])})"
    if warning:
        text = f"warning: {warning}\n{text}"
    classes = sorted(thresholds.per_class)[:CLASS_SLIDERS] if tuned else []
    view = BatchView(scored, ranking.embeddings if ranking is not None else None, thresholds, classes)
    return text, (str(zipped) if zipped else None), view


def thresholds_of(view: BatchView, conf: float, per_class: bool, values: list[float]) -> Thresholds:
    """The thresholds the widgets show: the global slider, and the per-class sliders when ticked."""
    if not per_class or not view.classes:
        return Thresholds(float(conf))
    tuned = dict(view.scored.thresholds.per_class)  # classes beyond the sliders keep their tuned threshold
    return Thresholds(float(conf), {**tuned, **{c: float(v) for c, v in zip(view.classes, values)}})


def show_view(view: BatchView, thresholds: Thresholds, sort: str) -> Previews:
    """The gallery at `thresholds` in the chosen order (no detector, no file written)."""
    order = gallery_order(view.scored, thresholds, by=sort, embeddings=view.embeddings)
    return draw_scored(view.scored, thresholds, order, limit=GALLERY_LIMIT)


def describe(t: Thresholds) -> str:
    return f"{t.conf:.2f}" + (" (" + ", ".join(f"{k} {v:.2f}" for k, v in sorted(t.per_class.items())) + ")"
                              if t.per_class else "")


def shown_note(view: BatchView, thresholds: Thresholds, previews: Previews) -> str:
    """One line: boxes shown at these thresholds, and whether the Labelme files hold the same."""
    n = sum(previews.boxes_per_label.values())
    text = f"{n} boxes shown at threshold {describe(thresholds)}"
    if previews.not_shown:
        text += f"; the gallery shows the first {len(previews.items)} images, {previews.not_shown} more in the zip"
    if thresholds == view.written:
        return text + "; the Labelme files hold these boxes."
    return text + (f"; the Labelme files are still at {describe(view.written)}: press "
                   f"**Write Labelme files at these thresholds** to update them.")


def write_view(ws: Workspace, view: BatchView, thresholds: Thresholds) -> tuple[str, str | None]:
    """Rewrite the batch's Labelme files (never a person's edits) and the ranking at `thresholds`; zip them."""
    from smarthub.annotate.next_images import write_ranking
    from smarthub.annotate.preannotate import zip_files
    from smarthub.annotate.scored import write_at_thresholds

    with user_errors(LABELS):
        rewrite = write_at_thresholds(view.scored, thresholds)
        ranking = write_ranking(view.scored, thresholds, embeddings=view.embeddings) if view.scored.images else None
        files = [view.scored.json_path(it) for it in view.scored.images if view.scored.json_path(it).is_file()]
        zipped = zip_files(view.scored.root, files, zip_path=new_zip_path(ws)) if files else None
    view.written = thresholds
    text = f"{rewrite.summary()}\nLabelme files in: {view.scored.root}"
    if ranking is not None:
        text += f"\nnext images to correct: {ranking.path}"
    return text, (str(zipped) if zipped else None)


def run_annotate(ws: Workspace, folder: str, files: list[Any] | None, detector_spec: str, conf: float,
                 iou: float, use_classifier: bool, existing: str,
                 progress: gr.Progress | None = None) -> tuple[str, str | None, list[Any], list[list[Any]]]:
    """Annotate, draw and zip; returns (report text, zip path, gallery items, per-class count rows)."""
    text, zipped, view = annotate_batch(ws, folder, files, detector_spec, conf, iou, use_classifier, existing,
                                        progress)
    if progress is not None:
        progress(None, desc="drawing the boxes")
    previews = show_view(view, view.written, "name")
    if previews.not_shown:
        text += f"\ngallery: the first {len(previews.items)} images shown, {previews.not_shown} more in the zip"
    return text, zipped, previews.items, count_rows(previews)


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

    with user_errors(LABELS):
        if not (folder or "").strip():
            raise DatasetError("type the Labelme folder (inside the workspace) to train on")
        labelme_dir = inside_workspace(ws, folder, what="Labelme folder")
        options = DetectorTrainOptions(model=(model or "").strip() or default(DetectorTrainOptions, "model"),
                                       epochs=int(epochs) or None, imgsz=int(imgsz))
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
    c, t = controls(DetectOptions), controls(DetectorTrainOptions)
    with gr.Row():
        with gr.Column():
            folder = gr.Textbox(label="batch of images to annotate",
                                placeholder=f"e.g. batch1 (a folder in {ws.batches_dir})",
                                info=f"batches live in {ws.batches_dir}, outside the data folder (where every "
                                     f"folder is a class); the Labelme files are written beside the images",
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
            conf = gr.Slider(**c["conf"].slider(),
                             info=f"live: moving it shows and hides boxes without running the detector again "
                                  f"(it keeps every box scored >= {DEFAULT_FLOOR}); a trained run also has "
                                  f"per-class thresholds below", elem_id="sh-ann-conf")
            iou = gr.Slider(**c["iou"].slider())
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
    with gr.Row():
        per_class = gr.Checkbox(value=True, label="per-class thresholds (tuned by the detector run)", visible=False,
                                elem_id="sh-ann-per-class")
        class_sliders = [gr.Slider(**{**c["conf"].slider(), "label": "class"}, visible=False,
                                   elem_id=f"sh-ann-class-{k}") for k in range(CLASS_SLIDERS)]
    with gr.Row():
        sort = gr.Dropdown([(label, key) for key, label in GALLERY_SORTS.items()], value="name",
                           label="sort the gallery by", elem_id="sh-ann-sort", scale=2)
        write = gr.Button("Write Labelme files at these thresholds", elem_id="sh-ann-write", scale=1)
    shown = gr.Markdown(elem_id="sh-ann-shown")
    gallery = gr.Gallery(label="boxes found (click an image to open it large)", columns=4, height="auto",
                         object_fit="contain", preview=False, elem_id="sh-ann-gallery")
    view_state = gr.State(None)

    with gr.Accordion("Train a detector on corrected Labelme files", open=False, elem_id="sh-det-train-box"):
        with gr.Row():
            lm_folder = gr.Textbox(label="Labelme folder inside the workspace", placeholder="e.g. batch1 (corrected)",
                                   elem_id="sh-det-folder")
            model = gr.Dropdown(TRAIN_MODELS + list(TORCHVISION_ARCHS), value=t["model"].value, allow_custom_value=True,
                                label="start (auto: the best pretrained weights cached; .yaml: from scratch)",
                                elem_id="sh-det-model")
            epochs = gr.Slider(**{**t["epochs"].slider(), "value": 0,  # 0: None, the budget
                                  "label": f"{t['epochs'].label} (0: stop when validation stops improving, within "
                                           f"{t['budget'].value})"}, elem_id="sh-det-epochs")
            imgsz = gr.Slider(**t["imgsz"].slider(), elem_id="sh-det-imgsz")
        with gr.Row():
            train_b = gr.Button("Train detector", variant="primary", elem_id="sh-det-train")
            stop_b = gr.Button("Stop", variant="stop", elem_id="sh-det-stop")
        train_summary = gr.Markdown(elem_id="sh-det-summary")
        pr_curves = gr.Image(type="filepath", label="validation PR curves", interactive=False, elem_id="sh-det-pr")

    switch = StopSwitch()

    def on_run(fo, fi, d, c, i, u, e, order, progress=gr.Progress()):
        try:
            text, zipped, view = annotate_batch(ws, fo, fi, d, c, i, u, e, progress)
        except gr.Error as err:  # stays on the page (a toast would vanish)
            return (gr.skip(),) * 4 + (problem(err),) + (gr.skip(),) * (3 + CLASS_SLIDERS)
        progress(None, desc="drawing the boxes")
        previews = show_view(view, view.written, order)
        sliders = [gr.update(visible=k < len(view.classes),
                             **({"value": view.written.of(view.classes[k]), "label": f"threshold: {view.classes[k]}"}
                                if k < len(view.classes) else {})) for k in range(CLASS_SLIDERS)]
        return (text, zipped, previews.items, count_rows(previews), "", view,
                gr.update(visible=bool(view.classes), value=True), shown_note(view, view.written, previews), *sliders)

    def on_view(view, c, pc, order, *values):
        if view is None:
            return gr.skip(), gr.skip(), "annotate a batch first: the thresholds move the boxes it found"
        try:
            with user_errors(LABELS):
                t = thresholds_of(view, c, pc, list(values))
                previews = show_view(view, t, order)
        except gr.Error as err:
            return gr.skip(), gr.skip(), problem(err)
        return previews.items, count_rows(previews), shown_note(view, t, previews)

    def on_write(view, c, pc, order, *values):
        if view is None:
            return gr.skip(), gr.skip(), gr.skip(), problem(gr.Error("annotate a batch first")), gr.skip()
        try:
            t = thresholds_of(view, c, pc, list(values))
            text, zipped = write_view(ws, view, t)
        except gr.Error as err:
            return gr.skip(), gr.skip(), gr.skip(), problem(err), gr.skip()
        previews = show_view(view, t, order)
        return text, zipped, shown_note(view, t, previews), "", view

    def on_upload(f):
        try:
            with user_errors(LABELS):
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

    run.click(on_run, [folder, files, detector, conf, iou, use_classifier, existing, sort],
              [report, download, gallery, counts, status, view_state, per_class, shown, *class_sliders],
              show_progress_on=[report])  # one bar per job
    view_inputs = [view_state, conf, per_class, sort, *class_sliders]
    for slider in (conf, *class_sliders):  # on release: one redraw per move, not one per step dragged
        slider.release(on_view, view_inputs, [gallery, counts, shown], show_progress="hidden")
    per_class.input(on_view, view_inputs, [gallery, counts, shown], show_progress="hidden")
    sort.input(on_view, view_inputs, [gallery, counts, shown], show_progress="hidden")
    write.click(on_write, view_inputs, [report, download, shown, status, view_state], show_progress_on=[report])
    upload.upload(on_upload, [upload], [detector, upload, status])
    train_b.click(on_train, [lm_folder, model, epochs, imgsz], [train_summary, pr_curves, detector, status],
                  show_progress_on=[train_summary])
    stop_b.click(on_stop, None, None)
