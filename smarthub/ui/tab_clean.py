"""Clean tab: run the review, page through suspects, keep / relabel / accept / delete / undo with keys or clicks.

The session logic (suspects, filters, paging, actions, this session's undo stack) is
`smarthub.clean.session`, shared with the notebook; this module renders it. The state is a `CleanState`
held by gr.State. After an action only the in-memory list changes and only the current page is
re-rendered: no rescan, so a 20,000-image dataset stays responsive. After every page of keeps and relabels the
queue is re-ranked with them as trusted labels (`session.after_decisions`: cached embeddings, no inference). Handlers are plain
functions of (ws, state, …) returning a `CleanView`; tests and the latency benchmark call them directly.

Over 400 lines on purpose: one tab's widgets and handlers (page, actions, keys, filters, health, embedder menu); its
logic is in clean/session.py and clean/review.py.
"""
from __future__ import annotations

import gc
import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from smarthub.clean import session, signals
from smarthub.clean.options import ReviewOptions
from smarthub.clean.records import Suspect
from smarthub.clean.review import ReviewResult
from smarthub.clean.session import ALL, PAGE_SIZE, CleanSession, suspect_path  # noqa: F401 (re-exported)
from smarthub.model.options import TrainOptions
from smarthub.optionspec import controls, labels
from smarthub.ui._common import PREVIEW_SIDE_PX, ok, problem, rel, thumbnail, user_errors, warn
from smarthub.workspace import Workspace

SHOW_ALL = "all images"  # the "also show" choice that lists every image, not a filter
N_QUICK = 9  # relabel shortcut buttons / keys 1-9
LABELS = labels(ReviewOptions, TrainOptions)  # a refused option is named by its control's label


@dataclass
class CleanState(CleanSession):
    """Per-browser-session state of the Clean tab: the clean session plus what the page last showed."""

    labels_shown: tuple[str, ...] | None = None  # class list last sent to the menus and number buttons


@dataclass
class CleanView:
    """Everything the page shows after a handler ran."""

    state: CleanState
    gallery: list[tuple[str, str]]
    page_text: str
    selected: str  # path of the selected image relative to the data folder, "" when none
    detail: str
    preview: str | None
    status: str
    counts: str
    labels: list[str]
    confirm: str = ""  # the new-class question; "" hides the confirmation box

    def outputs(self) -> tuple:
        """The values in the order `build()` wires its outputs."""
        if tuple(self.labels) == self.state.labels_shown:  # unchanged: do not re-send (fewer re-renders)
            quick = [gr.skip()] * N_QUICK
            menus = (gr.skip(), gr.skip())
        else:
            quick = [
                gr.update(value=f"{i + 1} {self.labels[i]}", visible=True) if i < len(self.labels)
                else gr.update(visible=False)
                for i in range(N_QUICK)
            ]
            menus = (gr.update(choices=self.labels), gr.update(choices=[ALL, *self.labels]))
            self.state.labels_shown = tuple(self.labels)
        on_page = self.state.pos - self.state.page * self.state.page_size if self.selected else None
        return (
            self.state,
            gr.update(value=self.gallery, selected_index=on_page),
            self.page_text,
            self.selected,
            self.detail,
            self.preview,
            self.status,
            self.counts,
            *menus,
            *quick,
            gr.update(visible=bool(self.confirm)),
            self.confirm,
        )


# ---------------------------------------------------------------- rendering the session

def filtered(st: CleanState) -> list[int]:
    """Indices into `st.suspects` that pass the kind / class / split filters, in rank order."""
    return st.filtered()


def caption(s: Suspect) -> str:
    """Given label, suggested label and its probability, e.g. 'cat → dog 91% (wrong)'."""
    suggested, p = s.suggested or s.predicted, s.p_suggested or s.p_predicted
    if suggested and suggested != s.given:
        return f"{s.given} → {suggested} {p:.0%} ({s.kind})"
    return f"{s.given} {s.p_given:.0%} ({s.kind})"


