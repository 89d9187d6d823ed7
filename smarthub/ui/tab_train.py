"""Train tab: architecture, epochs, image size → live progress → accuracy, per-class table, confusion matrix."""
from __future__ import annotations

import html
from typing import Any

import gradio as gr

from smarthub.atomicio import read_json
from smarthub.dataset import folder_classes
from smarthub.errors import SmartHubError
from smarthub.model import promotion, runs
from smarthub.model.options import TrainOptions
from smarthub.optionspec import controls, default, labels
from smarthub.ui._common import StopSwitch, problem, user_errors
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
        *([f"fine-tuning: {html.escape(str(report['finetune_decision']))}"] if report.get("finetune_decision") else []),
        f"model: `{html.escape(str(ws.export_path))}`" + (f" (run {html.escape(str(report['run_id']))})"
                                                          if report.get("run_id") else ""),
    ]
    folders = folder_classes(ws.data_dir)
    vocab = [str(v) for v in report.get("vocab", [])]
    if folders and vocab and sorted(folders) != sorted(vocab):
        lines.insert(0, f"**Problem:** the model's classes ({html.escape(', '.join(vocab))}) differ from the data "
                        f"folders ({html.escape(', '.join(folders))}): train again before predicting or reviewing "
                        f"with the model")
    rows = [[label, m.get("precision"), m.get("recall"), m.get("f1"), m.get("support")]
            for label, m in (report.get("per_class") or {}).items()]
    outcome = promotion.outcome_of(report.get("promotion"))
    if outcome is not None:
        head = "**Promoted:**" if outcome.promoted else "**Kept, not promoted:**"
        lines.insert(0, f"{head} {outcome_text(outcome)}")
        if not outcome.promoted:
            lines[-1] = f"model: `{html.escape(str(outcome.run_dir))}` (not in use)"
    run_confusion = ws.runs_dir / str(report.get("run_id")) / "confusion.png" if report.get("run_id") else None
    if run_confusion is not None and run_confusion.is_file():
        confusion: str | None = str(run_confusion)
    else:
        confusion = str(ws.confusion_path) if ws.confusion_path.is_file() else None
    return "  \n".join(lines), rows, confusion


def outcome_text(outcome: runs.RunOutcome) -> str:
    """A new run promoted or kept, with both accuracies, and the next step in this page's words (Markdown)."""
    facts = html.escape(promotion.figures(outcome))
    if outcome.promoted:
        if outcome.previous is None:
            return f"promoted run {outcome.run_id}: there was no promoted model"
        how = " ('use the new model' = always)" if outcome.policy == "always" else ""
        return (f"promoted run {outcome.run_id}{how}: {facts}; **Undo last promotion** goes back to run "
                f"{outcome.previous}")
    why = " ('use the new model' = never)" if outcome.policy == "never" else ""
    return (f"kept run {outcome.run_id}, not promoted{why}" + (f": {facts}" if facts else "")
            + "; choose it under **model history** and press **Promote** to use it anyway")


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
    """(fraction done or None, one line) for a progress.TrainProgress."""
    if p.stage == "note":  # a decision (fine-tuning stopped, the budget's plan): the line itself
        return None, str((p.metrics or {}).get("message", ""))
    metrics = " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in (p.metrics or {}).items())
    if p.epochs and p.epoch:
        frac = ((p.epoch - 1) + (p.batch / p.batches if p.batches else 0.0)) / p.epochs
        return min(max(frac, 0.0), 1.0), f"{p.stage}: epoch {p.epoch}/{p.epochs} batch {p.batch}/{p.batches} {metrics}"
    if p.batches:
        return p.batch / p.batches, f"{p.stage}: {p.batch}/{p.batches}"
    return None, p.stage


LABELS = labels(TrainOptions)  # a refused option is named by its control's label


