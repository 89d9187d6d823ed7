"""The detection loop, measured as a person spends it: train a detector on 60 corrected scenes, pre-annotate new
batches, and price what a person does to each box (verify, adjust, relabel, delete, draw) against drawing
every box by hand. One process, the same scenes and seed for every arm (the start of training).

    .venv/bin/python bench/detection_loop.py [--arms mobilenet_v2,yolov8n.yaml] [--n 60] [--test 30]
        [--imgsz 320] [--scene-px 160] [--epochs 30 | --budget 8m] [--round2 0] [--figure bench/figures/detection_loop.png]

Scenes: public-domain openclipart drawings (Debian `openclipart-png`) of two classes, `fish` and `fruit`, 1-3 per
scene, pasted at random sizes and places onto crops of real photos (scikit-image's sample photos). Every 4th
drawing of a class is held out: the "new individuals" batch uses only those, the "seen" batch new scenes of
the drawings trained on. Ground truth is planted; "correcting" a batch means taking its truth.

Arms: `--model` values of `train-detector` (yolov8n.yaml: from scratch; mobilenet_v2: YOLOv8n neck and head on
torchvision's ImageNet MobileNetV2 from the torch cache; yolov8n.pt: COCO, added when found), optionally with
Ultralytics arguments after a colon, e.g. `mobilenet_v2:freeze=1;mosaic=0.5` (recipe comparisons).
For each arm: `train_detector` (early stopping on validation mAP within --budget, or --epochs), then each batch
is pre-annotated twice: at conf 0.001 for its mAP50, and at the run's tuned per-class thresholds for the
effort. Action costs: evaluate.ActionCosts (draw 7.0 s, verify 1.6 s, adjust 3.5 s, delete/relabel 1.6 s; sources
in smarthub/annotate/evaluate.py). Baseline (same run): drawing every truth box by hand.
`--round2 N`: the round-1 detector pre-annotates N more scenes, they are corrected and join training, and the
round-2 detector is measured on the same batches.
Needs ultralytics, openclipart-png and the MobileNetV2 weights in the torch cache (`scripts/setup.sh --test`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIPART = Path("/usr/share/openclipart/png")
CLASSES = {"fish": CLIPART / "animals" / "fish", "fruit": CLIPART / "food" / "fruit"}
PHOTOS = ("grass", "gravel", "brick", "coffee", "chelsea", "astronaut", "rocket", "camera", "coins")
BATCHES = ("seen", "new individuals")


def photos() -> list:
    import skimage.data as skd
    from PIL import Image

    out = []
    for name in PHOTOS:
        arr = getattr(skd, name)()
        out.append(Image.fromarray(arr[0] if isinstance(arr, tuple) else arr).convert("RGB"))
    return out


def split_truth(folder: Path) -> tuple[Path, Path]:
    """Move a scene folder's Labelme truth aside: (images folder, truth folder)."""
    truth = folder.with_name(folder.name + " truth")
    truth.mkdir()
    for p in sorted(folder.glob("*.json")):
        p.rename(truth / p.name)
    return folder, truth


def parse_arm(text: str) -> tuple[str, dict]:
    """'mobilenet_v2:freeze=1;mosaic=0.5' -> ('mobilenet_v2', {'freeze': 1, 'mosaic': 0.5})."""
    model, _, rest = text.partition(":")
    args = {}
    for part in filter(None, rest.split(";")):
        k, _, v = part.partition("=")
        try:
            args[k.strip()] = json.loads(v.strip().lower() if v.strip().lower() in ("true", "false") else v.strip())
        except ValueError:
            args[k.strip()] = v.strip()
    return model.strip(), args


