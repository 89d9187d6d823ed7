"""Promotions as facts (model/promotion.py): the run in use, the one before, whether anything changed, a new run's
comparison, typed; each shell phrases its own next step from them."""
from __future__ import annotations

from pathlib import Path

import pytest

from smarthub.cli import main
from smarthub.errors import ModelError
from smarthub.model import promotion, runs
from smarthub.workspace import Workspace


def _report(correct: list[bool], created: str) -> dict:
    images = [{"sha256": f"h{i}", "path": f"a/h{i}.png", "label": "a", "predicted": "a" if ok else "b"}
              for i, ok in enumerate(correct)]
    return {"arch": "mobilenet_v2", "size_px": 64, "created_at": created, "n_valid": len(correct),
            "valid_accuracy": sum(correct) / len(correct), "valid_images": images, "history": [], "options": {}}


def _record(ws: Workspace, correct: list[bool], created: str, model: bytes, policy: str = "if-better"
            ) -> runs.RunOutcome:
    return runs.record_run(ws, _report(correct, created), save_export=lambda p: Path(p).write_bytes(model),
                           history_csv="epoch\n", confusion_png=b"\x89PNG fake", policy=policy)


def test_promote_returns_the_run_in_use_and_the_one_undo_goes_back_to(ws: Workspace, capsys) -> None:
    a = _record(ws, [True, False], "2026-11-28T01:00:00+00:00", b"A").run_id
    b = _record(ws, [True, True], "2026-11-28T01:10:00+00:00", b"B").run_id
    assert promotion.promote(ws, runs.PREVIOUS) == promotion.Promotion(run_id=a, previous=b, changed=True,
                                                                        export_path=ws.export_path)
    assert ws.export_path.read_bytes() == b"A"
    assert promotion.promote(ws, a) == promotion.Promotion(run_id=a, previous=b, changed=False,
                                                            export_path=ws.export_path)
    again = promotion.promote(ws, b)
    assert (again.run_id, again.previous, again.changed) == (b, a, True) and ws.export_path.read_bytes() == b"B"
    with pytest.raises(ModelError, match="no run .*20990101T000000-gone"):
        promotion.promote(ws, "20990101T000000-gone")
    # the CLI phrases the same facts with its own command
    assert main(["models", "--models", str(ws.models_dir), "promote", a]) == 0
    assert capsys.readouterr().out.strip() == (f"promoted run {a} to {ws.export_path}; undo with "
                                               f"`smarthub models promote {b}`")


def test_the_first_promotion_has_nothing_to_go_back_to(ws: Workspace) -> None:
    a = _record(ws, [True, False], "2026-11-28T01:00:00+00:00", b"A", policy="never").run_id
    assert not ws.export_path.exists()
    assert promotion.promote(ws, a) == promotion.Promotion(run_id=a, previous=None, changed=True,
                                                            export_path=ws.export_path)


@pytest.mark.parametrize("policy, current, new, promoted", [
    ("if-better", [True, True, False, False], [True, True, True, False], True),
    ("if-better", [True, True, True, False], [True, False, False, False], False),
    ("never", [True, False, False, False], [True, True, True, True], False),
], ids=["better", "worse-kept", "never"])
def test_a_reports_promotion_entry_reads_back_typed(ws: Workspace, policy: str, current: list[bool],
                                                    new: list[bool], promoted: bool) -> None:
    first = _record(ws, current, "2026-11-28T01:00:00+00:00", b"current")
    outcome = _record(ws, new, "2026-11-28T01:10:00+00:00", b"new", policy=policy)
    typed = promotion.outcome_of(outcome.to_dict())  # what report.json holds under "promotion"
    assert typed == outcome and typed.promoted is promoted and typed.previous == first.run_id
    said = promotion.figures(typed)
    assert said and said in outcome.message  # the same figures the CLI's line carries, without its next step
    assert "smarthub" not in said and "--" not in said
    assert promotion.outcome_of(None) is None and promotion.outcome_of({}) is None
