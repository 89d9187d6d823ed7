"""`smarthub relabel` typo guard and `smarthub classes rename/merge` through the real CLI entry point."""
from __future__ import annotations

import pytest

from smarthub.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files(ws) -> list[str]:
    return sorted(p.relative_to(ws.data_dir).as_posix() for p in ws.data_dir.rglob("*.jpg")
                  if ".smarthub" not in p.parts)


@pytest.mark.parametrize("label,extra,code,stream,expected", [
    ("dog", [], 0, "out", "moved cat/cat0.jpg → dog/cat0.jpg"),
    ("dgo", [], 2, "err", "error: class 'dgo' does not exist yet (did you mean 'dog'?): check the name, "
                          "or add --new-class to create it"),
    ("bird", [], 2, "err", "error: class 'bird' does not exist yet: check the name, or add --new-class"),
    ("bird", ["--new-class"], 0, "out", "moved cat/cat0.jpg → bird/cat0.jpg"),
    ("dgo", ["--new-class"], 0, "err", "warning: creating class 'dgo' next to the existing 'dog'"),
    ("{data}/dog/dog0.jpg", [], 2, "err", "dog/dog0.jpg is a file, not a class: relabel takes the images first"),
    ("../x", ["--new-class"], 2, "err", "error: label '../x' contains a path separator"),
], ids=["existing", "typo", "new-refused", "new-class", "typo-forced", "target-is-a-file", "bad-label"])
def test_relabel_target_table(small_ws, capsys, label, extra, code, stream, expected) -> None:
    data = str(small_ws.data_dir)
    before = files(small_ws)
    got, out, err = run(capsys, "relabel", "--data", data, f"{data}/cat/cat0.jpg", label.format(data=data), *extra)
    assert got == code
    assert expected in (out if stream == "out" else err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and files(small_ws) == before


def test_undo_of_a_new_class_relabel_removes_the_folder(small_ws, capsys) -> None:
    data = str(small_ws.data_dir)
    assert run(capsys, "relabel", "--data", data, f"{data}/cat/cat0.jpg", "aple", "--new-class")[0] == 0
    assert (small_ws.data_dir / "aple").is_dir()
    assert run(capsys, "undo", "--data", data)[0] == 0
    assert not (small_ws.data_dir / "aple").exists()


def test_classes_rename_merge_and_undo(small_ws, capsys) -> None:
    ws = small_ws
    data = str(ws.data_dir)
    before = files(ws)
    code, out, _ = run(capsys, "classes", "--data", data)
    assert code == 0 and [line.split() for line in out.splitlines()[1:]] == [["cat", "6"], ["dog", "6"], ["fish", "6"]]
    code, out, _ = run(capsys, "classes", "rename", "--data", data, "cat", "kitten")
    assert code == 0 and "renamed class 'cat' to 'kitten': 6 files moved" in out
    code, out, _ = run(capsys, "classes", "--data", data, "merge", "kitten", "dog")
    assert code == 0 and "merged class 'kitten' into 'dog': 6 files moved" in out
    assert sorted(p.name for p in ws.data_dir.iterdir() if not p.name.startswith(".")) == ["dog", "fish"]
    code, out, _ = run(capsys, "history", "--data", data)
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["rename", "merge"]
    assert run(capsys, "undo", "--data", data)[0] == 0  # the merge
    assert run(capsys, "undo", "--data", data)[0] == 0  # the rename
    assert files(ws) == before and not (ws.data_dir / "kitten").exists()


@pytest.mark.parametrize("argv,expected", [
    (["rename", "cat", "dog"], "class 'dog' exists already (folder dog): `smarthub classes merge cat dog`"),
    (["rename", "lion", "tiger"], "no class 'lion'"),
    (["merge", "cat", "tiger"], "no class 'tiger' to merge into"),
    (["merge", "cat", "cat"], "'cat' and 'cat' are the same class"),
    (["rename", "cat", ".hidden"], "starts with a dot"),
], ids=["rename-onto-existing", "rename-missing", "merge-missing-target", "merge-same", "bad-name"])
def test_classes_refusals_one_line_exit_2(small_ws, capsys, argv, expected) -> None:
    before = files(small_ws)
    code, _, err = run(capsys, "classes", argv[0], "--data", str(small_ws.data_dir), *argv[1:])
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err
    assert files(small_ws) == before
