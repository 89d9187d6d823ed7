"""Atomic writes keep the last good file through injected failures; JSONL lines are never partial."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from smarthub.atomicio import append_jsonl, atomic_save_file, atomic_write_json, read_json, read_jsonl
from smarthub.errors import SmartHubError


def test_replace_failure_keeps_last_good_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "report.json"
    atomic_write_json(target, {"version": 1})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SmartHubError, match="cannot write .*report.json.*No space"):
        atomic_write_json(target, {"version": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"version": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_writer_exception_keeps_last_good_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pkl"
    target.write_bytes(b"good")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save_file(target, half_then_crash)
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl"]


def test_read_json_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SmartHubError, match="report not found"):
        read_json(tmp_path / "nope.json", what="report")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SmartHubError, match="bad.json is not valid JSON"):
        read_json(bad)


def test_concurrent_appends_are_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"

    def worker(n: int) -> None:
        for i in range(50):
            append_jsonl(path, {"worker": n, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert len({(r["worker"], r["i"]) for r in map(json.loads, lines)}) == 400


def test_torn_tail_is_terminated_before_next_record(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"b": ')
    append_jsonl(path, {"c": 3})
    assert list(read_jsonl(path)) == [{"a": 1}, {"c": 3}]


@pytest.mark.parametrize(
    ("name", "removable"),
    [(".x.jpg.abc123.tmp", True), ("x.jpg", False), (".hidden.jpg", False), ("x.tmp", False)],
    ids=["own-temp", "image", "hidden-image", "visible-tmp"],
)
def test_discard_temp_only_removes_own_temp_files(tmp_path: Path, name: str, removable: bool) -> None:
    from smarthub.atomicio import discard_temp

    path = tmp_path / name
    path.write_bytes(b"x")
    if removable:
        assert discard_temp(path) is True and not path.exists()
    else:
        with pytest.raises(SmartHubError, match="not a smarthub temporary file"):
            discard_temp(path)
        assert path.exists()


def test_new_files_get_normal_permissions_and_replacements_keep_theirs(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()
    target.chmod(0o640)
    atomic_write_json(target, {"v": 2})
    assert target.stat().st_mode & 0o777 == 0o640


def _current_umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def test_durable_writes_fsync_and_cache_writes_do_not(tmp_path: Path, monkeypatch) -> None:
    """Durable writes fsync the file and its folder; `durable=False` (regenerable caches) skips both and is
    still atomic: the target holds the new bytes and no temp file is left."""
    import os

    from smarthub import atomicio

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(atomicio.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomicio.atomic_write_with(tmp_path / "a.bin", lambda f: f.write(b"one"))
    assert len(synced) == 2  # the file, then the folder
    synced.clear()
    atomicio.atomic_write_with(tmp_path / "b.bin", lambda f: f.write(b"two"), durable=False)
    assert synced == []
    assert (tmp_path / "b.bin").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
