"""Collection commands: bootstrap (search → download → dedupe → ledger [→ train]), dedupe, info."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from smarthub.cli._common import (add_workspace_args, int_in, print_table, progress_printer, quarantine,
                                  workspace_from)
from smarthub.collect.options import DEFAULT_NEAR_THRESHOLD, BootstrapOptions
from smarthub.optionspec import add_arguments, from_args

ORDER = 30


def register(sub: argparse._SubParsersAction) -> None:
    from smarthub.collect.search import LICENCES, SIZES, TYPES

    p = sub.add_parser("bootstrap", help="search, download, verify and de-duplicate images of new classes",
                       description="Fill data/<LABEL>/ with verified, de-duplicated images found by image search "
                                   "(or listed in --urls-file), recording where each came from.")
    add_workspace_args(p)
    p.add_argument("labels", nargs="*", metavar="LABEL", help="class names, e.g. 'grass carp' tilapia koi")
    add_arguments(p, BootstrapOptions, only={"count"})
    s = p.add_argument_group("search options")
    add_arguments(s, BootstrapOptions, only={"region", "safesearch"})
    s.add_argument("--size", dest="search_size", choices=SIZES, default=None, help="image size filter")
    s.add_argument("--type", dest="type_image", choices=TYPES, default=None, help="image type filter, e.g. photo")
    s.add_argument("--licence", "--license", dest="licence", choices=LICENCES, default=None,
                   help="licence filter (Public = public domain; any = Creative Commons)")
    s.add_argument("--urls-file", type=Path, metavar="FILE",
                   help="download from a list instead of searching: one URL per line, or `url,label` lines")
    d = p.add_argument_group("download options")
    add_arguments(d, BootstrapOptions, only={"workers", "per_host", "timeout_s", "max_bytes", "max_side_px",
                                             "min_side_px", "keep_original"})
    d.add_argument("--threshold", type=int_in(0, 63), default=None, metavar="BITS",
                   help=f"pHash Hamming distance counted as a near duplicate (default {DEFAULT_NEAR_THRESHOLD})")
    p.add_argument("--train", action="store_true", help="retrain the model after collecting")
    p.add_argument("--verbose", "-v", action="store_true", help="list every URL not saved, with its reason")
    from smarthub.cli.train import add_train_args

    # --size and --workers mean the search size filter and download workers here
    add_train_args(p, title="training options (with --train)",
                   flags={"size_px": "--train-size", "num_workers": "--train-workers"})
    p.set_defaults(func=run_bootstrap)

    p = sub.add_parser("dedupe", help="report exact and near-duplicate images across all classes")
    add_workspace_args(p, models=False)
    p.add_argument("--quarantine", action="store_true", help="move the extra copies to the trash (undoable)")
    p.add_argument("--keep", choices=("auto", "provenance", "majority", "largest", "first"), default="auto",
                   help="which copy of each group stays: auto (default) = the one with provenance, then the one "
                        "in the class most copies share, then the largest")
    p.add_argument("--threshold", type=int_in(0, 63), default=None, metavar="BITS",
                   help=f"pHash Hamming distance counted as a near duplicate (default {DEFAULT_NEAR_THRESHOLD})")
    p.set_defaults(func=run_dedupe)

    p = sub.add_parser("info", help="images per class, per source and licence hints")
    add_workspace_args(p, models=False)
    p.set_defaults(func=run_info)


class _BootstrapProgressPrinter:
    """tqdm bars on a terminal, a line every few seconds in a log."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.bar_label: str | None = None
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        if event.stage == "index":
            final = event.done >= event.total
            if self.tty:
                print(f"\r{event.message}", end="\n" if final else "", file=sys.stderr, flush=True)
            elif final:
                print(event.message, file=sys.stderr, flush=True)
            return
        if self.tty:
            if event.stage == "download":
                if self.bar is None or self.bar_label != event.label:
                    self.close()
                    from tqdm import tqdm

                    self.bar = tqdm(total=event.total, initial=0, desc=event.label, unit="img", file=sys.stderr,
                                    leave=True)
                    self.bar_label = event.label
                self.bar.n = event.done
                self.bar.set_postfix_str(event.message.split("(", 1)[-1].rstrip(")"), refresh=False)
                self.bar.refresh()
            elif event.stage == "done":
                self.close()
            return
        now = time.monotonic()
        if event.stage == "done" or (event.stage == "download" and now - self.last >= 5.0):
            print(event.message, file=sys.stderr, flush=True)
            self.last = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_bootstrap(args: argparse.Namespace) -> int:
    from smarthub.collect.bootstrap import bootstrap, validate_labels
    from smarthub.collect.download import DownloadOptions
    from smarthub.errors import LabelError
    from smarthub.collect.search import SearchOptions, UrlListBackend

    ws = workspace_from(args)
    labels = list(args.labels)
    backend = None
    if args.urls_file is not None:
        backend = UrlListBackend(args.urls_file)
        labels = labels or backend.labels()
        if not labels:
            raise LabelError(f"{args.urls_file} has no `url,label` lines: name the class, "
                             f"e.g. `smarthub bootstrap koi --urls-file {args.urls_file}`")
    labels = validate_labels(labels)
    train_options = None
    if args.train:
        from smarthub.cli.train import train_options_from

        train_options = train_options_from(args)
    o = from_args(BootstrapOptions, args,
                  **({} if args.threshold is None else {"near_threshold": args.threshold}))
    download = DownloadOptions(workers=o.workers, per_host=o.per_host,
                               connect_timeout_s=o.timeout_s, read_timeout_s=o.timeout_s,
                               max_bytes=o.max_bytes, max_side_px=o.max_side_px, min_side_px=o.min_side_px,
                               keep_original=o.keep_original)
    search = SearchOptions(region=o.region, safesearch=o.safesearch, size=args.search_size,
                           type_image=args.type_image, licence=args.licence)
    printer = _BootstrapProgressPrinter()
    try:
        report = bootstrap(ws, labels, count=o.count, backend=backend, search_options=search,
                           download_options=download, progress=printer, near_threshold=o.near_threshold)
    finally:
        printer.close()
    print_bootstrap_report(report, verbose=args.verbose)
    if train_options is not None and not report.stopped:
        ws.contain_library_caches()  # the data folder exists now; before fastai is imported
        from smarthub.cli.train import epoch_printer, print_train_summary
        from smarthub.model.train import train

        print("training…", file=sys.stderr)
        result = train(ws, train_options, progress=epoch_printer())
        print_train_summary(result)
    return 0 if report.complete else 1


