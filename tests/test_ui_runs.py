"""The Train tab's model history and promote button (handlers called directly), one progress display per
job, and the app's start-up: the first page is served without importing torch or fastai."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from helpers import make_image  # noqa: E402

from smarthub.model import runs  # noqa: E402
from smarthub.ui import tab_train  # noqa: E402
from smarthub.workspace import Workspace  # noqa: E402


def _report(correct: list[bool], created: str) -> dict:
    images = [{"sha256": f"h{i}", "path": f"cat/h{i}.jpg", "label": "cat", "predicted": "cat" if ok else "dog"}
              for i, ok in enumerate(correct)]
    return {"arch": "mobilenet_v2", "size_px": 64, "created_at": created, "n_valid": len(correct),
            "valid_accuracy": sum(correct) / len(correct), "valid_images": images, "vocab": ["cat", "dog"],
            "per_class": {}, "history": [], "options": {}}


def _record(ws: Workspace, correct: list[bool], created: str, model: bytes) -> runs.RunOutcome:
    return runs.record_run(ws, _report(correct, created), save_export=lambda p: Path(p).write_bytes(model),
                           history_csv="epoch\n", confusion_png=b"png", policy="if-better")


def test_train_tab_history_and_promote_button(small_ws: Workspace) -> None:
    ws = small_ws
    good = _record(ws, [True, True, True, False], "2026-11-28T01:00:00+00:00", b"good").run_id
    worse = _record(ws, [True, False, False, False], "2026-11-28T01:10:00+00:00", b"worse")
    assert not worse.promoted
    summary, _, _ = tab_train.report_views(ws, {**_report([True], "x"), "run_id": worse.run_id,
                                                "promotion": worse.to_dict()})
    assert summary.startswith("**Kept, not promoted:** kept run") and "0.250 (new) vs 0.750" in summary
    assert f"`{worse.run_dir}` (not in use)" in summary
    # the next step in the page's words (its Promote button), not the CLI's command
    assert "press **Promote** to use it anyway" in summary and "smarthub models" not in summary

    rows, choices = tab_train.history_views(ws)
    assert [r[0] for r in rows] == [worse.run_id, good] == choices  # newest first
    assert rows[0][4:] == [0.25, "0.250 vs 0.750 on 4", ""] and rows[1][4:] == [0.75, "", "yes"]

    status = tab_train.promote_run(ws, worse.run_id)
    assert status.startswith(f"**Done:** promoted run {worse.run_id}") and ws.export_path.read_bytes() == b"worse"
    assert status.endswith(f"**Undo last promotion** goes back to run {good}") and "smarthub models" not in status
    assert f"(run {worse.run_id})" in tab_train.show_current(ws)[0]
    assert [r[6] for r in tab_train.history_views(ws)[0]] == ["yes", ""]
    tab_train.promote_run(ws, runs.PREVIOUS)  # the Undo button
    assert ws.export_path.read_bytes() == b"good"

    for run_id, message in ((None, "choose a run"), ("20990101T000000-gone", "no run .*20990101T000000-gone.* in .*deleted by hand")):
        with pytest.raises(gr.Error, match=message):
            tab_train.promote_run(ws, run_id)
    assert ws.export_path.read_bytes() == b"good"
    (ws.runs_dir / worse.run_id / "report.json").write_text("{ broken")
    rows, choices = tab_train.history_views(ws)
    assert rows[0][5].startswith("broken: run report") and choices == [good]
    with pytest.raises(gr.Error, match=f"run {worse.run_id} is broken"):
        tab_train.promote_run(ws, worse.run_id)
    assert ws.export_path.read_bytes() == b"good"


def test_each_job_shows_one_progress_display(small_ws: Workspace) -> None:
    from smarthub.ui import build_app

    config = build_app(small_ws).get_config_file()
    elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
    by_trigger = {elem[d["targets"][0][0]]: d for d in config["dependencies"]
                  if d["targets"] and d["targets"][0][0] is not None}  # `.then` steps have no component target
    for button, shown_on in (("sh-train", "sh-train-summary"), ("sh-run-review", "sh-run-progress"),
                             ("sh-predict", "sh-predict-label"), ("sh-ann-run", "sh-ann-report"),
                             ("sh-train-promote-run", "sh-train-history-status")):
        dep = by_trigger[button]
        assert len(dep["outputs"]) > 1
        assert [elem[i] for i in dep["show_progress_on"]] == [shown_on], button


# ---------------------------------------------------------------------------------------------------------
# Start-up

_SERVE_AND_REPORT = r"""
import json, os, sys, threading, time, urllib.request
from smarthub.cli import main

port, data, models = sys.argv[1:4]
threading.Thread(target=main, args=(["app", "--port", port, "--data", data, "--models", models],),
                 daemon=True).start()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
deadline = time.monotonic() + 240
while True:
    try:
        with opener.open(f"http://127.0.0.1:{port}/", timeout=10) as response:
            status = response.status
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
heavy = [m for m in ("torch", "torchvision", "fastai", "timm", "cleanlab", "ultralytics") if m in sys.modules]
print(json.dumps({"status": status, "heavy": heavy}), flush=True)
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_app_serves_its_first_page_without_torch_or_fastai(small_ws: Workspace, tmp_path: Path) -> None:
    """`smarthub app` on a workspace with images, a promoted run and a kept one: the first GET / is a 200 and
    the process has not imported torch, torchvision, fastai (nor timm, cleanlab, ultralytics)."""
    ws = small_ws
    _record(ws, [True, True], "2026-11-28T01:00:00+00:00", b"model")
    _record(ws, [True, False], "2026-11-28T01:10:00+00:00", b"other")
    make_image(ws.data_dir / "cat" / "extra.jpg", pattern=42)
    proc = subprocess.run([sys.executable, "-c", _SERVE_AND_REPORT, str(_free_port()), str(ws.data_dir),
                           str(ws.models_dir)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"status": 200, "heavy": []}


_WEIGHTS_DIR_CHECK = r"""
import json
from smarthub.demo import pretrained_weights_cached
from smarthub.model import archs
before = str(archs.checkpoints_dir())
cached = pretrained_weights_cached()
import torch.hub
print(json.dumps({"before": before, "torch": str(torch.hub.get_dir()) + "/checkpoints", "cached": cached,
                  "file": archs.expected_weights_file("mobilenet_v2")}))
"""


@pytest.mark.parametrize("env", [{"TORCH_HOME": "@home"}, {"XDG_CACHE_HOME": "@home"}, {}],
                         ids=["torch-home", "xdg-cache", "default"])
def test_the_start_up_weights_check_agrees_with_torch(torch_home: Path, tmp_path: Path, env: dict) -> None:
    """The Clean tab's default asks whether the demo weights are cached without importing torch: the folder it
    looks in is torch's own, and the file name torchvision's."""
    from smarthub.demo import PRETRAINED_WEIGHTS_FILE

    base = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    base["HOME"] = str(tmp_path)
    home = torch_home if "TORCH_HOME" in env else tmp_path / "xdg"
    proc = subprocess.run([sys.executable, "-c", _WEIGHTS_DIR_CHECK], capture_output=True, text=True, timeout=300,
                          env={**base, **{k: str(home) for k in env}})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["before"] == got["torch"] and got["file"] == PRETRAINED_WEIGHTS_FILE
    assert got["cached"] is ("TORCH_HOME" in env)