def counts_text(st: CleanState) -> str:
    c = st.counts
    text = (f"**Actions this session:** kept {c['kept']} · relabelled {c['relabelled']} · "
            f"deleted {c['deleted']} · undone {c['undone']}")
    if st.result is not None:
        text += f"  \n**Progress:** {html.escape(st.result.headline())}"
        if st.rerank and st.result.method == "fast":
            left = max(0, st.page_size - st.since_rank)
            text += f" · re-ranked with your decisions after {left} more"
    return text


def source_text(st: CleanState, s: Suspect) -> str:
    """'source <url> · original name <name>' from the ledger, or a note that the image has no provenance."""
    rec = st.source_of(s)
    if rec is None:
        return "source: not recorded (added by hand)"
    from smarthub.ledger import original_name

    name = original_name(rec)
    return (f"source {html.escape(rec.url)}" + (f" · original name **{html.escape(name)}**" if name else ""))


def render(ws: Workspace, st: CleanState, status: str = "") -> CleanView:
    """Clamp page and selection, build thumbnails for the current page only, describe the selection."""
    labels = st.labels()
    confirm = ""
    if st.pending is not None:
        image, new = st.pending
        confirm = (f"**Create the new class {html.escape(new)!r}** and move {html.escape(image)} into it?")
    if not st.suspects:
        text = "No suspects yet: press **Run review**." if not st.method else "No suspects left."
        return CleanView(st, [], text, "", "", None, status, counts_text(st), labels, confirm)
    view = st.clamp()
    if not view:
        return CleanView(st, [], f"No suspect matches these filters ({len(st.suspects)} in total).", "", "",
                         None, status, counts_text(st), labels, confirm)
    gallery = [(str(thumbnail(ws, suspect_path(ws, s))), caption(s)) for s in st.page_items(view)]
    sel = st.selected(view)
    sel_path = suspect_path(ws, sel)
    detail = (
        f"**{html.escape(rel(ws, sel_path))}**  \n"
        f"kind **{sel.kind}** · given **{html.escape(sel.given)}** ({sel.p_given:.0%}) · "
        f"predicted **{html.escape(str(sel.predicted))}** ({sel.p_predicted:.0%}) · score {sel.score:.3f}"
        + (f" · split {sel.split}" if sel.split and st.method == "model" else "")
        + (f"  \nsuggested label **{html.escape(sel.suggested)}** ({sel.p_suggested:.0%}): press **a** to accept"
           if sel.suggested else "")
        + f"  \n{source_text(st, sel)}"
    )
    page_text = (f"Page {st.page + 1} of {st.n_pages(view)} · suspect {st.pos + 1} of {len(view)} shown "
                 f"({len(st.suspects)} in total, {st.method} review of {st.n_images} images)")
    preview = str(thumbnail(ws, sel_path, side_px=PREVIEW_SIDE_PX))
    return CleanView(st, gallery, page_text, rel(ws, sel_path), detail, preview, status, counts_text(st), labels,
                     confirm)


def shown(ws: Workspace, st: CleanState, outcome: session.Outcome, *, undo_hint: bool = True) -> CleanView:
    """Render after an action: a Done line (with the undo hint) or a Problem line."""
    if outcome.confirm:
        return render(ws, st, f"**Confirm:** {html.escape(outcome.message)}")
    if not outcome.ok:
        return render(ws, st, warn(outcome.message))
    hint = " (press u or Undo to revert)" if undo_hint and outcome.ops and st.undo_stack else ""
    before = st.result
    outcome = session.after_decisions(ws, st, outcome)
    if st.result is not before:
        settle()
    return render(ws, st, ok(outcome.message + hint))