def run_train(ws: Workspace, arch: str, epochs: int, size_px: int, pretrained: bool,
              progress: gr.Progress | None = None, stop: StopSwitch | None = None,
              promote: str | None = None, budget: str = "",
              always_fine_tune: bool = False) -> tuple[str, list[list[Any]], str | None]:
    """Train with the core and return the report views; errors become gr.Error.

    `budget` ('' for none, else e.g. '90s', '5m'): the run plans its epochs to end within it and keeps the best
    model by then (smarthub.durations.parse_duration reads it; a bad one is a gr.Error, nothing trained).
    `always_fine_tune`: run the fine-tuning epochs even where the head leaves nothing to gain (TrainOptions.probe).

    The run is kept in models/runs/ and promoted by `promote` (if-better, always, never); the summary says
    which, with the new and the promoted model's accuracy side by side.

    `stop()` turning true (the Stop button) ends training after the current batch: nothing is written and
    the views show the previous model under a 'Stopped' line.
    """
    def cb(p: Any) -> None:
        if progress is not None:
            frac, text = progress_text(p)
            progress(frac, desc=text)

    if stop is not None:
        stop.reset()
    with user_errors(LABELS):
        from smarthub.durations import parse_duration
        from smarthub.model.progress import TrainingStopped
        from smarthub.model.train import train
        budget_s = (parse_duration(budget, field="budget_s", owner=TrainOptions) if (budget or "").strip()
                    else None)
        options = TrainOptions(arch=(arch or "").strip(), epochs=int(epochs), size_px=int(size_px),
                               pretrained=bool(pretrained), promote=promote or default(TrainOptions, "promote"),
                               budget_s=budget_s, probe=not always_fine_tune)
        try:
            result = train(ws, options, progress=cb, should_stop=stop)
        except TrainingStopped as e:
            summary, rows, confusion = show_current(ws)
            return f"**Stopped:** {html.escape(str(e))}.\n\n{summary}", rows, confusion
    return report_views(ws, result.report)


HISTORY_HEADERS = ["run", "date (UTC)", "arch", "px", "accuracy", "vs promoted (shared images)", "promoted"]


def history_views(ws: Workspace) -> tuple[list[list[Any]], list[str]]:
    """(run history rows, ids of the runs that can be promoted) — newest first.

    Each run shows its own validation accuracy and, beside it, both models' accuracy on the validation
    images it shares with the promoted run; a broken run says what is wrong.
    """
    infos = runs.list_runs(ws)
    try:
        current = runs.current_report(ws)
    except SmartHubError:
        current = None
    rows = []
    for info in reversed(infos):
        versus = ""
        if info.problem:
            versus = f"broken: {info.problem}"
        elif current is not None and not info.promoted:
            c = runs.compare_reports(runs.run_report(ws, info.run_id), current)
            versus = (f"{c.new_accuracy:.3f} vs {c.current_accuracy:.3f} on {c.n_shared}" if c.comparable
                      else "not comparable")
        rows.append([info.run_id, info.created_at.replace("T", " ")[:19], info.arch, info.size_px,
                     None if info.valid_accuracy is None else round(info.valid_accuracy, 4), versus,
                     "yes" if info.promoted else ""])
    return rows, [i.run_id for i in reversed(infos) if i.problem is None]


def promote_run(ws: Workspace, run_id: str | None) -> str:
    """Promote a run from the history (or PREVIOUS: the Undo button); returns the status line. Errors become
    gr.Error."""
    if not run_id:
        raise gr.Error("choose a run in the list first")
    with user_errors():
        done = promotion.promote(ws, run_id)
    if not done.changed:
        return f"**Done:** run {html.escape(done.run_id)} is already the promoted model"
    back = f"; **Undo last promotion** goes back to run {html.escape(done.previous)}" if done.previous else ""
    return f"**Done:** promoted run {html.escape(done.run_id)} to {html.escape(str(done.export_path))}{back}"


def show_history(ws: Workspace) -> tuple[list[list[Any]], list[str], str]:
    """History rows, run choices and a problem line ('' when fine) — never raises (the tab must build)."""
    try:
        rows, choices = history_views(ws)
    except SmartHubError as e:
        return [], [], f"**Problem:** {html.escape(str(e))}"
    return rows, choices, ""


