"""App start-up: time from launching the process to its first HTTP 200, smarthub's app vs a bare Gradio app.

Both are launched the same way, as a subprocess on a free loopback port, and polled (GET /, every 20 ms)
until they answer 200:
- baseline: a bare `gr.Blocks()` with one Markdown, launched like smarthub launches (queue, quiet);
- smarthub: `python app.py --port P --data D --models M` on a small workspace (3 classes of real images,
  a promoted run and a kept one in models/runs/), i.e. every tab built, the run history listed.
Runs alternate (baseline, smarthub, baseline, ...) so machine load hits both alike; the median of each is
compared. Target: smarthub / baseline <= 1.5.

    python bench/startup.py            # 5 launches of each
    python bench/startup.py --runs 3
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BARE_APP = """
import sys
import gradio as gr
with gr.Blocks(title="bare", analytics_enabled=False) as app:
    gr.Markdown("bare")
app.queue(default_concurrency_limit=1)
app.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True, ssr_mode=False, share=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_200(argv: list[str], port: int, env: dict[str, str], *, timeout_s: float = 300.0) -> float:
    """Seconds from Popen to the first 200 on http://127.0.0.1:port/ (the process is stopped afterwards)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                with opener.open(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass  # not listening yet
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"no HTTP 200 from {argv[:3]} within {timeout_s:.0f} s")
            time.sleep(0.02)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def build_workspace(root: Path):
    """3 classes x 6 real (drawn) images and two recorded runs, without training (fake model bytes)."""
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # this checkout's smarthub, as the launched apps use
    from helpers import make_image

    from smarthub.model import runs
    from smarthub.workspace import Workspace

    ws = Workspace(root / "data", root / "models")
    for c, label in enumerate(("cat", "dog", "fish")):
        for i in range(6):
            make_image(ws.data_dir / label / f"{label}{i}.jpg", pattern=c * 100 + i)
    for minute, correct in ((0, [True, True, False]), (10, [True, False, False])):
        report = {"arch": "mobilenet_v2", "size_px": 64, "created_at": f"2026-11-28T01:{minute:02d}:00+00:00",
                  "n_valid": 3, "valid_accuracy": sum(correct) / 3, "vocab": ["cat", "dog", "fish"],
                  "valid_images": [{"sha256": f"h{i}", "path": "", "label": "cat", "predicted": "cat" if ok else "dog"}
                                   for i, ok in enumerate(correct)]}
        runs.record_run(ws, report, save_export=lambda p: Path(p).write_bytes(b"model"), history_csv="epoch\n",
                        confusion_png=b"png")
    return ws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="launches of each app (default 5)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="smarthub-startup-"))
    ws = build_workspace(root)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(REPO),
           "GRADIO_TEMP_DIR": str(root / "gradio"), "MPLCONFIGDIR": str(root / "mpl")}
    bare, smarthub = [], []
    for i in range(args.runs):
        port = free_port()
        bare.append(time_to_200([sys.executable, "-c", BARE_APP, str(port)], port, env))
        port = free_port()
        smarthub.append(time_to_200([sys.executable, str(REPO / "app.py"), "--port", str(port), "--data",
                                     str(ws.data_dir), "--models", str(ws.models_dir)], port, env))
        print(f"run {i + 1}: bare gradio {bare[-1]:.2f} s, smarthub app {smarthub[-1]:.2f} s", flush=True)
    b, s = statistics.median(bare), statistics.median(smarthub)
    print(f"median time to first HTTP 200: bare gradio Blocks {b:.2f} s, smarthub app {s:.2f} s")
    print(f"ratio smarthub / bare: {s / b:.2f}x (target <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