def settle(*, collect: bool = False) -> None:
    """Move what exists now (the new ranking's per-image state, torch's and gradio's objects) out of the garbage
    collector's view: it lives as long as the page, and a full collection walking it during a later action paused
    that action by 0.3–0.5 s at 5,000 images (bench/clean_latency.py --rerank). Freed objects still go by reference
    counting. With `collect` (a new review's result, seconds of work already), what earlier pages froze is thawed
    and collected first, so cyclic garbage of old rankings does not outlive the next review."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


# ---------------------------------------------------------------- handlers (ws, state, inputs) → CleanView

def load_result(ws: Workspace, result: ReviewResult, st: CleanState | None = None) -> CleanView:
    """A fresh session state from a ReviewResult (keeps the action counts of `st`)."""
    new = CleanState()
    new.load(ws, result)
    new.result = result
    settle(collect=True)
    if st is not None:
        new.counts = dict(st.counts)
    msg = ok(queue_summary(result))
    skipped = result.skipped
    if skipped:
        listed = "; ".join(f"{rel(ws, Path(p))}: {reason}" for p, reason in skipped[:3])
        msg += "  \n" + warn(f"{len(skipped)} images could not be read and were not ranked ({listed}"
                             f"{'; …' if len(skipped) > 3 else ''}); `smarthub verify --quarantine` moves them "
                             f"to the trash")
    notes = result.notes[:3]
    if notes:
        msg += "  \n" + html.escape(" · ".join(notes))
    return render(ws, new, msg)


def queue_summary(result: ReviewResult) -> str:
    """'estimated 12 label errors among 300 images · 12 listed … · filters: unsure 30, duplicate 2, …'."""
    include = result.options.include if result.options is not None else frozenset()
    show_all = result.options.show_all if result.options is not None else False
    shown = "every image" if show_all else "the estimated errors" + (f" + {', '.join(sorted(include))}"
                                                                       if include else "")
    counts = result.filter_counts
    text = (f"estimated {result.estimated_issues} label errors among {result.n_images} images · "
            f"{len(result.suspects)} listed ({shown}; {result.method} review, "
            f"{result.seconds:.1f} s)")
    if counts:
        text += " · filters: " + ", ".join(f"{k} {n}" for k, n in counts.items())
    return text


def health_text(ws: Workspace, result: ReviewResult) -> str:
    """The dataset's health as Markdown: estimated errors per class, most-confused pairs, highest losses,
    class imbalance (the same as `smarthub review --summary`)."""
    from smarthub.clean import review

    h, rows = review.health_of(result)
    lines = [f"Ranked by **{html.escape(ranked_by(result))}** ({html.escape(result.method)} method)\n",
             "| class | images | estimated errors | share |", "|---|---:|---:|---:|"]
    lines += [f"| {html.escape(c.label)} | {c.n_images} | {c.estimated_errors} | {c.error_share:.0%} |"
              for c in h.classes]
    if h.confused:
        lines.append("\n**Most confused** (given → likely): " + ", ".join(
            f"{html.escape(g)} → {html.escape(t)} {n}" for g, t, n in h.confused))
    if h.top_losses:
        lines.append("\n**Highest losses** (−log p(given)): " + ", ".join(
            f"{html.escape(rel(ws, rows[i].path))} {loss:.2f}" for i, loss in h.top_losses[:5]))
    if h.imbalance:
        lines.append(f"\n**Class imbalance:** {html.escape(h.imbalance)}")
    return "\n".join(lines)


def filter_choices(result: ReviewResult | None) -> list[tuple[str, str]]:
    """The 'also show' boxes, one per filter of the signal registry, each with its count: [(label, value)]."""
    counts = result.filter_counts if result is not None else {}
    out = [(SHOW_ALL, SHOW_ALL)]
    for name in signals.filters():
        n = signals.filter_count(name, counts)
        out.append((name if n is None else f"{name} ({n})", name))
    return out


def kind_choices() -> list[str]:
    """The kind menu: all, then the signal registry's kinds."""
    return [ALL, *signals.kinds()]


def run_review(ws: Workspace, st: CleanState, method: str, threshold: float, folds: int,
               progress: gr.Progress | None = None, include: list[str] | tuple[str, ...] = (),
               embedder: str | None = None) -> CleanView:
    """Review the dataset and show the estimated label errors (and the images of the filters `include`), ranked
    with `embedder` (None or DEFAULT_EMBEDDER: the trained model's arch, else mobilenet_v2)."""
    def cb(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc=stage)

    with user_errors(LABELS):
        from smarthub.clean import review
        options = ReviewOptions(method=method, folds=int(folds), threshold=float(threshold),
                                include=frozenset(i for i in include if i != SHOW_ALL), show_all=SHOW_ALL in include,
                                train=embedder_train(ws, embedder))
        result = review.review(ws, options, progress=cb)
    return load_result(ws, result, st)


