"""Dataset and file commands: verify, relabel, delete, undo, history."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smarthub.workspace import Workspace

from smarthub.cli._common import add_workspace_args, print_table, progress_printer, quarantine, workspace_from

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="decode every image and report broken ones")
    add_workspace_args(p, models=False)
    p.add_argument("--quarantine", action="store_true", help="move bad images to the trash (undoable)")
    p.set_defaults(func=run_verify)

    p = sub.add_parser("relabel", help="move images to another class folder (undoable)")
    add_workspace_args(p, models=False)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("label", help="the class (folder name) to move them to")
    p.add_argument("--new-class", action="store_true",
                   help="create the class if it does not exist yet (without it a new name is refused)")
    p.set_defaults(func=run_relabel)

    p = sub.add_parser("delete", help="move images to the trash (undoable)")
    add_workspace_args(p, models=False)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.set_defaults(func=run_delete)

    p = sub.add_parser("undo", help="undo the last operation (relabel, delete, keep, class rename …), or the one "
                                    "named")
    add_workspace_args(p, models=False)
    p.add_argument("op_id", nargs="?", metavar="OP_ID")
    p.set_defaults(func=run_undo)

    p = sub.add_parser("history", help="list journaled operations (file moves and keep marks)")
    add_workspace_args(p, models=False)
    p.add_argument("--limit", type=int, default=20, help="show the last N operations (default 20)")
    p.set_defaults(func=run_history)


def run_verify(args: argparse.Namespace) -> int:
    from smarthub.dataset import verify_dataset

    ws = workspace_from(args)
    report = verify_dataset(ws.data_dir, progress=progress_printer("verifying"))
    for path, reason in report.problems:
        print(f"bad  {path.relative_to(ws.data_dir)}: {reason}")
    print(f"{report.checked} images checked, {report.ok} ok, {len(report.problems)} bad")
    if report.problems and args.quarantine:
        return quarantine(ws, report.bad_paths, "bad images")
    return 1 if report.problems else 0


def run_relabel(args: argparse.Namespace) -> int:
    from smarthub import fileops

    ws = workspace_from(args)
    check_relabel_target(ws, args.label, new_class=args.new_class)
    op = fileops.relabel(ws, args.paths, args.label)
    for m in op.moves:
        print(f"moved {m.src} → {m.dst}")
    print(f"operation {op.op_id} ({len(op.moves)} file{'s' if len(op.moves) != 1 else ''}); undo with `smarthub undo {op.op_id}`")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from smarthub import fileops

    ws = workspace_from(args)
    op = fileops.trash(ws, args.paths)
    for m in op.moves:
        print(f"trashed {m.src}")
    print(f"operation {op.op_id} ({len(op.moves)} file{'s' if len(op.moves) != 1 else ''} in {ws.trash_dir / op.op_id}); "
          f"undo with `smarthub undo {op.op_id}`")
    return 0


def run_undo(args: argparse.Namespace) -> int:
    from smarthub import fileops

    ws = workspace_from(args)
    op = fileops.undo(ws, args.op_id)
    for m in op.moves:
        print(f"restored {m.dst} (from {m.src})")
    for k in op.marks:
        print(f"{'kept again' if k.after else 'no longer kept'}: {k.path}")
    print(f"undid operation {op.undoes} (as operation {op.op_id})")
    return 0


def run_history(args: argparse.Namespace) -> int:
    from smarthub import fileops
    from smarthub.errors import SmartHubError

    if args.limit < 1:
        raise SmartHubError(f"--limit must be 1 or more (got {args.limit}): it is how many of the latest "
                            f"operations to show")
    ws = workspace_from(args)
    ops = fileops.history(ws)[-args.limit:]
    if not ops:
        print("no operations yet")
        return 0
    rows = []
    for op in ops:
        state = f"undone by {op.undone_by}" if op.undone_by else op.state
        kept_as = {str((m.after or {}).get("label", "")) for m in op.marks if op.kind == "keep"}
        what = op.label or op.undoes or (kept_as.pop() if len(kept_as) == 1 else "")
        rows.append((op.op_id, op.at, op.kind, what, op.n_images, state))
    print_table(rows, ("op id", "at", "kind", "label/undoes", "images", "state"))
    return 0


def _names_a_file(text: str) -> bool:
    """True when `text` is the path of an existing file (a name too long for the OS is no file)."""
    try:
        return Path(text).is_file()
    except OSError:
        return False


def check_relabel_target(ws: Workspace, label: str, *, new_class: bool) -> None:
    """Refuse a target that is a file, and a class that does not exist yet unless `new_class` (typo guard).

    Raises:
        SmartHubError: the target is a file, or a new class without `new_class` (names a close existing class).
    """
    from smarthub import fileops
    from smarthub.clean.session import closest_class
    from smarthub.dataset import check_label_case, validate_label
    from smarthub.errors import SmartHubError

    if _names_a_file(label):
        raise SmartHubError(f"{label} is a file, not a class: relabel takes the images first and the class name last, "
                            f"e.g. `smarthub relabel IMAGE... apple`")
    classes = fileops.class_names(ws)
    label = check_label_case(validate_label(label), classes)
    if label in classes:
        return
    near = closest_class(label, classes)
    hint = f" (did you mean {near!r}?)" if near else ""
    if not new_class:
        raise SmartHubError(f"class {label!r} does not exist yet{hint}: check the name, or add --new-class to "
                            f"create it")
    if near:
        print(f"warning: creating class {label!r} next to the existing {near!r}", file=sys.stderr)
