"""The app's handlers, called directly on real small workspaces (no browser): files, journal, messages."""
from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from helpers import make_image  # noqa: E402
from http_server import ImageServer, Route, encode, photo  # noqa: E402

from smarthub import fileops
from smarthub.cli import main  # noqa: E402
from smarthub.dataset import scan_dataset  # noqa: E402
from smarthub.errors import DatasetError, SmartHubError  # noqa: E402
from smarthub.clean.review import ReviewResult, Suspect, kept  # noqa: E402
from smarthub.ui import tab_annotate, tab_bootstrap, tab_clean, tab_predict, tab_train  # noqa: E402
from smarthub.ui.tab_clean import CleanState  # noqa: E402
from smarthub.workspace import Workspace  # noqa: E402

KINDS = ("wrong", "unsure", "duplicate", "outlier")


def fake_result(ws: Workspace) -> ReviewResult:
    """A ranking over the workspace with known kinds, predictions and splits (planted, no model)."""
    items = scan_dataset(ws.data_dir)
    vocab = sorted({it.label for it in items})
    suspects = []
    for i, it in enumerate(items):
        other = vocab[(vocab.index(it.label) + 1) % len(vocab)]
        kind = KINDS[i % len(KINDS)]
        suspects.append(Suspect(path=it.path, given=it.label, predicted=other if kind == "wrong" else it.label,
                                p_given=0.2, p_predicted=0.7, score=i / 100, kind=kind,
                                split="valid" if i % 2 else "train"))
    return ReviewResult(suspects=suspects, vocab=vocab, n_images=len(items), method="fast", seconds=0.0,
                        probs_by_sha={})


@pytest.fixture
def session(small_ws: Workspace) -> tuple[Workspace, tab_clean.CleanView]:
    return small_ws, tab_clean.load_result(small_ws, fake_result(small_ws))


def journal_ops(ws: Workspace) -> list[tuple[str, str]]:
    return [(op.kind, op.state) for op in fileops.history(ws)]


# ---------------------------------------------------------------- Clean tab


def test_load_renders_first_page_with_captions(session) -> None:
    ws, view = session
    assert len(view.gallery) == 18 and view.selected == "cat/cat0.jpg"
    thumb, cap = view.gallery[0]
    assert Path(thumb).is_file() and Path(thumb).is_relative_to(ws.cache_dir / "thumbs")
    assert cap == "cat → dog 70% (wrong)"
    assert "given **cat**" in view.detail and "predicted **dog**" in view.detail
    assert view.preview and Path(view.preview).is_file()
    assert len(view.outputs()) == 12 + tab_clean.N_QUICK


def test_relabel_delete_undo_move_files_and_journal(session) -> None:
    ws, view = session
    st = view.state
    view = tab_clean.relabel(ws, st, "cat/cat0.jpg", "fish", "")
    assert not (ws.data_dir / "cat/cat0.jpg").exists() and (ws.data_dir / "fish/cat0.jpg").is_file()
    assert view.status.startswith("**Done:**") and view.selected == "cat/cat1.jpg"  # advanced to the next suspect
    view = tab_clean.delete(ws, st, view.selected)
    assert not (ws.data_dir / "cat/cat1.jpg").exists()
    assert list(ws.trash_dir.rglob("cat1.jpg"))
    assert st.counts == {"kept": 0, "relabelled": 1, "deleted": 1, "undone": 0}
    view = tab_clean.undo(ws, st)  # undoes the delete
    assert (ws.data_dir / "cat/cat1.jpg").is_file() and view.selected == "cat/cat1.jpg"
    view = tab_clean.undo(ws, st)  # then the relabel
    assert (ws.data_dir / "cat/cat0.jpg").is_file() and not (ws.data_dir / "fish/cat0.jpg").exists()
    assert [s.path.name for s in st.suspects[:2]] == ["cat0.jpg", "cat1.jpg"]
    assert journal_ops(ws) == [("relabel", "committed"), ("trash", "committed"),
                               ("undo", "committed"), ("undo", "committed")]
    assert "undone 2" in view.counts


