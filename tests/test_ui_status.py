"""The app's status areas: core messages reworded for the page; the tab shown first."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from helpers import make_image  # noqa: E402

from smarthub.ui import build_app  # noqa: E402
from smarthub.ui import tab_clean, tab_train  # noqa: E402
from smarthub.clean.options import ReviewOptions  # noqa: E402
from smarthub.errors import ModelError, OptionError, SmartHubError  # noqa: E402
from smarthub.model.options import TrainOptions  # noqa: E402
from smarthub.ui._common import app_message  # noqa: E402
from smarthub.ui.app import has_images  # noqa: E402
from smarthub.ui.tab_clean import CleanState  # noqa: E402
from smarthub.workspace import Workspace  # noqa: E402


@pytest.mark.parametrize("error,labels,expected", [
    (OptionError("{folds} must be between 2 and 20 (got 1)", field="folds", owner=ReviewOptions), tab_clean.LABELS,
     "'folds' must be between 2 and 20 (got 1)"),
    (OptionError("{head_only} needs a pretrained body: drop {pretrained}", field="head_only", owner=TrainOptions),
     tab_train.LABELS, "'head only' needs a pretrained body: drop 'start from ImageNet weights'"),
    (ModelError("no model at m/export.pkl: run {train} first"), {},
     "no model at m/export.pkl: run the Train tab first"),
    (SmartHubError("a {folds} that is not an option's place stays"), tab_clean.LABELS,
     "a {folds} that is not an option's place stays"),
], ids=["option", "two-options", "job", "plain-error-untouched"])
def test_core_errors_name_the_control_and_the_tab(error, labels, expected) -> None:
    assert app_message(error, labels) == expected


def test_the_command_line_names_the_flag_and_the_command() -> None:
    assert str(OptionError("{folds} must be between 2 and 20 (got 1)", field="folds", owner=ReviewOptions)) == \
        "--folds must be between 2 and 20 (got 1)"
    assert str(OptionError("drop {pretrained}", field="pretrained", owner=TrainOptions)) == "drop --no-pretrained"
    assert str(ModelError("no model: run {train} first")) == "no model: run `smarthub train` first"


def test_a_failed_review_stays_in_the_status_area(small_ws: Workspace) -> None:
    with pytest.raises(gr.Error) as caught:
        tab_clean.run_review(small_ws, CleanState(), "fast", 0.6, 1)
    view = tab_clean.page_error(small_ws, CleanState(), caught.value)
    assert view.status == "**Problem:** 'folds' must be between 2 and 20 (got 1)"


def _first_tab(app) -> str:
    tabs = next(b for b in app.blocks.values() if isinstance(b, gr.Tabs))
    return tabs.selected


def test_the_app_opens_on_bootstrap_while_the_workspace_is_empty(ws: Workspace) -> None:
    (ws.data_dir / "cat").mkdir()
    (ws.data_dir / ".smarthub").mkdir()
    make_image(ws.data_dir / ".smarthub" / "trash" / "x.jpg")  # bookkeeping is not data
    assert not has_images(ws) and _first_tab(build_app(ws)) == "Bootstrap"
    make_image(ws.data_dir / "cat" / "1.jpg")
    assert has_images(ws) and _first_tab(build_app(ws)) == "Clean"
    assert _first_tab(build_app(ws, selected_tab="Train")) == "Train"
