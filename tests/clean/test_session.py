"""The clean session shared by the Clean tab and the notebook, without any UI: real files, real journal."""
from __future__ import annotations

import pytest

from helpers import make_image
from smarthub import fileops
from smarthub.clean import review, session
from smarthub.clean.review import ReviewResult, Suspect
from smarthub.clean.session import DELETE, KEEP, RELABEL, CleanSession, closest_class
from smarthub.dataset import scan_dataset


def planted(ws) -> ReviewResult:
    """Every image a suspect; cat*.jpg predicted dog (planted), the others predicted as labelled."""
    items = scan_dataset(ws.data_dir)
    suspects = [Suspect(path=it.path, given=it.label, predicted="dog" if it.label == "cat" else it.label,
                        p_given=0.2, p_predicted=0.8, score=i / 100, kind="wrong" if it.label == "cat" else "unsure",
                        split="valid") for i, it in enumerate(items)]
    return ReviewResult(suspects=suspects, vocab=sorted({it.label for it in items}), n_images=len(items),
                        method="fast", seconds=0.0, probs_by_sha={})


@pytest.fixture
def sess(small_ws) -> CleanSession:
    s = CleanSession(page_size=4)
    s.load(small_ws, planted(small_ws))
    return s


def names(sess: CleanSession) -> list[str]:
    return [f"{s.given}/{s.path.name}" for s in sess.suspects]


def test_relabel_delete_keep_and_undo_in_reverse(small_ws, sess) -> None:
    ws = small_ws
    before = names(sess)
    assert session.relabel(ws, sess, "cat/cat0.jpg", "fish").ok
    assert session.delete(ws, sess, "cat/cat1.jpg").ok
    assert session.keep(ws, sess, "cat/cat2.jpg").ok and len(review.kept(ws)) == 1
    assert (ws.data_dir / "fish/cat0.jpg").is_file() and not (ws.data_dir / "cat/cat1.jpg").exists()
    assert sess.counts == {"kept": 1, "relabelled": 1, "deleted": 1, "undone": 0} and len(sess.suspects) == 15
    messages = [session.undo(ws, sess).message for _ in range(3)]
    assert messages == ["undid keep of cat/cat2.jpg", "undid delete of cat/cat1.jpg", "undid relabel of cat/cat0.jpg"]
    assert names(sess) == before and review.kept(ws) == set()
    assert (ws.data_dir / "cat/cat0.jpg").is_file() and (ws.data_dir / "cat/cat1.jpg").is_file()


def test_empty_undo_stack_never_undoes_another_sessions_operation(small_ws, sess) -> None:
    ws = small_ws
    other = CleanSession()
    other.load(ws, planted(ws))
    session.relabel(ws, other, "cat/cat0.jpg", "fish")  # another window
    outcome = session.undo(ws, sess)
    assert not outcome.ok and outcome.message == "nothing to undo in this session"
    assert (ws.data_dir / "fish/cat0.jpg").is_file()  # the other window's work stands
    outcome = session.undo_journal(ws, sess)  # asked for explicitly: the journal's newest operation
    assert outcome.ok and (ws.data_dir / "cat/cat0.jpg").is_file()


def test_undo_of_a_step_undone_elsewhere_restores_the_list(small_ws, sess) -> None:
    session.delete(small_ws, sess, "cat/cat0.jpg")
    fileops.undo(small_ws)  # e.g. `smarthub undo` in a terminal
    outcome = session.undo(small_ws, sess)
    assert outcome.ok and outcome.ops == [] and sess.suspects[0].path.name == "cat0.jpg"
    assert [op.kind for op in fileops.history(small_ws)] == ["trash", "undo"]  # nothing undone twice


@pytest.mark.parametrize("typed,near", [
    ("aple", "apple"), ("dgo", "dog"), ("Cat", "cat"), ("fishes", "fish"), ("zebra", None), ("bird", None),
], ids=["missing-letter", "swapped-letters", "case", "plural", "unrelated", "new-class"])
def test_closest_class(typed, near) -> None:
    assert closest_class(typed, ["apple", "cat", "dog", "fish"]) == near