def figure(path: Path, rows: list[dict]) -> None:
    """Seconds per image by action, per arm and batch, beside drawing by hand (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smarthub.annotate.evaluate import ACTIONS, DEFAULT_COSTS

    per = {"verify": DEFAULT_COSTS.verify_s, "adjust": DEFAULT_COSTS.adjust_s, "relabel": DEFAULT_COSTS.relabel_s,
           "delete": DEFAULT_COSTS.delete_s, "draw": DEFAULT_COSTS.draw_s}
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows) + 2) + 2.5, 4.5), dpi=100)
    labels = [f"{r['arm']}\n{r['batch']}\nmAP50 {r['map50']:.2f}" for r in rows]
    bottom = [0.0] * len(rows)
    colors = {"verify": "#4caf50", "adjust": "#ffc107", "relabel": "#9c27b0", "delete": "#f44336", "draw": "#2196f3"}
    for k in ACTIONS:
        h = [r["effort"][k] * per[k] / r["images"] for r in rows]
        ax.bar(range(len(rows)), h, bottom=bottom, color=colors[k], label=f"{k} ({per[k]:.1f} s)")
        bottom = [b + x for b, x in zip(bottom, h)]
    for i, r in enumerate(rows):
        hand = r["effort"]["hand_seconds"] / r["images"]
        ax.plot([i - 0.4, i + 0.4], [hand, hand], "k-", lw=2, label="drawing every box by hand" if i == 0 else None)
        ax.plot([i - 0.4, i + 0.4], [hand / 2, hand / 2], "k:", lw=1.5, label="target: half of that" if i == 0 else None)
        ax.text(i, bottom[i], f"{r['effort']['ratio']:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("estimated seconds per image")
    ax.set_title("correcting pre-annotations vs drawing by hand (round 1: 60 corrected scenes)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="mobilenet_v2,yolov8n.yaml",
                    help="comma-separated train-detector --model values, each optionally :k=v;k=v Ultralytics args")
    ap.add_argument("--n", type=int, default=60, help="corrected scenes in round 1")
    ap.add_argument("--test", type=int, default=30, help="scenes per new batch (seen / new individuals)")
    ap.add_argument("--round2", type=int, default=0, help="scenes corrected after round 1 for a round 2 (0: none)")
    ap.add_argument("--epochs", type=int, default=30,
                    help="epoch cap, the same for every arm whatever the load (0: --budget instead)")
    ap.add_argument("--budget", default="8m", help="time budget per training when --epochs 0 (default 8m)")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=None,
                    help="training size in px (default: train-detector's, DetectorTrainOptions.imgsz)")
    ap.add_argument("--scene-px", type=int, default=160, help="scene height in px (width 5/4 of it)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figure", type=Path, help="write the effort figure (PNG) here")
    ap.add_argument("--json", type=Path, help="write every figure as JSON here")
    args = ap.parse_args()
    if args.imgsz is None:
        from smarthub.annotate.options import DetectorTrainOptions

        args.imgsz = DetectorTrainOptions().imgsz
    os.environ.setdefault("YOLO_OFFLINE", "1")

    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.evaluate import evaluate_annotations
    from smarthub.annotate.preannotate import annotate_folder
    from smarthub.annotate.scenes import compose_scenes, load_drawings
    from smarthub.annotate.starts import choose_start
    from smarthub.annotate.train_detector import DetectorTrainOptions, train_detector
    from smarthub.errors import SmartHubError
    from smarthub.workspace import contain_library_caches

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    try:
        if choose_start("auto").kind == "coco" and not any(a.startswith("yolov8n.pt") for a in arms):
            arms.append("yolov8n.pt")
    except SmartHubError as e:
        print(f"(no COCO arm: {e})")
    started = time.perf_counter()
    size = (args.scene_px * 5 // 4, args.scene_px)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="smarthub-loop-") as tmp:
        root = Path(tmp)
        contain_library_caches(root / "cache")
        unreadable: list = []
        drawings = {k: load_drawings(v, max_side_px=160, failed=unreadable) for k, v in CLASSES.items()}
        seen = {k: [d for i, d in enumerate(v) if i % 4] for k, v in drawings.items()}
        new = {k: [d for i, d in enumerate(v) if not i % 4] for k, v in drawings.items()}
        bgs = photos()
        sets = {"corrected": (args.n, seen), "seen": (args.test, seen), "new individuals": (args.test, new)}
        if args.round2:
            sets["round 2 batch"] = (args.round2, seen)
        boxes = {name: compose_scenes(root / name, n, ds, bgs, size=size, seed=args.seed + 101 * i,
                                      prefix=name.replace(" ", "_") + "_")
                 for i, (name, (n, ds)) in enumerate(sets.items())}
        print(f"scenes {size[0]}x{size[1]} px: " + ", ".join(f"{k} {sets[k][0]} ({boxes[k]} boxes)" for k in sets)
              + "; drawings: " + ", ".join(f"{k} {len(seen[k])} seen / {len(new[k])} held out" for k in seen)
              + f" ({len(unreadable)} unreadable skipped); load {os.getloadavg()[0]:.1f}", flush=True)
        batches = {b: split_truth(root / b) for b in BATCHES}
        r2_images, r2_truth = split_truth(root / "round 2 batch") if args.round2 else (None, None)
        models = root / "models"
        cfg = root / "cache" / "ultralytics"

        def measure(arm: str, rnd: int, run) -> None:
            for b, (images, truth) in batches.items():
                low = load_detector(run.run_dir, DetectorOptions(conf=0.001, run_thresholds=False, config_dir=cfg))
                annotate_folder(images, low, out_dir=root / f"{run.run_dir.name} {b} all")
                m = evaluate_annotations(root / f"{run.run_dir.name} {b} all", truth).map50 or 0.0
                tuned = load_detector(run.run_dir, DetectorOptions(config_dir=cfg))  # tuned per-class thresholds
                annotate_folder(images, tuned, out_dir=root / f"{run.run_dir.name} {b} tuned")
                rep = evaluate_annotations(root / f"{run.run_dir.name} {b} tuned", truth)
                e = rep.effort.to_json()
                rows.append({"arm": arm, "round": rnd, "batch": b, "images": rep.images, "map50": m,
                             "val_map50": run.map50, "epochs": run.length.epochs if run.length else None,
                             "best_epoch": run.length.best_epoch if run.length else None,
                             "train_s": run.seconds, "effort": e})
                print(f"  {arm} round {rnd} {b}: mAP50 {m:.3f}; verify {e['verify']} adjust {e['adjust']} relabel "
                      f"{e['relabel']} delete {e['delete']} draw {e['draw']}; {e['seconds']:.0f} s vs "
                      f"{e['hand_seconds']:.0f} s by hand ({e['ratio']:.2f}x)", flush=True)

        for k, arm in enumerate(arms):
            model, extra = parse_arm(arm)
            name = f"arm{k}"
            opts = DetectorTrainOptions(model=model, epochs=args.epochs or None, budget=args.budget, patience=args.patience,
                                        imgsz=args.imgsz, batch=args.batch_size, seed=args.seed, name=name,
                                        ultralytics_args=extra)
            t0 = time.perf_counter()
            run = train_detector(root / "corrected", models, opts)
            print(f"\n{arm}: {run.summary().splitlines()[1]}; {run.summary().splitlines()[2]}; validation mAP50 "
                  f"{run.map50 or 0:.3f}; {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}",
                  flush=True)
            measure(arm, 1, run)
            if args.round2:
                grown = root / f"corrected {name} r2"
                grown.mkdir()
                for p in sorted((root / "corrected").glob("*")):  # copies: a symlinked image points outside
                    if p.is_file():
                        shutil.copy2(p, grown / p.name)
                tuned = load_detector(run.run_dir, DetectorOptions(config_dir=cfg))
                annotate_folder(r2_images, tuned, out_dir=root / f"{name} r2 pred")
                e = evaluate_annotations(root / f"{name} r2 pred", r2_truth).effort
                print(f"  {arm}: correcting the round-2 batch: {e.seconds():.0f} s vs {e.hand_seconds():.0f} s by "
                      f"hand ({e.ratio():.2f}x)", flush=True)
                for p in [*sorted(r2_images.glob("*.jpg")), *sorted(r2_truth.glob("*.json"))]:
                    shutil.copy2(p, grown / p.name)
                run2 = train_detector(grown, models, dataclasses.replace(opts, name=name + "-r2"))
                measure(arm, 2, run2)

    print("\n| start (arm) | round | batch | test mAP50 | verify | adjust | relabel | delete | draw | est. s / image "
          "| by hand s / image | ratio | epochs (best) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        e, n = r["effort"], r["images"]
        print(f"| {r['arm']} | {r['round']} | {r['batch']} | {r['map50']:.3f} | {e['verify']} | {e['adjust']} | "
              f"{e['relabel']} | {e['delete']} | {e['draw']} | {e['seconds'] / n:.1f} | {e['hand_seconds'] / n:.1f} | "
              f"{e['ratio']:.2f} | {r['epochs']} ({r['best_epoch']}) |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
    if args.figure:
        figure(args.figure, [r for r in rows if r["round"] == 1])
        print(f"figure: {args.figure}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
