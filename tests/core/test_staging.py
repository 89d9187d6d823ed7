"""staging.py: folders and file sets smarthub writes whole — swapped in whole, put back after a cut, never half."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from smarthub import staging


def _folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def _read(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("symbolic", [False, True], ids=["hard", "symbolic"])
def test_link_or_copy_links_and_falls_back_to_a_copy(tmp_path: Path, monkeypatch, symbolic: bool) -> None:
    src = _folder(tmp_path, {"a.txt": "bytes"}) / "a.txt"
    linked = staging.link_or_copy(src, tmp_path / "sub" / "b.txt", symbolic=symbolic)
    assert linked.read_text() == "bytes"
    assert linked.is_symlink() if symbolic else os.path.samefile(src, linked)

    def refuse(*_a, **_k):
        raise OSError(1, "links not supported here")

    monkeypatch.setattr(os, "symlink" if symbolic else "link", refuse)
    copied = staging.link_or_copy(src, tmp_path / "c.txt", symbolic=symbolic)
    assert copied.read_text() == "bytes" and not copied.is_symlink() and not os.path.samefile(src, copied)


def test_link_or_copy_replaces_only_its_own_leftover_temp(tmp_path: Path) -> None:
    src = _folder(tmp_path, {"a.txt": "new"}) / "a.txt"
    (tmp_path / ".a.txt.new.tmp").write_text("left by a killed swap")
    assert staging.link_or_copy(src, tmp_path / ".a.txt.new.tmp").read_text() == "new"
    (tmp_path / "taken.txt").write_text("someone's")
    with pytest.raises(FileExistsError):
        staging.link_or_copy(src, tmp_path / "taken.txt")
    assert (tmp_path / "taken.txt").read_text() == "someone's"


def test_sha256_and_now(tmp_path: Path) -> None:
    path = _folder(tmp_path, {"a": "abc"}) / "a"
    assert staging.sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert staging.now().endswith("+00:00") and len(staging.now()) == 25


def test_swap_whole_replaces_and_a_failed_swap_keeps_the_old_folder(tmp_path: Path, monkeypatch) -> None:
    dest = _folder(tmp_path / "out", {"old.txt": "old"})
    staged = _folder(staging.build_beside(dest), {"new.txt": "new", "sub/x.txt": "x"})
    assert staged.name.startswith(".out.partial-")
    staging.swap_whole(staged, dest)
    assert _read(dest) == {"new.txt": "new", "sub/x.txt": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old copy and the staged name are gone

    staged = _folder(staging.build_beside(dest), {"third.txt": "3"})
    real_rename = os.rename

    def second_rename_fails(src, dst):
        if Path(src) == staged:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", second_rename_fails)
    with pytest.raises(OSError):
        staging.swap_whole(staged, dest)
    assert _read(dest) == {"new.txt": "new", "sub/x.txt": "x"}  # renamed aside, then back
    monkeypatch.undo()
    staging.discard(staged)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("dest_there", [False, True], ids=["cut-before-new-in-place", "cut-before-old-removed"])
def test_recover_beside_puts_back_or_removes_the_aside_copy(tmp_path: Path, dest_there: bool) -> None:
    """A swap killed between its renames: the aside copy comes back when the name is empty, else it goes;
    staged folders of dead writers go either way."""
    _folder(tmp_path / ".out.old-1234abcd", {"old.txt": "old"})
    _folder(tmp_path / ".out.partial-5678abcd", {"half.txt": "half"})
    if dest_there:
        _folder(tmp_path / "out", {"new.txt": "new"})
    notes = staging.recover_beside(tmp_path / "out")
    assert _read(tmp_path / "out") == ({"new.txt": "new"} if dest_there else {"old.txt": "old"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert len(notes) == 2 and any("put the previous out back" in n for n in notes) is not dest_there


def test_file_set_swap_and_restore(tmp_path: Path) -> None:
    """Files replaced together: a name the new set lacks is set aside; restoring brings back every old file."""
    names = ("a.bin", "b.bin", "c.txt")
    run = _folder(tmp_path / "run", {"a.bin": "A2", "b.bin": "B2"})
    models = _folder(tmp_path / "models", {"a.bin": "A1", "c.txt": "C1"})
    staged, backups = staging.stage_files(run, models, names)
    assert set(staged) == {"a.bin", "b.bin"} and set(backups) == {"a.bin", "c.txt"}
    done: list[str] = []
    staging.replace_files(models, names, staged, done)
    assert done == list(names) and _read(models) == {"a.bin": "A2", "b.bin": "B2", ".a.bin.prev.tmp": "A1",
                                                     ".c.txt.prev.tmp": "C1", ".c.txt.stale.tmp": "C1"}
    staging.restore_files(models, done, backups)
    staging.discard_file_temps(models, names)
    assert _read(models) == {"a.bin": "A1", "c.txt": "C1"}


def test_discard_file_and_discard_if_empty(tmp_path: Path) -> None:
    pointer = _folder(tmp_path, {"promoted.json": "{}"}) / "promoted.json"
    staging.discard_file(pointer)
    assert list(tmp_path.iterdir()) == []
    full = _folder(tmp_path / ".run.partial", {"export.pkl": "x"})
    staging.discard_if_empty(full)
    assert full.is_dir()
    (full / "export.pkl").unlink()
    staging.discard_if_empty(full)
    assert not full.exists()
