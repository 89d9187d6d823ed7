"""Clean tab: run the review, page through suspects, keep / relabel / delete / undo with keys or clicks.

The session (suspects, filters, page, undo stack, counts) lives in a `CleanState` held by gr.State.
After an action only the in-memory list changes and only the current page is re-rendered: no re-ranking,
no rescan, so a 20,000-image dataset stays responsive. Handlers are plain functions of (ws, state, …)
returning a `CleanView`; tests and the latency benchmark call them directly.
"""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from smarthub.errors import MissingFileError, SmartHubError
from smarthub.ui._common import PREVIEW_SIDE_PX, ok, rel, thumbnail, user_errors, warn
from smarthub.workspace import Workspace

PAGE_SIZE = 24
KINDS = ("all", "wrong", "unsure", "duplicate", "outlier", "quality")
SHOW_ALL = "all images"  # the "also show" choice that lists every image, not a filter
METHODS = ("fast", "finetune", "model")
ALL = "all"
N_QUICK = 9  # relabel shortcut buttons / keys 1-9


@dataclass
class UndoEntry:
    """One action of this session: the file operation (if any) and the suspects it took off the list."""

    kind: str  # relabel | delete | keep
    op_id: str | None
    removed: list[tuple[int, Any]]  # (index in the suspect list, Suspect)
    path: str = ""


@dataclass
class CleanState:
    """Per-browser-session state of the Clean tab."""

    suspects: list[Any] = field(default_factory=list)  # Suspect records, worst first
    vocab: list[str] = field(default_factory=list)
    kind: str = ALL
    label: str = ALL
    split: str = ALL
    page: int = 0
    page_size: int = PAGE_SIZE
    pos: int = 0  # selected position in the filtered view
    counts: dict[str, int] = field(default_factory=lambda: {"kept": 0, "relabelled": 0, "deleted": 0, "undone": 0})
    undo_stack: list[UndoEntry] = field(default_factory=list)
    method: str = ""
    n_images: int = 0
    labels_shown: tuple[str, ...] | None = None  # class list last sent to the menus and number buttons
    result: Any = None  # the ReviewResult: turning a filter on re-queues it without inference


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
        )


# ---------------------------------------------------------------- pure helpers over the state

def suspect_path(ws: Workspace, s: Any) -> Path:
    p = Path(s.path)
    return p if p.is_absolute() else ws.data_dir / p


def filtered(st: CleanState) -> list[int]:
    """Indices into `st.suspects` that pass the kind / class / split filters, in rank order."""
    if st.kind == ALL and st.label == ALL and st.split == ALL:
        return list(range(len(st.suspects)))
    out = []
    for i, s in enumerate(st.suspects):
        if st.kind != ALL and s.kind != st.kind:
            continue
        if st.label != ALL and s.given != st.label:
            continue
        if st.split != ALL and (getattr(s, "split", "") or "none") != st.split:
            continue
        out.append(i)
    return out


def caption(s: Any) -> str:
    """Given label, predicted label and confidence, e.g. 'cat → dog 91% (wrong)'."""
    if s.predicted and s.predicted != s.given:
        return f"{s.given} → {s.predicted} {s.p_predicted:.0%} ({s.kind})"
    return f"{s.given} {s.p_given:.0%} ({s.kind})"


def counts_text(st: CleanState) -> str:
    c = st.counts
    return (f"**Actions this session:** kept {c['kept']} · relabelled {c['relabelled']} · "
            f"deleted {c['deleted']} · undone {c['undone']}")


def render(ws: Workspace, st: CleanState, status: str = "") -> CleanView:
    """Clamp page and selection, build thumbnails for the current page only, describe the selection."""
    view = filtered(st)
    labels = sorted(set(st.vocab))
    if not st.suspects:
        text = "No suspects yet: press **Run review**." if not st.method else "No suspects left."
        return CleanView(st, [], text, "", "", None, status, counts_text(st), labels)
    if not view:
        st.pos, st.page = 0, 0
        return CleanView(st, [], f"No suspect matches these filters ({len(st.suspects)} in total).", "", "",
                         None, status, counts_text(st), labels)
    st.pos = min(max(st.pos, 0), len(view) - 1)
    pages = (len(view) + st.page_size - 1) // st.page_size
    st.page = st.pos // st.page_size
    start = st.page * st.page_size
    items = [st.suspects[i] for i in view[start:start + st.page_size]]
    gallery = [(str(thumbnail(ws, suspect_path(ws, s))), caption(s)) for s in items]
    sel = st.suspects[view[st.pos]]
    sel_path = suspect_path(ws, sel)
    detail = (
        f"**{html.escape(rel(ws, sel_path))}**  \n"
        f"kind **{sel.kind}** · given **{html.escape(sel.given)}** ({sel.p_given:.0%}) · "
        f"predicted **{html.escape(str(sel.predicted))}** ({sel.p_predicted:.0%}) · score {sel.score:.3f}"
        + (f" · split {sel.split}" if getattr(sel, "split", "") else "")
    )
    page_text = (f"Page {st.page + 1} of {pages} · suspect {st.pos + 1} of {len(view)} shown "
                 f"({len(st.suspects)} in total, {st.method} review of {st.n_images} images)")
    preview = str(thumbnail(ws, sel_path, side_px=PREVIEW_SIDE_PX))
    return CleanView(st, gallery, page_text, rel(ws, sel_path), detail, preview, status, counts_text(st), labels)


