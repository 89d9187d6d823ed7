"""Review commands: rank label suspects (review) and mark images as correct (keep)."""
from __future__ import annotations

import argparse
from pathlib import Path

from smarthub.cli._common import add_workspace_args, print_table, workspace_from

ORDER = 40
SHOWN = 20


def register(sub: argparse._SubParsersAction) -> None:
    from smarthub.cli.train import add_train_args

    p = sub.add_parser("review", help="rank the images whose label looks wrong, worst first")
    add_workspace_args(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--finetune", action="store_true",
                     help="out-of-sample probabilities from K fine-tunes (slow) instead of the linear head")
    how.add_argument("--fast-model", action="store_true",
                     help="score with the exported model (models/export.pkl); its training images are in-sample")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (default 5)")
    p.add_argument("--threshold", type=float, default=0.6,
                   help="below this probability of its label an image is 'unsure' (default 0.6)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write all suspects to FILE (.csv or .json)")
    p.add_argument("--limit", type=int, metavar="N", help="keep only the N worst suspects")
    add_train_args(p)
    p.set_defaults(func=run_review)

    p = sub.add_parser("keep", help="mark images as correctly labelled: hidden from review until they change")
    add_workspace_args(p, models=False)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--undo", action="store_true", help="forget the keep mark instead")
    p.set_defaults(func=run_keep)


def run_review(args: argparse.Namespace) -> int:
    from smarthub.clean import review
    from smarthub.cli._common import progress_printer
    from smarthub.cli.train import train_options_from

    ws = workspace_from(args)
    method = "finetune" if args.finetune else "model" if args.fast_model else "fast"
    options = review.ReviewOptions(method=method, folds=args.folds, threshold=args.threshold,
                                   train=train_options_from(args), limit=args.limit)
    printers: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        printer = printers.setdefault(stage, progress_printer(stage))
        printer(done, total)  # type: ignore[operator]

    from smarthub.cli.train import quiet_libraries

    with quiet_libraries():
        result = review.review(ws, options, progress=progress)
    for path, reason in result.skipped:
        print(f"skipped {_show(ws, path)}: {reason}")
    for note in result.notes:
        print(f"note: {note}")
    rows = [(i, _show(ws, s.path), s.given, s.predicted, f"{s.p_given:.2f}", f"{s.p_predicted:.2f}",
             f"{s.score:.3f}", s.kind, s.split) for i, s in enumerate(result.suspects[:SHOWN], 1)]
    if rows:
        print_table(rows, ("#", "path", "given", "predicted", "p_given", "p_pred", "score", "kind", "split"))
    counts = ", ".join(f"{n} {k}" for k, n in result.by_kind().items() if n)
    print(f"{len(result.suspects)} suspects among {result.n_images} images ({counts or 'none'}; "
          f"{result.n_kept} kept) by the {result.method} method in {result.seconds:.1f} s")
    if args.out is not None:
        out = review.write_suspects(result.suspects, args.out, base=ws.data_dir)
        print(f"suspects written worst first to {out}")
    if result.suspects:
        print("act with `smarthub relabel PATH LABEL`, `smarthub delete PATH`, `smarthub keep PATH`; undo with "
              "`smarthub undo`")
    return 0


def run_keep(args: argparse.Namespace) -> int:
    from smarthub.clean import review

    ws = workspace_from(args)
    if args.undo:
        shas = review.unkeep(ws, args.paths)
        print(f"{len(shas)} keep marks removed")
    else:
        shas = review.keep(ws, args.paths)
        print(f"{len(shas)} images kept: hidden from review until their content changes")
    return 0


def _show(ws: object, path: Path) -> str:
    data_dir = ws.data_dir  # type: ignore[attr-defined]
    return path.relative_to(data_dir).as_posix() if path.is_relative_to(data_dir) else str(path)
