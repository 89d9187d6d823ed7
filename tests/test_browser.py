"""The real app in a real headless Chromium (Debian's, driven by Playwright): Clean and Annotate tabs.

Runs in CI (fails when Chromium is missing and $CI is set); skips locally without Chromium.
Screenshots go to tests/artifacts/ (git-ignored).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from helpers import free_port, make_image, served_app

from smarthub import fileops
from smarthub.workspace import Workspace

CHROMIUM = Path(os.environ.get("SMARTHUB_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TIMEOUT_MS = 180_000

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"Chromium not found at {CHROMIUM} (apt install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package is not installed")
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser test cannot run in CI: " + "; ".join(missing))
        pytest.skip("; ".join(missing))


_free_port = free_port  # test_browser_runs and friends import it from here


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, torch_home):
    """A small real workspace (3 classes × 6 images + a tiny detector checkpoint) served by the real app."""
    _require_browser()
    from smarthub.annotate import detect

    root = tmp_path_factory.mktemp("browser")
    ws = Workspace(root / "data", root / "models")
    colors = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fish": (40, 40, 200)}
    for c, (label, color) in enumerate(colors.items()):
        for i in range(6):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", size=(64, 48), color=color, pattern=c * 100 + i)
    # a red (cat-coloured) image filed under dog: the review predicts cat for it (key a accepts that)
    make_image(ws.data_dir / "dog" / "misfiled.jpg", size=(64, 48), color=colors["cat"], pattern=7)
    model = detect.build_torchvision_model("ssdlite320_mobilenet_v3_large", 3)
    detect.save_detector_checkpoint(ws.models_dir / "det.pt", model, arch="ssdlite320_mobilenet_v3_large",
                                    labels=["__background__", "cat", "dog"])
    with served_app(ws) as url:
        yield ws, url


@pytest.fixture(scope="module")
def page(served, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    home = tmp_path_factory.mktemp("chromium_home")  # Chromium writes its caches under $HOME, keep them out of ~
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    env={**os.environ, "HOME": str(home)})
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1100})
            pg.set_default_timeout(TIMEOUT_MS)
            pg.goto(served[1])
            yield pg
        finally:
            browser.close()


def _selected(page) -> str:
    return page.locator("#sh-selected textarea, #sh-selected input").first.input_value()


def _wait_status(page, text: str) -> str:
    status = page.locator("#sh-status")
    status.get_by_text(text).wait_for()
    return status.inner_text()


def _unfocus(page) -> None:
    """Move focus out of any text box so single-key shortcuts reach the page."""
    page.locator("#sh-page-text").click()


# Every animation frame while a review runs: the boxes of gradio's progress texts (the stage, the step counter)
# and its bar under 'Run review' when visible, and the pairs of them that intersect.
PROGRESS_SAMPLER = """() => {
  window.__shProgress = [];
  const seen = (el) => el.getBoundingClientRect().width > 0 && el.closest(".hide") === null
                       && getComputedStyle(el).visibility !== "hidden";
  const tick = () => {
    const root = document.querySelector("#sh-run-progress");
    const parts = root ? [...root.querySelectorAll(".progress-bar-wrap, .progress-text, .progress-level-inner")]
                         .filter((el) => seen(el) && (el.matches(".progress-bar-wrap") || el.innerText.trim())) : [];
    if (parts.some((el) => el.matches(".progress-bar-wrap")) && parts.length > 1) {
      const boxes = parts.map((el) => el.getBoundingClientRect());
      const overlaps = [];
      for (let i = 0; i < parts.length; i++) for (let j = i + 1; j < parts.length; j++) {
        const [a, b] = [boxes[i], boxes[j]];
        if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
          overlaps.push([parts[i].className.split(" ")[0] + " " + (parts[i].innerText || ""),
                         parts[j].className.split(" ")[0] + " " + (parts[j].innerText || "")]);
      }
      window.__shProgress.push({texts: parts.map((el) => el.innerText || "bar"), overlaps});
    }
    if (window.__shProgress.length < 5000) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def test_clean_tab_review_progress_shows_by_its_button(served, page) -> None:
    """The first review of the module (embeddings, image quality: seconds): its progress appears right under
    'Run review', inside the first screen, its texts clear of its bar in every frame; the embedder download says
    offline, with the fix, in its own line."""
    page.get_by_role("tab", name="Clean").click()
    page.evaluate(PROGRESS_SAMPLER)
    page.locator("#sh-run-review").click()
    shown = page.locator("#sh-run-progress .progress-text, #sh-run-progress .eta-bar")  # gradio's status tracker
    shown.first.wait_for(state="visible")
    button, progress = page.locator("#sh-run-review").bounding_box(), shown.first.bounding_box()
    assert progress is not None and button is not None
    assert 0 <= progress["y"] - (button["y"] + button["height"]) < 120  # directly below the button
    assert abs(progress["x"] - button["x"]) < 200 and progress["y"] + progress["height"] < 1100  # above the fold
    page.locator("#sh-run-progress .progress-bar-wrap").first.wait_for(state="visible")  # a stage with steps
    page.screenshot(path=str(ARTIFACTS / "clean_review_progress.png"))
    _wait_status(page, "label errors among")
    frames = page.evaluate("window.__shProgress")
    assert any(any("steps" in t for t in f["texts"]) for f in frames)  # the step counter was shown beside the bar
    assert [f["overlaps"] for f in frames if f["overlaps"]][:1] == []  # in no frame did text and bar overlap
    page.locator("#sh-download-embedder").click()
    note = page.locator("#sh-embedder-note")
    note.get_by_text("cannot download").wait_for()
    assert "this machine is offline" in note.inner_text() and "smarthub weights download" in note.inner_text()


def test_clean_tab_key_a_accepts_the_prediction(served, page) -> None:
    ws, _ = served
    page.get_by_role("tab", name="Clean").click()
    page.locator("#sh-show").get_by_label("all images").check()  # list every image, not only the estimated errors
    page.locator("#sh-run-review").click()
    page.locator("#sh-gallery img").first.wait_for()
    assert "label errors among 19 images" in _wait_status(page, "label errors among")
    page.locator("#sh-gallery button").filter(has_text="→").first.click()  # a suspect predicted as another class
    page.locator("#sh-detail").get_by_text("predicted").wait_for()
    selected = _selected(page)
    detail = page.locator("#sh-detail").inner_text()
    predicted = re.search(r"predicted (\S+)", detail).group(1)
    assert predicted != selected.split("/")[0] and "source: not recorded" in detail
    _unfocus(page)
    page.keyboard.press("a")
    _wait_status(page, "relabelled")
    name = selected.split("/")[1]
    assert not (ws.data_dir / selected).exists() and (ws.data_dir / predicted / name).is_file()
    assert fileops.history(ws)[-1].label == predicted


def test_clean_tab_new_class_asks_first(served, page) -> None:
    ws, _ = served
    target = _selected(page)
    new_label = page.locator("#sh-new-label textarea, #sh-new-label input").first
    new_label.fill("zebra")
    page.locator("#sh-relabel").click()
    box = page.locator("#sh-confirm")
    box.get_by_text("Create the new class").wait_for()
    assert "'zebra' is not a class yet" in _wait_status(page, "not a class yet")
    assert (ws.data_dir / target).is_file() and not (ws.data_dir / "zebra").exists()
    page.locator("#sh-confirm-cancel").click()
    _wait_status(page, "not created: 'zebra'")
    box.wait_for(state="hidden")
    assert (ws.data_dir / target).is_file() and not (ws.data_dir / "zebra").exists()
    assert new_label.input_value() == "zebra"  # kept, to be corrected
    new_label.fill("")


def test_clean_tab_relabel_delete_undo_in_the_browser(served, page) -> None:
    ws, _ = served
    page.get_by_role("tab", name="Clean").click()
    page.locator("#sh-show").get_by_label("all images").check()  # the tiny set has no estimated errors: list all
    page.locator("#sh-run-review").click()
    page.locator("#sh-gallery img").first.wait_for()
    assert "label errors among 19 images" in _wait_status(page, "label errors among")

    # relabel the selected image to a new class through the text box and the button
    first = _selected(page)
    assert first.count("/") == 1
    new_label = page.locator("#sh-new-label textarea, #sh-new-label input").first
    new_label.fill("bird")
    page.locator("#sh-relabel").click()
    page.locator("#sh-confirm-new").click()  # a new class: confirmed in the page
    _wait_status(page, "relabelled")
    assert new_label.input_value() == ""  # cleared in the same response, so the next typing is never raced
    name = first.split("/")[1]
    assert not (ws.data_dir / first).exists() and (ws.data_dir / "bird" / name).is_file()

    # an invalid label is a message in the page, nothing moves, the text stays to be corrected
    second = _selected(page)
    new_label.fill("../x")
    page.locator("#sh-relabel").click()
    _wait_status(page, "path separator")
    assert (ws.data_dir / second).is_file()
    assert new_label.input_value() == "../x"
    new_label.fill("")

    # delete with the keyboard shortcut "d"
    _unfocus(page)
    page.keyboard.press("d")
    _wait_status(page, "to the trash")
    assert not (ws.data_dir / second).exists() and list(ws.trash_dir.rglob(Path(second).name))

    # undo (button) restores the deleted image
    page.locator("#sh-undo").click()
    _wait_status(page, "undid delete")
    assert (ws.data_dir / second).is_file()
    assert "relabelled 2" in page.locator("#sh-counts").inner_text()  # the accepted prediction and bird
    assert "deleted 1" in page.locator("#sh-counts").inner_text()
    page.screenshot(path=str(ARTIFACTS / "clean.png"), full_page=True)

    ops = fileops.history(ws)[1:]  # after the accepted prediction
    assert [(op.kind, op.state) for op in ops] == [("relabel", "committed"), ("trash", "committed"),
                                                   ("undo", "committed")]
    assert ops[0].moves[0].src == first and ops[0].moves[0].dst == f"bird/{name}"
    assert ops[1].undone_by == ops[2].op_id


def test_clean_tab_second_window_gets_a_message(served, page) -> None:
    """Another window moves the selected image away: this page says so and loses nothing."""
    ws, _ = served
    target = _selected(page)
    fileops.relabel(ws, [ws.data_dir / target], "elsewhere")  # e.g. the CLI or a second browser tab
    page.locator("#sh-delete").click()
    _wait_status(page, "no longer exists")
    assert (ws.data_dir / "elsewhere" / Path(target).name).is_file()
    assert not list(ws.trash_dir.rglob(Path(target).name))


def test_annotate_tab_in_the_browser(served, page) -> None:
    ws, _ = served
    n_images = len(list((ws.data_dir / "fish").glob("*.jpg")))
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#sh-ann-folder textarea, #sh-ann-folder input").first.fill("fish")
    page.locator("#sh-ann-run").click()  # default detector: its COCO weights are not cached here
    page.locator("#sh-ann-status").get_by_text("COCO weights").wait_for()  # in the page, not a toast
    page.screenshot(path=str(ARTIFACTS / "annotate-error.png"))
    detector = page.locator("#sh-ann-detector input").first
    detector.fill(str(ws.models_dir / "det.pt"))
    detector.press("Enter")
    page.locator("#sh-ann-run").click()
    from playwright.sync_api import expect

    box = page.locator("#sh-ann-report textarea").first
    expect(box).to_have_value(re.compile("Labelme files in"), timeout=TIMEOUT_MS)
    report = box.input_value()
    assert f"{n_images} images, {n_images} Labelme files written" in report
    assert len(list((ws.data_dir / "fish").glob("*.json"))) == n_images
    page.locator("#sh-ann-zip").get_by_text(".zip").first.wait_for()
    assert page.locator("#sh-ann-status").inner_text().strip() == ""  # the success cleared the old problem
    page.screenshot(path=str(ARTIFACTS / "annotate.png"), full_page=True)


def test_an_error_stays_in_the_status_area(served, page) -> None:
    """Predict with nothing uploaded: the reason stays on the page (no vanishing toast) across tab switches."""
    page.get_by_role("tab", name="Predict").click()
    page.locator("#sh-predict").click()
    status = page.locator("#sh-predict-status")
    status.get_by_text("upload one or more images first").wait_for()
    assert page.get_by_test_id("toast-body").count() == 0
    page.get_by_role("tab", name="Clean").click()
    page.locator("#sh-run-review").wait_for()
    page.get_by_role("tab", name="Predict").click()
    assert "Problem: upload one or more images first" in status.inner_text()
    page.screenshot(path=str(ARTIFACTS / "predict-error.png"))


def test_annotate_tab_gallery_and_detector_upload_in_the_browser(served, page) -> None:
    """Upload a detector file (kept in models/), annotate, see every image drawn, open one large, see the counts."""
    from playwright.sync_api import expect

    ws, _ = served
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#sh-ann-upload input[type=file]").set_input_files(str(ws.models_dir / "det.pt"))
    detector = page.locator("#sh-ann-detector input").first
    expect(detector).to_have_value(re.compile(r"detectors/uploads/det(_\d+)?\.pt"), timeout=TIMEOUT_MS)
    assert (ws.models_dir / "detectors" / "uploads" / "det.pt").is_file()
    n_images = len(list((ws.data_dir / "dog").glob("*.jpg")))
    page.locator("#sh-ann-folder textarea, #sh-ann-folder input").first.fill("dog")
    page.locator("#sh-ann-run").click()
    thumbs = page.locator("#sh-ann-gallery img")
    expect(thumbs).to_have_count(n_images, timeout=TIMEOUT_MS)
    expect(page.locator("#sh-ann-counts")).to_contain_text("(no boxes)")
    expect(page.locator("#sh-ann-gallery")).to_contain_text("boxes")
    thumbs.first.click()  # opens the image large
    preview = page.locator("#sh-ann-gallery .preview img, #sh-ann-gallery [data-testid='detailed-image']").first
    preview.wait_for(timeout=TIMEOUT_MS)
    box = preview.bounding_box()
    assert box is not None and box["width"] > 200
    page.screenshot(path=str(ARTIFACTS / "annotate-gallery.png"), full_page=True)


def test_train_tab_stop_in_the_browser(served, page) -> None:
    """Train, then Stop while the first epochs run: the page says Stopped and no model is written."""
    ws, _ = served
    for folder in ("bird", "elsewhere"):  # the Clean tests left one-image classes: file them back (journaled)
        images = sorted((ws.data_dir / folder).glob("*.jpg"))
        if images:
            fileops.relabel(ws, images, "cat")
    page.get_by_role("tab", name="Train").click()
    arch = page.locator("#sh-train-arch input").first
    arch.fill("mobilenet_v2")
    arch.press("Enter")
    # 224 px: epochs long enough that Stop lands before early stopping (patience 2) could end the run
    for elem, value in (("#sh-train-epochs", "30"), ("#sh-train-size", "224")):
        box = page.locator(f"{elem} input[type=number]").first
        box.fill(value)
        box.press("Enter")
    # the head already solves these images: "fine-tune only while it pays" would skip the epochs to stop
    page.locator("#sh-train-pays input[type=checkbox]").uncheck()
    page.locator("#sh-train").click()
    page.get_by_text(re.compile(r"epoch \d+/\d+ batch")).first.wait_for()  # gradio's progress line
    page.locator("#sh-train-stop").click()
    page.get_by_test_id("toast-body").filter(has_text="stopping after the current batch").first.wait_for()
    summary = page.locator("#sh-train-summary")
    summary.get_by_text("Stopped:").wait_for()
    assert "nothing was written, the previous model is unchanged" in summary.inner_text()
    page.screenshot(path=str(ARTIFACTS / "train-stopped.png"), full_page=True)
    assert not ws.export_path.exists()
