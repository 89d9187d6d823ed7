"""Whole-class operations (rename, merge) and the folders an operation creates: journaled, undoable, faults."""
from __future__ import annotations

import errno
import os

import pytest

from helpers import make_image
from smarthub import fileops
from smarthub.dataset import sha256_file
from smarthub.errors import FileOpError, LabelError


def tree(ws) -> dict[str, str]:
    """Every file under data/ except bookkeeping, relative path → sha256."""
    return {p.relative_to(ws.data_dir).as_posix(): sha256_file(p) for p in ws.data_dir.rglob("*")
            if p.is_file() and ".smarthub" not in p.parts}


def test_rename_then_undo_then_redo(small_ws) -> None:
    ws = small_ws
    before = tree(ws)
    op = fileops.rename_class(ws, "cat", "kitten")
    assert op.kind == "rename" and op.label == "kitten" and len(op.moves) == 6 and op.created == ["kitten"]
    assert not (ws.data_dir / "cat").exists()  # the emptied folder goes
    assert sorted(p.name for p in (ws.data_dir / "kitten").iterdir()) == [f"cat{i}.jpg" for i in range(6)]
    undo = fileops.undo(ws)
    assert undo.undoes == op.op_id and tree(ws) == before
    assert not (ws.data_dir / "kitten").exists()  # created by the rename, empty after its undo: removed
    fileops.undo(ws, undo.op_id)  # redo
    assert not (ws.data_dir / "cat").exists() and len(list((ws.data_dir / "kitten").iterdir())) == 6


def test_merge_keeps_both_names_on_collision_and_undo_restores(small_ws) -> None:
    ws = small_ws
    make_image(ws.data_dir / "dog" / "cat0.jpg", pattern=77)  # same file name in the target class
    before = tree(ws)
    op = fileops.merge_classes(ws, "cat", "dog")
    assert op.kind == "merge" and op.created == [] and not (ws.data_dir / "cat").exists()
    assert len(list((ws.data_dir / "dog").iterdir())) == 13
    assert any(m.dst == "dog/cat0_1.jpg" for m in op.moves)  # never overwritten
    assert sorted(tree(ws).values()) == sorted(before.values())
    fileops.undo(ws)
    assert tree(ws) == before and (ws.data_dir / "dog").is_dir()  # dog existed before: it stays


def test_rename_in_split_layout_moves_every_split(ws) -> None:
    for split in ("train", "valid"):
        for label in ("cat", "dog"):
            make_image(ws.data_dir / split / label / f"{split}{label}.jpg", pattern=len(split + label))
    op = fileops.rename_class(ws, "cat", "feline")
    assert sorted(m.dst for m in op.moves) == ["train/feline/traincat.jpg", "valid/feline/validcat.jpg"]
    assert fileops.class_folders(ws, "cat") == []
    fileops.undo(ws)
    assert [f.relative_to(ws.data_dir).as_posix() for f in fileops.class_folders(ws, "cat")] == ["train/cat",
                                                                                                "valid/cat"]
    assert fileops.class_folders(ws, "feline") == []


@pytest.mark.parametrize("call,args,error,match", [
    ("rename_class", ("cat", "dog"), FileOpError, "exists already.*merge"),
    ("rename_class", ("lion", "tiger"), FileOpError, "no class 'lion'"),
    ("rename_class", ("cat", "cat"), FileOpError, "same class"),
    ("rename_class", ("cat", "../x"), LabelError, "path separator"),
    ("merge_classes", ("cat", "tiger"), FileOpError, "no class 'tiger' to merge into"),
    ("merge_classes", ("lion", "dog"), FileOpError, "no class 'lion'"),
], ids=["rename-onto-existing", "rename-missing", "rename-same", "rename-bad-label", "merge-missing-target",
        "merge-missing-source"])
def test_class_operation_refusals_change_nothing(small_ws, call, args, error, match) -> None:
    before = tree(small_ws)
    with pytest.raises(error, match=match):
        getattr(fileops, call)(small_ws, *args)
    assert tree(small_ws) == before and not small_ws.journal_path.exists()


def test_failure_mid_rename_rolls_back_and_removes_the_new_folder(small_ws, monkeypatch) -> None:
    ws = small_ws
    before = tree(ws)
    real_link = os.link
    calls = {"n": 0}

    def flaky_link(src, dst, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.EIO, "injected I/O error", str(dst))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", flaky_link)
    with pytest.raises(FileOpError, match="rename failed and was rolled back, no file changed.*injected I/O error"):
        fileops.rename_class(ws, "cat", "kitten")
    monkeypatch.undo()
    assert tree(ws) == before and not (ws.data_dir / "kitten").exists()
    assert [op.state for op in fileops.history(ws)] == ["aborted"]
    with pytest.raises(FileOpError, match="nothing to undo"):
        fileops.undo(ws)


def test_undo_of_a_relabel_to_a_new_class_removes_its_empty_folder(small_ws) -> None:
    ws = small_ws
    op = fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "aple")
    assert op.created == ["aple"] and fileops.history(ws)[0].created == ["aple"]  # journaled
    fileops.undo(ws)
    assert not (ws.data_dir / "aple").exists() and (ws.data_dir / "cat" / "cat0.jpg").is_file()


def test_undo_keeps_a_created_folder_that_is_not_empty(small_ws) -> None:
    ws = small_ws
    fileops.relabel(ws, [ws.data_dir / "cat" / "cat0.jpg"], "bird")
    make_image(ws.data_dir / "bird" / "mine.jpg", pattern=5)  # the user added an image meanwhile
    fileops.undo(ws)
    assert (ws.data_dir / "bird" / "mine.jpg").is_file()


def test_relabel_to_a_name_that_is_a_file(small_ws) -> None:
    (small_ws.data_dir / "notes.txt").write_text("x")
    with pytest.raises(FileOpError, match="notes.txt is a file, not a class folder"):
        fileops.relabel(small_ws, [small_ws.data_dir / "cat" / "cat0.jpg"], "notes.txt")
    assert (small_ws.data_dir / "cat" / "cat0.jpg").is_file()


def test_undo_of_a_trash_removes_its_emptied_trash_folders_only(small_ws) -> None:
    ws = small_ws
    op = fileops.trash(ws, [ws.data_dir / "cat" / "cat0.jpg"])
    assert op.created == [f".smarthub/trash/{op.op_id}", f".smarthub/trash/{op.op_id}/cat"]
    fileops.undo(ws)
    assert not (ws.trash_dir / op.op_id).exists() and ws.journal_path.is_file()


def test_folders_outside_the_data_folder_named_in_the_journal_are_left_alone(small_ws, tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    assert fileops.remove_empty_folders(small_ws, ["../outside", str(outside)]) == []
    assert outside.is_dir()