def show_filters(ws: Workspace, st: CleanState, include: list[str]) -> CleanView:
    """Turn 'also show' filters on or off: the queue is rebuilt from the review's cached scores."""
    if st.result is None:
        return render(ws, st)
    with user_errors():
        from smarthub.clean import review
        result = review.requeue(ws, st.result, include=[i for i in include if i != SHOW_ALL],
                                show_all=SHOW_ALL in include)
    return load_result(ws, result, st)


def set_filters(ws: Workspace, st: CleanState, kind: str, label: str, split: str) -> CleanView:
    st.set_filters(kind, label, split)
    return render(ws, st)


def turn_page(ws: Workspace, st: CleanState, delta: int) -> CleanView:
    st.turn_page(delta)
    return render(ws, st)


def select(ws: Workspace, st: CleanState, index_on_page: int) -> CleanView:
    st.select(index_on_page)
    return render(ws, st)


def relabel(ws: Workspace, st: CleanState, selected: str, choice: str | None, new_label: str | None) -> CleanView:
    """Move the selected image to class `new_label` (if typed) or `choice`; a new class asks first."""
    label = (new_label or "").strip() or (choice or "")
    return shown(ws, st, session.relabel(ws, st, selected, label))


def confirm_new(ws: Workspace, st: CleanState) -> CleanView:
    """'Create class': relabel the pending image to the new class."""
    return shown(ws, st, session.confirm_new_class(ws, st))


def cancel_new(ws: Workspace, st: CleanState) -> CleanView:
    return shown(ws, st, session.cancel_new_class(st))


def accept(ws: Workspace, st: CleanState, selected: str) -> CleanView:
    """Relabel the selected image to its suggested class: key a."""
    return shown(ws, st, session.accept_predicted(ws, st, selected))


def quick_relabel(ws: Workspace, st: CleanState, selected: str, n: int) -> CleanView:
    """Relabel to the n-th class (1-based) of the sorted vocabulary: keys 1-9."""
    return shown(ws, st, session.quick_relabel(ws, st, selected, n))


def delete(ws: Workspace, st: CleanState, selected: str) -> CleanView:
    """Move the selected image to the trash (undoable)."""
    return shown(ws, st, session.delete(ws, st, selected))


def keep(ws: Workspace, st: CleanState, selected: str) -> CleanView:
    """Mark the selected image as correct: remembered by the review until the image changes."""
    return shown(ws, st, session.keep(ws, st, selected), undo_hint=False)


def undo(ws: Workspace, st: CleanState) -> CleanView:
    """Undo this session's last action; with none, say so and point at the journal's undo button."""
    empty = not st.undo_stack
    outcome = session.undo(ws, st)
    if empty:
        return render(ws, st, warn(outcome.message + "; 'Undo newest journal operation' reverts the latest file "
                                                      "operation of any window or the command line"))
    return shown(ws, st, outcome, undo_hint=False)


def undo_journal(ws: Workspace, st: CleanState) -> CleanView:
    """Undo the journal's newest file operation, from any session."""
    return shown(ws, st, session.undo_journal(ws, st), undo_hint=False)


def page_error(ws: Workspace, st: CleanState, e: gr.Error) -> CleanView:
    """A failed Run review: the message stays in the status area until the next action."""
    return render(ws, st, problem(e))


# ---------------------------------------------------------------- embedders: the strongest cached, a download

DEFAULT_EMBEDDER = "default"  # the trained model's arch and size, else mobilenet_v2 (review.default_train_options)


def ranked_by(result: ReviewResult) -> str:
    """'dinov2_vits14 at 224 px' (the embedder the review ranked with), or 'the exported model'."""
    train = result.options.train if result.options is not None else None
    if result.method == "model" or train is None:
        return "the exported model"
    return f"{train.arch} at {train.size_px} px"


