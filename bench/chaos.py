"""Chaos: random `kill -9`s during bootstrap and during relabel/delete/undo loops of two processes at once,
with filesystem latency injected into every link/unlink/rename/replace of the child processes.

    PYTHONPATH=$PWD python bench/chaos.py [--kills-bootstrap 8] [--hammer-s 40] [--latency-ms 2] [--seed 0]

Phase 1 collects a class from the loopback test server (tests/http_server.py) and kills the bootstrap at
random moments, then lets a last run finish. Phase 2 runs two processes hammering relabel/delete/undo on
those images and kills one of them at random moments (restarting it), then recovers. Prints operations,
kills, images lost, partial files and images without provenance (all three must be 0).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("koi", "carp", "tench")


def _slow_fs(latency_s: float) -> None:
    """Child processes only: sleep before every call that moves or removes a name (slow or network storage)."""
    def slow(fn):
        def wrapper(*args, **kwargs):
            time.sleep(latency_s)
            return fn(*args, **kwargs)
        return wrapper

    for name in ("link", "unlink", "rename", "replace"):
        setattr(os, name, slow(getattr(os, name)))


def child_cli(argv: list[str]) -> int:
    from smarthub.cli import main

    return main(argv)


def child_hammer(data_dir: Path, seed: int) -> int:
    """relabel / delete / undo at random until killed."""
    from smarthub import fileops
    from smarthub.errors import SmartHubError
    from smarthub.workspace import Workspace

    ws = Workspace(data_dir=data_dir, models_dir=data_dir.parent / "models")
    rng = random.Random(seed)
    while True:
        images = sorted(p for c in CLASSES if (data_dir / c).is_dir() for p in (data_dir / c).iterdir()
                        if not p.name.startswith("."))
        try:
            roll = rng.random()
            if roll < 0.25 or not images:
                fileops.undo(ws)
            elif roll < 0.45:
                fileops.trash(ws, rng.sample(images, min(len(images), rng.randint(1, 3))))
            else:
                fileops.relabel(ws, rng.sample(images, min(len(images), rng.randint(1, 3))), rng.choice(CLASSES))
        except SmartHubError:
            pass  # the other process moved it first, nothing to undo, lock busy: all expected
        time.sleep(rng.uniform(0, 0.03))  # between two commands the lock is free a moment


def _spawn(args: list[str], latency_s: float) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               CHAOS_LATENCY_S=str(latency_s), PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill9(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _census(data_dir: Path) -> dict:
    """Images by sha256 → names (class folders and trash), partial files, images without provenance."""
    from smarthub.ledger import read_records

    names: dict[str, list[str]] = {}
    partial = []
    for p in data_dir.rglob("*.jpg"):
        if p.name.startswith(".") or not p.is_file():
            continue
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        if not digest.startswith(p.stem.split("_")[0]):  # saved names are the content hash
            partial.append(p)
        names.setdefault(digest, []).append(p.relative_to(data_dir).as_posix())
    temps = [p for p in data_dir.rglob(".*.tmp") if p.is_file()]
    from smarthub.workspace import Workspace

    recorded = {r.sha256 for r in read_records(Workspace(data_dir, data_dir.parent / "models"))}
    visible = {d for d, ns in names.items() if any(not n.startswith(".smarthub/") for n in ns)}
    return {"names": names, "partial": partial, "temps": temps, "unrecorded": visible - recorded}


def phase_bootstrap(root: Path, *, kills: int, latency_s: float, rng: random.Random) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from http_server import ImageServer, Route, encode, photo

    count = 240
    routes = {f"/{i}.jpg": Route(encode(photo(1000 + i, (96, 72)), "JPEG")) for i in range(count)}
    data = root / "data"
    killed, runs, lost = 0, 0, 0
    seen: set[str] = set()
    with ImageServer(routes, latency_s=0.1) as srv:  # a slow remote host: runs last long enough to be killed
        urls = root / "urls.csv"
        urls.write_text("".join(f"{srv.url(p)},{CLASSES[i % 3]}\n" for i, p in enumerate(routes)))
        argv = ["--child-cli", "bootstrap", *CLASSES, "--urls-file", str(urls), "--count", str(count // 3),
                "--data", str(data), "--min-side", "16", "--workers", "4", "--threshold", "0"]
        for _ in range(kills):
            proc = _spawn(argv, latency_s)
            runs += 1
            time.sleep(rng.uniform(0.8, 2.5))  # start-up (imports) takes about a second
            killed += _kill9(proc)
            now = set(_census(data)["names"]) if data.is_dir() else set()
            lost += len(seen - now)
            seen |= now
        proc = _spawn(argv, latency_s)  # the last run completes the job
        runs += 1
        proc.wait(timeout=600)
    census = _census(data)
    lost += len(seen - set(census["names"]))
    return {"runs": runs, "kills": killed, "images": len(census["names"]), "lost": lost,
            "partial": len(census["partial"]), "unrecorded": len(census["unrecorded"]),
            "temps": len(census["temps"])}


def phase_hammer(root: Path, *, seconds: float, latency_s: float, rng: random.Random) -> dict:
    from smarthub import fileops
    from smarthub.atomicio import read_jsonl
    from smarthub.workspace import Workspace

    data = root / "data"
    ws = Workspace(data, root / "models")
    before = set(_census(data)["names"])
    procs = [_spawn(["--child-hammer", str(data), str(seed)], latency_s) for seed in (1, 2)]
    killed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(rng.uniform(1.5, 4.0))
        i = rng.randrange(2)
        killed += _kill9(procs[i])
        procs[i] = _spawn(["--child-hammer", str(data), str(100 + killed)], latency_s)
    for p in procs:
        _kill9(p)
    fileops.recover(ws)
    events = list(read_jsonl(ws.journal_path))
    repaired = sum(1 for e in events if str(e.get("reason", "")).startswith("recovered"))  # by either process too
    commits = sum(1 for e in events if e.get("event") == "commit")
    still_open = [op.op_id for op in fileops.history(ws) if op.state == "begun"]
    census = _census(data)
    names = census["names"]
    lost = len(before - set(names))
    doubled = sum(1 for ns in names.values() if len(ns) != 1)
    return {"operations": commits, "kills": killed, "repaired": repaired, "lost": lost, "doubled": doubled,
            "partial": len(census["partial"]), "unrecorded": len(census["unrecorded"]), "open": len(still_open)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--child-"):
        latency = float(os.environ.get("CHAOS_LATENCY_S", "0") or 0)
        if latency:
            _slow_fs(latency)
        if sys.argv[1] == "--child-cli":
            return child_cli(sys.argv[2:])
        return child_hammer(Path(sys.argv[2]), int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills-bootstrap", type=int, default=8)
    ap.add_argument("--hammer-s", type=float, default=40.0)
    ap.add_argument("--latency-ms", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    latency = args.latency_ms / 1000
    with tempfile.TemporaryDirectory(prefix="smarthub-chaos-") as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        boot = phase_bootstrap(root, kills=args.kills_bootstrap, latency_s=latency, rng=rng)
        t1 = time.monotonic()
        ham = phase_hammer(root, seconds=args.hammer_s, latency_s=latency, rng=rng)
        t2 = time.monotonic()
    print(f"filesystem latency injected: {args.latency_ms:g} ms before every link/unlink/rename/replace")
    print(f"bootstrap: {boot['runs']} runs, {boot['kills']} kill -9, {boot['images']} images; lost {boot['lost']}, "
          f"partial files {boot['partial']}, images without provenance {boot['unrecorded']} "
          f"(temp files left for the next run to discard: {boot['temps']}) [{t1 - t0:.0f} s]")
    print(f"relabel/delete/undo, two processes: {ham['operations']} operations committed, {ham['kills']} kill -9, "
          f"{ham['repaired']} interrupted operations recovered, {ham['open']} left open; lost {ham['lost']}, "
          f"images with more than one name {ham['doubled']}, partial files {ham['partial']}, "
          f"images without provenance {ham['unrecorded']} [{t2 - t1:.0f} s]")
    bad = boot["lost"] + boot["partial"] + boot["unrecorded"] + ham["lost"] + ham["doubled"] + ham["partial"] + \
        ham["unrecorded"] + ham["open"]
    print("OK: nothing lost, nothing partial, every image has provenance" if bad == 0 else f"FAILED: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
