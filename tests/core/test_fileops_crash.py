"""Fault injection with real processes: kill -9 a smarthub command at many points of a batch, then check that
the next command finishes it or rolls all of it back, says which on one line, and that undo still works.

Each case runs the real CLI in a child (`tests/crashkit.py`), which kills itself right before its N-th file-system
call under the data folder (a link, an unlink, a folder removal or a journal line); the kill points are taken
from the call sequence of an uninterrupted run of the same command, so they are the same on every machine.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import crashkit
from crashkit import KILL_POINTS
from helpers import make_image
from smarthub import fileops
from smarthub.atomicio import append_jsonl
from smarthub.dataset import sha256_file
from smarthub.cli import main
from smarthub.workspace import Workspace

N_FISH, N_MOVED, N_COPIES = 40, 30, 12
OPERATIONS = crashkit.operations(N_MOVED)


def _workspace(root: Path, op: str) -> Workspace:
    (root / "data").mkdir(parents=True)
    ws = Workspace(data_dir=(root / "data").resolve(), models_dir=(root / "models").resolve())
    crashkit.build_data(ws.data_dir, n_fish=N_FISH, n_copies=N_COPIES)
    setup = OPERATIONS[op][0]
    if setup is not None:
        setup(ws)
    return ws


def _view(ws: Workspace) -> dict[str, str]:
    return crashkit.view(ws.data_dir)


def _census(ws: Workspace):
    return crashkit.census(ws.data_dir)


def _launch(ws: Workspace, op: str, kill_at: int):
    return crashkit.launch(ws.data_dir, kill_at, crashkit.with_data(OPERATIONS[op][1], ws.data_dir),
                           cwd=ws.data_dir.parent)


_REFERENCE: dict[str, tuple[list[list[str]], dict[str, str]]] = {}


def _reference(tmp_path_factory: pytest.TempPathFactory, op: str) -> tuple[list[list[str]], dict[str, str]]:
    """The calls and the final dataset of an uninterrupted run of `op` (once per operation)."""
    if op not in _REFERENCE:
        ws = _workspace(tmp_path_factory.mktemp(f"ref-{op}"), op)
        proc = _launch(ws, op, 0)
        assert proc.returncode == 0, proc.stderr
        _REFERENCE[op] = (crashkit.calls_of(proc), _view(ws))
    return _REFERENCE[op]


def _history(ws: Workspace, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """Run `smarthub history` (the next command after the crash); return its code and its recovery lines."""
    rc = main(["history", "--data", str(ws.data_dir), "--limit", "50"])
    out, err = capsys.readouterr()
    return rc, [line for line in (out + err).splitlines() if line.startswith("recovered:")]


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=list(KILL_POINTS))
@pytest.mark.parametrize("op", list(OPERATIONS), ids=list(OPERATIONS))
def test_a_killed_batch_is_finished_or_rolled_back_whole(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                         capsys: pytest.CaptureFixture, op: str, point: str) -> None:
    calls, after = _reference(tmp_path_factory, op)
    kill_at = KILL_POINTS[point](calls)
    ws = _workspace(tmp_path, op)
    before, counts = _view(ws), _census(ws)
    assert before != after
    proc = _launch(ws, op, kill_at)
    assert proc.returncode == -9, proc.stderr  # really killed at that call

    rc, lines = _history(ws, capsys)
    assert rc == 0
    view = _view(ws)
    assert _census(ws) == counts  # every image exists exactly as often as before: none lost, none doubled
    assert view in (before, after), "split: the batch was left half done"
    assert all(o.state != "begun" for o in fileops.history(ws))  # every journal entry is closed
    if point == "before-begin-line":
        assert lines == [] and view == before  # nothing was journaled, nothing moved
    else:
        assert len(lines) == 1, lines
        said = "finished it" if view == after else "rolled it back"
        assert said in lines[0] and "was interrupted" in lines[0], lines[0]
    assert fileops.recover(ws) == []  # repaired once, for good

    # undo takes the whole batch back (an interrupted undo: what remains of the original can be undone)
    is_undo = op.startswith("undo")
    if is_undo:  # the starting state is the one before the relabel or delete that was being undone
        if view == before:
            assert main(["undo", "--data", str(ws.data_dir)]) == 0
        else:
            assert main(["undo", "--data", str(ws.data_dir)]) == 2  # the original is marked undone
        assert _view(ws) == after
    elif view == after:
        assert main(["undo", "--data", str(ws.data_dir)]) == 0
        assert _view(ws) == before
    assert _census(ws) == counts


def _changed_pending_source(ws: Workspace, op: str) -> str:
    """Change one image the killed operation had not moved yet (so it cannot be finished as planned)."""
    begun = next(o for o in fileops.history(ws) if o.state == "begun")
    pending = next(m.src for m in reversed(begun.moves) if (ws.data_dir / m.src).is_file())
    with open(ws.data_dir / pending, "ab") as f:
        f.write(b"edited meanwhile")
    return pending


@pytest.mark.parametrize("op", ["relabel", "undo-relabel", "rename", "delete"])
def test_a_killed_batch_that_cannot_be_finished_is_rolled_back(tmp_path: Path,
                                                               tmp_path_factory: pytest.TempPathFactory,
                                                               capsys: pytest.CaptureFixture, op: str) -> None:
    calls, after = _reference(tmp_path_factory, op)
    ws = _workspace(tmp_path, op)
    before = _view(ws)
    proc = _launch(ws, op, KILL_POINTS["half-way"](calls))
    assert proc.returncode == -9, proc.stderr
    changed = _changed_pending_source(ws, op)

    rc, lines = _history(ws, capsys)
    view = _view(ws)
    assert rc == 0 and sorted(view) == sorted(before)  # every image back at its place
    begun = [o for o in fileops.history(ws) if o.notes and "rolled back" in o.notes[0]]
    assert len(begun) == 1 and len(lines) == 1, lines
    kind = {"delete": "delete", "undo-relabel": "undo", "rename": "rename"}.get(op, op)
    of = f"of {begun[0].undoes}, " if op == "undo-relabel" else ""
    assert lines[0].startswith(f"recovered: {kind} {begun[0].op_id} ({of}{len(begun[0].moves)} images) was "
                               f"interrupted; rolled it back"), lines[0]
    assert lines[0].endswith(f": {changed} changed since it was planned"), lines[0]
    assert all(o.state != "begun" for o in fileops.history(ws))
    if op == "undo-relabel":  # the relabel stays committed and can still be undone, to the starting state
        assert "can still be undone" in lines[0]
        assert main(["undo", "--data", str(ws.data_dir)]) == 0
        assert sorted(_view(ws)) == sorted(after)
    else:
        assert main(["undo", "--data", str(ws.data_dir)]) == 2  # nothing happened, nothing to undo


def test_a_recovery_killed_in_turn_is_finished_by_the_next_command(tmp_path: Path,
                                                                   tmp_path_factory: pytest.TempPathFactory,
                                                                   capsys: pytest.CaptureFixture) -> None:
    calls, after = _reference(tmp_path_factory, "undo-relabel")
    ws = _workspace(tmp_path, "undo-relabel")
    counts = _census(ws)
    assert _launch(ws, "undo-relabel", KILL_POINTS["half-way"](calls)).returncode == -9
    # the next command dies too, a few moves into its repair
    proc = crashkit.launch(ws.data_dir, 4, ["history", "--data", str(ws.data_dir)])
    assert proc.returncode == -9, proc.stderr
    rc, lines = _history(ws, capsys)
    assert rc == 0 and len(lines) == 1 and "finished it" in lines[0]
    assert _view(ws) == after and _census(ws) == counts
    assert main(["undo", "--data", str(ws.data_dir)]) == 2  # the relabel is undone: nothing left to undo


@pytest.mark.parametrize("limit", ["-5", "0"], ids=["negative", "zero"])
def test_history_refuses_a_limit_below_one(ws: Workspace, capsys: pytest.CaptureFixture, limit: str) -> None:
    assert main(["history", "--data", str(ws.data_dir), "--limit", limit]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: --limit must be 1 or more (got {limit}): it is how many of the latest " \
                                f"operations to show\n"


def test_the_app_and_notebook_say_what_was_repaired(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The clean session (the app's Clean tab and the notebook widget) shows the recovery line with its outcome."""
    from smarthub.clean import session

    calls, after = _reference(tmp_path_factory, "relabel")
    ws = _workspace(tmp_path, "relabel")
    before = _view(ws)
    assert _launch(ws, "relabel", KILL_POINTS["half-way"](calls)).returncode == -9
    begun = next(o for o in fileops.history(ws) if o.state == "begun")
    outcome = session.undo_journal(ws, session.CleanSession())  # the next action repairs first, then undoes
    first, *rest = outcome.message.splitlines()
    assert outcome.ok and first == (f"recovered: relabel {begun.op_id} ({N_MOVED} images) was interrupted; "
                                    f"finished it")
    assert rest and rest[0].startswith(f"undid operation {begun.op_id}")
    assert _view(ws) == before


