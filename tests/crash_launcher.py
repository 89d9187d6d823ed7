"""Test helper process: run one `smarthub` command and SIGKILL it at a chosen file-system call.

Usage: python crash_launcher.py ROOT KILL_AT SMARTHUB_ARGS...

In this process only, os.link, os.unlink, os.rename, os.replace, os.rmdir and os.write are wrapped: each call
that touches a path under ROOT (for os.write: a descriptor open on a file under ROOT, such as the journal)
is numbered from 1. With KILL_AT = N > 0 the process kills itself with SIGKILL right before call N runs
(nothing after it happens: no `finally`, no flush, like a power cut of the process). With KILL_AT = 0 the
command runs to its end and the calls it made are printed to stderr as one JSON line prefixed `CALLS `,
so a test can pick kill points from the real sequence. The product code has no test hook.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def _wrap(name: str, root: str, kill_at: int, calls: list[list[str]]) -> None:
    real = getattr(os, name)

    def where(args: tuple) -> str | None:
        if name == "write":
            try:
                path = os.readlink(f"/proc/self/fd/{args[0]}")
            except OSError:
                return None
            return path if path.startswith(root) else None
        for a in args[:2]:
            if isinstance(a, (str, os.PathLike)) and os.path.abspath(os.fspath(a)).startswith(root):
                return os.path.abspath(os.fspath(a))
        return None

    def wrapper(*args, **kwargs):
        path = where(args)
        if path is not None:
            calls.append([name, os.path.relpath(path, root)])
            if len(calls) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    setattr(os, name, wrapper)


def main() -> int:
    root, kill_at, argv = str(Path(sys.argv[1]).resolve()), int(sys.argv[2]), sys.argv[3:]
    calls: list[list[str]] = []
    for name in ("link", "unlink", "rename", "replace", "rmdir", "write"):
        _wrap(name, root, kill_at, calls)
    from smarthub.cli import main as smarthub_main

    rc = smarthub_main(argv)
    if kill_at == 0:
        print("CALLS " + json.dumps(calls), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
