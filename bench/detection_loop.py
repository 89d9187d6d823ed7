"""The detection loop, measured: train on corrected files, pre-annotate the next batch, train again with the
corrections (with and without a silver set), and see mAP50 on a fixed test set and the correction effort.

    .venv/bin/python bench/detection_loop.py [--n 60] [--batch 40] [--pool 60] [--test 40] [--epochs 40] [--imgsz 128]

Scenes: public-domain openclipart drawings (Debian `openclipart-png`) of two classes, `fish` and `fruit`, 1-3 per
scene, pasted onto crops of real photos (scikit-image's sample photos), as in bench/annotate_quality.py.
Ground truth is planted; "correcting" a batch means taking its truth (what a person would save in Labelme).

Round 1: `train_detector` on N corrected scenes (Ultralytics yolov8n.yaml from scratch: no pretrained weights
offline). Pre-annotate batch A with the tuned per-class thresholds: correction effort = box edits (added +
deleted + moved + relabelled) against drawing every box by hand. Pre-annotate an unlabelled pool with
`--silver-min-conf`.
Round 2: train on N + the corrected batch A, once without and once with the silver pool (`--silver`). Each
round-2 detector pre-annotates batch B (new scenes) for its correction effort.
Every detector is scored on the same fixed test set (mAP50 from all its boxes at conf >= 0.01).
Baseline (same run): drawing by hand, edits = boxes. Ratios printed: hand edits ÷ edits after pre-annotation.
Needs ultralytics and openclipart-png (`scripts/setup.sh --test`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIPART = Path("/usr/share/openclipart/png")
CLASSES = {"fish": CLIPART / "animals" / "fish", "fruit": CLIPART / "food" / "fruit"}
PHOTOS = ("grass", "gravel", "brick", "coffee", "chelsea", "astronaut", "rocket", "camera", "coins")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="corrected scenes in round 1")
    ap.add_argument("--batch", type=int, default=40, help="scenes per pre-annotated batch (A and B)")
    ap.add_argument("--pool", type=int, default=60, help="unlabelled scenes for the silver set")
    ap.add_argument("--test", type=int, default=40, help="fixed test scenes")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--silver-min-conf", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")

    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.evaluate import evaluate_annotations
    from smarthub.annotate.labelme import load_labelme
    from smarthub.annotate.preannotate import annotate_folder
    from smarthub.annotate.scenes import compose_scenes, load_drawings
    from smarthub.annotate.train_detector import DetectorTrainOptions, train_detector
    from smarthub.workspace import contain_library_caches

    started = time.perf_counter()
    size = (args.imgsz * 5 // 4, args.imgsz)
    with tempfile.TemporaryDirectory(prefix="smarthub-loop-") as tmp:
        root = Path(tmp)
        contain_library_caches(root / "cache")
        unreadable: list = []
        drawings = {k: load_drawings(v, max_side_px=160, failed=unreadable) for k, v in CLASSES.items()}
        seen = {k: v[: int(len(v) * 0.7)] for k, v in drawings.items()}
        bgs = photos()
        sets = {"corrected": args.n, "batch A": args.batch, "batch B": args.batch, "pool": args.pool,
                "test": args.test}
        boxes = {}
        for i, (name, n) in enumerate(sets.items()):
            boxes[name] = compose_scenes(root / name, n, seen, bgs, size=size, seed=args.seed + 101 * i,
                                         prefix=name.replace(" ", "_") + "_")
        print(f"scenes {size[0]}x{size[1]} px: " + ", ".join(f"{k} {sets[k]} ({boxes[k]} boxes)" for k in sets)
              + "; drawings: " + ", ".join(f"{k} {len(v)}" for k, v in seen.items())
              + f" ({len(unreadable)} unreadable skipped)", flush=True)
        images_a, truth_a = split_truth(root / "batch A")
        images_b, truth_b = split_truth(root / "batch B")
        images_t, truth_t = split_truth(root / "test")
        for p in (root / "pool").glob("*.json"):
            p.unlink()
        models = root / "models"
        cfg = root / "cache" / "ultralytics"

        def train(name: str, folder: Path, silver: Path | None = None):
            t0 = time.perf_counter()
            run = train_detector(folder, models, DetectorTrainOptions(epochs=args.epochs, imgsz=args.imgsz, batch=16,
                                                                      seed=args.seed, name=name, silver_dir=silver))
            print(f"\n{name}: trained in {time.perf_counter() - t0:.0f} s; {run.summary().splitlines()[1]}; "
                  f"validation mAP50 {run.map50 or 0:.3f}", flush=True)
            return run

        def test_map(run) -> float:
            det = load_detector(run.run_dir, DetectorOptions(conf=0.01, run_thresholds=False, config_dir=cfg))
            out = root / f"{run.run_dir.name} test pred"
            annotate_folder(images_t, det, out_dir=out)
            return evaluate_annotations(out, truth_t).map50 or 0.0

        def effort(run, images: Path, truth: Path) -> tuple[float, float]:
            det = load_detector(run.run_dir, DetectorOptions(config_dir=cfg))  # tuned per-class thresholds
            out = root / f"{run.run_dir.name} {images.name} pred"
            annotate_folder(images, det, out_dir=out)
            e = evaluate_annotations(out, truth).effort
            n = len(list(truth.glob("*.json")))
            hand = sum(len(load_labelme(p).shapes) for p in truth.glob("*.json"))  # by hand: every box drawn
            return e.edits / n, hand / n

        r1 = train("round1", root / "corrected")
        map1 = test_map(r1)
        edits_a, hand_a = effort(r1, images_a, truth_a)
        pool_report = annotate_folder(root / "pool", load_detector(r1.run_dir, DetectorOptions(config_dir=cfg)),
                                      silver_min_conf=args.silver_min_conf)
        silver_images = sum(1 for p in pool_report.written if load_labelme(p).flags.get("silver"))
        print(f"silver pool: {silver_images} of {len(pool_report.written)} images have every box scored >= "
              f"{args.silver_min_conf}", flush=True)
        # round 2: the corrected batch A joins the corrected set
        grown = root / "corrected"
        for p in sorted(images_a.glob("*.jpg")):
            p.rename(grown / p.name)
        for p in sorted(truth_a.glob("*.json")):
            p.rename(grown / p.name)
        r2 = train("round2", grown)
        r2s = train("round2+silver", grown, silver=root / "pool")
        map2, map2s = test_map(r2), test_map(r2s)
        edits_b, hand_b = effort(r2, images_b, truth_b)
        edits_bs, _ = effort(r2s, images_b, truth_b)

        print(f"\n{'detector':<16} {'train images':>12} {'test mAP50':>10} {'edits/img':>9} {'by hand/img':>11} "
              f"{'hand/edits':>10}")
        rows = [("round1", args.n, map1, edits_a, hand_a, "batch A"),
                ("round2", args.n + args.batch, map2, edits_b, hand_b, "batch B"),
                ("round2+silver", f"{args.n + args.batch}+{r2s.silver}", map2s, edits_bs, hand_b, "batch B")]
        for name, n, m, e, h, batch in rows:
            print(f"{name:<16} {str(n):>12} {m:>10.3f} {e:>9.2f} {h:>11.2f} {h / max(e, 1e-9):>10.2f}  ({batch})")
        print(f"\ntotal {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