def print_bootstrap_report(report: Any, *, verbose: bool = False, per_label: int = 5) -> None:
    """Per label: the URLs not saved (conflicts always, failures summarised unless verbose), then the summary."""
    for label, r in report.reports.items():
        for url, reason in r.conflicts:
            print(f"conflict  {label}: {url}: {reason}")
        shown = r.failed if verbose else r.failed[:per_label]
        for url, reason in shown:
            print(f"failed    {label}: {url}: {reason}")
        if len(r.failed) > len(shown):
            print(f"          … and {len(r.failed) - len(shown)} more failures for {label} (--verbose lists them)")
        if verbose:
            for url, reason in r.duplicates:
                print(f"duplicate {label}: {url}: {reason}")
    print(report.summary())


def run_dedupe(args: argparse.Namespace) -> int:
    from smarthub.collect.dedupe import dataset_duplicate_groups

    ws = workspace_from(args)
    threshold = DEFAULT_NEAR_THRESHOLD if args.threshold is None else args.threshold
    found = dataset_duplicate_groups(ws, threshold=threshold, progress=progress_printer("hashing"), keep=args.keep)
    rel = lambda p: p.relative_to(ws.data_dir).as_posix()  # noqa: E731
    for i, group in enumerate(found.groups, 1):
        flag = "  (across classes)" if found.cross_class(group) else ""
        print(f"group {i}: {group.kind}{f', distance ≤ {group.max_distance}' if group.kind == 'near' else ''}{flag}")
        print(f"  keep  {rel(group.keep)}  ({group.reason})")
        for p in group.duplicates:
            print(f"  extra {rel(p)}")
    for path, reason in found.unreadable:
        print(f"unreadable {path}: {reason}")
    cross = sum(1 for g in found.groups if found.cross_class(g))
    print(f"{len(found.groups)} duplicate groups, {len(found.extras)} extra copies"
          f"{f' ({cross} groups span several classes: review them)' if cross else ''}")
    if found.groups and args.quarantine:
        return quarantine(ws, found.extras, "extra copies")
    return 1 if found.groups else 0


def run_info(args: argparse.Namespace) -> int:
    from smarthub.ledger import info

    ws = workspace_from(args)
    report = info(ws)
    if report.outside:
        print(report.outside)
    if not report.per_class:
        print(f"no images in {ws.data_dir} yet (`smarthub bootstrap LABEL` collects some)")
        return 0
    print_table(list(report.per_class.items()), ("class", "images"))
    print(f"{sum(report.per_class.values())} images in {len(report.per_class)} classes; "
          f"{report.with_provenance} with provenance, {report.without_provenance} without")
    if report.per_domain:
        print()
        print_table(list(report.per_domain.items())[:20], ("source domain", "images"))
        if len(report.per_domain) > 20:
            print(f"… and {len(report.per_domain) - 20} more domains")
    if report.licences:
        print()
        print_table(list(report.licences.items()), ("licence hint", "images"))
        print("licence hints come from the search filter only: check each source page before redistributing")
    if report.missing_files:
        print(f"{report.missing_files} ledger records point to images no longer in the folder (deleted)")
    return 0
