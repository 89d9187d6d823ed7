"""The Train tab's model history in a real headless Chromium: train twice, the second run is kept beside the
promoted one, the Promote button switches to it and Undo switches back."""
from __future__ import annotations

import os

import pytest

from helpers import make_image
from test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, _free_port, _require_browser

from smarthub.model import runs
from smarthub.workspace import Workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _set_number(page, elem: str, value: str) -> None:
    box = page.locator(f"{elem} input[type=number]").first
    box.fill(value)
    box.press("Enter")


def test_train_twice_then_promote_and_undo_in_the_browser(tmp_path, torch_home) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    from smarthub.ui import launch

    ws = Workspace(tmp_path / "data", tmp_path / "models")
    for c, (label, color) in enumerate({"cat": (200, 40, 40), "dog": (40, 200, 40)}.items()):
        for i in range(6):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", color=color, pattern=c * 100 + i)
    port = _free_port()
    app = launch(ws, port=port, prevent_thread_lock=True, quiet=True, selected_tab="Train")
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                        env={**os.environ, "HOME": str(tmp_path / "chromium_home")})
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"http://127.0.0.1:{port}/")
                arch = page.locator("#sh-train-arch input").first
                arch.fill("mobilenet_v2")
                arch.press("Enter")
                _set_number(page, "#sh-train-epochs", "1")
                _set_number(page, "#sh-train-size", "32")
                summary = page.locator("#sh-train-summary")

                page.locator("#sh-train").click()
                summary.get_by_text("there was no promoted model").wait_for()
                first = runs.read_pointer(ws)["run_id"]

                page.locator("#sh-train-promote").get_by_text("never").click()
                page.locator("#sh-train").click()
                summary.get_by_text("Kept, not promoted").wait_for()
                second = max(i.run_id for i in runs.list_runs(ws))
                assert second != first and runs.read_pointer(ws)["run_id"] == first
                page.wait_for_function("id => document.querySelector('#sh-train-history').innerText.includes(id)",
                                       arg=second)
                # the kept run's row: its own accuracy, and both models' on the validation images they share
                assert " vs " in page.locator("#sh-train-history").inner_text()

                page.locator("#sh-train-run input").first.click()
                page.get_by_role("option", name=second).click()
                page.locator("#sh-train-promote-run").click()
                status = page.locator("#sh-train-history-status")
                status.get_by_text(f"promoted run {second}").wait_for()
                assert ws.export_path.read_bytes() == (ws.runs_dir / second / "export.pkl").read_bytes()
                summary.get_by_text(f"(run {second})").wait_for()
                page.screenshot(path=str(ARTIFACTS / "train-history.png"), full_page=True)

                page.locator("#sh-train-undo").click()
                status.get_by_text(f"promoted run {first}").wait_for()
                assert runs.read_pointer(ws)["run_id"] == first
                assert ws.export_path.read_bytes() == (ws.runs_dir / first / "export.pkl").read_bytes()
            finally:
                browser.close()
    finally:
        app.close()
