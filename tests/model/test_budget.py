"""Time budgets: durations a person types, the epoch planner (a pure function, a table of cases), budgets too
short for the head or not above zero (one line, the promoted model unchanged), and a real tiny budgeted run."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.durations import DurationError, format_duration, parse_duration
from smarthub.errors import SmartHubError
from smarthub.model.stopping import BudgetError, check_head_fits, plan_epochs
from smarthub.workspace import Workspace


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("1h30m", 5400.0), ("2m 30s", 150.0), ("1.5h", 5400.0),
    ("2.5 min", 150.0), (" 10 ", 10.0), ("45 seconds", 45.0), (45, 45.0), (0.5, 0.5),
], ids=["bare-number", "seconds", "minutes", "hours-minutes", "spaced", "decimal-hours", "min-word", "padded",
        "seconds-word", "int", "float"])
def test_parse_duration_reads_what_people_type(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("0", r"^budget must be above zero \(got '0'\)"),
    ("-5m", r"^budget must be above zero \(got '-5m'\)"),
    (0, r"^budget must be above zero \(got 0\)"),
    (-3, r"^budget must be above zero \(got -3\)"),
    (float("inf"), r"^budget must be above zero"),
    ("abc", r"^budget must be a duration such as 90s, 5m or 1h30m \(got 'abc'\)"),
    ("5x", r"^budget must be a duration such as 90s, 5m or 1h30m \(got '5x'\)"),
    ("", r"^budget must be a duration"),
    ("1h-2m", r"^budget must be a duration"),
    (True, r"^budget must be a duration"),
], ids=["zero", "negative", "zero-int", "negative-int", "infinite", "word", "unknown-unit", "empty",
        "minus-inside", "bool"])
def test_parse_duration_refuses_bad_input_naming_the_field(text, message) -> None:
    with pytest.raises(DurationError, match=message) as info:
        parse_duration(text)
    assert info.value.field == "budget"


def test_format_duration() -> None:
    assert [format_duration(s) for s in (4.6, 125, 3725)] == ["5 s", "2 min 05 s", "1 h 02 min"]


# (budget, elapsed, step_s, steps/epoch, valid_s, finish_s, max_epochs) → planned epochs, reason pattern
PLANS = [
    ((600, 20, 0.5, 10, 1.0, 3, 6), 6, r"all 6 fine-tuning epochs fit"),
    ((60, 20, 0.5, 10, 1.0, 3, 6), 6, r"all 6"),  # 37 s left, 6 s an epoch: exactly 6
    ((50, 20, 0.5, 10, 1.0, 3, 6), 4, r"4 of 6 fine-tuning epochs fit in the budget \(about 6 s each here\)"),
    ((30, 20, 0.5, 10, 1.0, 3, 6), 1, r"1 of 6"),
    ((28, 20, 0.5, 10, 1.0, 3, 6), 0, r"the budget leaves 5 s, less than one fine-tuning epoch \(about 6 s here\): "
                                      r"kept the head"),
    ((20, 20, 0.5, 10, 1.0, 3, 6), 0, r"the budget leaves 0 s"),
    ((10, 20, 0.5, 10, 1.0, 3, 6), 0, r"the budget leaves 0 s"),  # already over: never negative
    ((1000, 0, 0.1, 100, 0.0, 0, 2), 2, r"all 2"),
]


@pytest.mark.parametrize(("args", "epochs", "reason"), PLANS, ids=[
    "plenty", "exactly-all", "some", "one", "none-left", "spent", "overrun", "capped-at-max"])
def test_plan_epochs(args, epochs, reason) -> None:
    budget, elapsed, step_s, steps, valid_s, finish_s, max_epochs = args
    plan = plan_epochs(budget_s=budget, elapsed_s=elapsed, step_s=step_s, steps_per_epoch=steps, valid_s=valid_s,
                       finish_s=finish_s, max_epochs=max_epochs)
    assert plan.epochs == epochs
    assert re.search(reason, plan.reason), plan.reason
    assert plan.epochs * plan.epoch_s <= max(plan.left_s, 0) + 1e-9  # what is planned fits


@pytest.mark.parametrize(("budget", "head_s", "finish_s", "minimum"), [
    (10, 30.2, 3, 34), (33, 30.0, 3.5, 34), (0.5, 0.4, 3, 4),
], ids=["far-too-short", "just-short", "tiny"])
def test_a_budget_too_short_for_the_head_says_the_minimum(budget, head_s, finish_s, minimum) -> None:
    with pytest.raises(BudgetError, match=rf"^a budget of {budget:g} s is too short: the head alone needs about "
                                          rf"{minimum} s here .*give at least {minimum} s") as info:
        check_head_fits(budget_s=budget, head_s=head_s, finish_s=finish_s)
    assert info.value.minimum_s == minimum
    check_head_fits(budget_s=minimum, head_s=head_s, finish_s=finish_s)  # the minimum is enough


def _fashion(root: Path, per_class: int = 8) -> Workspace:
    ws = Workspace(root / "data", root / "models")
    write_fashion_folders(ws.data_dir, per_class=per_class, classes=("trouser", "bag", "sneaker"), size_px=28)
    return ws


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory, torch_home: Path) -> Workspace:
    """A workspace with a promoted head-only model (seconds)."""
    ws = _fashion(tmp_path_factory.mktemp("budget"))
    assert main(["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--size", "32",
                 "--batch-size", "8", "--head-only"]) == 0
    return ws


@pytest.mark.parametrize(("budget", "message"), [
    ("0", r"--budget must be above zero \(got '0'\)"),
    ("-2m", r"--budget must be above zero \(got '-2m'\)"),
    ("soon", r"--budget must be a duration such as 90s, 5m or 1h30m \(got 'soon'\)"),
    ("0.001s", r"a budget of 0.001 s is too short: the head alone needs about \d+ s here .*give at least \d+ s.*"
               r"the previous model is unchanged"),
], ids=["zero", "negative", "not-a-duration", "shorter-than-the-head"])
def test_bad_budgets_are_one_line_and_keep_the_promoted_model(promoted: Workspace, capsys, budget, message) -> None:
    ws = promoted
    capsys.readouterr()
    before = {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()}
    rc = main(["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--size", "32", "--batch-size",
               "8", f"--budget={budget}"])  # = : a negative value is not a flag
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert re.search(message, errors[0]), errors[0]
    assert {p.relative_to(ws.models_dir): p.read_bytes() for p in ws.models_dir.rglob("*") if p.is_file()} == before


def test_train_options_refuse_a_budget_not_above_zero() -> None:
    from smarthub.model.options import TrainOptions

    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(SmartHubError, match=r"^--budget must be above zero"):
            TrainOptions(budget_s=bad)


def test_a_budgeted_run_plans_from_its_first_steps_and_ends_in_the_plan(tmp_path: Path, torch_home: Path) -> None:
    """A real tiny run with a generous budget: the probe's timing gives a plan, recorded in report.json, the run
    keeps to it, and the model kept is the best one seen (the head counts)."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = _fashion(tmp_path)
    events: list = []
    result = train(ws, TrainOptions(size_px=32, batch_size=8, epochs=2, budget_s=3600.0, probe=False),
                   progress=events.append)
    report = result.report
    plan = report["budget_plan"]
    assert report["budget_s"] == 3600.0 and plan["epochs"] == 2 and plan["epoch_s"] > 0
    assert plan["reason"].startswith("all 2 fine-tuning epochs fit in the budget")
    assert report["probe"]["steps"] >= 1 and report["probe"]["step_s"] > 0
    assert report["epochs_run"] <= plan["epochs"]
    accuracies = [h["accuracy"] for h in report["history"]]
    assert report["valid_accuracy"] == pytest.approx(accuracies[report["best_epoch"]], abs=1e-4)
    notes = [p.metrics["message"] for p in events if p.stage == "note"]
    assert notes and notes[-1].startswith("all 2 fine-tuning epochs fit")


@pytest.mark.parametrize(("budget", "message"), [
    ("0", r"'time budget' must be above zero \(got '0'\)"),
    ("later", r"'time budget' must be a duration such as 90s, 5m or 1h30m \(got 'later'\)"),
], ids=["zero", "word"])
def test_the_apps_budget_box_refuses_bad_budgets_in_its_own_words(promoted: Workspace, budget, message) -> None:
    import gradio as gr

    from smarthub.ui import tab_train

    before = {p.relative_to(promoted.models_dir): p.read_bytes() for p in promoted.models_dir.rglob("*") if p.is_file()}
    with pytest.raises(gr.Error, match=message):
        tab_train.run_train(promoted, "mobilenet_v2", 1, 32, True, budget=budget)
    after = {p.relative_to(promoted.models_dir): p.read_bytes() for p in promoted.models_dir.rglob("*") if p.is_file()}
    assert after == before