@pytest.mark.parametrize("choice,typed,message", [
    (None, "../x", "path separator"),
    (None, ".hidden", "starts with a dot"),
    (None, "", "choose a class"),
    ("cat", "", "already labelled"),
], ids=["dotdot", "hidden", "empty", "same-label"])
def test_bad_relabel_becomes_a_message_and_the_app_goes_on(session, choice, typed, message) -> None:
    ws, view = session
    before = sorted(p.relative_to(ws.data_dir) for p in ws.data_dir.rglob("*.jpg"))
    view = tab_clean.relabel(ws, view.state, "cat/cat0.jpg", choice, typed)
    assert message in view.status and view.status.startswith("**Problem:**")
    assert sorted(p.relative_to(ws.data_dir) for p in ws.data_dir.rglob("*.jpg")) == before
    view = tab_clean.relabel(ws, view.state, "cat/cat0.jpg", None, "new class")  # a new label works after,
    assert "not a class yet" in view.status and view.confirm  # once confirmed
    view = tab_clean.confirm_new(ws, view.state)
    assert (ws.data_dir / "new class/cat0.jpg").is_file() and "new class" in view.labels


def test_image_deleted_behind_the_app(session) -> None:
    ws, view = session
    (ws.data_dir / "cat/cat0.jpg").unlink()
    n = len(view.state.suspects)
    view = tab_clean.delete(ws, view.state, "cat/cat0.jpg")
    assert "no longer exists" in view.status
    assert len(view.state.suspects) == n - 1 and view.selected == "cat/cat1.jpg"
    view = tab_clean.keep(ws, view.state, view.selected)  # the page keeps working
    assert view.status.startswith("**Done:**")


def test_two_windows_on_the_same_image_lose_nothing(small_ws: Workspace) -> None:
    ws = small_ws
    one = tab_clean.load_result(ws, fake_result(ws)).state
    two = tab_clean.load_result(ws, fake_result(ws)).state
    tab_clean.delete(ws, one, "dog/dog2.jpg")
    view = tab_clean.relabel(ws, two, "dog/dog2.jpg", "fish", "")
    assert "no longer exists" in view.status and "another window" in view.status
    assert len(list(ws.trash_dir.rglob("dog2.jpg"))) == 1 and not (ws.data_dir / "fish/dog2.jpg").exists()


def test_double_click_acts_once(session) -> None:
    ws, view = session
    st = view.state
    tab_clean.delete(ws, st, "cat/cat0.jpg")
    again = tab_clean.delete(ws, st, "cat/cat0.jpg")  # same path sent twice
    assert "already handled" in again.status
    assert (ws.data_dir / "cat/cat1.jpg").is_file() and st.counts["deleted"] == 1


def test_corrupt_image_gets_a_placeholder_and_can_be_trashed(session) -> None:
    ws, view = session
    (ws.data_dir / "cat/cat0.jpg").write_bytes(b"\xff\xd8\xff not a jpeg any more")
    view = tab_clean.render(ws, view.state)
    assert Path(view.gallery[0][0]).name == "placeholder_unreadable.png"
    view = tab_clean.delete(ws, view.state, "cat/cat0.jpg")
    assert view.status.startswith("**Done:**") and list(ws.trash_dir.rglob("cat0.jpg"))


def test_paging_and_select(ws: Workspace) -> None:
    for i in range(60):
        make_image(ws.data_dir / ("a" if i % 2 else "b") / f"{i:03d}.png", size=(16, 16), pattern=i, fmt="PNG")
    view = tab_clean.load_result(ws, fake_result(ws))
    st = view.state
    assert len(view.gallery) == 24 and "Page 1 of 3" in view.page_text
    view = tab_clean.turn_page(ws, st, +1)
    assert "Page 2 of 3" in view.page_text and st.pos == 24
    view = tab_clean.turn_page(ws, st, +5)
    assert "Page 3 of 3" in view.page_text and len(view.gallery) == 12
    view = tab_clean.select(ws, st, 3)
    assert st.pos == 51 and view.selected == tab_clean.rel(ws, st.suspects[51].path)
    view = tab_clean.turn_page(ws, st, -9)
    assert "Page 1 of 3" in view.page_text


