"""Class commands: list the classes, rename one, merge one into another (journaled, undoable)."""
from __future__ import annotations

import argparse

from smarthub.cli._common import add_workspace_args, print_table, workspace_from
from smarthub.fileops import Operation

ORDER = 12


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classes", help="list classes; rename or merge them (undoable)")
    add_workspace_args(p, models=False)
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    r = actions.add_parser("rename", help="rename class OLD to NEW (a class that does not exist yet)")
    _data_arg(r)
    r.add_argument("old", metavar="OLD")
    r.add_argument("new", metavar="NEW")
    r.set_defaults(func=run_rename)

    m = actions.add_parser("merge", help="move every image of class A into class B, then remove A's folder")
    _data_arg(m)
    m.add_argument("source", metavar="A")
    m.add_argument("target", metavar="B")
    m.set_defaults(func=run_merge)


def run_list(args: argparse.Namespace) -> int:
    from smarthub.dataset import class_counts, scan_dataset

    ws = workspace_from(args)
    counts = class_counts(scan_dataset(ws.data_dir))
    if not counts:
        print(f"no classes in {ws.data_dir} yet (`smarthub bootstrap LABEL` collects some)")
        return 0
    print_table(sorted(counts.items()), ("class", "images"))
    return 0


def run_rename(args: argparse.Namespace) -> int:
    from smarthub import fileops

    ws = workspace_from(args)
    op = fileops.rename_class(ws, args.old, args.new)
    print(f"renamed class {args.old!r} to {args.new!r}: {len(op.moves)} files moved")
    _print_undo(op)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from smarthub import fileops

    ws = workspace_from(args)
    op = fileops.merge_classes(ws, args.source, args.target)
    print(f"merged class {args.source!r} into {args.target!r}: {len(op.moves)} files moved")
    for note in op.notes:
        print(f"  {note}")
    _print_undo(op)
    return 0


def _print_undo(op: Operation) -> None:
    print(f"operation {op.op_id}; undo with `smarthub undo {op.op_id}`")


def _data_arg(parser: argparse.ArgumentParser) -> None:
    """--data after the action too; SUPPRESS keeps a --data given before the action (argparse would reset it)."""
    parser.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                        help="data folder, one sub-folder per class (default: ./data)")