def embedder_train(ws: Workspace, embedder: str | None) -> TrainOptions | None:
    """The review's TrainOptions for a chosen embedder (None: the documented default)."""
    from dataclasses import replace

    from smarthub.clean import review

    if not embedder or embedder == DEFAULT_EMBEDDER:
        return None
    return replace(review.default_train_options(ws), arch=embedder, size_px=review.DEFAULT_SIZE_PX)


def embedder_menu() -> tuple[list[str], str]:
    """(choices, value) of the embedder menu: the recommended embedders cached here, strongest first, and the
    default; the value is the strongest (without importing torch: the menu is built at start-up)."""
    from smarthub.model import embedders

    names = embedders.available(torchvision=False)
    return [*names, DEFAULT_EMBEDDER], (names[0] if names else DEFAULT_EMBEDDER)


def download_menu() -> tuple[list[tuple[str, str]], str | None]:
    """(choices, value) of the download menu: recommended embedders not cached here, strongest first."""
    from smarthub.model import embedders

    missing = [s.rec for s in embedders.statuses() if not s.cached]
    return [(f"{r.name} ({r.size_mb} MB, {r.licence})", r.name) for r in missing], (missing[0].name if missing else None)


def download_embedder(name: str | None) -> tuple[str, str | None]:
    """Download a recommended embedder (one click). Returns (message, the name to select when it worked)."""
    from smarthub.errors import SmartHubError
    from smarthub.model import embedders

    if not name:
        return ok("every recommended embedder is cached here"), None
    try:
        folder = embedders.download(name)
    except SmartHubError as e:
        return warn(str(e)), None
    return ok(f"{name} downloaded to {folder}: chosen for the next review"), name


def embedder_note() -> str:
    """One line under the menus: offline here, what to do; else nothing."""
    from smarthub.model import embedders

    if not embedders.offline():
        return ""
    return html.escape(f"Offline here (HF_HUB_OFFLINE): on a machine online run `smarthub weights download NAME`, "
                       f"then copy its folder into {embedders.hub_cache_dir()}")


# ---------------------------------------------------------------- widgets

SHORTCUTS_JS = """
<script>
(() => {
  if (window.__smarthubKeys) return;
  window.__smarthubKeys = true;
  const ids = {k: "sh-keep", d: "sh-delete", u: "sh-undo", a: "sh-accept", n: "sh-next", p: "sh-prev"};
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    const tag = t && t.tagName ? t.tagName.toLowerCase() : "";
    if (tag === "input" || tag === "textarea" || tag === "select" || (t && t.isContentEditable)) return;
    const panel = document.getElementById("sh-clean-panel");
    if (!panel || panel.offsetParent === null) return;  // only while the Clean tab is shown
    let id = ids[ev.key.toLowerCase()];
    if (!id && /^[1-9]$/.test(ev.key)) id = "sh-quick-" + ev.key;
    if (!id) return;
    const el = document.getElementById(id);
    const button = el && (el.tagName === "BUTTON" ? el : el.querySelector("button"));
    if (button && !button.disabled) { ev.preventDefault(); button.click(); }
  });
})();
</script>
"""


def default_method(ws: Workspace) -> str:
    """'fast' when the embedding weights are cached; else 'model' when an exported model exists (offline demo)."""
    from smarthub.demo import pretrained_weights_cached

    if pretrained_weights_cached() or not ws.export_path.is_file():
        return "fast"
    return "model"


