"""One clean session, shared by the Clean tab and the notebook: suspects, filters, paging, actions, undo.

Pure of any screen: front-ends hold a `CleanSession`, call the actions (keep / relabel / accept the
prediction / delete / apply a batch / undo) and show the `Outcome` message their own way. Files move and keep
marks are written only through `smarthub.fileops`, each a journaled operation. Every action pushes a `Step` on this
session's own undo stack, so Undo reverts what *this* session did, never another window's operation, and reverts it
through `fileops.undo`, the rule `smarthub undo` follows.

Active label cleaning (Bernhardt et al. 2022, Nature Communications 13:1161): every keep and relabel is a label a
person checked; after each page of such decisions (`page_size` of them) `after_decisions` re-ranks the queue with
them as trusted labels (`review.relearn`: cached embeddings, no inference) and starts again at its top.

Over 400 lines on purpose: every action of a clean session (keep, relabel, accept, delete, undo, paging) updates one
state; the Clean tab and the notebook call only this.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smarthub import fileops
from smarthub.clean import review
from smarthub.dataset import validate_label
from smarthub.errors import FileOpError, MissingFileError, SmartHubError
from smarthub.ledger import ProvenanceIndex, ProvenanceRecord, provenance_index
from smarthub.workspace import Workspace

ALL = "all"
PAGE_SIZE = 24
KEEP, DELETE, RELABEL = "keep", "delete", "relabel:"  # decisions of a batch (`apply`)


def closest_class(label: str, classes: Iterable[str]) -> str | None:
    """The existing class `label` is probably a typo of ('aple' → 'apple'), or None."""
    by_fold = {c.casefold(): c for c in classes}
    if label.casefold() in by_fold:
        return by_fold[label.casefold()]
    close = difflib.get_close_matches(label.casefold(), list(by_fold), n=1, cutoff=0.6)
    return by_fold[close[0]] if close else None


@dataclass
class Step:
    """One undoable action of this session: its journaled operations (moves, keep marks) and the suspects it took
    off."""

    kind: str  # relabel | delete | keep | apply
    op_ids: list[str]
    removed: list[tuple[int, review.Suspect]]  # (index in the suspect list, Suspect), in list order
    what: str  # e.g. "cat/cat0.jpg", for the undo message


@dataclass
class Outcome:
    """What an action did, for the front-end to show. `confirm` names a new class awaiting a yes."""

    message: str
    ok: bool = True
    confirm: str | None = None
    ops: list[fileops.Operation] = field(default_factory=list)

    def __post_init__(self) -> None:
        # an operation interrupted earlier (a crash) was finished or rolled back first: say so
        notes = [r.message for op in self.ops for r in op.recovered]
        if notes:
            self.message = "\n".join([*notes, self.message])


@dataclass
class CleanSession:
    """The suspects of one review and what this session did to them."""

    suspects: list[review.Suspect] = field(default_factory=list)  # worst first
    vocab: list[str] = field(default_factory=list)
    method: str = ""
    n_images: int = 0
    kind: str = ALL
    label: str = ALL
    split: str = ALL
    page: int = 0
    page_size: int = PAGE_SIZE
    pos: int = 0  # selected position in the filtered view
    counts: dict[str, int] = field(default_factory=lambda: {"kept": 0, "relabelled": 0, "deleted": 0, "undone": 0})
    undo_stack: list[Step] = field(default_factory=list)
    sources: ProvenanceIndex = field(default_factory=ProvenanceIndex)
    pending: tuple[str, str] | None = None  # (image, new class) waiting for the user's confirmation
    result: review.ReviewResult | None = None  # the review shown: re-queued (filters) and re-ranked (decisions) without inference
    since_rank: int = 0  # keeps, relabels and deletes since the queue was last ranked
    rerank: bool = True  # re-rank after every page of decisions (False: the first ranking stays, paged in order)

    def load(self, ws: Workspace, result: review.ReviewResult) -> None:
        """Take the suspects of a ReviewResult (a new review or a refresh); actions and counts stay."""
        self.result = result
        self.since_rank = 0
        self.suspects = list(result.suspects)
        self.vocab = list(result.vocab)
        self.method = str(result.method)
        self.n_images = int(result.n_images)
        self.sources = provenance_index(ws)
        self.pending = None

    # ------------------------------------------------------------ view
    def filtered(self) -> list[int]:
        """Indices into `suspects` that pass the kind / class / split filters, in rank order."""
        if self.kind == ALL and self.label == ALL and self.split == ALL:
            return list(range(len(self.suspects)))
        return [i for i, s in enumerate(self.suspects)
                if (self.kind == ALL or s.kind == self.kind) and (self.label == ALL or s.given == self.label)
                and (self.split == ALL or (s.split or "none") == self.split)]

    def clamp(self) -> list[int]:
        """Keep the selection and page inside the filtered view; returns that view."""
        view = self.filtered()
        self.pos = min(max(self.pos, 0), max(len(view) - 1, 0))
        self.page = self.pos // self.page_size if view else 0
        return view

    def n_pages(self, view: list[int] | None = None) -> int:
        n = len(self.filtered() if view is None else view)
        return max(1, -(-n // self.page_size))

    def page_items(self, view: list[int] | None = None) -> list[review.Suspect]:
        view = self.clamp() if view is None else view
        start = self.page * self.page_size
        return [self.suspects[i] for i in view[start:start + self.page_size]]

    def selected(self, view: list[int] | None = None) -> review.Suspect | None:
        view = self.clamp() if view is None else view
        return self.suspects[view[self.pos]] if view else None

    def labels(self) -> list[str]:
        return sorted(set(self.vocab))

    def set_filters(self, kind: str | None, label: str | None, split: str | None) -> None:
        self.kind, self.label, self.split = kind or ALL, label or ALL, split or ALL
        self.pos = 0

    def turn_page(self, delta: int) -> None:
        self.pos = max(0, (self.page + delta) * self.page_size)
        self.clamp()

    def go_to_page(self, page: int) -> None:
        self.pos = max(0, page) * self.page_size
        self.clamp()

    def select(self, index_on_page: int) -> None:
        self.pos = self.page * self.page_size + int(index_on_page)
        self.clamp()

    def source_of(self, s: review.Suspect) -> ProvenanceRecord | None:
        """Where the suspect's image came from, per the ledger (None when collected by hand)."""
        return self.sources.find(sha256=s.sha256, path=s.path)

    def index_of(self, ws: Workspace, image: str | Path) -> int | None:
        """Index of the suspect at `image` (relative to the data folder, or absolute), None when not listed."""
        target = ws.data_dir / image
        view = self.filtered()
        if 0 <= self.pos < len(view) and suspect_path(ws, self.suspects[view[self.pos]]) == target:
            return view[self.pos]  # the usual case: the selection shown is the one acted on
        for i, s in enumerate(self.suspects):
            if suspect_path(ws, s) == target:
                return i
        return None