def test_a_new_class_waits_for_confirmation(small_ws, sess) -> None:
    ws = small_ws
    outcome = session.relabel(ws, sess, "cat/cat0.jpg", "dgo")
    assert not outcome.ok and outcome.confirm == "dgo" and "Did you mean 'dog'?" in outcome.message
    assert (ws.data_dir / "cat/cat0.jpg").is_file() and not (ws.data_dir / "dgo").exists()
    assert session.cancel_new_class(sess).message == "not created: 'dgo'; nothing moved"
    assert session.confirm_new_class(ws, sess).ok is False  # nothing pending any more
    session.relabel(ws, sess, "cat/cat0.jpg", "bird")
    assert session.confirm_new_class(ws, sess).ok and (ws.data_dir / "bird/cat0.jpg").is_file()
    assert "bird" in sess.labels()
    session.undo(ws, sess)
    assert not (ws.data_dir / "bird").exists()  # the folder the relabel created goes with its undo
    assert session.relabel(ws, sess, "cat/cat0.jpg", "bird", new_class=True).ok  # said up front: no question


def test_accept_predicted(small_ws, sess) -> None:
    ws = small_ws
    assert session.accept_predicted(ws, sess, "cat/cat3.jpg").message == "relabelled cat/cat3.jpg → dog/cat3.jpg"
    outcome = session.accept_predicted(ws, sess, "dog/dog0.jpg")
    assert not outcome.ok and "no suggestion other than its label 'dog'" in outcome.message
    assert not session.accept_predicted(ws, sess, "").ok


def test_apply_is_one_step_for_undo(small_ws, sess) -> None:
    ws = small_ws
    d = ws.data_dir
    outcome = session.apply(ws, sess, {d / "cat/cat0.jpg": RELABEL + "dog", d / "cat/cat1.jpg": DELETE,
                                       d / "fish/fish0.jpg": KEEP})
    assert outcome.ok and outcome.message.startswith("applied: 1 relabelled, 1 deleted, 1 kept")
    assert len(sess.undo_stack) == 1 and len(sess.suspects) == 15
    outcome = session.undo(ws, sess)
    assert outcome.ok and len(outcome.ops) == 3 and len(sess.suspects) == 18  # relabel, delete, keep: 3 operations
    assert sorted(fileops.history(ws)[i].kind for i in range(3)) == ["keep", "relabel", "trash"]
    assert (d / "cat/cat0.jpg").is_file() and (d / "cat/cat1.jpg").is_file() and review.kept(ws) == set()
    assert names(sess) == names(_fresh(ws))


def _fresh(ws) -> CleanSession:
    s = CleanSession()
    s.load(ws, planted(ws))
    return s


def test_a_file_gone_behind_the_session_leaves_the_list(small_ws, sess) -> None:
    (small_ws.data_dir / "cat/cat0.jpg").unlink()
    outcome = session.delete(small_ws, sess, "cat/cat0.jpg")
    assert not outcome.ok and "no longer exists" in outcome.message and len(sess.suspects) == 17
    again = session.keep(small_ws, sess, "cat/cat0.jpg")
    assert "already handled" in again.message


def test_paging_filters_and_selection(small_ws, sess) -> None:
    assert sess.n_pages() == 5 and len(sess.page_items()) == 4
    sess.turn_page(+2)
    assert sess.page == 2 and sess.pos == 8
    sess.turn_page(+10)
    assert sess.page == 4 and len(sess.page_items()) == 2
    sess.select(1)
    assert sess.selected().path.name == "fish5.jpg"
    sess.set_filters("wrong", "all", "all")
    assert sess.pos == 0 and {s.given for s in map(sess.suspects.__getitem__, sess.filtered())} == {"cat"}
    sess.set_filters(None, "fish", "train")
    assert sess.filtered() == [] and sess.selected() is None


def test_provenance_of_a_suspect(small_ws, sess) -> None:
    from smarthub.dataset import sha256_file
    from smarthub.ledger import ProvenanceRecord, append_records

    path = make_image(small_ws.data_dir / "cat" / "cat9.jpg", pattern=9)
    append_records(small_ws, [ProvenanceRecord(sha256=sha256_file(path), phash="", label="cat", path="cat/cat9.jpg",
                                               url="https://img.example/kitty.png")])
    sess.load(small_ws, planted(small_ws))
    s = next(x for x in sess.suspects if x.path == path)
    assert sess.source_of(s).url == "https://img.example/kitty.png"
    assert sess.source_of(sess.suspects[0]) is None
