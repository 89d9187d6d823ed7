"""One writer at a time per workspace: `workspace_lock` (an `fcntl.flock` on `data/.smarthub/lock`, which names
its holder), and the owner of a journaled operation (pid, process start time, boot id), so recovery leaves alone
an operation whose owner is still running.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from smarthub.errors import FileOpError
from smarthub.staging import now
from smarthub.workspace import Workspace


_OP_LOCK = threading.RLock()  # one file operation at a time per process (app handlers run in threads)
_held = threading.local()  # depth of workspace_lock held by this thread (flock is not re-entrant per open)
LOCK_WAIT_S = 5.0  # how long a second process waits for the workspace lock before saying who holds it
LOCK_FILENAME = "lock"


@contextlib.contextmanager
def workspace_lock(ws: Workspace, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the workspace's writer lock (threads of this process and other processes); re-entrant.

    Waits up to `wait_s` for another process to finish, then raises FileOpError naming the holder
    (pid, command, since when), which the holder writes into the lock file.
    """
    with _OP_LOCK:
        depth = getattr(_held, "depth", 0)
        if depth:
            _held.depth = depth + 1
            try:
                yield
            finally:
                _held.depth = depth
            return
        fd = _acquire(ws, wait_s)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the flock


def _acquire(ws: Workspace, wait_s: float) -> int:
    path = ws.meta_dir / LOCK_FILENAME
    if not ws.data_dir.is_dir():  # never create a workspace by locking it (a --data typo)
        raise FileOpError(f"no data folder at {ws.data_dir}; check --data")
    check_journal(ws)
    try:
        ws.meta_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise FileOpError(f"cannot open the workspace lock {path}: {e.strerror or e}; "
                          f"check that {ws.meta_dir} is a writable folder") from e
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise FileOpError(f"another smarthub process is changing files in {ws.data_dir} "
                                  f"({holder}); waited {wait_s:g} s — try again when it has finished") from None
            time.sleep(0.01)
        except OSError as e:
            os.close(fd)
            raise FileOpError(f"cannot lock {path}: {e.strerror or e}") from e
    me = {"pid": os.getpid(), "command": " ".join(sys.argv)[:200], "since": now()}
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    return fd


def _read_holder(fd: int) -> str:
    """'pid 123, `smarthub relabel …`, since …' from the lock file (what the holder wrote)."""
    try:
        rec = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        rec = {}
    if not isinstance(rec, dict) or "pid" not in rec:
        return "holder unknown"
    return f"held by pid {rec.get('pid')}, `{rec.get('command', '?')}`, since {rec.get('since', '?')}"


def check_journal(ws: Workspace) -> None:
    """Refuse damaged bookkeeping: a `.smarthub` that is a file, or a journal that is not a regular file."""
    if ws.meta_dir.exists() and not ws.meta_dir.is_dir():
        raise FileOpError(f"{ws.meta_dir} is a file; smarthub keeps its bookkeeping in that folder — move the "
                          f"file aside and run the command again")
    if ws.journal_path.exists() and not ws.journal_path.is_file():
        raise FileOpError(f"{ws.journal_path} is not a regular file; smarthub keeps its journal there — move it "
                          f"aside and run the command again")


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (/proc), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_owner() -> dict:
    return {"pid": os.getpid(), "start": _process_start(os.getpid()) or "", "boot": _boot_id()}


def owner_alive(owner: object) -> bool:
    """True when the process that began an operation is still running (and is not this process)."""
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return False  # a line from before owners were recorded: its writer is long gone
    pid = owner["pid"]
    if pid == os.getpid() or (owner.get("boot") and owner.get("boot") != _boot_id()):
        return False
    start = _process_start(pid)
    if start is None:
        return False
    return not owner.get("start") or start == owner.get("start")