def build(ws: Workspace) -> None:
    """Create the Clean tab's widgets inside the current gr.Tab and wire the handlers."""
    state = gr.State(CleanState())
    c = controls(ReviewOptions)
    with gr.Column(elem_id="sh-clean-panel"):
        with gr.Row():
            method = gr.Dropdown(list(c["method"].choices or ()), value=default_method(ws),
                                 label=c["method"].label,
                                 info="fast: cross-validated linear head on embeddings (seconds) · finetune: "
                                      "K-fold fine-tunes (slow) · model: the exported model (in-sample on its "
                                      "training images)")
            threshold = gr.Slider(**c["threshold"].slider(),
                                  info="'unsure': the label's probability is below this. Probabilities are shared "
                                       f"between similar classes, so many right labels are unsure at "
                                       f"{c['threshold'].value:g}: lower it for a shorter list (the queue itself "
                                       f"is the estimated errors)")
            folds = gr.Slider(**c["folds"].slider())
            choices, value = embedder_menu()
            embedder = gr.Dropdown(choices, value=value, label="embedder", elem_id="sh-embedder",
                                   info="the features the fast review ranks with, strongest cached first (default: "
                                        "the trained model's arch, else mobilenet_v2)")
            with gr.Column(min_width=160):
                run = gr.Button("Run review", variant="primary", elem_id="sh-run-review")
                run_progress = gr.Markdown(elem_id="sh-run-progress", min_height=96)  # the progress, by the button
        with gr.Row():
            get_choices, get_value = download_menu()
            get = gr.Dropdown(get_choices, value=get_value, label="a stronger embedder (download, online)",
                              elem_id="sh-get-embedder", scale=2)
            get_b = gr.Button("Download", size="sm", elem_id="sh-download-embedder", scale=0, min_width=100)
            get_note = gr.Markdown(embedder_note(), elem_id="sh-embedder-note")
        show = gr.CheckboxGroup(filter_choices(None), value=[], label="also show (the queue holds the estimated "
                                "label errors; counts after a review)", elem_id="sh-show",
                                info=" · ".join(f"{s.name}: {s.description}" for s in signals.SIGNALS if s.filter))
        with gr.Row():
            kind = gr.Dropdown(kind_choices(), value=ALL, label="kind")
            label = gr.Dropdown([ALL], value=ALL, label="class (given)")
            split = gr.Dropdown([ALL, "train", "valid", "none"], value=ALL, label="split", visible=False,
                                info="model method only: train = the model learnt this image (scored in-sample), "
                                     "valid = held out; fast and finetune score every image out-of-sample")
        with gr.Accordion("Dataset health (after a review)", open=False):
            health = gr.Markdown(elem_id="sh-health")
        page_text = gr.Markdown("No suspects yet: press **Run review**.", elem_id="sh-page-text")
        with gr.Row():
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="suspects (worst first)", columns=6, height=620, allow_preview=False,
                                     object_fit="contain", elem_id="sh-gallery")
                with gr.Row():
                    prev = gr.Button("◀ previous page (p)", elem_id="sh-prev", size="sm")
                    nxt = gr.Button("next page (n) ▶", elem_id="sh-next", size="sm")
            with gr.Column(scale=2):
                preview = gr.Image(label="selected", type="filepath", interactive=False, height=300,
                                   elem_id="sh-preview")
                selected = gr.Textbox(label="selected image", interactive=False, elem_id="sh-selected")
                detail = gr.Markdown(elem_id="sh-detail")
                with gr.Row():
                    keep_b = gr.Button("Keep (k)", elem_id="sh-keep")
                    accept_b = gr.Button("Accept suggestion (a)", elem_id="sh-accept")
                    delete_b = gr.Button("Delete (d)", variant="stop", elem_id="sh-delete")
                    undo_b = gr.Button("Undo (u)", elem_id="sh-undo")
                with gr.Row():
                    relabel_to = gr.Dropdown([], label="relabel to", elem_id="sh-relabel-to")
                    new_label = gr.Textbox(label="…or a new label", elem_id="sh-new-label")
                relabel_b = gr.Button("Relabel", variant="primary", elem_id="sh-relabel")
                with gr.Column(visible=False, elem_id="sh-confirm") as confirm_box:
                    confirm_text = gr.Markdown(elem_id="sh-confirm-text")
                    with gr.Row():
                        confirm_b = gr.Button("Create class and relabel", variant="primary", elem_id="sh-confirm-new")
                        cancel_b = gr.Button("Cancel", elem_id="sh-confirm-cancel")
                with gr.Row():
                    quick = [gr.Button(f"{i + 1}", visible=False, size="sm", elem_id=f"sh-quick-{i + 1}")
                             for i in range(N_QUICK)]
                status = gr.Markdown(elem_id="sh-status")
                counts = gr.Markdown(counts_text(CleanState()), elem_id="sh-counts")
                journal_b = gr.Button("Undo newest journal operation (any window)", size="sm",
                                      elem_id="sh-undo-journal")
        gr.Markdown("Keys (outside text boxes): **k** keep · **a** accept the suggested label · **d** delete · "
                    "**u** undo · **1-9** relabel to the numbered class · **n / p** next / previous page.")

    outputs = [state, gallery, page_text, selected, detail, preview, status, counts, relabel_to, label, *quick,
               confirm_box, confirm_text]

    def on_run(st, m, t, f, inc, emb, progress=gr.Progress()):
        try:
            return run_review(ws, st, m, t, f, progress, inc, emb).outputs()
        except gr.Error as e:  # shown in the status area, where it stays until the next action
            return page_error(ws, st, e).outputs()

    def on_show(st, inc):
        try:
            return show_filters(ws, st, inc).outputs()
        except gr.Error as e:
            return page_error(ws, st, e).outputs()

    def on_counts(st):
        if st.result is None:
            return gr.skip(), gr.skip(), gr.skip()
        # the split filter means something only when a trained model scored its own training images
        return (gr.update(choices=filter_choices(st.result)), gr.update(visible=st.method == "model"),
                health_text(ws, st.result))

    def on_filter(st, k, lab, sp):
        return set_filters(ws, st, k, lab, sp).outputs()

    def on_prev(st):
        return turn_page(ws, st, -1).outputs()

    def on_next(st):
        return turn_page(ws, st, +1).outputs()

    def on_select(st, evt: gr.SelectData):
        return select(ws, st, evt.index).outputs()

    def on_keep(st, sel):
        return keep(ws, st, sel).outputs()

    def on_delete(st, sel):
        return delete(ws, st, sel).outputs()

    def on_undo(st):
        return undo(ws, st).outputs()

    def on_undo_journal(st):
        return undo_journal(ws, st).outputs()

    def on_accept(st, sel):
        return accept(ws, st, sel).outputs()

    def on_confirm(st):
        done_before = st.counts["relabelled"]
        view = confirm_new(ws, st)
        return (*view.outputs(), "" if view.state.counts["relabelled"] > done_before else gr.skip())

    def on_cancel(st):
        return cancel_new(ws, st).outputs()

    def on_relabel(st, sel, choice, new):
        done_before = st.counts["relabelled"]
        view = relabel(ws, st, sel, choice, new)
        # clear the typed label in the same response (a chained event would race the user's next typing);
        # after a refusal it stays, so the user can correct it
        cleared = "" if view.state.counts["relabelled"] > done_before else gr.skip()
        return (*view.outputs(), cleared)

    def on_download(name):
        message, got = download_embedder(name)
        if got is None:
            return message, gr.skip(), gr.skip()
        names, _ = embedder_menu()
        left, first = download_menu()
        return message, gr.update(choices=names, value=got), gr.update(choices=left, value=first)

    get_b.click(on_download, [get], [get_note, embedder, get])
    run.click(on_run, [state, method, threshold, folds, show, embedder], outputs,
              show_progress_on=[run_progress]).then(on_counts, [state], [show, split, health])  # one bar, by the button
    show.input(on_show, [state, show], outputs)
    for widget in (kind, label, split):
        widget.input(on_filter, [state, kind, label, split], outputs)
    prev.click(on_prev, [state], outputs)
    nxt.click(on_next, [state], outputs)
    gallery.select(on_select, [state], outputs)
    keep_b.click(on_keep, [state, selected], outputs)
    delete_b.click(on_delete, [state, selected], outputs)
    undo_b.click(on_undo, [state], outputs)
    journal_b.click(on_undo_journal, [state], outputs)
    accept_b.click(on_accept, [state, selected], outputs)
    confirm_b.click(on_confirm, [state], [*outputs, new_label])
    cancel_b.click(on_cancel, [state], outputs)
    relabel_b.click(on_relabel, [state, selected, relabel_to, new_label], [*outputs, new_label])
    for i, button in enumerate(quick):
        button.click(_quick_handler(ws, i + 1), [state, selected], outputs)


def _quick_handler(ws: Workspace, n: int):
    def on_quick(st, sel):
        return quick_relabel(ws, st, sel, n).outputs()
    return on_quick
