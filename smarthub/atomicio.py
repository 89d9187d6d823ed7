"""Atomic file writes and append-only JSONL: the only way smarthub writes JSON, manifests and models."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smarthub.errors import SmartHubError

_APPEND_LOCK = threading.Lock()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file in the same folder, fsync, os.replace."""
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write `obj` as pretty UTF-8 JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_with(path: Path, writer: Callable[[Any], object], *, durable: bool = True) -> None:
    """Call `writer(binary_file)` on a temp file beside `path`, then replace `path` with it.

    The previous content of `path` survives any failure (including one in os.replace);
    the temp file is always removed. `durable=False` skips the fsyncs (file and folder), for caches that can be
    made again: a crash still never shows a partial file, but a power cut may leave an empty one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise SmartHubError(f"cannot write {path}: {e.strerror or e}") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as e:
        raise SmartHubError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_save_file(path: Path, save: Callable[[Path], object]) -> None:
    """Run `save(tmp_path)` (e.g. learn.export / torch.save), then atomically replace `path`.

    Model files go through `trust.save_model`, which also lists them as written by smarthub.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        raise SmartHubError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def append_jsonl(path: Path, records: list[dict[str, Any]] | dict[str, Any]) -> None:
    """Append one or more records to a JSONL file as whole lines, fsync'd.

    All lines go out in a single write() under an exclusive lock, so readers and
    concurrent writers (threads or processes) never see a partial line.
    """
    if isinstance(records, dict):
        records = [records]
    if not records:
        return
    payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records).encode("utf-8")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _APPEND_LOCK:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                _repair_tail(fd)
                written = os.write(fd, payload)
                if written != len(payload):
                    raise OSError(f"short write ({written} of {len(payload)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as e:
        raise SmartHubError(f"cannot append to {path}: {e.strerror or e}") from e


def _repair_tail(fd: int) -> None:
    """If a previous writer died mid-line, terminate that line so the next record stays whole."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    if os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file; a torn or corrupt line is skipped, never fatal."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec


def read_json(path: Path, *, what: str = "file") -> Any:
    """Read a JSON file, raising SmartHubError naming the file when missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SmartHubError(f"{what} not found: {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SmartHubError(f"{what} {path} is not valid JSON: {e}") from e


def is_own_temp(path: Path) -> bool:
    """True for a temporary file smarthub itself creates: a hidden name ending in `.tmp`."""
    path = Path(path)
    return path.name.startswith(".") and path.name.endswith(".tmp")


def discard_temp(path: Path) -> bool:
    """Remove one of smarthub's own temporary files (see `is_own_temp`); refuse anything else.

    This is how modules other than fileops clean up after an interrupted write: it can never
    remove a user's image. Returns True when a file was removed.
    """
    path = Path(path)
    if not is_own_temp(path):
        raise SmartHubError(f"refusing to remove {path}: not a smarthub temporary file")
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _file_mode(path: Path) -> int:
    """Mode for a replaced file: the old file's, else 0o666 less the process umask (mkstemp makes 0o600)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        pass
    umask = 0o022
    try:  # read the umask without changing it (os.umask would, racing other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    except (OSError, ValueError):
        pass
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename survives power loss (best effort on platforms without it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename itself is still atomic
    finally:
        os.close(fd)
