"""Keep marks are journaled operations: `history` lists them, `undo` reverts them (the last action, whatever it
was), and a keep killed between its journal lines and keep.json is finished by the next command, so the journal
and the keep list never disagree.

The kills are real: `tests/crashkit.py` runs the CLI in a child that SIGKILLs itself right before a chosen call.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import crashkit
from smarthub import fileops
from smarthub.cli import main
from smarthub.dataset import sha256_file
from smarthub.errors import FileOpError, SmartHubError
from smarthub.workspace import Workspace

KEPT = [f"fish/fish{i:03d}.png" for i in range(5)]


def _workspace(root: Path) -> Workspace:
    (root / "data").mkdir(parents=True)
    ws = Workspace(data_dir=(root / "data").resolve(), models_dir=(root / "models").resolve())
    crashkit.build_data(ws.data_dir, n_fish=8, n_copies=0)
    return ws


def _kept(ws: Workspace) -> set[str]:
    return set(fileops.read_marks(ws))


def _history_rows(ws: Workspace, capsys: pytest.CaptureFixture) -> list[list[str]]:
    capsys.readouterr()
    assert main(["history", "--data", str(ws.data_dir)]) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()[1:]]


def test_cli_keep_is_listed_and_undone_like_any_operation(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ws = _workspace(tmp_path)
    d = str(ws.data_dir)
    assert main(["relabel", "--data", d, f"{d}/bird/bird0.png", "cat"]) == 0
    assert main(["keep", "--data", d, *(f"{d}/{p}" for p in KEPT[:2])]) == 0
    assert "2 images kept" in capsys.readouterr().out
    shas = {sha256_file(ws.data_dir / p) for p in KEPT[:2]}
    assert _kept(ws) == shas
    rows = _history_rows(ws, capsys)
    assert [(r[2], r[3], r[4], r[5]) for r in rows] == [("relabel", "cat", "1", "committed"),
                                                       ("keep", "fish", "2", "committed")]
    keep_id = rows[1][0]
    # `smarthub undo` reverts the last action, a keep here; the next undo reverts the relabel before it
    assert main(["undo", "--data", d]) == 0
    out = capsys.readouterr().out
    assert f"no longer kept: {KEPT[0]}" in out and f"undid operation {keep_id}" in out
    assert _kept(ws) == set() and (ws.data_dir / "cat/bird0.png").is_file()
    assert main(["undo", "--data", d]) == 0
    assert (ws.data_dir / "bird/bird0.png").is_file()
    # undoing the undo keeps them again
    undo_of_keep = fileops.history(ws)[2].op_id
    assert main(["undo", "--data", d, undo_of_keep]) == 0
    assert _kept(ws) == shas
    rows = _history_rows(ws, capsys)
    assert [r[2] for r in rows] == ["relabel", "keep", "undo", "undo", "undo"]
    assert rows[1][-1] == "committed"  # the keep stands again (its undo was undone)


def test_keep_undo_forgets_marks_and_alone_undoes_the_latest_keep(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    ws = _workspace(tmp_path)
    d = str(ws.data_dir)
    assert main(["keep", "--data", d, *(f"{d}/{p}" for p in KEPT)]) == 0
    assert main(["keep", "--undo", "--data", d, f"{d}/{KEPT[0]}", f"{d}/bird/bird0.png"]) == 0
    assert "1 keep marks removed" in capsys.readouterr().out  # bird0 was never kept
    assert _kept(ws) == {sha256_file(ws.data_dir / p) for p in KEPT[1:]}
    assert main(["undo", "--data", d]) == 0  # the unkeep is an operation too: undone, the mark is back
    assert len(_kept(ws)) == len(KEPT)
    assert main(["keep", "--undo", "--data", d]) == 0  # alone: the latest keep operation
    assert "undid keep" in capsys.readouterr().out and _kept(ws) == set()
    assert main(["keep", "--undo", "--data", d]) == 2
    assert capsys.readouterr().err == ("error: no keep operation in the journal is left to undo (`smarthub history` "
                                       "lists them)\n")
    assert main(["keep", "--data", d]) == 2
    assert capsys.readouterr().err.startswith("error: name the images to keep")


def test_undo_of_a_keep_whose_mark_changed_since_is_refused(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    first = fileops.keep(ws, [ws.data_dir / KEPT[0]])
    fileops.keep(ws, [ws.data_dir / KEPT[0]])  # kept again later: its record is the later keep's
    before = ws.keep_path.read_bytes()
    with pytest.raises(FileOpError, match=rf"^cannot undo {first.op_id}: the keep mark of {KEPT[0]} changed since; "
                                          r"undo the later operations first$"):
        fileops.undo(ws, first.op_id)
    assert ws.keep_path.read_bytes() == before
    fileops.undo(ws)  # the later keep: the first one's record comes back
    assert fileops.read_marks(ws)[first.marks[0].sha256]["op"] == first.op_id


def test_a_keep_of_byte_identical_copies_is_one_mark_and_undoes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    copy = ws.data_dir / "cat" / "copy.png"
    copy.write_bytes((ws.data_dir / KEPT[0]).read_bytes())
    op = fileops.keep(ws, [ws.data_dir / KEPT[0], copy])
    assert [m.path for m in op.marks] == ["cat/copy.png"]  # one mark: the last name given
    assert fileops.read_marks(ws)[op.marks[0].sha256]["label"] == "cat"
    fileops.undo(ws)
    assert _kept(ws) == set()


def test_a_failed_keep_list_write_aborts_the_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    ws = _workspace(tmp_path)
    fileops.keep(ws, [ws.data_dir / KEPT[0]])
    before = ws.keep_path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(SmartHubError, match=r"^keep failed, no keep mark changed: cannot write .*keep.json: No space"):
        fileops.keep(ws, [ws.data_dir / KEPT[1]])
    monkeypatch.undo()
    assert ws.keep_path.read_bytes() == before
    assert [(op.kind, op.state) for op in fileops.history(ws)] == [("keep", "committed"), ("keep", "aborted")]
    fileops.undo(ws)  # the aborted keep is not undoable: the committed one is undone
    assert _kept(ws) == set()


# ---------------------------------------------------------------- killed between the journal and keep.json

def _keep_calls(calls: list[list[str]], name: str, suffix: str) -> list[int]:
    return [i for i, c in enumerate(calls, 1) if c[0] == name and suffix in c[1]]  # replace names the temp file


KILL_POINTS = {  # the call (of an uninterrupted run) the command dies right before
    "before-begin-line": lambda calls: _keep_calls(calls, "write", "journal.jsonl")[0],
    "before-keep-list": lambda calls: _keep_calls(calls, "replace", "keep.json")[0],
    "before-commit-line": lambda calls: _keep_calls(calls, "write", "journal.jsonl")[-1],
}


def _setup_and_argv(ws: Workspace, op: str) -> list[str]:
    d = str(ws.data_dir)
    if op == "keep":
        return ["keep", "--data", d, *KEPT]
    fileops.keep(ws, [ws.data_dir / p for p in KEPT])
    if op == "undo-keep":
        return ["undo", "--data", d]
    return ["keep", "--undo", "--data", d, *KEPT[:2]]  # unkeep


_REFERENCE: dict[str, tuple[list[list[str]], set[str]]] = {}


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=list(KILL_POINTS))
@pytest.mark.parametrize("op", ["keep", "undo-keep", "unkeep"])
def test_a_killed_keep_is_finished_and_the_journal_agrees_with_the_keep_list(
        tmp_path: Path, capsys: pytest.CaptureFixture, op: str, point: str) -> None:
    if op not in _REFERENCE:  # an uninterrupted run: its calls and the keep marks it leaves
        ref = _workspace(tmp_path / "ref")
        proc = crashkit.launch(ref.data_dir, 0, _setup_and_argv(ref, op), cwd=ref.data_dir)
        assert proc.returncode == 0, proc.stderr
        _REFERENCE[op] = (crashkit.calls_of(proc), _kept(ref))
    calls, after = _REFERENCE[op]
    ws = _workspace(tmp_path / "run")
    argv = _setup_and_argv(ws, op)
    before = _kept(ws)
    assert before != after
    proc = crashkit.launch(ws.data_dir, KILL_POINTS[point](calls), argv, cwd=ws.data_dir)
    assert proc.returncode == -9, proc.stderr  # really killed at that call

    assert main(["history", "--data", str(ws.data_dir)]) == 0  # the next command repairs first
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.startswith("recovered:")]
    assert all(o.state != "begun" for o in fileops.history(ws))
    if point == "before-begin-line":
        assert lines == [] and _kept(ws) == before  # nothing journaled, nothing marked
    else:  # journaled: finished, whether or not keep.json was written before the kill
        kind, n = {"keep": ("keep", len(KEPT)), "undo-keep": ("undo", len(KEPT)), "unkeep": ("unkeep", 2)}[op]
        assert len(lines) == 1 and lines[0].startswith(f"recovered: {kind} ") and lines[0].endswith(
            f"({'of ' + fileops.history(ws)[0].op_id + ', ' if kind == 'undo' else ''}{n} images) was interrupted; "
            f"finished it"), lines
        assert _kept(ws) == after
    # the journal and the keep list agree: undo walks back to the marks before the command
    assert fileops.recover(ws) == []
    if op == "undo-keep":  # its keep is undone whole (or was never touched): nothing is left to undo
        expected = 2 if _kept(ws) == after else 0
        assert main(["undo", "--data", str(ws.data_dir)]) == expected
        assert _kept(ws) == after
    elif _kept(ws) == after:
        assert main(["undo", "--data", str(ws.data_dir)]) == 0
        assert _kept(ws) == before
    assert json.loads(ws.keep_path.read_text() if ws.keep_path.exists() else '{"kept": {}}')["kept"].keys() == \
        _kept(ws)