def _index(ws: Workspace, st: CleanState, selected: str) -> int | None:
    """Index of the suspect whose path is `selected` (relative to the data folder), None when not listed."""
    target = ws.data_dir / selected
    view = filtered(st)
    if 0 <= st.pos < len(view) and suspect_path(ws, st.suspects[view[st.pos]]) == target:
        return view[st.pos]  # the usual case: the selection shown is the one in the state
    for i, s in enumerate(st.suspects):
        if suspect_path(ws, s) == target:
            return i
    return None


def _find(ws: Workspace, st: CleanState, selected: str) -> int:
    """Like `_index`, but a missing selection raises SmartHubError with the reason."""
    if not selected:
        raise SmartHubError("select an image first (click a thumbnail)")
    index = _index(ws, st, selected)
    if index is not None:
        return index
    raise SmartHubError(f"{selected} was already handled: it is no longer in the list")


def _take(st: CleanState, index: int) -> tuple[int, Any]:
    return index, st.suspects.pop(index)


# ---------------------------------------------------------------- handlers (ws, state, inputs) → CleanView

def load_result(ws: Workspace, result: Any, st: CleanState | None = None) -> CleanView:
    """A fresh session state from a ReviewResult (keeps the action counts of `st`)."""
    new = CleanState(suspects=list(result.suspects), vocab=list(result.vocab), method=str(result.method),
                     n_images=int(result.n_images), result=result)
    if st is not None:
        new.counts = dict(st.counts)
    msg = ok(queue_summary(result))
    skipped = list(getattr(result, "skipped", []) or [])
    if skipped:
        shown = "; ".join(f"{rel(ws, Path(p))}: {reason}" for p, reason in skipped[:3])
        msg += "  \n" + warn(f"{len(skipped)} images could not be read and were not ranked ({shown}"
                             f"{'; …' if len(skipped) > 3 else ''}); `smarthub verify --quarantine` moves them "
                             f"to the trash")
    notes = [str(n) for n in (getattr(result, "notes", []) or [])][:3]
    if notes:
        msg += "  \n" + html.escape(" · ".join(notes))
    return render(ws, new, msg)


def queue_summary(result: Any) -> str:
    """'estimated 12 label errors among 300 images · 12 listed … · filters: unsure 30, duplicate 2, …'."""
    include = getattr(getattr(result, "options", None), "include", frozenset())
    show_all = getattr(getattr(result, "options", None), "show_all", False)
    shown = "every image" if show_all else "the estimated errors" + (f" + {', '.join(sorted(include))}"
                                                                       if include else "")
    counts = getattr(result, "filter_counts", {}) or {}
    text = (f"estimated {getattr(result, 'estimated_issues', 0)} label errors among {result.n_images} images · "
            f"{len(result.suspects)} listed ({shown}; {result.method} review, "
            f"{getattr(result, 'seconds', 0.0):.1f} s)")
    if counts:
        text += " · filters: " + ", ".join(f"{k} {n}" for k, n in counts.items())
    return text


def filter_choices(result: Any) -> list[tuple[str, str]]:
    """The 'also show' boxes, each with its count: [(label, value)]."""
    from smarthub.clean.review import FILTERS, QUALITY_ISSUES

    counts = getattr(result, "filter_counts", {}) or {}
    n_quality = sum(counts.get(q, 0) for q in QUALITY_ISSUES)
    out = [(SHOW_ALL, SHOW_ALL)]
    for name in FILTERS:
        n = (n_quality if name == "quality" else counts.get(name)) if counts else None
        out.append((name if n is None else f"{name} ({n})", name))
    return out


