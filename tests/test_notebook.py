"""The Jupyter cleaner driven programmatically: dropdowns, filters, Apply and Undo buttons, real files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import write_fashion_folders
from smarthub import fileops
from smarthub.clean import review
from smarthub.atomicio import read_jsonl
from smarthub.workspace import Workspace
from smarthub.notebook import DELETE, KEEP, LEAVE, RELABEL, Cleaner, decision_options

CLASSES = ("trouser", "bag", "sneaker")


def options() -> review.ReviewOptions:
    from smarthub.model.options import TrainOptions

    # every image listed (show_all): the tests need more cards than the 3 planted errors the queue would hold
    return review.ReviewOptions(train=TrainOptions(arch="mobilenet_v2", size_px=32), folds=3, show_all=True)


@pytest.fixture(scope="module")
def noisy_source(tmp_path_factory, torch_home):
    """Three Fashion-MNIST classes of 15 images; three trousers filed as bags (planted errors); reviewed once."""
    root = tmp_path_factory.mktemp("noisy")
    source = Workspace(data_dir=root / "data", models_dir=root / "models")
    paths = write_fashion_folders(source.data_dir, per_class=15, classes=CLASSES, size_px=32)
    for src in [p for p in paths if p.parent.name == "trouser"][:3]:
        src.rename(source.data_dir / "bag" / src.name)  # test set-up: planting the noise
    review.review(source, options())  # fills the embedding and probability caches
    return source


@pytest.fixture
def noisy_ws(noisy_source, tmp_path):
    """A private copy of the reviewed workspace (its caches come along: no inference in the tests)."""
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    shutil.copytree(noisy_source.data_dir, ws.data_dir)
    return ws


@pytest.fixture
def cleaner(noisy_ws):
    return Cleaner(noisy_ws, review.review(noisy_ws, options()), page_size=4)


def card_for(cleaner: Cleaner, path):
    return next(c for c in cleaner.cards if c.suspect.path == path)


def test_marks_survive_filter_and_page_switches(cleaner):
    first = cleaner.cards[0]
    first.dropdown.value = RELABEL + first.suspect.predicted
    given = first.suspect.given
    other = next(c for c in cleaner.class_filter.options if c not in ("all", given))
    cleaner.class_filter.value = other
    assert all(c.suspect.given == other for c in cleaner.cards)
    cleaner.class_filter.value = given
    cleaner.kind_filter.value = first.suspect.kind
    assert card_for(cleaner, first.suspect.path).dropdown.value == RELABEL + first.suspect.predicted
    cleaner.kind_filter.value = "all"
    cleaner.class_filter.value = "all"
    if not cleaner.next_button.disabled:
        cleaner.next_button.click()
        cleaner.prev_button.click()
    assert card_for(cleaner, first.suspect.path).dropdown.value == RELABEL + first.suspect.predicted
    card_for(cleaner, first.suspect.path).dropdown.value = LEAVE
    assert cleaner.marks == {}


def test_apply_and_undo_move_files_through_fileops(cleaner, noisy_ws):
    ws = noisy_ws
    relabel_card, delete_card, keep_card = cleaner.cards[:3]
    relabel_to = next(c for c in CLASSES if c != relabel_card.suspect.given)
    relabel_card.dropdown.value = RELABEL + relabel_to
    delete_card.dropdown.value = DELETE
    cleaner.class_filter.value = keep_card.suspect.given  # marks made on other filters still count
    card_for(cleaner, keep_card.suspect.path).dropdown.value = KEEP
    relabelled, deleted, kept_path = relabel_card.suspect.path, delete_card.suspect.path, keep_card.suspect.path
    kept_sha = keep_card.suspect.sha256

    cleaner.apply_button.click()
    assert "applied: 1 relabelled, 1 deleted, 1 kept" in cleaner.status.value
    assert not relabelled.exists() and (ws.data_dir / relabel_to / relabelled.name).exists()
    assert not deleted.exists() and list(ws.trash_dir.rglob(deleted.name))
    assert review.kept(ws) == {kept_sha}
    ops = [r for r in read_jsonl(ws.journal_path) if r["event"] == "begin"]
    assert [(o["kind"], o.get("label")) for o in ops] == [("relabel", relabel_to), ("trash", None), ("keep", None)]
    assert [m["sha256"] for m in ops[2]["marks"]] == [kept_sha]  # the keep is journaled like the moves
    assert cleaner.marks == {}
    shown = {s.path for s in cleaner.result.suspects}
    assert kept_path not in shown and deleted not in shown  # the ranking updated without a new review

    cleaner.undo_button.click()
    assert "undone: 3 operations" in cleaner.status.value
    assert relabelled.exists() and deleted.exists() and not (ws.data_dir / relabel_to / relabelled.name).exists()
    assert review.kept(ws) == set()
    kinds = [r["kind"] for r in read_jsonl(ws.journal_path) if r["event"] == "begin"]
    assert kinds == ["relabel", "trash", "keep", "undo", "undo", "undo"]
    assert {s.path for s in cleaner.result.suspects} >= {relabelled, deleted, kept_path}


def test_image_deleted_behind_the_cleaners_back(cleaner):
    card = cleaner.cards[0]
    card.dropdown.value = DELETE
    card.suspect.path.unlink()  # another window removed it
    cleaner.apply_button.click()
    assert "stopped" in cleaner.status.value and "no longer exists" in cleaner.status.value
    assert card.suspect.path not in {s.path for s in cleaner.result.suspects}
    cleaner.undo_button.click()  # nothing of that Apply happened: undo says so, no crash
    assert "undone: 0 operations" in cleaner.status.value or "cannot undo" in cleaner.status.value


def test_planted_errors_lead_and_decision_options(cleaner):
    top = cleaner.result.suspects[:3]
    assert sum(s.given == "bag" and s.predicted == "trouser" for s in top) >= 2
    s = top[0]
    opts = [v for _, v in decision_options(s, cleaner.result.vocab)]
    assert opts[:3] == [LEAVE, KEEP, RELABEL + s.predicted] and opts[-1] == DELETE
    assert RELABEL + s.given not in opts


def test_nothing_marked(cleaner):
    cleaner.apply_button.click()
    assert cleaner.status.value == "nothing marked"
    assert json.dumps(cleaner.marks) == "{}"
    assert np.isfinite([s.score for s in cleaner.result.suspects]).all()


NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "clean.ipynb"

# run inside the notebook's kernel after its own cells: mark one suspect, press Apply, later Undo
APPLY = """
import json
card = next(c for c in cleaner.cards if c.suspect.predicted != c.suspect.given)
card.dropdown.value = "relabel:" + card.suspect.predicted
cleaner.apply_button.click()
print(json.dumps({"path": str(card.suspect.path), "to": card.suspect.predicted, "status": cleaner.status.value,
                  "session": type(cleaner.session).__module__}))
