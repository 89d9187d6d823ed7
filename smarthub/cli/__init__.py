"""`smarthub` command line: argparse subcommands, each a few lines calling one core function.

Every module in this package (except those starting with '_') defines `ORDER` and
`register(subparsers)`; handlers return an exit code. A SmartHubError becomes one
line on stderr and exit code 2, and so does a usage error, a filesystem error (an OSError naming
its file) and a closed output pipe (`smarthub info | head -1`); Ctrl-C exits 130. Exit 3 is kept for
bugs ("internal error").
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Sequence

from smarthub import __version__
from smarthub.errors import SmartHubError


MODEL_LOADING_COMMANDS = ("predict", "review", "annotate", "app")


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (exit 2), like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full `smarthub` parser with every subcommand registered."""
    parser = _Parser(
        prog="smarthub",
        description="Bootstrap, train, clean and pre-annotate image datasets.",
    )
    parser.add_argument("--version", action="version", version=f"smarthub {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(sub)
    for name in MODEL_LOADING_COMMANDS:
        if name in sub.choices:
            sub.choices[name].add_argument(
                "--trust", action="store_true",
                help="load model files smarthub did not write (they are pickles: loading runs their code)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    debug = args.debug or bool(os.environ.get("SMARTHUB_DEBUG"))
    from smarthub import trust
    from smarthub.libwarnings import quiet_library_warnings

    quiet_library_warnings()

    previous = trust.require_known_models(not getattr(args, "trust", False))
    try:
        return int(args.func(args) or 0)
    except SmartHubError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _silence_stdout()  # the reader (e.g. `head`) has gone: no more output, and none at exit
        print("error: the output was closed before smarthub finished writing (broken pipe)", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused: name the file and the reason
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not bad input: say so in one line unless --debug
        if debug:
            raise
        print(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback and report it)",
              file=sys.stderr)
        return 3
    finally:
        trust.require_known_models(previous)  # main() called in-process (tests, scripts) leaves no trace


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        return
