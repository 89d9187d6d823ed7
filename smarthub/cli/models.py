"""`smarthub models`: the training runs (date, arch, size, accuracy, promoted); `models promote RUN|PREVIOUS`;
`models log` (the promotions so far)."""
from __future__ import annotations

import argparse

from smarthub.cli._common import print_table, workspace_from

ORDER = 25


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the training runs; promote one to be the model in use (undoable)")
    p.add_argument("--models", metavar="DIR", help="models folder (default: ./models)")
    p.set_defaults(func=run_list)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    a = msub.add_parser("promote", help="make RUN the model in use (models/export.pkl); PREVIOUS undoes the last "
                                        "promotion")
    a.add_argument("run", metavar="RUN", help="a run id from `smarthub models`, or PREVIOUS")
    a.set_defaults(func=run_promote)
    lg = msub.add_parser("log", help="the promotions so far, oldest first")
    lg.set_defaults(func=run_log)
    for action in (a, lg):  # --models also after the action; SUPPRESS keeps the one given before it
        action.add_argument("--models", metavar="DIR", default=argparse.SUPPRESS,
                            help="models folder (default: ./models)")


def run_list(args: argparse.Namespace) -> int:
    from smarthub.model import runs

    ws = workspace_from(args)
    infos = runs.list_runs(ws)
    if not infos:
        print(f"no training runs in {ws.runs_dir}: run `smarthub train`")
        return 0
    rows = [(i.run_id, i.created_at.replace("T", " ")[:19], i.arch, i.size_px or "?",
             f"{i.valid_accuracy:.3f}" if i.valid_accuracy is not None else "?", i.n_valid or "?",
             f"{i.model_bytes / 1e6:.1f}" if i.model_bytes is not None else "-",
             "yes" if i.promoted else "", f"broken: {i.problem}" if i.problem else "") for i in infos]
    print_table(rows, ("run", "date (UTC)", "arch", "px", "accuracy", "valid", "MB", "promoted", "note"))
    pointer = runs.read_pointer(ws)
    if pointer is not None:
        if not any(i.promoted for i in infos):
            print(f"promoted: {pointer['run_id']} (its run folder was deleted; {ws.export_path} is kept)")
        if pointer.get("previous"):
            print(f"previous: {pointer['previous']} (`smarthub models promote PREVIOUS` goes back to it)")
    return 0


def run_promote(args: argparse.Namespace) -> int:
    from smarthub.model import promotion

    done = promotion.promote(workspace_from(args), args.run)
    if not done.changed:
        print(f"run {done.run_id} is already the promoted model")
    else:
        back = f"; undo with `smarthub models promote {done.previous}`" if done.previous else ""
        print(f"promoted run {done.run_id} to {done.export_path}{back}")
    return 0


def run_log(args: argparse.Namespace) -> int:
    from smarthub.model import runs

    ws = workspace_from(args)
    runs.prepare(ws)
    rows = [(r.get("at", ""), r.get("run_id") or r.get("discarded", ""), r.get("previous") or "-", r.get("reason", ""))
            for r in runs.promotion_log(ws)]
    if not rows:
        print(f"no promotions yet in {runs.log_path(ws)}: run `smarthub train`")
        return 0
    print_table(rows, ("at", "run", "replaced", "reason"))
    return 0