@pytest.mark.parametrize("kind,label,split,expected", [
    ("all", "all", "all", 18),
    ("wrong", "all", "all", 5),
    ("all", "dog", "all", 6),
    ("all", "all", "valid", 9),
    ("unsure", "cat", "valid", 2),
    ("outlier", "fish", "none", 0),
], ids=["none", "kind", "class", "split", "combined", "no-match"])
def test_filters(session, kind, label, split, expected) -> None:
    ws, view = session
    view = tab_clean.set_filters(ws, view.state, kind, label, split)
    assert len(tab_clean.filtered(view.state)) == expected
    assert len(view.gallery) == expected
    for i in tab_clean.filtered(view.state):
        s = view.state.suspects[i]
        assert kind in ("all", s.kind) and label in ("all", s.given) and split in ("all", s.split)


def test_keep_is_journaled_and_undone_through_the_journal(session, capsys) -> None:
    ws, view = session
    view = tab_clean.keep(ws, view.state, "cat/cat0.jpg")
    assert len(kept(ws)) == 1 and view.state.counts["kept"] == 1 and (ws.data_dir / "cat/cat0.jpg").is_file()
    assert journal_ops(ws) == [("keep", "committed")]
    view = tab_clean.undo(ws, view.state)  # the app's Undo is the journal's undo of that keep
    assert kept(ws) == set() and view.selected == "cat/cat0.jpg"
    [keep_op, undo_op] = fileops.history(ws)
    assert (undo_op.kind, undo_op.undoes, keep_op.undone_by) == ("undo", keep_op.op_id, undo_op.op_id)
    # kept in the app, undone in a terminal: the app's Undo then has nothing left to revert twice
    view = tab_clean.keep(ws, view.state, "cat/cat0.jpg")
    assert main(["undo", "--data", str(ws.data_dir)]) == 0 and kept(ws) == set()
    assert "no longer kept: cat/cat0.jpg" in capsys.readouterr().out
    view = tab_clean.undo(ws, view.state)
    assert view.status.startswith("**Done:**") and view.selected == "cat/cat0.jpg"
    assert [k for k, _ in journal_ops(ws)] == ["keep", "undo", "keep", "undo"]
    # the journal's Undo button reverts a keep made elsewhere (here: the CLI)
    assert main(["keep", "--data", str(ws.data_dir), str(ws.data_dir / "dog/dog0.jpg")]) == 0
    view = tab_clean.undo_journal(ws, view.state)
    assert "keep marks of 1 images reverted" in view.status and kept(ws) == set()


def test_number_keys_relabel_to_the_numbered_class(session) -> None:
    ws, view = session
    view = tab_clean.quick_relabel(ws, view.state, "cat/cat0.jpg", 3)  # classes: cat dog fish
    assert (ws.data_dir / "fish/cat0.jpg").is_file()
    view = tab_clean.quick_relabel(ws, view.state, view.selected, 7)
    assert "no class number 7" in view.status


def test_undo_of_an_action_already_undone_elsewhere(session) -> None:
    ws, view = session
    st = view.state
    tab_clean.delete(ws, st, "cat/cat0.jpg")
    fileops.undo(ws)  # e.g. `smarthub undo` in a terminal
    view = tab_clean.undo(ws, st)
    assert view.status.startswith("**Done:**") and (ws.data_dir / "cat/cat0.jpg").is_file()
    assert st.suspects[0].path.name == "cat0.jpg" and st.undo_stack == []


def test_unreadable_images_of_the_review_are_reported(small_ws: Workspace) -> None:
    result = fake_result(small_ws)
    result.skipped = [(small_ws.data_dir / "cat/cat9.jpg", "truncated JPEG")]
    view = tab_clean.load_result(small_ws, result)
    assert "1 images could not be read" in view.status and "cat/cat9.jpg: truncated JPEG" in view.status


def test_undo_with_nothing_to_undo_is_a_message(session) -> None:
    ws, view = session
    view = tab_clean.undo(ws, view.state)
    assert "nothing to undo" in view.status


def test_run_review_on_an_empty_workspace_is_a_page_error(ws: Workspace) -> None:
    with pytest.raises(gr.Error, match="no images"):
        tab_clean.run_review(ws, CleanState(), "fast", 0.6, 3)


