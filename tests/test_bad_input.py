"""A standing suite of bad inputs: each ends in one clear line and its exit code, and no image is lost.

Every case runs the real command line in a child process (`python -m smarthub`) on its own small
workspace (two classes of three real images); the images (path and sha256) must be exactly the same
afterwards. Cases run a few at a time; each parametrized test checks one.
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import make_image

REPO = Path(__file__).resolve().parents[1]
LONG_3BYTE = "漢" * 100  # 100 characters, 300 bytes in UTF-8
PROGRESS = re.compile(r"^[\w ]+: \d+/\d+$")  # progress lines ("hashing: 6/6") are not messages


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    code: int
    message: str  # regex searched in the one stderr line
    setup: Callable[[Path], None] | None = None
    marks: tuple = ()


def _journal_is_a_folder(root: Path) -> None:
    (root / "data" / ".smarthub" / "journal.jsonl").mkdir(parents=True)


def _meta_is_a_file(root: Path) -> None:
    (root / "data" / ".smarthub").write_text("not a folder")


def _a_file(root: Path) -> None:
    (root / "afile").write_text("just a file")


def _symlinked_image(root: Path) -> None:
    (root / "data" / "cat" / "link.png").symlink_to(root / "data" / "dog" / "dog0.png")


def _url_list(root: Path) -> None:
    (root / "urls.csv").write_text("http://127.0.0.1:9/a.jpg,koi\n")


def _garbage_model(root: Path) -> None:
    (root / "garbage.pkl").write_bytes(b"not a pickle at all")


def _empty_folder(root: Path) -> None:
    (root / "empty").mkdir()


def _two_per_class(root: Path) -> None:
    for label in ("cat", "dog"):
        (root / "data" / label / f"{label}2.png").unlink()


def _bad_image_and_symlink(root: Path) -> None:
    (root / "data" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "data" / "cat" / "link.png").symlink_to(root / "data" / "dog" / "broken.png")


def _labelme_folder_and_journal(root: Path) -> None:
    """A corrected Labelme folder beside a data folder that holds smarthub's journal (the issue's row)."""
    from smarthub.annotate.labelme import LabelmeFile, Shape, save_labelme

    make_image(root / "lm" / "a.png", size=(40, 30))
    save_labelme(root / "lm" / "a.json", LabelmeFile("a.png", 30, 40, [Shape("koi", [[2, 2], [20, 20]])]))
    (root / "data" / ".smarthub").mkdir()
    (root / "data" / ".smarthub" / "journal.jsonl").write_text("")


def _yolo(root: Path, line: str) -> Path:
    yolo = root / "yolo"
    make_image(yolo / "images" / "train" / "a.png", size=(40, 30))
    (yolo / "labels" / "train").mkdir(parents=True)
    (yolo / "labels" / "train" / "a.txt").write_text(line + "\n")
    (yolo / "data.yaml").write_text("names: [koi]\n")
    return yolo


def _yolo_label_linked_to_passwd(root: Path) -> None:
    label = _yolo(root, "0 0.5 0.5 0.2 0.2") / "labels" / "train" / "a.txt"
    label.unlink()
    label.symlink_to("/etc/passwd")


def _yolo_nan(root: Path) -> None:
    _yolo(root, "0 nan nan 0.5 0.5")


CASES: dict[str, Case] = {
    # relabel / delete / undo / history: files and labels
    "relabel-missing-file": Case(("relabel", "data/cat/nope.png", "dog"), 2, r"does not exist"),
    "relabel-same-label": Case(("relabel", "data/cat/cat0.png", "cat"), 2, r"already labelled 'cat'"),
    "relabel-label-with-slash": Case(("relabel", "data/cat/cat0.png", "a/b"), 2, r"path separator"),
    "relabel-label-dotdot": Case(("relabel", "data/cat/cat0.png", ".."), 2, r"starts with a dot"),
    "relabel-label-empty": Case(("relabel", "data/cat/cat0.png", ""), 2, r"label is empty"),
    "relabel-label-whitespace": Case(("relabel", "data/cat/cat0.png", " cat"), 2, r"whitespace"),
    "relabel-label-control-char": Case(("relabel", "data/cat/cat0.png", "a\x07b"), 2, r"control characters"),
    "relabel-label-101-chars": Case(("relabel", "data/cat/cat0.png", "x" * 101), 2, r"101 characters long"),
    "relabel-label-300-bytes": Case(("relabel", "data/cat/cat0.png", LONG_3BYTE), 2,
                                    r"300 bytes in UTF-8; folder names are limited to 255"),
    "relabel-file-outside-data": Case(("relabel", "/etc/hostname", "dog"), 2, r"not inside the data folder"),
    "relabel-bookkeeping": Case(("relabel", "data/.smarthub/journal.jsonl", "dog"), 2, r"smarthub bookkeeping"),
    "relabel-symlink": Case(("relabel", "data/cat/link.png", "dog"), 2, r"not a regular file", _symlinked_image),
    "relabel-folder": Case(("relabel", "data/cat", "dog"), 2, r"not a regular file"),
    "relabel-same-file-twice": Case(("relabel", "data/cat/cat0.png", "data/cat/cat0.png", "dog"), 2,
                                    r"given twice"),
    "relabel-no-arguments": Case(("relabel",), 2, r"the following arguments are required"),
    "delete-missing-file": Case(("delete", "data/dog/nope.png"), 2, r"does not exist"),
    "delete-data-typo": Case(("delete", "--data", "dta", "dta/cat/cat0.png"), 2, r"no data folder at .*dta"),
    "undo-nothing-to-undo": Case(("undo",), 2, r"nothing to undo"),
    "undo-unknown-id": Case(("undo", "20260101T000000-abcdef"), 2, r"no operation '20260101T000000-abcdef'"),
    "relabel-journal-is-a-folder": Case(("relabel", "data/cat/cat0.png", "dog"), 2,
                                        r"journal\.jsonl is not a regular file", _journal_is_a_folder),
    "history-journal-is-a-folder": Case(("history",), 2, r"journal\.jsonl is not a regular file",
                                        _journal_is_a_folder),
    "delete-bookkeeping-is-a-file": Case(("delete", "data/cat/cat0.png"), 2, r"\.smarthub is a file",
                                         _meta_is_a_file),
    "history-limit-not-a-number": Case(("history", "--limit", "abc"), 2, r"invalid int value: 'abc'"),
    "unknown-command": Case(("frobnicate",), 2, r"invalid choice: 'frobnicate'"),
    # workspace options
    "verify-data-is-a-file": Case(("verify", "--data", "afile"), 2, r"--data .*afile is a file, not a folder",
                                  _a_file),
    "train-models-is-a-file": Case(("train", "--models", "afile", "--no-pretrained"), 2,
                                   r"--models .*afile is a file, not a folder", _a_file),
    "info-data-is-a-file": Case(("info", "--data", "afile"), 2, r"is a file, not a folder", _a_file),
    "train-empty-data": Case(("train", "--data", "empty", "--no-pretrained"), 2, r"no images to train on",
                             _empty_folder),
    "train-zero-epochs": Case(("train", "--epochs", "0", "--no-pretrained"), 2, r"epochs must be at least 1"),
    "train-valid-pct-over-one": Case(("train", "--valid-pct", "1.5", "--no-pretrained"), 2,
                                     r"--valid-pct must be between 0 and 1"),
    "train-unknown-arch": Case(("train", "--arch", "nonsense_arch", "--no-pretrained"), 2,
                               r"unknown architecture 'nonsense_arch'"),
    # dedupe / bootstrap
    "dedupe-threshold-negative": Case(("dedupe", "--threshold", "-5"), 2, r"-5 is out of range \(allowed 0\.\.63\)"),
    "dedupe-threshold-999": Case(("dedupe", "--threshold", "999"), 2, r"999 is out of range"),
    "bootstrap-threshold-64": Case(("bootstrap", "koi", "--threshold", "64"), 2, r"64 is out of range"),
    "bootstrap-no-label": Case(("bootstrap",), 2, r"no label given"),
    "bootstrap-label-traversal": Case(("bootstrap", "../x", "--urls-file", "urls.csv"), 2, r"path separator",
                                      _url_list),
    "bootstrap-missing-url-list": Case(("bootstrap", "koi", "--urls-file", "missing.txt"), 2,
                                       r"URL list missing\.txt does not exist"),
    "bootstrap-label-not-in-list": Case(("bootstrap", "carp", "--urls-file", "urls.csv"), 2,
                                        r"has no URLs labelled 'carp'", _url_list),
    "bootstrap-count-zero": Case(("bootstrap", "koi", "--count", "0", "--urls-file", "urls.csv"), 2,
                                 r"--count must be at least 1", _url_list),
    "bootstrap-zero-workers": Case(("bootstrap", "koi", "--workers", "0", "--urls-file", "urls.csv"), 2,
                                   r"workers must be at least 1", _url_list),
    # predict / models
    "predict-missing-image": Case(("predict", "nothere.png"), 2, r"no image at nothere\.png"),
    "predict-foreign-model": Case(("predict", "data/cat/cat0.png", "--model", "garbage.pkl"), 2,
                                  r"garbage\.pkl was not written by smarthub .*--trust", _garbage_model),
    "predict-trusted-garbage-model": Case(("predict", "data/cat/cat0.png", "--model", "garbage.pkl", "--trust"), 2,
                                          r"not a readable fastai model", _garbage_model),
    "predict-missing-model": Case(("predict", "data/cat/cat0.png", "--model", "nothere.pkl"), 2, r"no model at"),
    "predict-top-k-zero": Case(("predict", "data/cat/cat0.png", "--top-k", "0"), 2, r"top-k must be at least 1"),
    "weights-add-missing-file": Case(("weights", "add", "missing.pth"), 2, r"no weights file at missing\.pth"),
    # review
    "review-one-fold": Case(("review", "--folds", "1"), 2, r"--folds must be between 2 and 20"),
    "review-threshold-7": Case(("review", "--threshold", "7"), 2, r"--threshold must be between 0 and 1"),
    "review-two-images-per-class": Case(("review", "--arch", "mobilenet_v2"), 2,
                                        r"only 4 different images for 5 folds: use --folds 4 or add images",
                                        _two_per_class),
    # annotate / export
    "annotate-unknown-model": Case(("annotate", "data/cat", "--model", "nosuchmodel"), 2,
                                   r"detector 'nosuchmodel' not found"),
    "evaluate-missing-folders": Case(("evaluate-annotations", "nodir1", "nodir2"), 2, r"folder not found: nodir1"),
    "export-yolo-missing-folder": Case(("export-yolo", "nodir", "out"), 2, r"Labelme folder not found: nodir"),
    "export-yolo-overwrite-a-data-folder": Case(("export-yolo", "lm", "data", "--overwrite"), 2,
                                                r"refusing to replace data: it is a data folder",
                                                _labelme_folder_and_journal),
    "import-yolo-label-linked-to-passwd": Case(("import-yolo", "yolo", "out"), 2,
                                               r"a\.txt: the label file is a link to a file outside yolo; copy",
                                               _yolo_label_linked_to_passwd),
    "import-yolo-nan-box": Case(("import-yolo", "yolo", "out"), 2,
                                r"a\.txt:1: field 2 is not a finite number \(NaN or infinity\)", _yolo_nan),
    "relabel-new-class-differing-in-case": Case(("relabel", "data/cat/cat0.png", "DOG", "--new-class"), 2,
                                                r"differs only in case .* did you mean 'dog'\?"),
    "classes-rename-differing-in-case": Case(("classes", "rename", "cat", "Dog"), 2, r"did you mean 'dog'\?"),
    # app (refused before anything is served)
    "app-port-99999": Case(("app", "--port", "99999"), 2, r"99999 is out of range \(allowed 1\.\.65535\)"),
    "app-port-negative": Case(("app", "--port", "-1"), 2, r"-1 is out of range"),
    "app-data-typo": Case(("app", "--data", "dta"), 2, r"--data .*dta does not exist; check the spelling"),
    "app-public-host-without-auth": Case(("app", "--host", "0.0.0.0"), 2, r"without --auth"),
    "app-auth-without-colon": Case(("app", "--auth", "nocolon"), 2, r"--auth must look like user:password"),
    # verify --quarantine with something it cannot move: skipped and reported, the rest moved (exit 0)
    "verify-quarantine-skips-a-symlink": Case(("verify", "--quarantine"), 0, r"", _bad_image_and_symlink),
}


def _workspace(root: Path) -> None:
    for c, label in enumerate(("cat", "dog")):
        for i in range(3):
            make_image(root / "data" / label / f"{label}{i}.png", pattern=c * 10 + i)


def _images(root: Path) -> dict[str, str]:
    """Every regular image file under data/ (class folders and trash) → sha256."""
    data = root / "data"
    return {p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in data.rglob("*.png") if p.is_file() and not p.is_symlink()}


@dataclass
class Outcome:
    code: int
    stderr_lines: list[str]
    stdout: str
    before: dict[str, str]
    after: dict[str, str]


def _run(name: str, case: Case, root: Path, env: dict[str, str]) -> Outcome:
    root.mkdir(parents=True)
    _workspace(root)
    if case.setup is not None:
        case.setup(root)
    before = _images(root)
    proc = subprocess.run([sys.executable, "-m", "smarthub", *case.argv], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not PROGRESS.match(ln.strip())]
    return Outcome(proc.returncode, lines, proc.stdout, before, _images(root))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, torch_home: Path) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("bad_input")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TORCH_HOME=str(torch_home), PYTHONWARNINGS="ignore")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(_run, name, case, base / name, env) for name, case in CASES.items()}
        return {name: fut.result() for name, fut in futures.items()}


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.argv[0] for c in CASES.values()}) >= 12  # spread across the commands


@pytest.mark.parametrize("name", [pytest.param(n, marks=c.marks) for n, c in CASES.items()], ids=list(CASES))
def test_bad_input_is_one_clear_line_and_loses_nothing(outcomes: dict[str, Outcome], name: str) -> None:
    case, out = CASES[name], outcomes[name]
    assert out.code == case.code, out.stderr_lines
    if case.code == 2:
        assert len(out.stderr_lines) == 1, out.stderr_lines
        line = out.stderr_lines[0]
        assert line.startswith("error: ") and "internal error" not in line and "Traceback" not in line, line
        assert re.search(case.message, line), line
        assert out.after == out.before  # nothing moved, nothing lost
    else:
        assert sorted(out.after.values()) == sorted(out.before.values())  # moved to the trash, not lost


def test_quarantine_reports_what_it_skipped(outcomes: dict[str, Outcome]) -> None:
    out = outcomes["verify-quarantine-skips-a-symlink"]
    assert "skipped cat/link.png: a symlink" in out.stdout
    assert "moved 1 bad images to the trash" in out.stdout
    assert "dog/broken.png" not in out.after and any(p.endswith("dog/broken.png") for p in out.after)


def test_closed_output_pipe_is_one_line_not_an_internal_error(tmp_path: Path) -> None:
    _workspace(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "smarthub", "info"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like `smarthub info | head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 2
    assert err.splitlines() == ["error: the output was closed before smarthub finished writing (broken pipe)"]
