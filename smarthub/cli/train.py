"""Model commands: train, tune, predict, weights (add / list)."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smarthub.cli._common import add_workspace_args, print_table, workspace_from

ORDER = 20


# the TrainOptions fields every training command takes as flags (train and tune add --promote and --device)
TRAIN_FLAGS_SKIPPED = frozenset({"device", "promote", "budget_s", "aug_strength"})


def add_train_args(parser: argparse.ArgumentParser, *, title: str = "training options",
                   flags: dict[str, str] | None = None) -> None:
    """Add the training options (shared by `train`, `review` and `bootstrap --train`) from TrainOptions, the
    one source of their defaults and help.

    `flags` renames fields' flags for commands that use the plain flag for something else (bootstrap's
    {"size_px": "--train-size"}); the destination stays the field, so `train_options_from` works.
    """
    from smarthub.model.options import TrainOptions
    from smarthub.optionspec import add_arguments

    add_arguments(parser.add_argument_group(title), TrainOptions, skip=TRAIN_FLAGS_SKIPPED, flags=flags)


def train_options_from(args: argparse.Namespace, **overrides: Any) -> Any:
    """TrainOptions from the arguments added by `add_train_args` (and `--device`, `--promote` where the command
    has them), then `overrides`."""
    from smarthub.model.options import TrainOptions
    from smarthub.optionspec import from_args

    return from_args(TrainOptions, args, **overrides)


def add_budget_arg(parser: argparse.ArgumentParser) -> None:
    """--budget DURATION (read by smarthub.durations.parse_duration)."""
    parser.add_argument("--budget", default=None, metavar="DURATION",
                        help="wall time for the whole run on this machine, e.g. 90s, 5m or 1h30m: the first "
                             "fine-tuning steps are timed, the epochs planned to end within it, and the best model "
                             "found by then is kept (default: no limit)")


def budget_from(args: argparse.Namespace) -> float | None:
    """Seconds of --budget (None when not given); a bad duration is one line (DurationError)."""
    from smarthub.durations import parse_duration
    from smarthub.model.options import TrainOptions

    return None if args.budget is None else parse_duration(args.budget, field="budget_s", owner=TrainOptions)


def add_device_arg(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda|cuda:N|mps (TrainOptions.device: one default and help for every job)."""
    from smarthub.model.options import TrainOptions
    from smarthub.optionspec import add_arguments

    add_arguments(parser, TrainOptions, only={"device"})