@pytest.mark.slow
def test_run_review_fast_ranks_real_images(small_ws: Workspace) -> None:
    view = tab_clean.run_review(small_ws, CleanState(), "fast", 0.6, 3)
    assert view.state.method == "fast" and view.state.n_images == 18
    assert view.state.suspects and len(view.gallery) == min(24, len(view.state.suspects))
    assert view.status.startswith("**Done:**")


# ---------------------------------------------------------------- Train and Predict tabs


def test_train_and_predict_without_data_or_model_are_page_errors(ws: Workspace) -> None:
    with pytest.raises(gr.Error, match="no images"):
        tab_train.run_train(ws, "mobilenet_v2", 1, 32, True)
    with pytest.raises(gr.Error, match="no model"):
        tab_predict.run_predict(ws, None, [str(make_image(ws.data_dir / "x.jpg"))], 3)
    summary, rows, confusion = tab_train.show_current(ws)
    assert "No model yet" in summary and rows == [] and confusion is None


def test_a_model_whose_classes_differ_from_the_folders_is_flagged(small_ws: Workspace) -> None:
    from smarthub.atomicio import atomic_write_json

    atomic_write_json(small_ws.report_path, {"arch": "resnet18", "vocab": ["cat", "dog"], "valid_accuracy": 0.9,
                                             "per_class": {"cat": {"precision": 1, "recall": 1, "f1": 1,
                                                                   "support": 2}}})
    summary, rows, _ = tab_train.show_current(small_ws)
    assert "differ from the data folders" in summary and "90.0%" in summary and rows[0][0] == "cat"
    small_ws.report_path.write_text("{ broken")
    assert "Problem" in tab_train.show_current(small_ws)[0]


@pytest.mark.parametrize("stage,epoch,epochs,batch,batches,metrics,frac,text", [
    ("training", 2, 4, 5, 10, {"train_loss": 0.5}, 0.375, "training: epoch 2/4 batch 5/10 train_loss 0.500"),
    ("checking images", 0, 0, 50, 80, {}, 0.625, "checking images: 50/80"),
    ("building", 0, 0, 0, 0, {}, None, "building"),
], ids=["epoch", "batches-only", "stage-only"])
def test_train_progress_line(stage, epoch, epochs, batch, batches, metrics, frac, text) -> None:
    from smarthub.model.progress import TrainProgress

    assert tab_train.progress_text(TrainProgress(stage, epoch, epochs, batch, batches, metrics)) == (frac, text)


def test_train_without_cached_weights_names_the_fix(small_ws: Workspace) -> None:
    with pytest.raises(gr.Error, match="resnet18"):
        tab_train.run_train(small_ws, "resnet18", 1, 32, True)


