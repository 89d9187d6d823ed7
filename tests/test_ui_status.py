"""The app's status areas: core messages reworded for the page; the tab shown first."""
from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from helpers import make_image  # noqa: E402

from smarthub.ui import build_app  # noqa: E402
from smarthub.ui import tab_clean, tab_train  # noqa: E402
from smarthub.ui._common import for_the_app  # noqa: E402
from smarthub.ui.app import has_images  # noqa: E402
from smarthub.ui.tab_clean import CleanState  # noqa: E402
from smarthub.workspace import Workspace  # noqa: E402


@pytest.mark.parametrize("message,controls,expected", [
    ("--folds must be between 2 and 20, got 1", tab_clean.CONTROLS,
     "the 'folds' slider must be between 2 and 20, got 1"),
    ("weights not cached: copy the file, or use --arch mobilenet_v2", tab_train.CONTROLS,
     "weights not cached: copy the file, or use 'architecture' = mobilenet_v2"),
    ("or train without them (--no-pretrained)", tab_train.CONTROLS,
     "or train without them ('start from ImageNet weights' unticked)"),
    ("no model at m/export.pkl: run `smarthub train` first", {}, "no model at m/export.pkl: run the Train tab first"),
    ("--foldsx is not ours", tab_clean.CONTROLS, "--foldsx is not ours"),
], ids=["flag", "flag-with-value", "flag-in-parentheses", "command", "longer-flag-untouched"])
def test_core_messages_name_the_control_not_the_flag(message, controls, expected) -> None:
    assert for_the_app(message, controls) == expected


def test_a_failed_review_stays_in_the_status_area(small_ws: Workspace) -> None:
    with pytest.raises(gr.Error) as caught:
        tab_clean.run_review(small_ws, CleanState(), "fast", 0.6, 1)
    view = tab_clean.page_error(small_ws, CleanState(), caught.value)
    assert view.status == "**Problem:** the 'folds' slider must be between 2 and 20, got 1"


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
