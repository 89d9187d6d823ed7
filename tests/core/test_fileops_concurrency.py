"""Two processes on one workspace: the inter-process lock, owner-aware recovery, moves that never lose a name."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smarthub import fileops
from smarthub.atomicio import append_jsonl, read_jsonl
from smarthub.errors import FileOpError
from smarthub.workspace import Workspace
from tests.helpers import make_image

HAMMER = Path(__file__).with_name("fileops_hammer.py")
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _workspace(tmp_path: Path, n: int) -> tuple[Workspace, dict[str, int]]:
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shas = {}
    for i in range(n):
        p = make_image(ws.data_dir / ("apple", "pear", "plum")[i % 3] / f"img{i:03d}.png", pattern=i)
        shas[hashlib.sha256(p.read_bytes()).hexdigest()] = 0
    return ws, shas


def _census(ws: Workspace, shas: dict[str, int]) -> tuple[dict[str, int], list[Path]]:
    """How many names each original image has (class folders + trash), and files that are no original."""
    counts = dict.fromkeys(shas, 0)
    strangers = []
    for p in ws.data_dir.rglob("*"):
        if not p.is_file() or p.name in ("journal.jsonl", fileops.LOCK_FILENAME):
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if digest in counts:
            counts[digest] += 1
        else:
            strangers.append(p)
    return counts, strangers


def test_two_processes_with_slow_unlink_lose_nothing(tmp_path: Path) -> None:
    ws, shas = _workspace(tmp_path, 24)
    env = _env(SMARTHUB_TEST_UNLINK_DELAY_S="0.02")
    procs = [subprocess.Popen([sys.executable, str(HAMMER), str(ws.data_dir), "6", str(seed)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert all(r["ok"] > 0 for r in results), results  # both processes really did change files
    counts, strangers = _census(ws, shas)
    assert strangers == []
    assert sorted(set(counts.values())) == [1], {k[:8]: v for k, v in counts.items() if v != 1}
    ops = fileops.history(ws)
    assert ops and all(op.state in ("committed", "aborted") for op in ops)
    assert fileops.recover(ws) == []
    # every committed move's final name holds its image unless a later operation moved it on
    trashed = {p.name for p in ws.trash_dir.rglob("*") if p.is_file()}
    in_classes = sum(1 for c in ("apple", "pear", "plum") if (ws.data_dir / c).is_dir()
                     for _ in (ws.data_dir / c).iterdir())
    assert in_classes + len(trashed) == len(shas)


def test_second_process_is_told_who_holds_the_lock(tmp_path: Path) -> None:
    ws, _ = _workspace(tmp_path, 3)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from smarthub import fileops; "
         "from smarthub.workspace import Workspace; ws = Workspace(Path(sys.argv[1]), Path(sys.argv[1]) / 'm')\n"
         "with fileops.workspace_lock(ws):\n print('held', flush=True); time.sleep(30)", str(ws.data_dir)],
        env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FileOpError, match=rf"held by pid {holder.pid}, .*since .*; waited 0.2 s"):
            with fileops.workspace_lock(ws, wait_s=0.2):
                pass
    finally:
        holder.kill()
        holder.wait()
    with fileops.workspace_lock(ws, wait_s=2):  # the kernel released it with the process
        pass


def _begun(ws: Workspace, owner: dict | None) -> tuple[Path, Path]:
    """A journaled relabel left half done (hard link made, source not yet removed) by `owner`."""
    src = ws.data_dir / "apple" / "img000.png"
    dst = ws.data_dir / "pear" / "img000.png"
    os.link(src, dst)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    append_jsonl(ws.journal_path, {"event": "begin", "op_id": "op-1", "kind": "relabel", "label": "pear",
                                   "at": "2026-01-01T00:00:00+00:00", "owner": owner,
                                   "moves": [{"from": "apple/img000.png", "to": "pear/img000.png",
                                              "sha256": digest}]})
    return src, dst


@pytest.mark.parametrize("owner_kind, repaired", [
    ("live other process", False),
    ("dead process", True),
    ("no owner recorded", True),
], ids=["live-owner-left-alone", "dead-owner-recovered", "legacy-line-recovered"])
def test_recover_only_touches_operations_whose_owner_is_gone(tmp_path: Path, owner_kind: str,
                                                            repaired: bool) -> None:
    ws, _ = _workspace(tmp_path, 3)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = fileops.lock.this_owner() | {"pid": sleeper.pid, "start": fileops.lock._process_start(sleeper.pid)}
        if owner_kind == "dead process":
            owner["start"] = "1"  # the pid now belongs to another process (or none): not the owner
        src, dst = _begun(ws, None if owner_kind == "no owner recorded" else owner)
        out = fileops.recover(ws)
        assert [op.op_id for op in out] == (["op-1"] if repaired else [])
        assert src.exists() is (not repaired) and dst.exists()
        events = [r["event"] for r in read_jsonl(ws.journal_path)]
        assert events == (["begin", "commit"] if repaired else ["begin"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_move_keeps_its_new_name_when_the_source_vanished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, _ = _workspace(tmp_path, 3)
    src, dst = ws.data_dir / "apple" / "img000.png", ws.data_dir / "pear" / "img000.png"
    real_unlink = os.unlink

    def other_process_removed_source(path, *a, **kw):  # what a racing process's unlink looks like
        if Path(path) == src:
            real_unlink(path)
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", other_process_removed_source)
    final = fileops.moves.move_no_clobber(src, dst)
    monkeypatch.undo()
    assert final == dst and dst.is_file() and not src.exists()
