"""Review commands: the review queue of estimated label errors (review) and marking images as correct (keep).

Keeps and relabels are a person's decisions: `review` treats them as trusted labels (never suspects again while
image and label are unchanged, full weight in the ranking; active label cleaning, Bernhardt et al. 2022)."""
from __future__ import annotations

import argparse
from pathlib import Path

from smarthub.clean.signals import include_help
from smarthub.cli._common import add_workspace_args, print_table, workspace_from

ORDER = 40
SHOWN = 20


def register(sub: argparse._SubParsersAction) -> None:
    from smarthub.clean.options import ReviewOptions
    from smarthub.cli.train import add_train_args
    from smarthub.optionspec import add_arguments

    p = sub.add_parser("review", help="find the images whose label looks wrong: the estimated label errors, worst "
                                      "first")
    add_workspace_args(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--finetune", action="store_true",
                     help="out-of-sample probabilities from K fine-tunes (slow) instead of the linear head")
    how.add_argument("--fast-model", action="store_true",
                     help="score with the exported model (models/export.pkl); its training images are in-sample")
    p.add_argument("--embedder", metavar="NAME",
                   help="embedding model: a torchvision or timm architecture, open_clip:MODEL[:PRETRAINED], "
                        "open_clip:hf-hub:ORG/REPO or dinov2_vits14 (stronger ones: `smarthub weights list`; default: "
                        "the trained model's arch and size from models/report.json, else mobilenet_v2 at 224 px)")
    p.add_argument("--include", metavar="FILTERS", default="",
                   help=f"also show images these filters flag, comma-separated: {include_help()}")
    add_arguments(p, ReviewOptions, only={"show_all", "folds", "threshold"})
    p.add_argument("--out", type=Path, metavar="FILE", help="write the listed images to FILE (.csv or .json)")
    add_arguments(p, ReviewOptions, only={"limit"})
    p.add_argument("--summary", action="store_true",
                   help="also print the dataset's health: estimated errors per class, the most-confused class pairs, "
                        "the highest losses and a class-imbalance note")
    add_train_args(p, title="embedder and fine-tune options")
    p.set_defaults(func=run_review, arch=None, size_px=None)

    p = sub.add_parser("keep", help="mark images as correctly labelled: trusted by the next review, hidden until they "
                                    "change (journaled: `smarthub history` lists it, `smarthub undo` reverts it)")
    add_workspace_args(p, models=False)
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    p.add_argument("--undo", action="store_true",
                   help="with PATHs: forget their keep marks (a journaled operation too); alone: undo the latest keep "
                        "operation, as `smarthub undo OP_ID` would")
    p.set_defaults(func=run_keep)


def review_options_from(args: argparse.Namespace, ws: object) -> object:
    """ReviewOptions from the flags; the embedder is --embedder (or --arch), else the documented default."""
    from smarthub.clean import review
    from smarthub.clean.options import DEFAULT_SIZE_PX, ReviewOptions
    from smarthub.cli.train import train_options_from
    from smarthub.optionspec import from_args

    default = review.default_train_options(ws)  # type: ignore[arg-type]
    embedder = args.embedder or args.arch
    size = args.size_px if args.size_px is not None else (default.size_px if embedder is None else DEFAULT_SIZE_PX)
    args = argparse.Namespace(**{**vars(args), "arch": embedder or default.arch, "size_px": size})
    train = train_options_from(args)
    method = "finetune" if args.finetune else "model" if args.fast_model else "fast"
    include = frozenset(x for x in args.include.split(",") if x.strip())
    return from_args(ReviewOptions, args, method=method, train=train, include=include)


def run_review(args: argparse.Namespace) -> int:
    from smarthub.clean import review
    from smarthub.cli._common import progress_printer
    from smarthub.cli.train import quiet_libraries

    ws = workspace_from(args)
    with quiet_libraries():
        options = review.check_options(ws, review_options_from(args, ws))  # type: ignore[arg-type]
    printers: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        printer = printers.setdefault(stage, progress_printer(stage))
        printer(done, total)  # type: ignore[operator]

    with quiet_libraries():
        result = review.review(ws, options, progress=progress)  # type: ignore[arg-type]
    for path, reason in result.skipped:
        print(f"skipped {_show(ws, path)}: {reason}")
    for note in result.notes:
        print(f"note: {note}")
    rows = [(i, _show(ws, s.path), s.given, f"{s.p_given:.2f}", s.suggested or s.predicted,
             f"{s.p_suggested if s.suggested else s.p_predicted:.2f}", f"{s.score:.3f}", s.kind,
             " ".join(t for t in s.tags if t != "issue") or "-")
            for i, s in enumerate(result.suspects[:SHOWN], 1)]
    if rows:
        print_table(rows, ("#", "path", "given", "p_given", "suggested", "p_sugg", "score", "kind", "also"))
    if len(result.suspects) > SHOWN:
        print(f"... and {len(result.suspects) - SHOWN} more (--out FILE writes them all)")
    print(f"{result.headline()} ({result.n_kept} kept, {result.n_fixed} relabelled by you: trusted labels; "
          f"{result.method} method, embedder "
          f"{options.train.arch} at {options.train.size_px} px, {result.seconds:.1f} s)")
    print(_filters_line(result, options))
    if args.summary:
        print_summary(ws, result, options)
    if args.out is not None:
        out = review.write_suspects(result.suspects, args.out, base=ws.data_dir)
        print(f"{len(result.suspects)} images written worst first to {out}")
    if result.suspects:
        print("act with `smarthub relabel PATH LABEL`, `smarthub delete PATH`, `smarthub keep PATH` (the next review "
              "ranks with them); `smarthub undo` reverts the last of them")
    return 0