def add_promote_arg(parser: argparse.ArgumentParser) -> None:
    """--promote if-better|always|never (TrainOptions.promote)."""
    from smarthub.model.options import TrainOptions
    from smarthub.optionspec import add_arguments

    add_arguments(parser, TrainOptions, only={"promote"})


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Hide library deprecation chatter (torch.jit, fastai's pickle notice) from the command's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*load_learner.*")
        yield


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a classifier on the class folders and export it")
    add_workspace_args(p)
    add_train_args(p)
    add_promote_arg(p)
    add_budget_arg(p)
    add_device_arg(p)
    p.add_argument("--distributed", type=int, default=None, metavar="N",
                   help="train in N processes on this machine through `accelerate launch` (one per GPU; "
                        "on the CPU, gloo); see the README for several machines")
    p.add_argument("--options-json", default=None, help=argparse.SUPPRESS)  # a distributed run's processes
    p.set_defaults(func=run_train)

    p = sub.add_parser("tune", help="search learning rate, frozen depth, augmentation and image size on the "
                                    "validation split (Optuna), then train the final model with the best")
    add_workspace_args(p)
    add_train_args(p)
    p.add_argument("--trials", type=int, default=10, metavar="N", help="at most N trials (default 10)")
    add_budget_arg(p)
    p.add_argument("--tune-lr", default=None, metavar="LOW,HIGH",
                   help="learning-rate range, searched on a log scale (default 5e-4,8e-3)")
    p.add_argument("--tune-freeze", default=None, metavar="S,S,...", help="freeze strides to try (default 0,4,8,16)")
    p.add_argument("--tune-aug", default=None, metavar="A,A,...",
                   help="augmentation strengths to try (default 0,0.5,1,2; 1 is fastai's aug_transforms)")
    p.add_argument("--tune-sizes", default=None, metavar="PX,PX,...", help="image sizes to try (default 64,96,128,160)")
    add_promote_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run_tune)

    p = sub.add_parser("predict", help="predict the class of images with the exported model")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--model", type=Path, default=None,
                   help="exported model (default: models/export.pkl); a pickle: load only files you trust")
    p.add_argument("--top-k", type=int, default=3, help="labels to show per image (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_device_arg(p)
    p.set_defaults(func=run_predict)

    p = sub.add_parser("weights", help="pretrained weights in the torch cache: add a file, list")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    a = wsub.add_parser("add", help="check a weights file and copy it where torchvision looks for it")
    a.add_argument("file", type=Path, metavar="FILE")
    a.add_argument("--arch", default=None, help="the architecture the file is for (default: detect)")
    a.set_defaults(func=run_weights_add)
    lst = wsub.add_parser("list", help="what each architecture expects and what is cached; the recommended "
                                       "review embedders: cached or what a download fetches (size, licence)")
    lst.set_defaults(func=run_weights_list)
    dl = wsub.add_parser("download", help="fetch a recommended review embedder into the Hugging Face cache (online)")
    dl.add_argument("name", metavar="NAME", help="a name `smarthub weights list` recommends, e.g. dinov2_vits14")
    dl.set_defaults(func=run_weights_download)


# without a terminal (a log file, CI), a progress line inside a long step at most this often
LOG_PROGRESS_EVERY_S = 10.0


def epoch_printer(*, tty: bool | None = None) -> Any:
    """A TrainProgress callback: one line per stage, epoch and decision always; inside a long step (embedding,
    resizing, an epoch's batches) a live line on a terminal, else a line every LOG_PROGRESS_EVERY_S seconds."""
    tty = sys.stderr.isatty() if tty is None else tty
    last_stage = [""]
    last_live = [time.monotonic()]

    def say(text: str, *, live: bool = False) -> None:
        if tty:
            print("\r" + text + (" " * 10 if not live else ""), end="" if live else "\n", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def inside(text: str) -> None:
        now = time.monotonic()
        if now - last_live[0] >= (0.2 if tty else LOG_PROGRESS_EVERY_S):
            last_live[0] = now
            say(text, live=True)

    def progress(p: Any) -> None:
        if p.stage == "note":
            say(str(p.metrics.get("message", "")))
            return
        if p.stage == "head" and "accuracy" in p.metrics:
            m = p.metrics
            say(f"head fitted on cached embeddings: valid_loss {m['valid_loss']:.4f}  accuracy "
                f"{m['accuracy']:.4f}  {m.get('time', 0):.1f}s")
            last_stage[0] = p.stage
            return
        if p.epoch == 0:  # a stage outside the epochs
            if p.stage != last_stage[0] and p.stage not in ("done",):
                say(f"{p.stage}…")
                last_live[0] = time.monotonic()
            elif p.batches and p.batch < p.batches:
                inside(f"{p.stage}… {p.batch}/{p.batches}")
            last_stage[0] = p.stage
            return
        if last_stage[0] != p.stage or p.batch == 1:
            last_live[0] = time.monotonic()
        last_stage[0] = p.stage
        if "valid_loss" in p.metrics:
            m = p.metrics
            say(f"epoch {p.epoch}/{p.epochs} ({p.stage}): train_loss {m['train_loss']:.4f}  "
                f"valid_loss {m['valid_loss']:.4f}  accuracy {m.get('accuracy', float('nan')):.4f}  "
                f"{m.get('time', 0):.1f}s")
        else:
            inside(f"epoch {p.epoch}/{p.epochs} ({p.stage}): batch {p.batch}/{p.batches}  "
                   f"train_loss {p.metrics.get('train_loss', float('nan')):.4f}")

    return progress


def run_train(args: argparse.Namespace) -> int:
    from smarthub.model import distributed
    from smarthub.model.train import train

    from smarthub.model.options import TrainOptions

    ws = workspace_from(args)
    if args.options_json is not None:  # one process of a distributed run: the launcher's options, whole
        options = TrainOptions.from_json(args.options_json)
    else:
        options = train_options_from(args, budget_s=budget_from(args))
    if options.budget_s is not None and (args.distributed is not None or distributed.is_distributed()):
        from smarthub.errors import SmartHubError

        raise SmartHubError("--budget plans one process's epochs: it cannot be used with --distributed yet "
                            "(use --epochs)")
    if args.distributed is not None and not distributed.is_distributed():
        return launch_distributed(ws, options, n_processes=args.distributed)
    with quiet_libraries():
        result = train(ws, options, progress=epoch_printer() if distributed.is_main_process() else None)
    if result.wrote:
        return print_train_summary(result)
    return 0


def run_tune(args: argparse.Namespace) -> int:
    from smarthub.model.tune import parse_space, tune

    ws = workspace_from(args)
    space = parse_space(lr=args.tune_lr, freeze=args.tune_freeze, aug=args.tune_aug, sizes=args.tune_sizes)
    base = train_options_from(args)
    budget_s = budget_from(args)
    with quiet_libraries():
        result = tune(ws, base, space=space, trials=args.trials, budget_s=budget_s,
                      say=lambda text: print(text, file=sys.stderr, flush=True))
    code = print_train_summary(result.final)
    print(result.why)
    print(f"trials: {', '.join(result.files)}")
    return code


def print_promotion(outcome: dict[str, Any]) -> int:
    """The promotion line (model/runs.py); exit code 2 when --promote if-better could not compare the runs."""
    comparison = outcome.get("comparison") or {}
    if outcome.get("policy") == "if-better" and comparison and not comparison.get("comparable"):
        print(f"error: {outcome.get('message')}", file=sys.stderr)
        return 2
    print(outcome.get("message", ""))
    return 0


def train_argv(ws: Any, options: Any) -> list[str]:
    """The `smarthub train` arguments that run `options` on workspace `ws` (the record as JSON, not as flags)."""
    return ["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--options-json", options.to_json()]


def launch_distributed(ws: Any, options: Any, *, n_processes: int) -> int:
    """Run this training in `n_processes` processes through `accelerate launch`; its exit code."""
    import subprocess

    from smarthub.errors import SmartHubError
    from smarthub.model.devices import resolve_device
    from smarthub.model.distributed import launch_command

    resolve_device(options.device)  # a bad --device is one line here, not one per process
    cmd = launch_command(n_processes, train_argv(ws, options))
    print(f"launching {n_processes} processes: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, check=False).returncode
    if rc != 0:
        raise SmartHubError(f"distributed training failed (exit code {rc}; the messages above say why); "
                            f"the current model is unchanged")
    return 0


def print_train_summary(result: Any) -> int:
    """Accuracy, the per-class table, where the files went and whether the run was promoted.

    Returns the exit code: 2 when --promote if-better could not compare the run with the promoted one.
    """
    r = result.report
    print(f"{r['arch']} ({'pretrained' if r['pretrained'] else 'from scratch'}), {r['n_train']} training / "
          f"{r['n_valid']} validation images, {r['seconds']:.0f} s")
    print(f"validation accuracy: {r['valid_accuracy']:.3f}  (error rate {r['error_rate']:.3f})")
    print(recipe_line(r))
    for note in r.get("notes") or []:
        print(f"note: {note}")
    rows = [(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
            for label, m in r["per_class"].items()]
    print_table(rows, ("class", "precision", "recall", "f1", "support"))
    folder = Path((r.get("promotion") or {}).get("run_dir") or result.export_path.parent)
    print(f"wrote {folder / 'export.pkl'} (fastai learner, a pickle), {folder / 'report.json'}, "
          f"{folder / 'confusion.png'}, {folder / 'history.csv'}")
    return print_promotion(r.get("promotion") or {})


def recipe_line(r: dict) -> str:
    """How the model was trained, in one line (which epoch was kept, on which device)."""
    head = r.get("head_valid_accuracy")
    parts = [f"recipe {r.get('recipe')} on {r.get('device')}"]
    if head is not None:
        parts.append(f"head alone {head:.3f}")
    if r.get("recipe") != "head-only":
        kept = r.get("best_epoch")
        parts.append(f"{r.get('epochs_run')}/{r.get('epochs')} epochs run"
                     + (" (stopped early: validation stopped improving)" if r.get("stopped_early") else ""))
        if r.get("frozen_blocks"):
            parts.append(f"first {r['frozen_blocks']} body blocks frozen")
        if r.get("finetune_decision"):
            parts.append(str(r["finetune_decision"]))
        parts.append("kept the fitted head (epoch 0)" if kept == 0 else f"kept epoch {kept}")
    return ", ".join(parts)


def run_predict(args: argparse.Namespace) -> int:
    from smarthub.model.predict import predict
    from smarthub.workspace import Workspace

    ws = Workspace.from_args()
    ws.contain_library_caches()
    model = args.model or ws.export_path
    with quiet_libraries():
        preds = predict(model, args.images, top_k=args.top_k, device=args.device)
    if args.json:
        print(json.dumps([p.to_dict() for p in preds], indent=2, ensure_ascii=False))
        return 0
    rows = [(str(p.path), ", ".join(f"{lab} {prob:.3f}" for lab, prob in p.top)) for p in preds]
    print_table(rows, ("image", "top labels"))
    return 0


def run_weights_add(args: argparse.Namespace) -> int:
    from smarthub.weights import add_weights

    with quiet_libraries():
        target = add_weights(args.file, arch=args.arch)
    print(f"installed {args.file} as {target}")
    return 0


def run_weights_list(args: argparse.Namespace) -> int:
    from smarthub.model.archs import cached_weights, checkpoints_dir
    from smarthub.weights import weights_status

    with quiet_libraries():
        status = weights_status()
    rows = [(s.arch, s.file, "yes" if s.cached else "no") for s in status]
    print(f"torch weights cache: {checkpoints_dir()}")
    print_table(rows, ("arch", "expects", "cached"))
    known = {s.file for s in status}
    others = [p.name for p in cached_weights() if p.name not in known]
    if others:
        print(f"other files in the cache: {', '.join(others)}")
    from smarthub.model import embedders

    print(f"\nrecommended review embedders, strongest first (`review --embedder NAME`; hub cache: "
          f"{embedders.hub_cache_dir()}):")
    print_table([(s.rec.name, f"{s.rec.size_mb} MB", s.rec.licence, embedders.describe(s))
                 for s in embedders.statuses()], ("embedder", "size", "licence", "here"))
    print(f"strongest that loads here: {embedders.strongest() or 'none (nothing cached)'}")
    return 0


def run_weights_download(args: argparse.Namespace) -> int:
    from smarthub.model import embedders

    with quiet_libraries():
        folder = embedders.download(args.name)
    print(f"{args.name} is cached in {folder}: `smarthub review --embedder {args.name}`")
    return 0