"""
UNDO = """
cleaner.undo_button.click()
print(json.dumps({"status": cleaner.status.value}))
"""


def _kernel_env(tmp_path: Path, monkeypatch) -> str:
    """A kernelspec running this interpreter (the venv), Jupyter's folders under tmp_path; returns its name."""
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "smarthub-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "smarthub tests", "language": "python"}))
    for var, sub in (("JUPYTER_PATH", "jupyter"), ("JUPYTER_DATA_DIR", "jupyter"), ("JUPYTER_CONFIG_DIR", "config"),
                     ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    return "smarthub-test"


def _stdout(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.slow
def test_clean_ipynb_runs_in_a_real_kernel_and_its_apply_and_undo_move_files(noisy_ws, tmp_path, monkeypatch):
    """notebooks/clean.ipynb ships without outputs, runs top to bottom in a real Jupyter kernel on a small
    workspace (parameters from the environment), and its Apply and Undo change and restore the files."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    monkeypatch.setenv("SMARTHUB_DATA", str(noisy_ws.data_dir))
    monkeypatch.setenv("SMARTHUB_MODELS", str(noisy_ws.models_dir))
    monkeypatch.setenv("SMARTHUB_IMAGE_SIZE", "32")  # the size of the cached test embeddings
    before = sorted(p.relative_to(noisy_ws.data_dir) for p in noisy_ws.data_dir.rglob("*.png"))
    client = NotebookClient(nb, kernel_name=_kernel_env(tmp_path, monkeypatch), timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)  # raises CellExecutionError with the traceback on any failure
        review_out = "".join(o.get("text", "") for o in code[2].outputs)
        assert "suspects among 45 images" in review_out

        nb.cells.append(nbformat.v4.new_code_cell(APPLY))
        applied = _stdout(client.execute_cell(nb.cells[-1], len(nb.cells) - 1))
        moved = Path(applied["path"])
        assert applied["status"].startswith("applied: 1 relabelled")
        assert applied["session"] == "smarthub.clean.session"  # the kernel runs this checkout's smarthub
        assert not moved.exists() and (noisy_ws.data_dir / applied["to"] / moved.name).is_file()

        nb.cells.append(nbformat.v4.new_code_cell(UNDO))
        undone = _stdout(client.execute_cell(nb.cells[-1], len(nb.cells) - 1))
        assert undone["status"].startswith("undone: 1 operations")
    assert moved.is_file() and not (noisy_ws.data_dir / applied["to"] / moved.name).exists()
    assert sorted(p.relative_to(noisy_ws.data_dir) for p in noisy_ws.data_dir.rglob("*.png")) == before
    assert [op.kind for op in fileops.history(noisy_ws)] == ["relabel", "undo"]