def print_summary(ws: object, result: object, options: object) -> None:
    """The health tables of `review --summary` (the Clean tab shows the same)."""
    from smarthub.clean import review

    h, rows = review.health_of(result)  # type: ignore[arg-type]
    ranked = "the exported model" if result.method == "model" else (  # type: ignore[attr-defined]
        f"{options.train.arch} at {options.train.size_px} px")  # type: ignore[attr-defined]
    print(f"\nhealth ({result.method} review ranked by {ranked}):")  # type: ignore[attr-defined]
    print_table([(c.label, c.n_images, c.estimated_errors, f"{c.error_share:.0%}") for c in h.classes],
                ("class", "images", "est. errors", "share"))
    if h.confused:
        print("most confused (given → likely): " + ", ".join(f"{g} → {t} {n}" for g, t, n in h.confused))
    print("highest losses (-log p(given)): " + ", ".join(
        f"{_show(ws, rows[i].path)} {loss:.2f}" for i, loss in h.top_losses[:5]))
    if h.imbalance:
        print(f"class imbalance: {h.imbalance}")


def _filters_line(result: object, options: object) -> str:
    """'listed: 12 (…); filters: unsure 30 [on], duplicate 2, …' — what --include would add."""
    counts = result.filter_counts  # type: ignore[attr-defined]
    on = options.include  # type: ignore[attr-defined]
    threshold = options.threshold  # type: ignore[attr-defined]
    parts = [f"{name} {n}{' [on]' if name in on else ''}"
             + (f" (p(given) < {threshold:g}: probabilities are shared between similar classes; a lower --threshold "
                f"lists fewer)" if name == "unsure" else "") for name, n in counts.items()]
    what = "every image (--all)" if options.show_all else "the estimated label errors"  # type: ignore[attr-defined]
    if on and not options.show_all:  # type: ignore[attr-defined]
        what += " + " + ", ".join(sorted(on))
    return (f"listed {len(result.suspects)}: {what}; filters (--include NAME,...): "  # type: ignore[attr-defined]
            f"{', '.join(parts) or 'none'}")


def run_keep(args: argparse.Namespace) -> int:
    from smarthub import fileops
    from smarthub.errors import SmartHubError

    ws = workspace_from(args)
    if args.undo and not args.paths:
        ops = [op for op in fileops.history(ws) if op.kind == "keep" and op.state == "committed"
               and op.undone_by is None]
        if not ops:
            raise SmartHubError("no keep operation in the journal is left to undo (`smarthub history` lists them)")
        op = fileops.undo(ws, ops[-1].op_id)
        print(f"undid keep {op.undoes} ({len(op.marks)} images; as operation {op.op_id})")
    elif args.undo:
        op = fileops.unkeep(ws, args.paths)
        if op is None:
            print("0 keep marks removed: none of these images is kept")
        else:
            print(f"{len(op.marks)} keep marks removed (operation {op.op_id}; `smarthub undo {op.op_id}` restores "
                  f"them)")
    elif not args.paths:
        raise SmartHubError("name the images to keep: `smarthub keep PATH...` (or `smarthub keep --undo` to undo the "
                            "latest keep)")
    else:
        op = fileops.keep(ws, args.paths)
        print(f"{len(op.marks)} image{'s' if len(op.marks) != 1 else ''} kept: trusted labels for the next review, hidden until their content or class "
              f"changes (operation {op.op_id}; `smarthub undo` reverts it)")
    return 0


def _show(ws: object, path: Path) -> str:
    data_dir = ws.data_dir  # type: ignore[attr-defined]
    return path.relative_to(data_dir).as_posix() if path.is_relative_to(data_dir) else str(path)
