"""Journaled, verified, undoable file operations — including injected faults and crashes."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import make_image
from smarthub import fileops
from smarthub.dataset import sha256_file
from smarthub.errors import FileOpError, LabelError, MissingFileError


def journal(ws) -> list[dict]:
    return [json.loads(line) for line in ws.journal_path.read_text().splitlines()]


def all_hashes(ws) -> dict[str, int]:
    """sha256 → count over every file under data/ (trash included): proves nothing was lost or duplicated."""
    counts: dict[str, int] = {}
    for p in ws.data_dir.rglob("*"):
        if p.is_file() and p.suffix == ".jpg":
            h = sha256_file(p)
            counts[h] = counts.get(h, 0) + 1
    return counts


def test_relabel_moves_verifies_and_journals(small_ws) -> None:
    ws = small_ws
    src = ws.data_dir / "cat" / "cat0.jpg"
    digest, ino = sha256_file(src), src.stat().st_ino
    op = fileops.relabel(ws, [src], "dog")
    dst = ws.data_dir / "dog" / "cat0.jpg"
    assert not src.exists() and sha256_file(dst) == digest
    assert op.state == "committed" and op.moves[0].dst == "dog/cat0.jpg"
    lines = journal(ws)
    assert [line["event"] for line in lines] == ["begin", "commit"]
    # the inode (kept by the move) tells recovery the moved file from an identical copy already there
    assert lines[0]["moves"] == [{"from": "cat/cat0.jpg", "to": "dog/cat0.jpg", "sha256": digest, "ino": ino}]
    assert dst.stat().st_ino == ino


def test_relabel_to_new_class_and_unicode(small_ws) -> None:
    op = fileops.relabel(small_ws, [small_ws.data_dir / "fish" / "fish1.jpg"], "café")
    assert (small_ws.data_dir / "café" / "fish1.jpg").exists()
    assert op.label == "café"


def test_collision_gets_new_name_never_overwrites(small_ws) -> None:
    ws = small_ws
    make_image(ws.data_dir / "dog" / "cat0.jpg", pattern=4242)  # a different image already uses the name
    before = all_hashes(ws)
    op = fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "dog")
    assert op.moves[0].dst == "dog/cat0_1.jpg"
    assert all_hashes(ws) == before
    fileops.undo(ws)
    assert (ws.data_dir / "cat" / "cat0.jpg").exists() and all_hashes(ws) == before


def test_trash_and_undo_many_steps(small_ws) -> None:
    ws = small_ws
    before = {p: sha256_file(p) for p in ws.data_dir.rglob("*.jpg")}
    a = fileops.relabel(ws, [ws.data_dir / "cat" / "cat1.jpg", ws.data_dir / "cat" / "cat2.jpg"], "dog")
    t = fileops.trash(ws, [ws.data_dir / "dog" / "dog3.jpg"])
    assert (ws.trash_dir / t.op_id / "dog" / "dog3.jpg").exists()
    assert not (ws.data_dir / "dog" / "dog3.jpg").exists()
    u1 = fileops.undo(ws)
    assert u1.undoes == t.op_id and (ws.data_dir / "dog" / "dog3.jpg").exists()
    u2 = fileops.undo(ws)
    assert u2.undoes == a.op_id
    assert {p: sha256_file(p) for p in ws.data_dir.rglob("*.jpg") if ".smarthub" not in p.parts} == before
    with pytest.raises(FileOpError, match="nothing to undo"):
        fileops.undo(ws)
    states = {op.op_id: op.undone_by for op in fileops.history(ws)}
    assert states[a.op_id] == u2.op_id and states[t.op_id] == u1.op_id


def test_undo_by_id_and_redo(small_ws) -> None:
    ws = small_ws
    first = fileops.relabel(ws, [ws.data_dir / "cat" / "cat1.jpg"], "dog")
    fileops.relabel(ws, [ws.data_dir / "cat" / "cat2.jpg"], "fish")
    undo_first = fileops.undo(ws, first.op_id)  # out of order, by id
    assert (ws.data_dir / "cat" / "cat1.jpg").exists() and (ws.data_dir / "fish" / "cat2.jpg").exists()
    fileops.undo(ws, undo_first.op_id)  # undoing the undo redoes it
    assert (ws.data_dir / "dog" / "cat1.jpg").exists()
    with pytest.raises(FileOpError, match="already undone"):
        fileops.undo(ws, undo_first.op_id)
    with pytest.raises(FileOpError, match="no operation"):
        fileops.undo(ws, "nope")


def test_undo_refused_when_file_moved_since(small_ws) -> None:
    ws = small_ws
    first = fileops.relabel(ws, [ws.data_dir / "cat" / "cat1.jpg"], "dog")
    fileops.relabel(ws, [ws.data_dir / "dog" / "cat1.jpg"], "fish")
    with pytest.raises(FileOpError, match="moved since"):
        fileops.undo(ws, first.op_id)


@pytest.mark.parametrize(
    ("path", "label", "error", "match"),
    [
        ("cat/cat0.jpg", "../x", LabelError, "path separator"),
        ("cat/cat0.jpg", "", LabelError, "empty"),
        ("cat/cat0.jpg", ".hidden", LabelError, "dot"),
        ("cat/cat0.jpg", "cat", FileOpError, "already labelled"),
        ("cat/missing.jpg", "dog", MissingFileError, "cat/missing.jpg does not exist in the data folder"),
        ("/etc/hostname", "dog", FileOpError, "not inside the data folder"),
        ("cat/../../outside.jpg", "dog", FileOpError, "not inside the data folder"),
        (".smarthub/journal.jsonl", "dog", FileOpError, "bookkeeping"),
    ],
    ids=["dotdot-label", "empty-label", "hidden-label", "same-label", "missing", "outside", "escape", "bookkeeping"],
)
def test_relabel_refusals_change_nothing(small_ws, path: str, label: str, error, match: str) -> None:
    ws = small_ws
    (ws.meta_dir).mkdir(exist_ok=True)
    (ws.meta_dir / "journal.jsonl").touch()
    make_image(ws.data_dir.parent / "outside.jpg")
    before = all_hashes(ws)
    target = Path(path) if Path(path).is_absolute() else ws.data_dir / path
    with pytest.raises(error, match=match):
        fileops.relabel(ws, [target], label)
    assert all_hashes(ws) == before
    assert not list(ws.data_dir.glob("x")) and not (ws.data_dir.parent / "x").exists()


def test_second_tab_acting_on_same_image_gets_clear_message(small_ws) -> None:
    ws = small_ws
    src = ws.data_dir / "cat" / "cat3.jpg"
    op = fileops.relabel(ws, [src], "dog")
    with pytest.raises(MissingFileError, match=f"^cat/cat3.jpg no longer exists: relabel {op.op_id} moved it to "
                                               f"dog/cat3.jpg$"):
        fileops.trash(ws, [src])
    assert (ws.data_dir / "dog" / "cat3.jpg").exists()
    trashed = fileops.trash(ws, [ws.data_dir / "dog" / "cat3.jpg"])
    with pytest.raises(MissingFileError, match=f"^dog/cat3.jpg no longer exists: trash {trashed.op_id} moved it "
                                               f"to the trash$"):
        fileops.relabel(ws, [ws.data_dir / "dog" / "cat3.jpg"], "fish")
    fileops.undo(ws)  # the image is back in dog/: then deleted outside smarthub
    (ws.data_dir / "dog" / "cat3.jpg").unlink()
    with pytest.raises(MissingFileError, match=r"dog/cat3.jpg no longer exists \(deleted or moved outside smarthub"):
        fileops.trash(ws, [ws.data_dir / "dog" / "cat3.jpg"])


def test_symlink_escape_refused(small_ws, tmp_path) -> None:
    outside = make_image(tmp_path / "secret.jpg", pattern=77)
    (small_ws.data_dir / "cat" / "link.jpg").symlink_to(outside)
    with pytest.raises(FileOpError):
        fileops.trash(small_ws, [small_ws.data_dir / "cat" / "link.jpg"])
    assert outside.exists()


# ---- fault injection -------------------------------------------------------------------------

def test_failure_mid_batch_rolls_back(small_ws, monkeypatch) -> None:
    ws = small_ws
    before = {p: sha256_file(p) for p in ws.data_dir.rglob("*.jpg")}
    real_unlink = os.unlink
    calls = {"n": 0}

    def flaky_unlink(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EIO, "injected I/O error", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", flaky_unlink)
    paths = [ws.data_dir / "cat" / f"cat{i}.jpg" for i in range(4)]
    with pytest.raises(FileOpError, match="rolled back, no file changed.*injected I/O error"):
        fileops.relabel(ws, paths, "dog")
    monkeypatch.undo()
    assert {p: sha256_file(p) for p in ws.data_dir.rglob("*.jpg")} == before
    lines = journal(ws)
    assert [line["event"] for line in lines] == ["begin", "abort"]
    with pytest.raises(FileOpError, match="nothing to undo"):
        fileops.undo(ws)


def test_journal_write_failure_before_move_moves_nothing(small_ws, monkeypatch) -> None:
    ws = small_ws
    before = all_hashes(ws)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(Exception, match="No space left"):
        fileops.trash(ws, [ws.data_dir / "cat" / "cat0.jpg"])
    monkeypatch.undo()
    assert all_hashes(ws) == before and (ws.data_dir / "cat" / "cat0.jpg").exists()


def test_commit_line_lost_is_recovered(small_ws, monkeypatch) -> None:
    """Files moved but the commit line never reached the journal: the next call repairs it, undo works."""
    ws = small_ws
    before = all_hashes(ws)
    monkeypatch.setattr(fileops.journal, "end_operation", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg", ws.data_dir / "cat" / "cat1.jpg"], "fish")
    monkeypatch.undo()
    assert fileops.history(ws)[0].state == "begun"
    repaired = fileops.recover(ws)
    assert len(repaired) == 1
    assert fileops.history(ws)[0].state == "committed"
    fileops.undo(ws)
    assert (ws.data_dir / "cat" / "cat0.jpg").exists() and (ws.data_dir / "cat" / "cat1.jpg").exists()
    assert all_hashes(ws) == before


def test_process_killed_between_link_and_unlink(small_ws) -> None:
    """A real crash (os._exit) after the hard link: both names exist; recovery keeps exactly one copy."""
    ws = small_ws
    before = all_hashes(ws)
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from smarthub import fileops
        from smarthub.workspace import Workspace
        real_unlink = os.unlink
        def die(path, *a, **k):
            os._exit(9)
        os.unlink = die
        ws = Workspace(Path({str(ws.data_dir)!r}), Path({str(ws.models_dir)!r}))
        fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "dog")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert (ws.data_dir / "cat" / "cat0.jpg").exists() and (ws.data_dir / "dog" / "cat0.jpg").exists()
    fileops.recover(ws)
    assert not (ws.data_dir / "cat" / "cat0.jpg").exists()
    assert all_hashes(ws) == before
    fileops.undo(ws)
    assert (ws.data_dir / "cat" / "cat0.jpg").exists() and all_hashes(ws) == before


def test_torn_journal_line_is_tolerated(small_ws) -> None:
    ws = small_ws
    fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "dog")
    with open(ws.journal_path, "ab") as f:
        f.write(b'{"event": "begin", "op_id": "torn", "mov')  # a writer died mid-line
    fileops.relabel(ws, [ws.data_dir / "cat" / "cat1.jpg"], "dog")
    ops = fileops.history(ws)
    assert [op.state for op in ops] == ["committed", "committed"]
    assert all(json.loads(line) for line in ws.journal_path.read_text().splitlines()[-2:])
    fileops.undo(ws)
    fileops.undo(ws)
    assert (ws.data_dir / "cat" / "cat0.jpg").exists()


def test_recovery_after_crash_with_name_collision(small_ws, monkeypatch) -> None:
    ws = small_ws
    make_image(ws.data_dir / "dog" / "cat0.jpg", pattern=4242)  # occupies the planned name
    before = all_hashes(ws)
    monkeypatch.setattr(fileops.journal, "end_operation", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "dog")
    monkeypatch.undo()
    fileops.recover(ws)
    op = fileops.history(ws)[0]
    assert op.state == "committed" and op.moves[0].dst == "dog/cat0_1.jpg"
    fileops.undo(ws)
    assert (ws.data_dir / "dog" / "cat0.jpg").exists() and (ws.data_dir / "cat" / "cat0.jpg").exists()
    assert all_hashes(ws) == before