def suspect_path(ws: Workspace, s: review.Suspect) -> Path:
    p = Path(s.path)
    return p if p.is_absolute() else ws.data_dir / p


def _rel(ws: Workspace, path: Path) -> str:
    try:
        return Path(path).relative_to(ws.data_dir).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _find(ws: Workspace, sess: CleanSession, image: str | Path) -> int:
    if not str(image):
        raise SmartHubError("select an image first (click a thumbnail)")
    index = sess.index_of(ws, image)
    if index is None:
        raise SmartHubError(f"{_rel(ws, ws.data_dir / image)} was already handled: it is no longer in the list")
    return index


def _push(sess: CleanSession, step: Step, count: str, n: int = 1) -> None:
    sess.undo_stack.append(step)
    sess.counts[count] += n
    sess.since_rank += n
    sess.pending = None


def _refused(ws: Workspace, sess: CleanSession, image: str | Path, e: SmartHubError) -> Outcome:
    """A refusal; when the listed file vanished (other window, outside smarthub), drop it from the list."""
    if not isinstance(e, MissingFileError):
        return Outcome(str(e), ok=False)
    index = sess.index_of(ws, image)
    if index is not None:
        sess.suspects.pop(index)
    if e.explained:
        return Outcome(f"{e} (perhaps in another window)", ok=False)
    # it was listed here, so it existed: say it went, not that it never was
    return Outcome(f"{_rel(ws, ws.data_dir / image)} no longer exists (moved or deleted outside this session, "
                   f"perhaps in another window)", ok=False)


def is_new_class(ws: Workspace, sess: CleanSession, label: str) -> bool:
    """True when no class `label` exists yet (neither in the review nor as a folder)."""
    return label not in sess.vocab and not fileops.class_folders(ws, label)


# ---------------------------------------------------------------- actions on one image

def relabel(ws: Workspace, sess: CleanSession, image: str | Path, label: str, *,
            new_class: bool = False) -> Outcome:
    """Move the image to class `label`. A class that does not exist yet needs `new_class=True`:
    without it nothing moves and the outcome asks for confirmation (`confirm` = the label)."""
    label = (label or "").strip()
    try:
        if not label:
            raise SmartHubError("choose a class in 'relabel to' or type a new label first")
        label = validate_label(label)
        index = _find(ws, sess, image)
        if not new_class and is_new_class(ws, sess, label):
            sess.pending = (_rel(ws, suspect_path(ws, sess.suspects[index])), label)
            near = closest_class(label, sess.vocab)
            hint = f" Did you mean {near!r}?" if near else ""
            return Outcome(f"{label!r} is not a class yet: confirm to create it.{hint}", ok=False, confirm=label)
        op = fileops.relabel(ws, [suspect_path(ws, sess.suspects[index])], label)
    except SmartHubError as e:
        return _refused(ws, sess, image, e)
    shown = _rel(ws, suspect_path(ws, sess.suspects[index]))
    _push(sess, Step("relabel", [op.op_id], [(index, sess.suspects.pop(index))], shown), "relabelled")
    if op.label not in sess.vocab:
        sess.vocab.append(op.label)
    dst = op.moves[0].dst if op.moves else label
    return Outcome(f"relabelled {shown} → {dst}", ops=[op])


