"""The Annotate tab's live threshold in a real headless Chromium: the detector runs once, sliders show and hide
boxes in the gallery, the Labelme files are written at the chosen thresholds on request."""
from __future__ import annotations

import re

import pytest
from helpers import served_app
from test_browser import ARTIFACTS, TIMEOUT_MS, _require_browser
from test_browser import page  # noqa: F401 (the Chromium page fixture, on this module's `served`)
from test_ui_annotate import boxes_in_files, make_batch, make_run

from smarthub.workspace import Workspace

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, torch_home):
    """A workspace with a tuned detector run (ImageNet backbone, untrained head) and a batch, served by the app."""
    _require_browser()

    root = tmp_path_factory.mktemp("browser-annotate")
    ws = Workspace(root / "data", root / "models")
    make_batch(ws.data_dir / "cat", n=2)  # one class folder, so the workspace is a workspace
    make_run(ws.models_dir)
    make_batch(ws.batches_dir / "batch1", n=4)
    with served_app(ws) as url:
        yield ws, url


SHOWN = re.compile(r"(\d+) boxes shown at threshold ([0-9.]+)")


def shown(page) -> tuple[int, str]:
    m = SHOWN.search(page.locator("#sh-ann-shown").inner_text())
    assert m, page.locator("#sh-ann-shown").inner_text()
    return int(m.group(1)), m.group(2)


def gallery_boxes(page) -> int:
    """The sum of the box counts in the gallery captions ('img0.jpg: 3 boxes')."""
    return sum(int(n) for n in re.findall(r"(\d+) box", page.locator("#sh-ann-gallery").inner_text()))


def wait_gallery_boxes(page, n: int) -> None:
    """Wait (on DOM changes, no sleeps) until the gallery captions add up to n boxes."""
    page.wait_for_function("""n => {
        const text = document.querySelector('#sh-ann-gallery').innerText;
        return [...text.matchAll(/(\\d+) box/g)].reduce((a, m) => a + Number(m[1]), 0) === n;
    }""", arg=n, timeout=TIMEOUT_MS)


def move(page, elem_id: str, value: str, until: str) -> None:
    """Type a value into a slider's number box and leave it (the slider's release event); wait for the note."""
    from playwright.sync_api import expect

    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Tab")
    expect(page.locator("#sh-ann-shown")).to_contain_text(until, timeout=TIMEOUT_MS)


def test_live_threshold_moves_boxes_without_the_detector(served, page) -> None:
    from playwright.sync_api import expect

    from smarthub.annotate.scored import scored_path

    ws, _ = served
    batch = ws.batches_dir / "batch1"
    page.get_by_role("tab", name="Annotate").click()
    expect(page.locator("#sh-ann-folder")).to_contain_text(str(ws.batches_dir))  # the app says where batches live
    page.locator("#sh-ann-folder textarea, #sh-ann-folder input").first.fill("batch1")
    detector = page.locator("#sh-ann-detector input").first
    detector.fill("detectors/r1")
    detector.press("Enter")
    page.locator("#sh-ann-run").click()
    expect(page.locator("#sh-ann-shown")).to_contain_text("boxes shown at threshold", timeout=TIMEOUT_MS)
    expect(page.locator("#sh-ann-gallery img")).to_have_count(4)
    sidecar = scored_path(batch).stat().st_mtime_ns
    written = boxes_in_files(batch)
    n0, at0 = shown(page)
    assert n0 == written == gallery_boxes(page) and at0 == "0.25", page.locator("#sh-ann-shown").inner_text()
    expect(page.locator("#sh-ann-class-0")).to_contain_text("threshold: cat")  # the run's tuned thresholds
    expect(page.locator("#sh-ann-class-1")).to_contain_text("threshold: dog")

    move(page, "sh-ann-class-1", "0.95", "dog 0.95")  # dog boxes hide at once
    n1, _ = shown(page)
    expect(page.locator("#sh-ann-shown")).to_contain_text("the Labelme files are still at")
    assert n1 < n0, page.locator("#sh-ann-shown").inner_text()
    wait_gallery_boxes(page, n1)
    page.locator("#sh-ann-per-class input").uncheck()  # the global threshold for every class
    expect(page.locator("#sh-ann-shown")).to_contain_text("shown at threshold 0.25;", timeout=TIMEOUT_MS)
    move(page, "sh-ann-conf", "0.06", "shown at threshold 0.06;")  # ... down near the floor: many more boxes
    n2, at2 = shown(page)
    assert at2 == "0.06" and n2 > n0
    wait_gallery_boxes(page, n2)
    assert scored_path(batch).stat().st_mtime_ns == sidecar and boxes_in_files(batch) == written  # no rerun
    page.screenshot(path=str(ARTIFACTS / "annotate-live-threshold.png"), full_page=True)

    page.locator("#sh-ann-write").click()
    expect(page.locator("#sh-ann-report textarea").first).to_have_value(re.compile("Labelme files rewritten"),
                                                                        timeout=TIMEOUT_MS)
    expect(page.locator("#sh-ann-shown")).to_contain_text("the Labelme files hold these boxes")
    assert boxes_in_files(batch) == n2 and scored_path(batch).stat().st_mtime_ns == sidecar
    page.locator("#sh-ann-zip").get_by_text(".zip").first.wait_for()