def run_review(ws: Workspace, st: CleanState, method: str, threshold: float, folds: int,
               progress: gr.Progress | None = None, include: list[str] | tuple[str, ...] = ()) -> CleanView:
    """Review the dataset and show the estimated label errors (and the images of the filters `include`)."""
    def cb(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress((done, total), desc=stage)

    with user_errors():
        from smarthub.clean import review
        options = review.ReviewOptions(method=method, folds=int(folds), threshold=float(threshold),
                                       include=frozenset(i for i in include if i != SHOW_ALL),
                                       show_all=SHOW_ALL in include)
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
    st.kind, st.label, st.split = kind or ALL, label or ALL, split or ALL
    st.pos = 0
    return render(ws, st)


def turn_page(ws: Workspace, st: CleanState, delta: int) -> CleanView:
    st.pos = (st.page + delta) * st.page_size
    return render(ws, st)


def select(ws: Workspace, st: CleanState, index_on_page: int) -> CleanView:
    st.pos = st.page * st.page_size + int(index_on_page)
    return render(ws, st)


def _gone(ws: Workspace, st: CleanState, selected: str, e: SmartHubError) -> CleanView:
    """Show a refusal; when the listed file vanished (other window, outside the app), drop it from the list."""
    if not isinstance(e, MissingFileError):
        return render(ws, st, warn(str(e)))
    index = _index(ws, st, selected)
    if index is not None:
        st.suspects.pop(index)
    if e.explained:
        text = f"{e} (perhaps in another window)"
    else:  # it was listed here, so it existed: say it went, not that it never was
        text = f"{selected} no longer exists (moved or deleted outside this page, perhaps in another window)"
    return render(ws, st, warn(text))


def relabel(ws: Workspace, st: CleanState, selected: str, choice: str | None, new_label: str | None) -> CleanView:
    """Move the selected image to class `new_label` (if typed) or `choice`, through fileops."""
    from smarthub import fileops

    label = (new_label or "").strip() or (choice or "")
    try:
        if not label:
            raise SmartHubError("choose a class in 'relabel to' or type a new label first")
        index = _find(ws, st, selected)
        s = st.suspects[index]
        op = fileops.relabel(ws, [suspect_path(ws, s)], label)
    except SmartHubError as e:
        return _gone(ws, st, selected, e)
    st.undo_stack.append(UndoEntry("relabel", op.op_id, [_take(st, index)], selected))
    st.counts["relabelled"] += 1
    if op.label not in st.vocab:
        st.vocab.append(op.label)
    dst = op.moves[0].dst if op.moves else label
    return render(ws, st, ok(f"relabelled {selected} → {dst} (press u or Undo to revert)"))


def quick_relabel(ws: Workspace, st: CleanState, selected: str, n: int) -> CleanView:
    """Relabel to the n-th class (1-based) of the sorted vocabulary: keys 1-9."""
    labels = sorted(set(st.vocab))
    if not 1 <= n <= len(labels):
        return render(ws, st, warn(f"no class number {n}: there are {len(labels)} classes"))
    return relabel(ws, st, selected, labels[n - 1], "")


def delete(ws: Workspace, st: CleanState, selected: str) -> CleanView:
    """Move the selected image to the trash (undoable)."""
    from smarthub import fileops

    try:
        index = _find(ws, st, selected)
        op = fileops.trash(ws, [suspect_path(ws, st.suspects[index])])
    except SmartHubError as e:
        return _gone(ws, st, selected, e)
    st.undo_stack.append(UndoEntry("delete", op.op_id, [_take(st, index)], selected))
    st.counts["deleted"] += 1
    return render(ws, st, ok(f"moved {selected} to the trash (press u or Undo to restore)"))


def keep(ws: Workspace, st: CleanState, selected: str) -> CleanView:
    """Mark the selected image as correct: remembered by the review until the image changes."""
    try:
        index = _find(ws, st, selected)
        path = suspect_path(ws, st.suspects[index])
        if not path.exists():
            raise MissingFileError(f"{selected} does not exist", selected)
        from smarthub.clean.review import keep as keep_image

        keep_image(ws, path)
    except SmartHubError as e:
        return _gone(ws, st, selected, e)
    st.undo_stack.append(UndoEntry("keep", None, [_take(st, index)], selected))
    st.counts["kept"] += 1
    return render(ws, st, ok(f"kept {selected} as labelled"))


def undo(ws: Workspace, st: CleanState) -> CleanView:
    """Undo this session's last action; with none, the last file operation in the journal."""
    from smarthub import fileops

    try:
        if not st.undo_stack:
            op = fileops.undo(ws)
            st.counts["undone"] += 1
            return render(ws, st, ok(f"undid operation {op.undoes} from an earlier session "
                                     f"({len(op.moves)} files restored; run the review to rank them)"))
    except SmartHubError as e:
        return render(ws, st, warn(str(e)))
    entry = st.undo_stack.pop()  # popped even on failure, so one stuck action never blocks older ones
    try:
        if entry.op_id is not None:
            fileops.undo(ws, entry.op_id)
        else:
            from smarthub.clean.review import unkeep

            unkeep(ws, suspect_path(ws, entry.removed[0][1]))
    except SmartHubError as e:
        if "already undone" not in str(e):  # undone elsewhere (another window, the CLI): the file is back
            retry = f"; `smarthub undo {entry.op_id}` retries it" if entry.op_id else ""
            return render(ws, st, warn(f"{e}{retry}"))
    for index, s in sorted(entry.removed, key=lambda r: r[0]):
        st.suspects.insert(min(index, len(st.suspects)), s)
    st.counts["undone"] += 1
    first = entry.removed[0][0]
    view = filtered(st)
    if first in view:
        st.pos = view.index(first)
    return render(ws, st, ok(f"undid {entry.kind} of {entry.path}"))


# ---------------------------------------------------------------- widgets

SHORTCUTS_JS = """
<script>
(() => {
  if (window.__smarthubKeys) return;
  window.__smarthubKeys = true;
  const ids = {k: "sh-keep", d: "sh-delete", u: "sh-undo", n: "sh-next", p: "sh-prev"};
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
    with gr.Column(elem_id="sh-clean-panel"):
        with gr.Row():
            method = gr.Dropdown(list(METHODS), value=default_method(ws), label="review method",
                                 info="fast: cross-validated linear head on embeddings (seconds) · finetune: "
                                      "K-fold fine-tunes (slow) · model: the exported model (in-sample on its "
                                      "training images)")
            threshold = gr.Slider(0.05, 0.95, value=0.6, step=0.05, label="unsure below p(given)")
            folds = gr.Slider(2, 10, value=5, step=1, label="folds")
            run = gr.Button("Run review", variant="primary", elem_id="sh-run-review")
        show = gr.CheckboxGroup(filter_choices(None), value=[], label="also show (the queue holds the estimated "
                                "label errors; counts after a review)", elem_id="sh-show")
        with gr.Row():
            kind = gr.Dropdown(list(KINDS), value=ALL, label="kind")
            label = gr.Dropdown([ALL], value=ALL, label="class (given)")
            split = gr.Dropdown([ALL, "train", "valid", "none"], value=ALL, label="split")
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
                    delete_b = gr.Button("Delete (d)", variant="stop", elem_id="sh-delete")
                    undo_b = gr.Button("Undo (u)", elem_id="sh-undo")
                with gr.Row():
                    relabel_to = gr.Dropdown([], label="relabel to", elem_id="sh-relabel-to")
                    new_label = gr.Textbox(label="…or a new label", elem_id="sh-new-label")
                relabel_b = gr.Button("Relabel", variant="primary", elem_id="sh-relabel")
                with gr.Row():
                    quick = [gr.Button(f"{i + 1}", visible=False, size="sm", elem_id=f"sh-quick-{i + 1}")
                             for i in range(N_QUICK)]
                status = gr.Markdown(elem_id="sh-status")
                counts = gr.Markdown(counts_text(CleanState()), elem_id="sh-counts")
        gr.Markdown("Keys (outside text boxes): **k** keep · **d** delete · **u** undo · **1-9** relabel to the "
                    "numbered class · **n / p** next / previous page.")

    outputs = [state, gallery, page_text, selected, detail, preview, status, counts, relabel_to, label, *quick]

    def on_run(st, m, t, f, inc, progress=gr.Progress()):
        return run_review(ws, st, m, t, f, progress, inc).outputs()

    def on_show(st, inc):
        return show_filters(ws, st, inc).outputs()

    def on_counts(st):
        return gr.update(choices=filter_choices(st.result)) if st.result is not None else gr.skip()

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

    def on_relabel(st, sel, choice, new):
        done_before = st.counts["relabelled"]
        view = relabel(ws, st, sel, choice, new)
        # clear the typed label in the same response (a chained event would race the user's next typing);
        # after a refusal it stays, so the user can correct it
        cleared = "" if view.state.counts["relabelled"] > done_before else gr.skip()
        return (*view.outputs(), cleared)

    run.click(on_run, [state, method, threshold, folds, show], outputs).then(on_counts, [state], [show])
    show.input(on_show, [state, show], outputs)
    for widget in (kind, label, split):
        widget.input(on_filter, [state, kind, label, split], outputs)
    prev.click(on_prev, [state], outputs)
    nxt.click(on_next, [state], outputs)
    gallery.select(on_select, [state], outputs)
    keep_b.click(on_keep, [state, selected], outputs)
    delete_b.click(on_delete, [state, selected], outputs)
    undo_b.click(on_undo, [state], outputs)
    relabel_b.click(on_relabel, [state, selected, relabel_to, new_label], [*outputs, new_label])
    for i, button in enumerate(quick):
        button.click(_quick_handler(ws, i + 1), [state, selected], outputs)


def _quick_handler(ws: Workspace, n: int):
    def on_quick(st, sel):
        return quick_relabel(ws, st, sel, n).outputs()
    return on_quick
