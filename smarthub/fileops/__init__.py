"""THE ONLY package that moves or removes a user's image files: relabel, trash, undo, class rename/merge; and the
journal of a person's keep marks (keep, unkeep), so one undo and one history serve every action.

Every operation is journaled to `data/.smarthub/journal.jsonl` before any file moves
(a "begin" line listing the planned moves) and closed by a "commit" or "abort" line.
Moves never overwrite (hard link + unlink, or a unique new name on collision), are
verified afterwards (source gone, destination present, same sha256), and an operation
either completes or is rolled back. A crash between "begin" and "commit" is repaired by
`recover()`, which every mutating call (and every CLI command, through the shell) runs first: it
finishes the operation from the begin line's plan when every file that has not moved yet is still
there unchanged, and otherwise rolls the whole operation back; each repair is one `Recovery`
record. No image is ever lost and no batch is left half done.

One writer at a time per workspace, across processes: recovery and every journaled operation run
under `workspace_lock` (an `fcntl.flock` on `data/.smarthub/lock`, which names its holder). Each
"begin" line records its owner (pid, process start time, boot id), and recovery leaves alone an
operation whose owner is still running.

Modules: `lock` (the writer lock, owners), `journal` (records, `history`), `moves` (one operation run whole,
the no-clobber verified move), `marks` (keep.json changed as a journaled operation), `recover` (crash repair),
`images` (relabel, trash, keep, unkeep, undo), `classes` (class folders, rename, merge). Folders smarthub writes
itself (runs, exports) are swapped by `smarthub.staging`.
"""
from __future__ import annotations

from smarthub.fileops.lock import LOCK_FILENAME, LOCK_WAIT_S, workspace_lock
from smarthub.fileops.journal import FINISHED, ROLLED_BACK, Mark, Move, Operation, Recovery, history
from smarthub.fileops.marks import read_marks
from smarthub.fileops.moves import remove_empty_folders
from smarthub.fileops.recover import recover
from smarthub.fileops.classes import class_folders, class_names, merge_classes, rename_class
from smarthub.fileops.images import keep, relabel, trash, undo, unkeep

__all__ = [
    "FINISHED", "LOCK_FILENAME", "LOCK_WAIT_S", "ROLLED_BACK", "Mark", "Move", "Operation", "Recovery",
    "class_folders", "class_names", "history", "keep", "merge_classes", "read_marks", "recover", "relabel",
    "remove_empty_folders", "rename_class", "trash", "undo", "unkeep", "workspace_lock",
]