def build(ws: Workspace) -> None:
    """Create the Train tab's widgets inside the current gr.Tab and wire the handlers."""
    summary0, rows0, confusion0 = show_current(ws)
    d = defaults(ws)
    c = controls(TrainOptions)
    with gr.Row():
        arch = gr.Dropdown(ARCHS, value=d["arch"], allow_custom_value=True, label=c["arch"].label,
                           elem_id="sh-train-arch", info="torchvision name (timm names work when timm is installed)")
        epochs = gr.Slider(**{**c["epochs"].slider(), "value": d["epochs"]}, elem_id="sh-train-epochs")
        size = gr.Slider(**{**c["size_px"].slider(), "value": d["size_px"]}, elem_id="sh-train-size")
        pretrained = gr.Checkbox(value=d["pretrained"], label=c["pretrained"].label,
                                 info="offline, only cached weights work (`smarthub weights add`)")
    with gr.Row():
        promote = gr.Radio(list(c["promote"].choices or ()), value=c["promote"].value, label=c["promote"].label,
                           elem_id="sh-train-promote",
                           info="if-better: only when its validation accuracy is not worse on the same images")
        budget = gr.Textbox("", label=c["budget_s"].label, elem_id="sh-train-budget",
                            placeholder="none, or e.g. 90s, 5m",
                            info="the run plans its epochs to end within it on this machine and keeps the best "
                                 "model by then")
        pays = gr.Checkbox(c["probe"].value, label=c["probe"].label, elem_id="sh-train-pays",
                           info="skip the fine-tuning epochs when the head leaves nothing to gain, or when its "
                                "first steps fall far below the head")
        run = gr.Button("Train", variant="primary", elem_id="sh-train")
        stop_b = gr.Button("Stop", variant="stop", elem_id="sh-train-stop")
        reload = gr.Button("Show current model", elem_id="sh-train-reload")
    status = gr.Markdown(elem_id="sh-train-status")
    summary = gr.Markdown(summary0, elem_id="sh-train-summary")
    with gr.Row():
        table = gr.Dataframe(value=rows0, headers=PER_CLASS_HEADERS, label="per class (validation)",
                             interactive=False, elem_id="sh-train-table")
        confusion = gr.Image(value=confusion0, type="filepath", label="confusion matrix", interactive=False,
                             elem_id="sh-train-confusion")

    rows1, choices1, problem1 = show_history(ws)
    with gr.Accordion("model history (models/runs/)", open=True):
        history = gr.Dataframe(value=rows1, headers=HISTORY_HEADERS, interactive=False, elem_id="sh-train-history",
                               label="runs, newest first: own validation accuracy; new vs promoted model on the "
                                     "validation images they share")
        with gr.Row():
            pick = gr.Dropdown(choices1, value=None, label="run", elem_id="sh-train-run")
            promote_b = gr.Button("Promote", elem_id="sh-train-promote-run")
            undo_b = gr.Button("Undo last promotion", elem_id="sh-train-undo")
        history_status = gr.Markdown(problem1, elem_id="sh-train-history-status")

    switch = StopSwitch()

    def refreshed(status: str) -> tuple:
        rows, choices, problem_line = show_history(ws)
        return rows, gr.update(choices=choices, value=None), status or problem_line

    def on_train(a: str, e: float, s: float, p: bool, how: str, b: str, only_if_pays: bool, progress=gr.Progress()):
        try:
            views = run_train(ws, a, int(e), int(s), p, progress, switch, promote=how, budget=b,
                              always_fine_tune=not only_if_pays)
        except gr.Error as err:  # stays on the page (a toast would vanish)
            return (*[gr.skip()] * 6, problem(err))
        return (*views, *refreshed(""), "")

    def on_promote(run_id: str | None):
        try:
            line = promote_run(ws, run_id)
        except gr.Error as err:
            return (gr.skip(), gr.skip(), problem(err), *[gr.skip()] * 3)
        return (*refreshed(line), *show_current(ws))

    def on_undo():
        return on_promote("PREVIOUS")

    def on_stop() -> None:
        switch.stop()
        gr.Info("stopping after the current batch; the previous model stays as it is")

    def on_reload():
        return (*show_current(ws), *refreshed(""))

    views = [summary, table, confusion]
    history_views_ = [history, pick, history_status]
    # one progress display per job: on the summary only, not on each output
    run.click(on_train, [arch, epochs, size, pretrained, promote, budget, pays], views + history_views_ + [status],
              show_progress_on=[summary])
    promote_b.click(on_promote, [pick], history_views_ + views, show_progress_on=[history_status])
    undo_b.click(on_undo, None, history_views_ + views, show_progress_on=[history_status])
    reload.click(on_reload, None, views + history_views_, show_progress_on=[summary])
    stop_b.click(on_stop, None, None)