def confirm_new_class(ws: Workspace, sess: CleanSession) -> Outcome:
    """The user said yes to the pending new class: relabel the pending image to it."""
    if sess.pending is None:
        return Outcome("no new class is waiting for confirmation", ok=False)
    image, label = sess.pending
    sess.pending = None
    return relabel(ws, sess, image, label, new_class=True)


def cancel_new_class(sess: CleanSession) -> Outcome:
    label = sess.pending[1] if sess.pending else ""
    sess.pending = None
    return Outcome(f"not created: {label!r}; nothing moved" if label else "nothing to cancel")


def accept_predicted(ws: Workspace, sess: CleanSession, image: str | Path) -> Outcome:
    """Relabel the image to its suggested class (key `a`): the most probable class other than its label."""
    try:
        s = sess.suspects[_find(ws, sess, image)]
    except SmartHubError as e:
        return _refused(ws, sess, image, e)
    target = s.suggested or s.predicted
    if not target or target == s.given:
        return Outcome(f"there is no suggestion other than its label {s.given!r} for "
                       f"{_rel(ws, suspect_path(ws, s))}: keep it (k) or pick another class", ok=False)
    return relabel(ws, sess, image, target)


def quick_relabel(ws: Workspace, sess: CleanSession, image: str | Path, n: int) -> Outcome:
    """Relabel to the n-th class (1-based) of the sorted classes: keys 1-9."""
    labels = sess.labels()
    if not 1 <= n <= len(labels):
        return Outcome(f"no class number {n}: there are {len(labels)} classes", ok=False)
    return relabel(ws, sess, image, labels[n - 1])


def delete(ws: Workspace, sess: CleanSession, image: str | Path) -> Outcome:
    """Move the image to the trash (undoable)."""
    try:
        index = _find(ws, sess, image)
        op = fileops.trash(ws, [suspect_path(ws, sess.suspects[index])])
    except SmartHubError as e:
        return _refused(ws, sess, image, e)
    shown = _rel(ws, suspect_path(ws, sess.suspects[index]))
    _push(sess, Step("delete", [op.op_id], [(index, sess.suspects.pop(index))], shown), "deleted")
    return Outcome(f"moved {shown} to the trash", ops=[op])


def keep(ws: Workspace, sess: CleanSession, image: str | Path) -> Outcome:
    """Mark the image as correct (a journaled operation): the review hides it until its content changes."""
    try:
        index = _find(ws, sess, image)
        path = suspect_path(ws, sess.suspects[index])
        op = fileops.keep(ws, [path])
    except SmartHubError as e:
        return _refused(ws, sess, image, e)
    _push(sess, Step("keep", [op.op_id], [(index, sess.suspects.pop(index))], _rel(ws, path)), "kept")
    return Outcome(f"kept {_rel(ws, path)} as labelled", ops=[op])


# ---------------------------------------------------------------- a batch of decisions (the notebook's Apply)

