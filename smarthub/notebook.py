"""A Jupyter cleaner over the review core: paged thumbnails worst first, a decision per image, Apply, Undo.

The only module importing ipywidgets. Unlike fastai's ImageClassifierCleaner, marks are remembered per
image across filter and page switches, every suspect is reachable (paged, not the first 30), and Apply
moves the files through `smarthub.fileops` (journaled, undoable) instead of leaving that to the user, and each
Apply re-ranks the queue with the applied keeps and relabels as trusted labels (active label cleaning, Bernhardt
et al. 2022; `review.relearn`, no inference).
The logic (filters, paging, Apply, this cleaner's own undo stack) is `smarthub.clean.session`, shared
with the app's Clean tab; this module only draws it.

    from smarthub.notebook import Cleaner
    Cleaner(ws)          # runs the fast review, then shows the grid
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smarthub import fileops
from smarthub.clean import review, session, signals
from smarthub.clean.session import ALL, DELETE, KEEP, RELABEL, CleanSession
from smarthub.errors import ImageError
from smarthub.imaging import thumbnail
from smarthub.ledger import original_name
from smarthub.workspace import Workspace

LEAVE = "leave"


@dataclass
class Card:
    """One thumbnail of the grid: its suspect and widgets."""

    suspect: review.Suspect
    box: Any
    image: Any
    caption: Any
    dropdown: Any


def thumbnail_png(path: Path, *, max_side_px: int) -> bytes:
    """PNG bytes of the image shrunk to fit max_side_px (a grey square with an X when unreadable)."""
    from PIL import Image, ImageDraw

    try:
        thumb = thumbnail(path, max_side_px=max_side_px)
    except ImageError:
        thumb = Image.new("RGB", (max_side_px, max_side_px), (200, 200, 200))
        draw = ImageDraw.Draw(thumb)
        draw.line((0, 0, max_side_px, max_side_px), fill=(150, 0, 0), width=3)
        draw.line((0, max_side_px, max_side_px, 0), fill=(150, 0, 0), width=3)
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return buf.getvalue()


def decision_options(suspect: review.Suspect, vocab: Sequence[str]) -> list[tuple[str, str]]:
    """Dropdown (label, value) pairs: leave, keep, relabel to each other class (the suggested first), delete."""
    first = suspect.suggested or suspect.predicted
    targets = [first] + [c for c in vocab if c != first]
    relabels = [(f"relabel to {c}" + (f" (suggested, {suspect.p_suggested:.0%})" if c == suspect.suggested else ""),
                 RELABEL + c) for c in targets if c != suspect.given]
    return [("leave", LEAVE), ("keep (label is right)", KEEP)] + relabels + [("delete", DELETE)]


class Cleaner:
    """ipywidgets cleaner over a ReviewResult; display it in a notebook cell (`Cleaner(ws)` as last line).

    Attributes for programmatic use: kind_filter, class_filter, split_filter, prev_button, next_button,
    apply_button, undo_button, journal_undo_button, status, cards (the current page), marks (path → decision),
    session (the shared `CleanSession`).
    """

    def __init__(self, ws: Workspace, result: review.ReviewResult | None = None, *,
                 options: review.ReviewOptions | None = None, page_size: int = 12, thumb_px: int = 128) -> None:
        import ipywidgets as w

        self.ws = ws
        self.result = result if result is not None else review.review(ws, options)
        self.session = CleanSession(page_size=max(1, int(page_size)))
        self.session.load(ws, self.result)
        self.thumb_px = int(thumb_px)
        self.marks: dict[Path, str] = {}
        self.cards: list[Card] = []
        self._thumbs: dict[Path, bytes] = {}

        self.kind_filter = w.Dropdown(description="kind", options=[ALL, *signals.kinds()], value=ALL)
        self.class_filter = w.Dropdown(description="class")
        # split: train = the exported model learnt the image (in-sample); only the model method has such images
        self.split_filter = w.Dropdown(description="split", options=[ALL, "train", "valid"], value=ALL,
                                       layout=w.Layout(display=None if self.result.method == "model" else "none"))
        self.prev_button = w.Button(description="◀ previous")
        self.next_button = w.Button(description="next ▶")
        self.page_label = w.HTML()
        self.apply_button = w.Button(description="Apply", button_style="primary",
                                     tooltip="relabel / delete / keep the marked images (undoable)")
        self.undo_button = w.Button(description="Undo", tooltip="undo this cleaner's last Apply")
        self.journal_undo_button = w.Button(description="Undo newest journal operation",
                                            layout=w.Layout(width="auto"),
                                            tooltip="undo the latest file operation of any window or the CLI")
        self.status = w.HTML()
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(4, {self.thumb_px + 60}px)"))
        self._set_class_options()
        for f in (self.kind_filter, self.class_filter, self.split_filter):
            f.observe(self._on_filter, names="value")
        self.prev_button.on_click(lambda _: self._turn(-1))
        self.next_button.on_click(lambda _: self._turn(+1))
        self.apply_button.on_click(lambda _: self.apply())
        self.undo_button.on_click(lambda _: self.undo())
        self.journal_undo_button.on_click(lambda _: self.undo_journal())
        self.widget = w.VBox([
            w.HBox([self.kind_filter, self.class_filter, self.split_filter]),
            w.HBox([self.prev_button, self.page_label, self.next_button]),
            self.grid,
            w.HBox([self.apply_button, self.undo_button, self.journal_undo_button]),
            self.status,
        ])
        self.render()
        self._say(f"{len(self.result.suspects)} suspects: {self.result.headline()} "
                  f"({self.result.method} method). Mark images, then Apply.")

    # ------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    @property
    def page(self) -> int:
        return self.session.page

    def visible(self) -> list[review.Suspect]:
        """Suspects passing the filters, worst first."""
        return [self.session.suspects[i] for i in self.session.filtered()]

    def render(self) -> None:
        """Rebuild the current page from the filters and the remembered marks."""
        import ipywidgets as w

        sess = self.session
        view = sess.clamp()
        n_pages = sess.n_pages(view)
        self.cards = []
        for s in sess.page_items(view):
            if s.path not in self._thumbs:
                self._thumbs[s.path] = thumbnail_png(s.path, max_side_px=self.thumb_px)
            image = w.Image(value=self._thumbs[s.path], format="png", width=self.thumb_px)
            rec = sess.source_of(s)
            source = (f"<br><small>from <a href='{_esc(rec.url)}' target='_blank'>"
                      f"{_esc(original_name(rec) or rec.url)}</a></small>" if rec else "")
            caption = w.HTML(
                f"<b>{_esc(s.path.name)}</b><br>given <b>{_esc(s.given)}</b> ({s.p_given:.0%})<br>"
                f"suggested <b>{_esc(s.suggested or s.predicted)}</b> "
                f"({(s.p_suggested if s.suggested else s.p_predicted):.0%})<br><i>{s.kind}</i>{source}"
            )
            options = decision_options(s, self.result.vocab)
            dropdown = w.Dropdown(options=options, value=self.marks.get(s.path, LEAVE),
                                  layout=w.Layout(width=f"{self.thumb_px + 50}px"))
            dropdown.observe(lambda change, path=s.path: self._mark(path, change["new"]), names="value")
            self.cards.append(Card(suspect=s, box=w.VBox([image, caption, dropdown]), image=image,
                                   caption=caption, dropdown=dropdown))
        self.grid.children = [c.box for c in self.cards]
        self.page_label.value = f"&nbsp;page {sess.page + 1} of {n_pages} ({len(view)} shown)&nbsp;"
        self.prev_button.disabled = sess.page == 0
        self.next_button.disabled = sess.page >= n_pages - 1

    # ------------------------------------------------------------ handlers
    def _mark(self, path: Path, value: str) -> None:
        if value == LEAVE:
            self.marks.pop(path, None)
        else:
            self.marks[path] = value
        self._say(f"{len(self.marks)} marked; Apply to act on them")

    def _on_filter(self, _change: dict) -> None:
        self.session.set_filters(self.kind_filter.value, self.class_filter.value, self.split_filter.value)
        self.render()

    def _turn(self, step: int) -> None:
        self.session.go_to_page(self.session.page + step)
        self.render()

    def apply(self) -> list[fileops.Operation]:
        """Act on every marked image (on any page or filter): relabel and delete via fileops, keep via review."""
        if not self.marks:
            self._say("nothing marked")
            return []
        outcome = session.apply(self.ws, self.session, self.marks)
        if outcome.ok:
            self.marks.clear()
            self._after_change(f"{_esc(outcome.message)}; Undo reverts this", relearn=self.session.rerank)
        else:
            self._after_change(f"<span style='color:#b00'>{_esc(outcome.message)}</span>")
        return outcome.ops

    def undo(self) -> list[fileops.Operation]:
        """Undo this cleaner's last Apply (all its operations); never another window's operation."""
        outcome = session.undo(self.ws, self.session)
        if not outcome.ok:
            self._say(f"<span style='color:#b00'>cannot undo: {_esc(outcome.message)}</span>"
                      + (" (<i>Undo newest journal operation</i> reverts the latest file operation of any window)"
                         if not self.session.undo_stack else ""))
            return outcome.ops
        self._after_change(f"undone: {len(outcome.ops)} operations "
                           f"({', '.join(op.undoes or '' for op in outcome.ops)})")
        return outcome.ops

    def undo_journal(self) -> list[fileops.Operation]:
        """Undo the journal's newest file operation, whichever window or command made it."""
        outcome = session.undo_journal(self.ws, self.session)
        if not outcome.ok:
            self._say(f"<span style='color:#b00'>cannot undo: {_esc(outcome.message)}</span>")
            return []
        self._after_change(_esc(outcome.message))
        return outcome.ops

    def _after_change(self, message: str, *, relearn: bool = False) -> None:
        """Re-read the folders (and, after decisions, re-rank with them as trusted labels); show the new queue."""
        self.result = (review.relearn if relearn else review.refresh)(self.ws, self.result)
        self.session.load(self.ws, self.result)
        message += f"<br>{_esc(self.result.headline())}"
        existing = {s.path for s in self.result.suspects}
        self.marks = {p: d for p, d in self.marks.items() if p in existing}
        self._set_class_options()
        self.render()
        self._say(message)

    def _set_class_options(self) -> None:
        current = self.class_filter.value
        labels = sorted({s.given for s in self.result.suspects} | set(self.result.vocab))
        self.class_filter.options = [ALL, *labels]
        self.class_filter.value = current if current in labels else ALL

    def _say(self, message: str) -> None:
        self.status.value = message


def _esc(text: str) -> str:
    import html

    return html.escape(text)