@pytest.mark.parametrize("journal_ino, keeps_inodes", [
    ("moved file's", True),  # the moved file is told from the identical copy already there by its inode
    ("stale", False),  # the workspace was copied since (new inodes): found by content
], ids=["same-inode", "copied-workspace"])
def test_recovery_tells_the_moved_file_from_an_identical_copy(ws: Workspace, journal_ino: str,
                                                               keeps_inodes: bool) -> None:
    src, there = make_image(ws.data_dir / "cat" / "a.png", pattern=7), ws.data_dir / "dog" / "a.png"
    make_image(ws.data_dir / "dog" / "b.png", pattern=8)
    there.write_bytes(src.read_bytes())  # a byte-identical copy already holds the planned name
    ino, copy_ino, digest = src.stat().st_ino, there.stat().st_ino, sha256_file(src)
    os.link(src, ws.data_dir / "dog" / "a_1.png")  # the killed move: linked to the free name, source unlinked
    src.unlink()
    append_jsonl(ws.journal_path, {"event": "begin", "op_id": "op-1", "kind": "relabel", "label": "dog",
                                   "at": "2026-12-01T00:00:00+00:00", "owner": None,
                                   "moves": [{"from": "cat/a.png", "to": "dog/a.png", "sha256": digest,
                                              "ino": ino if keeps_inodes else ino + 10**9}]})
    [repaired] = fileops.recover(ws)
    assert repaired.outcome == fileops.FINISHED and repaired.message.endswith("(1 image) was interrupted; "
                                                                              "finished it")
    moved_to = fileops.history(ws)[0].moves[0].dst
    assert moved_to == ("dog/a_1.png" if keeps_inodes else "dog/a.png")
    fileops.undo(ws)
    assert (ws.data_dir / "cat" / "a.png").is_file() and sha256_file(ws.data_dir / "cat" / "a.png") == digest
    if keeps_inodes:  # the copy that was there before stays where it was
        assert there.stat().st_ino == copy_ino and (ws.data_dir / "cat" / "a.png").stat().st_ino == ino