@pytest.mark.slow
def test_train_tab_then_predict_tab(small_ws: Workspace) -> None:
    ws = small_ws
    summary, rows, confusion = tab_train.run_train(ws, "mobilenet_v2", 1, 32, True)
    assert "Validation accuracy" in summary and {r[0] for r in rows} == {"cat", "dog", "fish"}
    assert confusion and Path(confusion).is_file()
    model, best, table = tab_predict.run_predict(ws, None, [str(ws.data_dir / "cat/cat0.jpg"),
                                                            str(ws.data_dir / "dog/dog0.jpg")], 2)
    assert set(best) <= {"cat", "dog", "fish"} and len(best) == 2
    assert [r[0] for r in table] == ["cat0.jpg", "cat0.jpg", "dog0.jpg", "dog0.jpg"]
    assert abs(sum(best.values()) - 1) < 0.5
    again, _, _ = tab_predict.run_predict(ws, model, [str(ws.data_dir / "cat/cat1.jpg")], 1)
    assert again is model  # unchanged export.pkl is not reloaded
    (ws.data_dir / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(gr.Error, match="bad.jpg"):
        tab_predict.run_predict(ws, model, [str(ws.data_dir / "bad.jpg")], 1)
    view = tab_clean.run_review(ws, CleanState(), "model", 0.6, 3)  # the exported model ranks in-sample
    assert view.state.method == "model" and view.state.n_images == 18
    make_image(ws.data_dir / "bird" / "b0.jpg", pattern=999)
    make_image(ws.data_dir / "bird" / "b1.jpg", pattern=998)
    with pytest.raises(gr.Error, match="does not match the data.*bird"):
        tab_clean.run_review(ws, CleanState(), "model", 0.6, 3)
    assert "differ from the data folders" in tab_train.show_current(ws)[0]


def test_train_tab_stop_keeps_the_previous_model(small_ws: Workspace) -> None:
    """Stop pressed while the first epoch runs: a 'Stopped' line over the previous model, nothing written."""
    from smarthub.ui._common import StopSwitch

    ws = small_ws
    tab_train.run_train(ws, "mobilenet_v2", 1, 32, True)
    before = {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()}
    switch = StopSwitch()
    switch.stop()  # pressed before this run: a new run starts fresh
    seen = []

    def progress(frac, desc=""):  # what gr.Progress receives; the user presses Stop on the first batch
        seen.append(desc)
        if "epoch" in desc:
            switch.stop()

    summary, rows, confusion = tab_train.run_train(ws, "mobilenet_v2", 3, 32, True, progress, switch,
                                                   always_fine_tune=True)  # the head leaves nothing to gain here
    assert any("epoch 1/3" in d for d in seen)  # --epochs means epochs in total
    assert summary.startswith("**Stopped:** training stopped after 0 complete epochs; nothing was written")
    assert "Validation accuracy" in summary and {r[0] for r in rows} == {"cat", "dog", "fish"}  # the old model
    assert {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- Bootstrap and Annotate tabs


@pytest.mark.parametrize("labels,message", [
    ("", "at least one label"),
    ("../x", "path separator"),
    ("ok, .hidden", "starts with a dot"),
], ids=["empty", "dotdot", "hidden"])
def test_bootstrap_bad_labels_are_page_errors(ws: Workspace, labels: str, message: str) -> None:
    with pytest.raises(gr.Error, match=message):
        tab_bootstrap.run_bootstrap(ws, labels, 5)
    assert not any(p.is_dir() for p in ws.data_dir.iterdir() if not p.name.startswith("."))


def test_bootstrap_from_an_uploaded_url_list(ws: Workspace, tmp_path: Path) -> None:
    routes = {f"/{i}.jpg": Route(body=encode(photo(i), "JPEG")) for i in range(3)}
    with ImageServer(routes) as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{server.url(p)},koi\n" for p in routes))
        text = tab_bootstrap.run_bootstrap(ws, "koi", 3, str(urls))
    assert len(list((ws.data_dir / "koi").glob("*.jpg"))) == 3
    assert "koi" in text


def test_bootstrap_tab_stop_keeps_what_was_saved(ws: Workspace, tmp_path: Path) -> None:
    from smarthub.ledger import read_records
    from smarthub.ui._common import StopSwitch

    routes = {f"/{i}.jpg": Route(body=encode(photo(50 + i), "JPEG")) for i in range(20)}
    switch = StopSwitch()

    def progress(done, desc=""):
        if isinstance(done, tuple) and done[0] >= 2:  # Stop pressed once two images are in
            switch.stop()

    with ImageServer(routes, latency_s=0.05) as server:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(f"{server.url(p)},koi\n" for p in routes))
        text = tab_bootstrap.run_bootstrap(ws, "koi", 20, str(urls), progress, switch)
    saved = sorted((ws.data_dir / "koi").glob("*.jpg"))
    assert "stopped early: stopped on request" in text
    assert 2 <= len(saved) < 20
    assert sorted(r.path for r in read_records(ws)) == sorted(f"koi/{p.name}" for p in saved)  # provenance kept


def test_annotate_refuses_paths_outside_the_workspace(small_ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(gr.Error, match="outside the workspace"):
        tab_annotate.run_annotate(small_ws, "../../", None, "ssdlite320_mobilenet_v3_large", 0.25, 0.7, False, "skip")
    with pytest.raises(gr.Error, match="inside the workspace"):
        tab_annotate.run_annotate(small_ws, "cat", None, str(tmp_path / "det.pt"), 0.25, 0.7, False, "skip")
    with pytest.raises(gr.Error, match="upload images"):
        tab_annotate.run_annotate(small_ws, "", None, "ssdlite320_mobilenet_v3_large", 0.25, 0.7, False, "skip")


def tiny_detector(path: Path) -> Path:
    """An untrained (random) torchvision detector saved as a smarthub checkpoint: real code path, no download."""
    from smarthub.annotate import detect

    model = detect.build_torchvision_model("ssdlite320_mobilenet_v3_large", 3)
    return detect.save_detector_checkpoint(path, model, arch="ssdlite320_mobilenet_v3_large",
                                           labels=["__background__", "cat", "dog"])


@pytest.mark.slow
def test_annotate_uploaded_images_gives_labelme_zip(small_ws: Workspace, tmp_path: Path) -> None:
    ws = small_ws
    det = tiny_detector(ws.models_dir / "det.pt")
    uploads = [make_image(tmp_path / f"up{i}.jpg", size=(64, 48), pattern=i) for i in range(2)]
    text, zipped, gallery, counts = tab_annotate.run_annotate(ws, "", [str(p) for p in uploads], "det.pt", 0.01,
                                                              0.7, False, "skip")
    assert "2 images" in text and zipped and ws.contains(Path(zipped))
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == ["up0.json", "up1.json"]
    text, zipped, gallery, counts = tab_annotate.run_annotate(ws, "cat", None, str(det), 0.5, 0.7, False, "skip")
    assert len(gallery) == 6 and all(caption.endswith(("box", "boxes")) for _, caption in gallery)
    assert counts[-1][0] == "(no boxes)" and sum(r[2] for r in counts) >= 6
    assert "6 images" in text and len(list((ws.data_dir / "cat").glob("*.json"))) == 6
    assert len(scan_dataset(ws.data_dir)) == 18  # JSON files are not taken for images


# ---------------------------------------------------------------- CLI, launch guard, demo


@pytest.mark.parametrize("argv,message", [
    (["app", "--host", "0.0.0.0"], "without --auth"),
    (["app", "--host", "192.168.1.7", "--auth", "nopassword"], "user:password"),
    (["app", "--host", "::", "--auth", ":x"], "user:password"),
], ids=["no-auth", "auth-without-colon", "empty-user"])
def test_app_refuses_a_network_host_without_auth(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_launch_refuses_a_taken_port(ws: Workspace) -> None:
    from smarthub.ui import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(SmartHubError, match="already in use"):
            launch(ws, port=s.getsockname()[1], prevent_thread_lock=True)


def test_demo_copies_samples_once_and_never_into_user_data(tmp_path: Path) -> None:
    from smarthub import demo

    ws = Workspace(tmp_path / "demo" / "data", tmp_path / "demo" / "models")
    copied, reused = demo.copy_samples(ws)
    classes = demo.sample_images()
    assert copied == sum(len(v) for v in classes.values()) and not reused and len(classes) >= 3
    assert {it.label for it in scan_dataset(ws.data_dir)} == set(classes)
    assert demo.copy_samples(ws) == (0, True)  # reused, nothing copied twice
    user = Workspace(tmp_path / "mine" / "data", tmp_path / "mine" / "models")
    make_image(user.data_dir / "cat" / "1.jpg")
    with pytest.raises(DatasetError, match="not a demo workspace"):
        demo.copy_samples(user)
    assert sorted(p.name for p in user.data_dir.rglob("*") if p.is_file()) == ["1.jpg"]


def test_shipped_samples_are_small_and_licensed() -> None:
    from smarthub import demo

    files = [p for p in demo.SAMPLES_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024
    assert (demo.SAMPLES_DIR / "LICENSE").is_file() and "public domain" in (demo.SAMPLES_DIR / "LICENSE").read_text()
    from PIL import Image

    for p in demo.SAMPLES_DIR.rglob("*.jpg"):
        with Image.open(p) as im:
            assert max(im.size) <= 128


def test_python_app_py_refuses_a_network_host_without_auth_in_one_line() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "app.py"), "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, timeout=300, cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: refusing to serve on 0.0.0.0 without --auth") and proc.stderr.count("\n") == 1
    assert "gradio" not in proc.stdout


def test_build_app_sets_no_analytics_and_offline_defaults(small_ws: Workspace) -> None:
    import os

    from smarthub.ui import build_app

    app = build_app(small_ws)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert isinstance(app, gr.Blocks)
    assert tab_clean.default_method(small_ws) == "fast"  # MobileNetV2 weights are cached in tests
    from smarthub.model.options import TrainOptions

    assert tab_train.defaults(small_ws)["arch"] == TrainOptions().arch  # one source of defaults
