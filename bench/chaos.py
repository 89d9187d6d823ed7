"""Chaos: random `kill -9`s during bootstrap and during relabel/delete/undo loops of two processes at once,
with filesystem latency injected into every link/unlink/rename/replace of the child processes; then kills of
each batch command at fixed and random points.

    PYTHONPATH=$PWD python bench/chaos.py [--kills-bootstrap 8] [--hammer-s 40] [--latency-ms 2] [--seed 0]
                                          [--batch-size 120] [--random-kills 4] [--phases bootstrap,hammer,batches]

Phase 1 collects a class from the loopback test server (tests/http_server.py) and kills the bootstrap at
random moments, then lets a last run finish. Phase 2 runs two processes hammering relabel/delete/undo on
those images and kills one of them at random moments (restarting it), then recovers. Prints operations,
kills, images lost, partial files and images without provenance (all three must be 0).
Phase 3 runs each batch command (relabel, delete, undo of a relabel and of a delete, classes rename, classes
merge, dedupe --quarantine) of `--batch-size` images through `tests/crashkit.py`, kills it right before a
chosen call (begin line, first move, first link, half way, last unlink, commit line) and at random moments
after its begin line (slow storage: the latency above before every call), runs `smarthub history` (the next
command), and prints a table per operation and kill point: whole (finished), rolled back, split (target 0),
images lost (target 0), and whether the one-line message said which.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
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


def _next_command(data: Path) -> list[str]:
    """Run `smarthub history` (the command after the crash); return its one-line recovery messages."""
    import crashkit

    proc = crashkit.launch(data, 0, ["history", "--data", str(data)])
    if proc.returncode != 0:
        raise RuntimeError(f"history failed after a kill: {proc.stderr}")
    return [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("recovered:")]


def _kill_after_begin(data: Path, argv: list[str], *, latency_s: float, delay_s: float) -> bool:
    """Start the command, wait for its begin line, kill -9 it `delay_s` later; False when it finished first."""
    import crashkit

    journal = data / ".smarthub" / "journal.jsonl"
    begun = journal.read_bytes().count(b'"begin"') if journal.exists() else 0
    env = dict(os.environ, CRASHKIT_LATENCY_S=str(latency_s), PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(crashkit.HERE), str(data), "0", *argv], env=env,
                            cwd=data.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b'"begin"') > begun:
            time.sleep(delay_s)
            return _kill9(proc)
        time.sleep(0.001)
    return False


def phase_batches(root: Path, *, n_moved: int, random_kills: int, latency_s: float,
                  rng: random.Random) -> list[dict]:
    """Kill each batch command at the fixed kill points and at random moments; one row per (operation, point)."""
    import shutil

    sys.path.insert(0, str(REPO / "tests"))
    import crashkit
    from smarthub.workspace import Workspace

    rows = []
    ops = crashkit.operations(n_moved)
    for op, (setup, argv) in ops.items():
        template = root / f"batch-{op}" / "template"
        (template / "data").mkdir(parents=True)
        crashkit.build_data(template / "data", n_fish=n_moved + 10, n_copies=max(4, n_moved // 3))
        if setup is not None:
            setup(Workspace(template / "data", template / "models"))
        before, census = crashkit.view(template / "data"), crashkit.census(template / "data")
        counter = iter(range(10**6))

        def fresh() -> Path:
            copy = root / f"batch-{op}" / f"run{next(counter)}"
            shutil.copytree(template, copy)
            return (copy / "data").resolve()

        data = fresh()
        ref = crashkit.launch(data, 0, crashkit.with_data(argv, data), cwd=data.parent)
        if ref.returncode != 0:
            raise RuntimeError(f"{op} failed without a kill: {ref.stderr}")
        calls, after = crashkit.calls_of(ref), crashkit.view(data)
        t_moves = max(1e-3, 2 * n_moved * latency_s)  # about how long the moves take (two calls per image)
        plan = [(name, fn(calls)) for name, fn in crashkit.KILL_POINTS.items()]
        plan += [(EDITED, crashkit.KILL_POINTS["half-way"](calls))]
        plan += [("random moment", -1)] * random_kills
        by_point: dict[str, dict] = {}
        for name, kill_at in plan:
            data = fresh()
            row = by_point.setdefault(name, {"op": op, "point": name, "kills": 0, "whole": 0, "rolled back": 0,
                                             "split": 0, "lost": 0, "message ok": 0, "nothing to repair": 0,
                                             "runs": 0})
            if kill_at > 0:
                proc = crashkit.launch(data, kill_at, crashkit.with_data(argv, data), latency_s=latency_s,
                                       cwd=data.parent)
                killed = proc.returncode == -signal.SIGKILL
            else:
                killed = _kill_after_begin(data, crashkit.with_data(argv, data), latency_s=latency_s,
                                           delay_s=rng.uniform(0, 1.2 * t_moves))
            row["runs"] += 1
            expected = census
            if name == EDITED:  # an image it had not moved yet is edited: it cannot be finished as planned
                expected = _edit_a_pending_source(data)
            lines = _next_command(data)
            now = crashkit.view(data)
            same = (lambda a, b: sorted(a) == sorted(b)) if name == EDITED else (lambda a, b: a == b)
            state = "whole" if same(now, after) else "rolled back" if same(now, before) else "split"
            row[state] += 1
            left = crashkit.census(data)
            row["lost"] += sum((expected - left).values()) + sum((left - expected).values())
            said = {"whole": "finished it", "rolled back": "rolled it back"}.get(state, "?")
            if not lines and _all_closed_by_their_own_process(data):
                row["nothing to repair"] += 1  # died before its begin line or after its commit line, or finished
                row["message ok"] += state != "split"
            else:
                row["message ok"] += len(lines) == 1 and said in lines[0]
            row["kills"] += killed
        rows.extend(by_point.values())
    return rows


EDITED = "half-way, then a source edited"


def _edit_a_pending_source(data: Path) -> Counter:
    """Append to an image the killed operation has not moved yet; returns the census expected from now on."""
    import crashkit
    from smarthub import fileops
    from smarthub.workspace import Workspace

    begun = next(o for o in fileops.history(Workspace(data, data.parent / "models")) if o.state == "begun")
    pending = next(m.src for m in reversed(begun.moves) if (data / m.src).is_file())
    with open(data / pending, "ab") as f:
        f.write(b"edited meanwhile")
    return crashkit.census(data)


def _all_closed_by_their_own_process(data: Path) -> bool:
    """True when no journal entry was closed by a recovery (every op committed or aborted by its own run)."""
    from smarthub.atomicio import read_jsonl

    return not any(str(e.get("reason", "")).startswith("recovered")
                   for e in read_jsonl(data / ".smarthub" / "journal.jsonl"))


def _print_batches(rows: list[dict], *, n_moved: int, latency_ms: float) -> int:
    print(f"\nbatches of {n_moved} images, kill -9 then `smarthub history` ({latency_ms:g} ms latency per call):")
    cols = ("op", "point", "runs", "kills", "nothing to repair", "whole", "rolled back", "split", "lost",
            "message ok")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) if c != "message ok" else f"{r[c]}/{r['runs']}" for c in cols) + " |")
    split, lost = sum(r["split"] for r in rows), sum(r["lost"] for r in rows)
    wrong = sum(r["runs"] - r["message ok"] for r in rows)
    print(f"total: {sum(r['kills'] for r in rows)} kill -9, {sum(r['whole'] for r in rows)} whole, "
          f"{sum(r['rolled back'] for r in rows)} rolled back, {split} split, {lost} lost, {wrong} wrong messages")
    return split + lost + wrong


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
    ap.add_argument("--batch-size", type=int, default=120, help="images per batch command in phase 3")
    ap.add_argument("--random-kills", type=int, default=4, help="random-moment kills per batch command")
    ap.add_argument("--phases", default="bootstrap,hammer,batches")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    latency = args.latency_ms / 1000
    phases = set(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="smarthub-chaos-") as tmp:
        root = Path(tmp)
        bad = 0
        if "batches" in phases:
            t = time.monotonic()
            batch_rows = phase_batches(root, n_moved=args.batch_size, random_kills=args.random_kills,
                                       latency_s=latency, rng=rng)
            bad += _print_batches(batch_rows, n_moved=args.batch_size, latency_ms=args.latency_ms)
            print(f"[{time.monotonic() - t:.0f} s]")
        if not {"bootstrap", "hammer"} <= phases:
            print("OK: no batch split, nothing lost, every message right" if bad == 0 else f"FAILED: {bad} problems")
            return 0 if bad == 0 else 1
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
    bad += boot["lost"] + boot["partial"] + boot["unrecorded"] + ham["lost"] + ham["doubled"] + ham["partial"] + \
        ham["unrecorded"] + ham["open"]
    print("OK: nothing lost, nothing partial, every image has provenance" if bad == 0 else f"FAILED: {bad} problems")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