def apply(ws: Workspace, sess: CleanSession, decisions: Mapping[Path, str]) -> Outcome:
    """Act on many images at once: {path: 'keep' | 'delete' | 'relabel:<class>'}; one Step for Undo.

    Stops at the first refusal; what was done before it stays and is on the undo stack.
    """
    if not decisions:
        return Outcome("nothing marked", ok=False)
    by_label: dict[str, list[Path]] = {}
    to_trash: list[Path] = []
    to_keep: list[Path] = []
    for path, decision in decisions.items():
        path = ws.data_dir / path
        if decision == DELETE:
            to_trash.append(path)
        elif decision == KEEP:
            to_keep.append(path)
        elif decision.startswith(RELABEL):
            by_label.setdefault(decision[len(RELABEL):], []).append(path)
    ops: list[fileops.Operation] = []
    kept: list[Path] = []
    error: SmartHubError | None = None
    try:
        for label, paths in sorted(by_label.items()):
            ops.append(fileops.relabel(ws, paths, label))
        if to_trash:
            ops.append(fileops.trash(ws, to_trash))
        if to_keep:
            ops.append(fileops.keep(ws, to_keep))
            kept = to_keep
    except SmartHubError as e:
        error = e
    moved = {ws.data_dir / m.src for op in ops for m in op.moves} | set(kept)
    removed = [(i, s) for i, s in enumerate(sess.suspects) if suspect_path(ws, s) in moved]
    for i, _ in reversed(removed):
        sess.suspects.pop(i)
    if ops or kept:
        sess.undo_stack.append(Step("apply", [op.op_id for op in ops], removed, f"{len(moved)} images"))
        sess.since_rank += len(moved)
        n_relabel = sum(len(op.moves) for op in ops if op.kind == "relabel")
        sess.counts["relabelled"] += n_relabel
        sess.counts["deleted"] += sum(len(op.moves) for op in ops if op.kind == "trash")
        sess.counts["kept"] += len(kept)
    if error is not None:
        text = str(error)
        if isinstance(error, MissingFileError) and not error.explained:  # it was listed, so it was there
            text = f"{error.path} no longer exists (moved or deleted outside this session)"
        return Outcome(f"stopped: {text} ({len(ops)} operations done; Undo reverts them)", ok=False, ops=ops)
    n_relabel = sum(len(p) for p in by_label.values())
    done = ", ".join(op.op_id for op in ops) or "no file moved"
    return Outcome(f"applied: {n_relabel} relabelled, {len(to_trash)} deleted, {len(to_keep)} kept ({done})",
                   ops=ops)


# ---------------------------------------------------------------- undo

def undo(ws: Workspace, sess: CleanSession) -> Outcome:
    """Undo this session's last step. With none, say so: the journal's newest operation (which may be
    another window's) is `undo_journal`'s job, offered separately."""
    if not sess.undo_stack:
        return Outcome("nothing to undo in this session", ok=False)
    step = sess.undo_stack.pop()  # popped even on failure, so one stuck step never blocks older ones
    state = {op.op_id: op for op in fileops.history(ws)}
    undone: list[fileops.Operation] = []
    try:
        for op_id in reversed(step.op_ids):
            op = state.get(op_id)
            if op is not None and op.undone_by is not None:
                continue  # undone elsewhere (another window, the CLI): its files are back already
            undone.append(fileops.undo(ws, op_id))
    except SmartHubError as e:
        retry = f"; the journal's undo of {step.op_ids[-1]} retries it" if step.op_ids else ""
        return Outcome(f"{e}{retry}", ok=False, ops=undone)
    sess.since_rank = max(0, sess.since_rank - max(1, len(step.removed)))
    for index, s in step.removed:  # ascending: each goes back where it was
        sess.suspects.insert(min(index, len(sess.suspects)), s)
    sess.counts["undone"] += 1
    if step.removed:
        first = step.removed[0][0]
        view = sess.filtered()
        if first in view:
            sess.pos = view.index(first)
    return Outcome(f"undid {step.kind} of {step.what}", ops=undone)


def undo_journal(ws: Workspace, sess: CleanSession) -> Outcome:
    """Undo the journal's newest operation (moves or keep marks), whoever made it (another window, the CLI)."""
    try:
        op = fileops.undo(ws)
    except FileOpError as e:
        return Outcome(str(e), ok=False)
    sess.counts["undone"] += 1
    what = f"{len(op.moves)} files restored" if op.moves else f"keep marks of {len(op.marks)} images reverted"
    return Outcome(f"undid operation {op.undoes} from the journal ({what}; run the review again to rank them)",
                   ops=[op])


# ---------------------------------------------------------------- re-ranking with the person's decisions

def rerank_due(sess: CleanSession) -> bool:
    """True once a page of decisions was made since the queue was ranked (and re-ranking is on)."""
    return sess.rerank and sess.result is not None and sess.since_rank >= sess.page_size


def rerank(ws: Workspace, sess: CleanSession) -> Outcome:
    """Rank the queue again with every keep and relabel as a trusted label; the selection goes to the top."""
    if sess.result is None:
        return Outcome("run the review first: there is no ranking to update", ok=False)
    try:
        result = review.relearn(ws, sess.result)
    except SmartHubError as e:
        return Outcome(f"not re-ranked: {e}", ok=False)
    sess.load(ws, result)
    sess.pos = 0
    sess.clamp()
    return Outcome(f"re-ranked with your {len(result.trusted)} checked labels: {result.headline()}")


def after_decisions(ws: Workspace, sess: CleanSession, outcome: Outcome) -> Outcome:
    """`outcome`, followed by a re-rank when a page of decisions is complete (its message appended)."""
    if not outcome.ok or not rerank_due(sess):
        return outcome
    again = rerank(ws, sess)
    return Outcome(f"{outcome.message} · {again.message}", ok=outcome.ok and again.ok, ops=outcome.ops)
