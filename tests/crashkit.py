"""Kill -9 at a chosen file-system call: the launcher both the crash tests and `bench/chaos.py` run, and the batch
operations they kill (a small real workspace, the commands, how to tell before / after / split).

As a script (`python crashkit.py ROOT KILL_AT SMARTHUB_ARGS...`) it runs one `smarthub` command in this process
with os.link, os.unlink, os.rename, os.replace, os.rmdir and os.write wrapped: each call touching a path under
ROOT (for os.write: a descriptor open on a file under ROOT, such as the journal) is numbered from 1. With
KILL_AT = N > 0 the process kills itself with SIGKILL right before call N runs (no `finally`, no flush, like a
power cut of the process). With KILL_AT = 0 the command runs to its end and prints the calls it made to stderr
as one JSON line prefixed `CALLS `, so kill points are taken from the real sequence. CRASHKIT_LATENCY_S (bench
only) sleeps that long before each wrapped call, as slow storage would. The product code has no test hook.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve()
WRAPPED = ("link", "unlink", "rename", "replace", "rmdir", "write")


# ---------------------------------------------------------------- the child: wrap, count, kill

def install(root: str, kill_at: int, calls: list[list[str]], *, latency_s: float = 0.0) -> None:
    """Wrap the os functions of WRAPPED in this process (see the module docstring)."""
    for name in WRAPPED:
        _wrap(name, root, kill_at, calls, latency_s)


def _wrap(name: str, root: str, kill_at: int, calls: list[list[str]], latency_s: float) -> None:
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
            if latency_s:
                time.sleep(latency_s)
        return real(*args, **kwargs)

    setattr(os, name, wrapper)


def main() -> int:
    root, kill_at, argv = str(Path(sys.argv[1]).resolve()), int(sys.argv[2]), sys.argv[3:]
    calls: list[list[str]] = []
    install(root, kill_at, calls, latency_s=float(os.environ.get("CRASHKIT_LATENCY_S", "0") or 0))
    from smarthub.cli import main as smarthub_main

    rc = smarthub_main(argv)
    if kill_at == 0:
        print("CALLS " + json.dumps(calls), file=sys.stderr)
    return rc


def launch(root: Path, kill_at: int, argv: list[str], *, latency_s: float = 0.0,
           cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `smarthub ARGV` in a child that dies right before its call number `kill_at` under `root` (0: never)."""
    env = dict(os.environ, CRASHKIT_LATENCY_S=str(latency_s), PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(HERE), str(root), str(kill_at), *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def calls_of(proc: subprocess.CompletedProcess) -> list[list[str]]:
    """The call sequence an uninterrupted `launch(..., 0, ...)` printed."""
    return json.loads(proc.stderr.split("CALLS ", 1)[1])


# ---------------------------------------------------------------- the batches they kill

def moved(n_moved: int) -> list[str]:
    return [f"fish/fish{i:03d}.png" for i in range(n_moved)]


def build_data(data: Path, *, n_fish: int, n_copies: int) -> None:
    """`n_fish` fish, 8 cats, 6 birds (real PNGs, distinct content) and `n_copies` byte-exact copies of fish
    filed as cats (for dedupe)."""
    from helpers import make_image

    for i in range(n_fish):
        make_image(data / "fish" / f"fish{i:03d}.png", size=(40, 30), pattern=i)
    for i in range(8):
        make_image(data / "cat" / f"cat{i}.png", size=(40, 30), color=(30, 200, 30), pattern=10_000 + i)
    for i in range(6):
        make_image(data / "bird" / f"bird{i}.png", size=(40, 30), color=(30, 30, 200), pattern=20_000 + i)
    for i in range(n_copies):
        shutil.copyfile(data / "fish" / f"fish{i:03d}.png", data / "cat" / f"copy{i:03d}.png")


def operations(n_moved: int) -> dict[str, tuple[Callable | None, list[str]]]:
    """name → (setup run in-process before the command, the command's arguments without --data)."""
    from smarthub import fileops

    def relabel_first(ws) -> None:
        fileops.relabel(ws, [ws.data_dir / p for p in moved(n_moved)], "cat")

    def trash_first(ws) -> None:
        fileops.trash(ws, [ws.data_dir / p for p in moved(n_moved)])

    return {
        "relabel": (None, ["relabel", *moved(n_moved), "cat"]),
        "delete": (None, ["delete", *moved(n_moved)]),
        "undo-relabel": (relabel_first, ["undo"]),
        "undo-delete": (trash_first, ["undo"]),
        "rename": (None, ["classes", "rename", "fish", "fishy"]),
        "merge": (None, ["classes", "merge", "fish", "bird"]),
        "dedupe": (None, ["dedupe", "--quarantine"]),
    }


def with_data(argv: list[str], data: Path) -> list[str]:
    """ARGV with `--data DATA` where each command takes it (after the action for `classes`)."""
    return [*argv, "--data", str(data)] if argv[0] == "classes" else [argv[0], "--data", str(data), *argv[1:]]


def _image_calls(calls: list[list[str]], name: str) -> list[int]:
    """1-based numbers of the calls `name` on a journal line or an image (not the hash cache, not the lock)."""
    return [i for i, c in enumerate(calls, 1)
            if c[0] == name and (c[1].endswith("journal.jsonl") or c[1].endswith(".png"))]


# kill point → the call (from an uninterrupted run's sequence) the command dies right before
KILL_POINTS: dict[str, Callable[[list[list[str]]], int]] = {
    "before-begin-line": lambda calls: _image_calls(calls, "write")[0],
    "before-first-move": lambda calls: _image_calls(calls, "link")[0],
    "first-file-linked": lambda calls: _image_calls(calls, "unlink")[0],
    "half-way": lambda calls: (lambda links: links[len(links) // 2])(_image_calls(calls, "link")),
    "before-last-unlink": lambda calls: _image_calls(calls, "unlink")[-1],
    "before-commit-line": lambda calls: _image_calls(calls, "write")[-1],
}


def view(data: Path) -> dict[str, str]:
    """The dataset as the user sees it: every image in a class folder (path → sha256)."""
    from smarthub.dataset import sha256_file

    return {p.relative_to(data).as_posix(): sha256_file(p) for p in sorted(data.rglob("*.png"))
            if not p.relative_to(data).parts[0].startswith(".")}


def census(data: Path) -> Counter:
    """How many copies of each image exist anywhere in the data folder, trash included."""
    from smarthub.dataset import sha256_file

    return Counter(sha256_file(p) for p in data.rglob("*.png"))


if __name__ == "__main__":
    sys.exit(main())
