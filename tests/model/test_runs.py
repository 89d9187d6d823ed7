"""Model history: each run in its own folder, promotion by validation accuracy on shared images, atomic and
undoable switches (fault injection, crash recovery), the first-version layout adopted, one-line errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

import crashkit
from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.trust import RECORD_NAME
from smarthub.errors import SmartHubError
from smarthub.model import runs
from smarthub.workspace import Workspace

TINY = ["--arch", "resnet18", "--no-pretrained", "--epochs", "1", "--size", "32", "--batch-size", "8"]


def _report(correct: list[bool], *, shas: list[str] | None = None, arch: str = "mobilenet_v2",
            created: str = "2026-11-28T01:15:30+00:00") -> dict:
    """A training report whose validation images (fake hashes) were predicted right where `correct` says."""
    shas = shas or [f"h{i}" for i in range(len(correct))]
    images = [{"sha256": s, "path": f"a/{s}.png", "label": "a", "predicted": "a" if ok else "b"}
              for s, ok in zip(shas, correct)]
    return {"arch": arch, "size_px": 64, "created_at": created, "n_valid": len(correct),
            "valid_accuracy": round(sum(correct) / len(correct), 4), "valid_images": images,
            "history": [], "options": {}}


def _record(ws: Workspace, report: dict, *, model: bytes, policy: str = "if-better") -> runs.RunOutcome:
    return runs.record_run(ws, report, save_export=lambda p: Path(p).write_bytes(model), history_csv="epoch\n",
                           confusion_png=b"\x89PNG fake", policy=policy)


def _promoted_files(ws: Workspace) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (ws.export_path, ws.report_path, ws.history_path, ws.confusion_path)
            if p.is_file()}


def _cli(capsys: pytest.CaptureFixture, ws: Workspace, *argv: str) -> tuple[int, str, str]:
    rc = main(["models", "--models", str(ws.models_dir), *argv[1:]] if argv[0] == "models" else list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_first_run_is_promoted_into_its_own_folder(ws: Workspace) -> None:
    outcome = _record(ws, _report([True, False]), model=b"model A")
    assert outcome.promoted and outcome.run_id == "20261128T011530-mobilenet_v2"
    run_dir = ws.runs_dir / outcome.run_id
    # the record that smarthub wrote export.pkl (trust.py) travels with the run
    assert sorted(p.name for p in run_dir.iterdir()) == [RECORD_NAME, "confusion.png", "export.pkl", "history.csv",
                                                         "report.json"]
    assert ws.export_path.read_bytes() == b"model A"
    assert json.loads(ws.report_path.read_text())["run_id"] == outcome.run_id
    assert runs.read_pointer(ws)["run_id"] == outcome.run_id
    assert [r["run_id"] for r in runs.promotion_log(ws)] == [outcome.run_id]
    assert sorted(p.name for p in ws.models_dir.iterdir()) == [RECORD_NAME, "confusion.png", "export.pkl",
                                                               "history.csv", "promoted.json", "report.json", "runs"]
    from smarthub.trust import written_by_smarthub

    assert written_by_smarthub(ws.export_path) is not None  # the promoted model loads without --trust


def test_run_ids_sort_by_time_and_never_collide(ws: Workspace) -> None:
    first = _record(ws, _report([True]), model=b"A").run_id
    second = _record(ws, _report([True]), model=b"B").run_id  # same second, same arch
    later = _record(ws, _report([True], created="2026-11-28T02:00:00+00:00", arch="timm/vit tiny"),
                    model=b"C").run_id
    assert (first, second, later) == ("20261128T011530-mobilenet_v2", "20261128T011530-mobilenet_v2-2",
                                      "20261128T020000-timm_vit_tiny")
    assert [i.run_id for i in runs.list_runs(ws)] == [first, second, later]


@pytest.mark.parametrize(("policy", "current", "new", "promoted", "words"), [
    ("if-better", [True, True, False, False], [True, True, True, False], True, "0.750 (new) vs 0.500"),
    ("if-better", [True, True, False, False], [False, True, True, False], True, "0.500 (new) vs 0.500"),
    ("if-better", [True, True, True, False], [True, False, False, False], False, "0.250 (new) vs 0.750"),
    ("always", [True, True, True, False], [True, False, False, False], True, "--promote always"),
    ("never", [True, False, False, False], [True, True, True, True], False, "1.000 (new) vs 0.250"),
], ids=["better", "tie-promotes", "worse-kept", "always", "never"])
def test_promotion_policy_compares_on_the_same_images(ws: Workspace, policy: str, current: list[bool],
                                                      new: list[bool], promoted: bool, words: str) -> None:
    _record(ws, _report(current), model=b"current")
    outcome = _record(ws, _report(new), model=b"new", policy=policy)
    assert outcome.promoted is promoted
    assert words in outcome.message and "the same 4 validation images" in outcome.message
    assert ws.export_path.read_bytes() == (b"new" if promoted else b"current")
    if not promoted:
        assert f"`smarthub models promote {outcome.run_id}`" in outcome.message
        assert (outcome.run_dir / "export.pkl").read_bytes() == b"new"  # kept beside the promoted model


@pytest.mark.parametrize(("new_shas", "comparable", "n_shared"), [
    (["h0", "h1", "h2", "h3"], True, 4),
    (["h2", "h3", "x1", "x2"], True, 2),
    (["x0", "x1", "x2", "x3"], False, 0),
], ids=["same-set", "overlap-only", "disjoint"])
def test_a_changed_validation_set_compares_on_the_intersection(ws: Workspace, new_shas: list[str],
                                                               comparable: bool, n_shared: int) -> None:
    _record(ws, _report([True, True, False, False]), model=b"current")
    # new run: right on h2/h3 (where the current model was wrong), wrong on its own other images
    outcome = _record(ws, _report([True, True, False, False], shas=new_shas), model=b"new")
    c = outcome.comparison
    assert (c.comparable, c.n_shared) == (comparable, n_shared)
    if n_shared == 2:
        assert (c.new_correct, c.current_correct, c.same_set) == (2, 0, False)
        assert outcome.promoted and "the 2 validation images both runs held out" in outcome.message
    if not comparable:
        assert not outcome.promoted and ws.export_path.read_bytes() == b"current"
        assert "share no validation image" in outcome.message


@pytest.mark.parametrize("fail_on", ["export.pkl", "confusion.png", "report.json", "promoted.json"])
def test_a_failed_promotion_keeps_the_previous_model_whole(ws: Workspace, monkeypatch, fail_on: str) -> None:
    first = _record(ws, _report([True, False]), model=b"model A").run_id
    second = _record(ws, _report([True, False]), model=b"model B", policy="never").run_id
    before = _promoted_files(ws)
    real_replace = os.replace

    def failing_replace(src, dst, *a, **k):
        if Path(dst).name == fail_on:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SmartHubError, match=f"cannot promote run {second}: .*No space left.*the promoted model is "
                                            f"unchanged"):
        runs.promote(ws, second)
    monkeypatch.undo()
    assert _promoted_files(ws) == before and runs.read_pointer(ws)["run_id"] == first
    assert [p.name for p in ws.models_dir.iterdir() if p.name.startswith(".") and p.name != RECORD_NAME] == []  # no temp
    assert "promoted run" in runs.promote(ws, second) and ws.export_path.read_bytes() == b"model B"


def test_a_crash_mid_promotion_is_rolled_back_on_next_use(ws: Workspace, monkeypatch) -> None:
    first = _record(ws, _report([True, False]), model=b"model A").run_id
    second = _record(ws, _report([True, False]), model=b"model B", policy="never").run_id
    before = _promoted_files(ws)
    real_replace = os.replace

    def crash(src, dst, *a, **k):
        if Path(dst).name == "report.json":
            raise KeyboardInterrupt  # the process dies after export.pkl was already replaced
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        runs.promote(ws, second)
    monkeypatch.undo()
    assert ws.export_path.read_bytes() == b"model B"  # torn: new model, old report
    infos = runs.list_runs(ws)  # any next use recovers
    assert _promoted_files(ws) == before
    assert [i.run_id for i in infos if i.promoted] == [first]
    assert [p.name for p in ws.models_dir.iterdir() if p.name.startswith(".") and p.name != RECORD_NAME] == []


def test_promote_previous_undoes_and_redoes(ws: Workspace, capsys) -> None:
    a = _record(ws, _report([True, False]), model=b"A").run_id
    b = _record(ws, _report([True, True], created="2026-11-28T01:20:00+00:00"), model=b"B").run_id
    assert ws.export_path.read_bytes() == b"B"
    rc, out, err = _cli(capsys, ws, "models", "promote", "PREVIOUS")
    assert (rc, ws.export_path.read_bytes()) == (0, b"A") and f"promoted run {a}" in out and f"promote {b}" in out
    rc, out, _ = _cli(capsys, ws, "models", "promote", "PREVIOUS")
    assert (rc, ws.export_path.read_bytes()) == (0, b"B")
    rc, out, _ = main(["models", "promote", b, "--models", str(ws.models_dir)]), *capsys.readouterr()
    assert rc == 0 and out.strip() == f"run {b} is already the promoted model"  # --models after the action too
    assert [(r["run_id"], r["previous"]) for r in runs.promotion_log(ws)] == [(a, None), (b, a), (a, b), (b, a)]
    rc, out, _ = _cli(capsys, ws, "models", "log")
    assert rc == 0 and [ln.split()[1:3] for ln in out.splitlines()[1:]] == [[a, "-"], [b, a], [a, b], [b, a]]


def test_models_lists_runs_and_flags_broken_ones(ws: Workspace, capsys) -> None:
    a = _record(ws, _report([True, False]), model=b"A" * 300_000).run_id
    b = _record(ws, _report([True, True], created="2026-11-28T01:20:00+00:00"), model=b"B").run_id
    c = _record(ws, _report([True, False], created="2026-11-28T01:30:00+00:00"), model=b"C", policy="never").run_id
    (ws.runs_dir / c / "export.pkl").unlink()
    rc, out, err = _cli(capsys, ws, "models")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["run", "date", "(UTC)", "arch", "px", "accuracy", "valid", "MB", "promoted", "note"]
    assert lines[1].split()[:8] == [a, "2026-11-28", "01:15:30", "mobilenet_v2", "64", "0.500", "2", "0.3"]
    assert lines[2].split()[-1] == "yes" and lines[2].startswith(b)
    assert lines[3].startswith(c) and "broken: export.pkl is missing" in lines[3]
    assert f"previous: {a}" in out


def _setup_two_runs(ws: Workspace) -> tuple[str, str]:
    a = _record(ws, _report([True, False]), model=b"A").run_id
    b = _record(ws, _report([True, True], created="2026-11-28T01:20:00+00:00"), model=b"B").run_id
    return a, b


def _delete_previous_run(ws: Workspace, a: str, b: str) -> list[str]:
    for p in (ws.runs_dir / a).iterdir():
        p.unlink()
    (ws.runs_dir / a).rmdir()
    return ["PREVIOUS"]


def _bad_report(ws: Workspace, a: str, b: str) -> list[str]:
    (ws.runs_dir / a / "report.json").write_text("{ not json")
    return [a]


def _missing_export(ws: Workspace, a: str, b: str) -> list[str]:
    (ws.runs_dir / a / "export.pkl").unlink()
    return [a]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda ws, a, b: ["20990101T000000-nope"], r"^error: no run '20990101T000000-nope' in .*runs \(deleted by "
                                                r"hand\?\); `smarthub models` lists the runs$"),
    (lambda ws, a, b: ["../export.pkl"], r"^error: '../export.pkl' is not a run id"),
    (_delete_previous_run, r"^error: no run '2026\S+' in .*runs \(deleted by hand\?\)"),
    (_bad_report, r"^error: run 2026\S+ is broken: run report .*report.json is not valid JSON"),
    (_missing_export, r"^error: run 2026\S+ is broken: export.pkl is missing; promote another run"),
], ids=["unknown-run", "not-an-id", "previous-deleted", "bad-report-json", "missing-export"])
def test_promote_errors_are_one_line_and_change_nothing(ws: Workspace, capsys, setup, message: str) -> None:
    a, b = _setup_two_runs(ws)
    argv = setup(ws, a, b)
    before = _promoted_files(ws)
    rc, out, err = _cli(capsys, ws, "models", "promote", *argv)
    assert rc == 2 and len(err.splitlines()) == 1 and out == ""
    assert re.match(message, err.strip()), err
    assert _promoted_files(ws) == before and runs.read_pointer(ws)["run_id"] == b


def test_nothing_to_undo_is_one_line(ws: Workspace, capsys) -> None:
    _record(ws, _report([True]), model=b"A")
    rc, out, err = _cli(capsys, ws, "models", "promote", "PREVIOUS")
    assert rc == 2 and err.strip() == "error: no previous promotion to go back to; `smarthub models` lists the runs"


def test_a_deleted_promoted_run_folder_keeps_the_model(ws: Workspace, capsys) -> None:
    a, b = _setup_two_runs(ws)
    for p in (ws.runs_dir / b).iterdir():
        p.unlink()
    (ws.runs_dir / b).rmdir()
    rc, out, err = _cli(capsys, ws, "models")
    assert rc == 0 and f"promoted: {b} (its run folder was deleted" in out
    assert ws.export_path.read_bytes() == b"B"
    outcome = _record(ws, _report([True, False]), model=b"C")  # still compared with the promoted files
    assert not outcome.promoted and "0.500 (new) vs 1.000" in outcome.message


def _first_version(ws: Workspace, *, report: dict | None) -> dict[str, bytes]:
    ws.models_dir.mkdir(parents=True)
    ws.export_path.write_bytes(b"first-version model")
    ws.history_path.write_text("epoch\n")
    if report is not None:
        ws.report_path.write_text(json.dumps(report))
    return _promoted_files(ws)


LEGACY = {"arch": "resnet18", "size_px": 224, "created_at": "2026-10-01T12:00:00+00:00", "valid_accuracy": 0.5,
          "n_valid": 4, "dataset_fingerprint": "f1", "split": "random", "seed": 42, "valid_pct": 0.2}


@pytest.mark.parametrize(("legacy", "fingerprint", "promoted", "words"), [
    (LEGACY, "f1", True, "0.750 (new) vs 0.500"),
    (LEGACY, "f2", False, "does not list its validation images"),
    (None, "f1", False, "does not list its validation images"),
], ids=["same-data-compares", "changed-data-cannot", "no-report"])
def test_the_first_version_layout_is_adopted_without_loss(ws: Workspace, legacy: dict | None, fingerprint: str,
                                                           promoted: bool, words: str) -> None:
    before = _first_version(ws, report=legacy)
    infos = runs.list_runs(ws)
    run_id = "20261001T120000-resnet18" if legacy else infos[0].run_id
    assert [(i.run_id, i.promoted, i.problem) for i in infos] == [(run_id, True, None)]
    assert _promoted_files(ws) == before  # nothing moved, nothing rewritten
    assert (ws.runs_dir / run_id / "export.pkl").read_bytes() == b"first-version model"
    assert "adopted" in runs.promotion_log(ws)[0]["reason"]
    new = {**_report([True, True, True, False]), "dataset_fingerprint": fingerprint, "split": "random",
           "seed": 42, "valid_pct": 0.2}
    outcome = _record(ws, new, model=b"new")
    assert outcome.promoted is promoted and words in outcome.message
    assert ws.export_path.read_bytes() == (b"new" if promoted else b"first-version model")
    assert len(runs.list_runs(ws)) == 2


@pytest.mark.parametrize(("new", "current", "expect"), [
    ({"valid_images": [{"sha256": "a", "label": "x", "predicted": "x"}]},
     {"valid_images": [{"sha256": "a", "label": "y", "predicted": "y"}]}, (True, 1, 1, 0)),
    ({"valid_images": [{"sha256": "a"}]}, {"valid_images": []}, (False, 0, 0, 0)),
    ({"valid_accuracy": 0.5, "n_valid": 4}, {"valid_accuracy": 0.5, "n_valid": 4}, (False, 0, 0, 0)),
], ids=["relabelled-image-judged-by-new-label", "malformed-records", "no-records-no-fingerprint"])
def test_compare_reports_table(new: dict, current: dict, expect: tuple) -> None:
    c = runs.compare_reports(new, current)
    assert (c.comparable, c.n_shared, c.new_correct, c.current_correct) == expect


def test_a_corrupt_pointer_is_one_line_and_promote_repairs_it(ws: Workspace, capsys) -> None:
    a, b = _setup_two_runs(ws)
    runs.pointer_path(ws).write_text("garbage")
    with pytest.raises(SmartHubError, match="promotion pointer .*promoted.json is not valid JSON"):
        _record(ws, _report([True, True]), model=b"C")
    assert ws.export_path.read_bytes() == b"B"
    rc, out, err = _cli(capsys, ws, "models", "promote", a)
    assert rc == 0 and ws.export_path.read_bytes() == b"A" and runs.read_pointer(ws)["run_id"] == a


# ---------------------------------------------------------------------------------------------------------
# Real trainings through the CLI (tiny resnet18 from scratch on Fashion-MNIST)

def test_real_trainings_are_kept_compared_and_switched(ws: Workspace, capsys) -> None:
    write_fashion_folders(ws.data_dir, per_class=10, classes=("trouser", "bag"), size_px=32)
    where = ["--data", str(ws.data_dir), "--models", str(ws.models_dir)]
    rc, out, err = _cli(capsys, ws, "train", *where, *TINY)
    assert rc == 0, err
    first = runs.read_pointer(ws)["run_id"]
    report = json.loads(ws.report_path.read_text())
    assert len(report["valid_images"]) == report["n_valid"]
    some = report["valid_images"][0]
    from smarthub.dataset import sha256_file

    assert some["sha256"] == sha256_file(ws.data_dir / some["path"]) and some["label"] in ("bag", "trouser")
    assert f"promoted run {first}: there was no promoted model" in out

    rc, out, err = _cli(capsys, ws, "train", *where, *TINY, "--seed", "7", "--promote", "never")
    assert rc == 0, err
    second = max(p.name for p in ws.runs_dir.iterdir() if p.is_dir())
    assert f"kept run {second}, not promoted (--promote never): validation accuracy" in out
    assert "validation images both runs held out" in out or "the same" in out
    assert f"wrote {ws.runs_dir / second / 'export.pkl'}" in out
    before = ws.export_path.read_bytes()

    rc, out, err = _cli(capsys, ws, "models", "promote", second)
    assert rc == 0 and ws.export_path.read_bytes() == (ws.runs_dir / second / "export.pkl").read_bytes() != before
    rc, out, err = _cli(capsys, ws, "models", "promote", "PREVIOUS")
    assert rc == 0 and ws.export_path.read_bytes() == before

    # all-new images: no validation image in common, so if-better cannot decide: kept, exit 2, one line
    for p in ws.data_dir.rglob("*.png"):
        p.unlink()
    write_fashion_folders(ws.data_dir, per_class=10, classes=("trouser", "bag"), size_px=32, offset=300)
    rc, out, err = _cli(capsys, ws, "train", *where, *TINY)
    assert rc == 2 and ws.export_path.read_bytes() == before
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "share no validation image" in errors[0] and "not promoted" in errors[0]
    assert len([p for p in ws.runs_dir.iterdir() if p.is_dir()]) == 3


def test_concurrent_writers_keep_the_history_consistent(ws: Workspace) -> None:
    """Two threads (the app's Train and Promote buttons, say) recording and promoting at once: every run gets
    its own folder and the promoted files always belong to the run the pointer names."""
    import threading

    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(6):
                outcome = _record(ws, _report([True, bool(i % 2)]), model=f"{name}{i}".encode(), policy="always")
                runs.promote(ws, outcome.run_id)
        except BaseException as e:  # noqa: BLE001 (reported to the test thread below)
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    infos = runs.list_runs(ws)
    assert len(infos) == 12 and len({i.run_id for i in infos}) == 12
    promoted = runs.read_pointer(ws)["run_id"]
    assert json.loads(ws.report_path.read_text())["run_id"] == promoted
    assert ws.export_path.read_bytes() == (ws.runs_dir / promoted / "export.pkl").read_bytes()
    log = runs.promotion_log(ws)
    assert len(log) >= 12 and {r["run_id"] for r in log} == {i.run_id for i in infos} and log[-1]["run_id"] == promoted


def test_an_empty_models_folder_lists_nothing_and_creates_nothing(ws: Workspace, capsys) -> None:
    for argv in (("models",), ("models", "log")):
        rc, out, err = _cli(capsys, ws, *argv)
        assert rc == 0 and out.startswith("no ") and "smarthub train" in out
    assert not ws.models_dir.exists()


def test_a_run_interrupted_mid_write_is_discarded_on_next_use(ws: Workspace, monkeypatch, capsys) -> None:
    """A training process that dies after writing some of its run folder leaves a hidden `.<id>.partial`;
    the next use (under the history lock) removes it, notes it in the log, and touches nothing else."""
    first = _record(ws, _report([True, False]), model=b"model A").run_id
    before = _promoted_files(ws)
    real_replace = os.replace

    def crash(src, dst, *a, **k):
        if Path(dst).name == "confusion.png":
            raise KeyboardInterrupt  # the process dies with export.pkl and history.csv written
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _record(ws, _report([True, True]), model=b"model B")
    monkeypatch.undo()
    partial = [p for p in ws.runs_dir.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and (partial[0] / "export.pkl").read_bytes() == b"model B"
    rc, out, _ = _cli(capsys, ws, "models")
    assert rc == 0 and first in out and partial[0].name not in out
    assert not partial[0].exists()
    assert [i.run_id for i in runs.list_runs(ws)] == [first] and _promoted_files(ws) == before
    rc, out, _ = _cli(capsys, ws, "models", "log")
    assert rc == 0 and partial[0].name in out and "interrupted training run" in out


# kill point → the call of `models promote` it dies right before (from an uninterrupted run's call sequence)
PROMOTE_KILL_POINTS = {
    "staging-first-file": lambda calls: calls.index(["link", f"runs/{_B}/export.pkl"]),
    "staging-half-done": lambda calls: calls.index(["link", f"runs/{_B}/confusion.png"]),
    "backing-up-current": lambda calls: calls.index(["link", "export.pkl"]),
    "writing-intent": lambda calls: next(i for i, c in enumerate(calls) if c[0] == "replace"
                                         and ".promotion-in-progress" in c[1]),
    "first-file-swapped": lambda calls: calls.index(["replace", ".export.pkl.new.tmp"]),
    "half-swapped": lambda calls: calls.index(["replace", ".confusion.png.new.tmp"]),
    "writing-pointer": lambda calls: next(i for i, c in enumerate(calls) if c[0] == "replace"
                                          and ".promoted.json" in c[1]),
    "recording-trust": lambda calls: calls.index(["write", RECORD_NAME]),
    "writing-log-line": lambda calls: calls.index(["write", f"runs/{runs.LOG_NAME}"]),
    "removing-temps": lambda calls: calls.index(["write", f"runs/{runs.LOG_NAME}"]) + 1,
}
_A, _B = "20261128T011530-mobilenet_v2", "20261128T012000-mobilenet_v2"


def _promote_in_child(ws: Workspace, kill_at: int) -> subprocess.CompletedProcess:
    return crashkit.launch(ws.models_dir, kill_at, ["models", "promote", _B, "--models", str(ws.models_dir)])


def _two_runs_a_promoted(root: Path) -> Workspace:
    (root / "data").mkdir(parents=True)
    ws = Workspace(data_dir=(root / "data").resolve(), models_dir=(root / "models").resolve())
    assert _record(ws, _report([True, False]), model=b"model A").run_id == _A
    assert _record(ws, _report([True, False], created="2026-11-28T01:20:00+00:00"), model=b"model B",
                   policy="never").run_id == _B
    return ws


@pytest.mark.parametrize("point", list(PROMOTE_KILL_POINTS), ids=list(PROMOTE_KILL_POINTS))
def test_a_killed_promotion_leaves_log_pointer_and_files_agreeing(tmp_path: Path, capsys, point: str) -> None:
    """kill -9 at each step of `models promote`: the next use removes every staged file, and the promoted files,
    promoted.json and `models log` name the same run (the old one, or the new one with its log line)."""
    ref = _two_runs_a_promoted(tmp_path / "ref")
    proc = _promote_in_child(ref, 0)
    assert proc.returncode == 0, proc.stderr
    calls = crashkit.calls_of(proc)
    ws = _two_runs_a_promoted(tmp_path / "ws")
    proc = _promote_in_child(ws, PROMOTE_KILL_POINTS[point](calls) + 1)
    assert proc.returncode == -9, proc.stderr

    rc, out, err = _cli(capsys, ws, "models", "log")
    assert rc == 0, err
    assert [p.name for p in ws.models_dir.iterdir() if p.name.endswith(".tmp")] == []  # nothing staged is left
    promoted = runs.read_pointer(ws)["run_id"]
    committed = list(PROMOTE_KILL_POINTS).index(point) > list(PROMOTE_KILL_POINTS).index("writing-pointer")
    assert promoted == (_B if committed else _A)  # writing the pointer is the promotion's commit point
    assert [r["run_id"] for r in runs.promotion_log(ws)] == [_A] + ([_B] if promoted == _B else [])
    assert out.splitlines()[-1].split()[1] == promoted  # `models log` names it last
    model = {_A: b"model A", _B: b"model B"}[promoted]
    assert ws.export_path.read_bytes() == model and json.loads(ws.report_path.read_text())["run_id"] == promoted
    from smarthub.trust import written_by_smarthub

    assert written_by_smarthub(ws.export_path) is not None  # loads without --trust
    other = _A if promoted == _B else _B
    assert "promoted run" in runs.promote(ws, other)  # and the history goes on
    assert runs.promotion_log(ws)[-1]["run_id"] == runs.read_pointer(ws)["run_id"] == other


def test_a_promotion_whose_log_line_fails_is_kept_and_recorded_by_the_next_use(tmp_path: Path, monkeypatch,
                                                                               capsys) -> None:
    """Past the pointer a promotion is never undone: a full disk on its log line is one line, and the next use
    writes the line (once)."""
    ws = _two_runs_a_promoted(tmp_path)
    real_append = runs.append_jsonl

    def full_disk(path, records):
        if Path(path).name == runs.LOG_NAME:
            raise SmartHubError(f"cannot append to {path}: No space left on device")
        return real_append(path, records)

    monkeypatch.setattr(runs, "append_jsonl", full_disk)
    with pytest.raises(SmartHubError, match=rf"promoted run {_B}, but recording it failed \(cannot append .*No "
                                            rf"space left on device\); the next `smarthub models` finishes that"):
        runs.promote(ws, _B)
    monkeypatch.undo()
    assert runs.read_pointer(ws)["run_id"] == _B and ws.export_path.read_bytes() == b"model B"
    assert [r["run_id"] for r in runs.promotion_log(ws)] == [_A]
    rc, out, _ = _cli(capsys, ws, "models", "log")
    assert rc == 0 and [r["run_id"] for r in runs.promotion_log(ws)] == [_A, _B]
    assert runs.promotion_log(ws)[-1]["reason"] == "promoted by hand"  # the line it meant to write
    assert [p.name for p in ws.models_dir.iterdir() if p.name.endswith(".tmp")] == []
    runs.list_runs(ws)
    assert len(runs.promotion_log(ws)) == 2  # written once
