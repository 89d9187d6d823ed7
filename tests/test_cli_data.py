"""`smarthub verify/relabel/delete/undo/history` through the real CLI entry point."""
from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import make_image
from smarthub.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_relabel_delete_undo_history(small_ws, capsys) -> None:
    data = str(small_ws.data_dir)
    code, out, _ = run(capsys, "relabel", "--data", data, f"{data}/cat/cat0.jpg", f"{data}/cat/cat1.jpg", "dog")
    assert code == 0 and "moved cat/cat0.jpg → dog/cat0.jpg" in out
    code, out, _ = run(capsys, "delete", "--data", data, f"{data}/fish/fish0.jpg")
    assert code == 0 and "trashed fish/fish0.jpg" in out
    code, out, _ = run(capsys, "history", "--data", data)
    assert code == 0 and "relabel" in out and "trash" in out
    code, out, _ = run(capsys, "undo", "--data", data)
    assert code == 0 and (small_ws.data_dir / "fish" / "fish0.jpg").exists()
    code, out, _ = run(capsys, "undo", "--data", data)
    assert code == 0 and (small_ws.data_dir / "cat" / "cat0.jpg").exists()
    code, _, err = run(capsys, "undo", "--data", data)
    assert code == 2 and err.strip() == "error: nothing to undo: no relabel, delete or keep in the journal is left to undo"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["relabel", "{data}/cat/cat0.jpg", "../x"], "path separator"),
        (["relabel", "{data}/cat/cat0.jpg", ""], "empty"),
        (["delete", "{data}/cat/none.jpg"], "cat/none.jpg does not exist in the data folder"),
        (["verify", "--data", "{data}/missing"], "does not exist"),
    ],
    ids=["bad-label", "empty-label", "missing-file", "missing-data-dir"],
)
def test_bad_input_one_line_exit_2(small_ws, capsys, argv: list[str], match: str) -> None:
    data = str(small_ws.data_dir)
    argv = [a.format(data=data) for a in argv]
    if argv[0] != "verify":
        argv[1:1] = ["--data", data]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and match in err


def test_verify_and_quarantine(small_ws, capsys) -> None:
    data = small_ws.data_dir
    (data / "cat" / "zero.jpg").write_bytes(b"")
    (data / "dog" / "page.jpg").write_text("<html></html>")
    code, out, _ = run(capsys, "verify", "--data", str(data))
    assert code == 1 and "bad  cat/zero.jpg: zero bytes" in out and "20 images checked, 18 ok, 2 bad" in out
    code, out, _ = run(capsys, "verify", "--data", str(data), "--quarantine")
    assert code == 0 and "moved 2 bad images to the trash" in out
    assert not (data / "cat" / "zero.jpg").exists()
    code, out, _ = run(capsys, "verify", "--data", str(data))
    assert code == 0 and "18 ok, 0 bad" in out
    run(capsys, "undo", "--data", str(data))
    assert (data / "cat" / "zero.jpg").exists() and (data / "dog" / "page.jpg").exists()


def test_console_script_in_subprocess(small_ws) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smarthub", "relabel", "--data", str(small_ws.data_dir),
         str(small_ws.data_dir / "cat" / "cat0.jpg"), "../evil"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: label '../evil' contains a path separator")
    assert "Traceback" not in proc.stderr
    make_image(small_ws.data_dir / "cat" / "extra.jpg", pattern=5)


def test_a_path_moved_earlier_names_the_operation(small_ws, capsys, monkeypatch) -> None:
    """`data/cat/cat0.jpg` typed from the workspace folder after it was relabelled: the error says where it went."""
    monkeypatch.chdir(small_ws.data_dir.parent)
    code, out, _ = run(capsys, "relabel", "data/cat/cat0.jpg", "dog")
    assert code == 0
    op_id = out.split("smarthub undo ")[1].strip(" `\n")
    code, _, err = run(capsys, "delete", "data/cat/cat0.jpg")
    assert code == 2
    assert err == f"error: cat/cat0.jpg no longer exists: relabel {op_id} moved it to dog/cat0.jpg\n"
    code, _, err = run(capsys, "delete", "data/cat/never.jpg")
    assert code == 2 and err.startswith("error: cat/never.jpg does not exist in the data folder")
