"""Why correcting pre-annotations of *new individuals* costs more than half of drawing them, and what changes it.

    .venv/bin/python bench/new_individuals.py [--arms default,...] [--seeds 0] [--n 60] [--test 30]
        [--epochs 30] [--imgsz 320] [--scene-px 160] [--json out.json] [--from-json out.json]

Scenes and split exactly as bench/detection_loop.py (openclipart fish / fruit on photo crops; every 4th drawing
of a class held out for the "new individuals" batch; 60 corrected scenes, 30 per test batch). For each recipe
arm (`--arms`, each `name=k:v;k:v` of DetectorTrainOptions fields `imgsz`/`epochs` and Ultralytics arguments)
and seed, one `train_detector` run; then the detector's boxes down to conf 0.001 on the validation split and on
both test batches are kept, and every **threshold rule** (chosen from the validation boxes only, never the test
batches) is priced on the test batches with `evaluate.correction_effort` (draw 7.0 s, verify 1.6 s, adjust 3.5
s, relabel / delete 1.6 s) against drawing every box by hand. A breakdown of the boxes a person must draw
says where the time goes: per class, and whether the detector had a box there at all (and at what score, with
which label). `--from-json` re-prices saved boxes without training (rules only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BATCHES = ("seen", "new individuals")
TRAIN_FIELDS = {"imgsz": int, "epochs": int, "patience": int, "batch": int}


def parse_arm(text: str) -> tuple[str, dict, dict]:
    """'aug=hsv_h:0.1;imgsz:192' -> ('aug', {'imgsz': 192}, {'hsv_h': 0.1})."""
    name, _, rest = text.partition("=")
    fields, extra = {}, {}
    for part in filter(None, rest.split(";")):
        k, _, v = part.partition(":")
        k, v = k.strip(), v.strip()
        if k in TRAIN_FIELDS:
            fields[k] = TRAIN_FIELDS[k](v)
        else:
            extra[k] = json.loads(v) if v.lower() not in ("true", "false") else v.lower() == "true"
    return name.strip(), fields, extra


def boxes_of(det) -> list:
    return [(lab, tuple(float(v) for v in xyxy), float(s)) for lab, xyxy, s in zip(det.labels, det.xyxy,
                                                                                    det.confidence)]


def agnostic_nms(pred: list, iou: float) -> list:
    """Keep the best-scored box of each group overlapping at IoU >= `iou`, whatever its label."""
    import numpy as np

    from smarthub.annotate.evaluate import iou_matrix

    if not pred:
        return []
    pred = sorted(pred, key=lambda b: -b[2])
    m = iou_matrix(np.array([b[1] for b in pred]), np.array([b[1] for b in pred]))
    keep: list[int] = []
    for i in range(len(pred)):
        if all(m[i, j] < iou for j in keep):
            keep.append(i)
    return [pred[i] for i in keep]


# ---------------------------------------------------------------- threshold rules (validation boxes only)


def per_class_pairs(images: list) -> tuple[dict, dict]:
    import numpy as np

    from smarthub.annotate.thresholds import match_scores

    names = sorted({b[0] for _, truth in images for b in truth})
    pairs = {n: [] for n in names}
    count = {n: 0 for n in names}
    for pred, truth in images:
        for n in names:
            p = [b for b in pred if b[0] == n]
            t = [b[1] for b in truth if b[0] == n]
            count[n] += len(t)
            pairs[n] += match_scores(np.array([b[1] for b in p]).reshape(-1, 4), np.array([b[2] for b in p]),
                                     np.array(t).reshape(-1, 4))
    return pairs, count


def rules(val: list) -> dict:
    """rule name -> (per-class thresholds or one float for every class, class-agnostic NMS IoU or None).
    'time' is `--tune time`, the default (thresholds.choose_shared_threshold, what train_detector runs)."""
    import numpy as np

    from smarthub.annotate.thresholds import ScoredImage, choose_shared_threshold, choose_threshold

    pairs, count = per_class_pairs(val)
    shared = choose_shared_threshold([
        ScoredImage([b[0] for b in p], np.array([b[1] for b in p]).reshape(-1, 4), np.array([b[2] for b in p]),
                    [b[0] for b in t], np.array([b[1] for b in t]).reshape(-1, 4)) for p, t in val]).conf
    out = {"time": (shared, None)}
    for obj in ("time-per-class", "f1"):
        per = "time" if obj == "time-per-class" else obj
        out[obj] = ({n: choose_threshold(pairs[n], count[n], objective=per).conf for n in pairs}, None)
    out["time-per-class, agnostic NMS"] = (out["time-per-class"][0], 0.7)
    out["time, agnostic NMS"] = (shared, 0.7)
    return out


def apply(pred: list, thr, nms: float | None) -> list:
    kept = [b for b in pred if b[2] >= (thr if isinstance(thr, float) else thr.get(b[0], 0.25))]
    return agnostic_nms(kept, nms) if nms else kept


def price(images: list, thr, nms) -> dict:
    from smarthub.annotate.evaluate import CorrectionEffort, correction_effort

    e = CorrectionEffort()
    for pred, truth in images:
        e = e + correction_effort(apply(pred, thr, nms), truth)
    return e.to_json()


def misses(images: list, thr, nms) -> dict:
    """Truth boxes left to draw at a rule, by class and by what the detector had there (best box at IoU >= 0.5)."""
    import numpy as np

    from smarthub.annotate.evaluate import correction_effort, iou_matrix

    out: dict = {}
    for pred, truth in images:
        kept = apply(pred, thr, nms)
        for t in truth:
            e = correction_effort(kept, [t])
            if not e.draw:
                continue
            m = iou_matrix(np.array([b[1] for b in pred]).reshape(-1, 4), np.array([t[1]]))[:, 0] \
                if pred else np.zeros(0)
            cands = [(pred[i][2], pred[i][0] == t[0]) for i in np.flatnonzero(m >= 0.5)]
            right = max((s for s, ok in cands if ok), default=None)
            wrong = max((s for s, ok in cands if not ok), default=None)
            if right is None and wrong is None:
                why = "no box at IoU>=0.5"
            elif right is None or (wrong is not None and wrong > right):
                why = "best box has the wrong label"
            else:
                why = "right box below threshold: " + ("<0.05" if right < 0.05 else "0.05-0.15" if right < 0.15
                                                       else ">=0.15")
            key = f"{t[0]}: {why}"
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def floor(images: list) -> dict:
    """The detector's floor: each truth box keeps its best-overlapping box (IoU >= 0.5, any label, any score),
    nothing else is kept: what a perfect filter of this detector's boxes would cost (not a rule)."""
    import numpy as np

    from smarthub.annotate.evaluate import CorrectionEffort, correction_effort, iou_matrix

    e = CorrectionEffort()
    for pred, truth in images:
        kept = []
        if pred and truth:
            m = iou_matrix(np.array([b[1] for b in pred]), np.array([t[1] for t in truth]))
            kept = [pred[int(m[:, j].argmax())] for j in range(len(truth)) if m[:, j].max() >= 0.5]
        e = e + correction_effort(kept, truth)
    return e.to_json()


def best_per_class(images: list, nms: float | None) -> tuple[dict, dict]:
    """The per-class thresholds (grid 0.02-0.50) best on these images themselves: an oracle, chosen on the
    test batch, so no rule choosing from validation can do better with this detector's scores."""
    names = sorted({b[0] for _, truth in images for b in truth})
    grid = [x / 100 for x in range(2, 51)]
    best = None
    for a in grid:
        for b in grid if len(names) == 2 else [a]:
            thr = dict(zip(names, (a, b)))
            e = price(images, thr, nms)
            if best is None or e["seconds"] < best[1]["seconds"] - 1e-9:
                best = (thr, e)
    return best


def report(saved: list) -> None:
    """Every rule priced on every arm, seed and batch; then the misses at the default rule."""
    print("\n| arm | seed | rule | batch | thresholds | verify | adjust | relabel | delete | draw | time vs by hand |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary: dict = {}
    for s in saved:
        for rule, (thr, nms) in rules(s["val"]).items():
            for b in BATCHES:
                e = price(s[b], thr, nms)
                summary.setdefault((s["arm"], rule, b), []).append(e["ratio"])
                t = f"{thr:.3f}" if isinstance(thr, float) else ", ".join(f"{k} {v:.3f}" for k, v in thr.items())
                print(f"| {s['arm']} | {s['seed']} | {rule} | {b} | {t} | {e['verify']} | {e['adjust']} | "
                      f"{e['relabel']} | {e['delete']} | {e['draw']} | {e['ratio']:.2f}x |")
    if any("more seen" in s for s in saved):
        print("\nmore test batches, same detectors (pooled time vs by hand, seen / new individuals):")
        for s in [s for s in saved if "more seen" in s]:
            for rule, (thr, nms) in rules(s["val"]).items():
                e = [price(s["more " + b], thr, nms) for b in BATCHES]
                print(f"  {s['arm']} seed {s['seed']} {rule:<40} {len(s['more seen'])} + {len(s['more new individuals'])}"
                      f" images: {e[0]['ratio']:.3f}x / {e[1]['ratio']:.3f}x (draw {e[0]['draw']} / {e[1]['draw']})")
    print("\nmean time vs by hand over seeds (seen / new individuals):")
    for (arm, rule, b), v in summary.items():
        if b == "seen":
            import numpy as np

            w = summary[(arm, rule, "new individuals")]
            print(f"  {arm:<12} {rule:<36} {np.mean(v):.2f}x / {np.mean(w):.2f}x  (n={len(v)}; new sd {np.std(w):.2f})")
    print("\noracles (chosen on the test batch itself, not rules: how far any threshold could go), seen / new:")
    for s in saved:
        f = [floor(s[b]) for b in BATCHES]
        g = [best_per_class(s[b], 0.7) for b in BATCHES]
        print(f"  {s['arm']} seed {s['seed']}: best per-class thresholds with agnostic NMS "
              + " / ".join(", ".join(f"{k} {v:.2f}" for k, v in t.items()) + f" -> {e['ratio']:.2f}x (draw "
                           f"{e['draw']}, delete {e['delete']})" for t, e in g)
              + "; perfect filter of its boxes " + " / ".join(f"{e['ratio']:.2f}x (draw {e['draw']})" for e in f))
    for s in saved:
        thr, nms = rules(s["val"])["time"]
        print(f"\n{s['arm']} seed {s['seed']}: test mAP50 seen {s['map50']['seen']:.3f}, new "
              f"{s['map50']['new individuals']:.3f}; boxes to draw at the default rule (time), new individuals:")
        for k, v in misses(s["new individuals"], thr, nms).items():
            print(f"    {v:3d}  {k}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="default=")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--test", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--imgsz", type=int, default=None,
                    help="training size in px (default: train-detector's, DetectorTrainOptions.imgsz)")
    ap.add_argument("--scene-px", type=int, default=160, help="scene height in px (width 5/4 of it)")
    ap.add_argument("--more-tests", type=int, default=0,
                    help="K more batch pairs of --test scenes (scene seeds 1000 + 17k) priced with each arm's detector")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--from-json", type=Path)
    args = ap.parse_args()
    if args.imgsz is None:
        from smarthub.annotate.options import DetectorTrainOptions

        args.imgsz = DetectorTrainOptions().imgsz
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.from_json:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        for s in saved:
            for k in [k for k in ("val", *BATCHES, *("more " + b for b in BATCHES)) if k in s]:
                s[k] = [([(b[0], tuple(b[1]), b[2]) for b in p], [(b[0], tuple(b[1]), b[2]) for b in t])
                        for p, t in s[k]]
        report(saved)
        return

    from detection_loop import CLASSES, photos
    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.detset import scan_labelme_dir
    from smarthub.annotate.evaluate import coco_map
    from smarthub.annotate.export import dataset_split
    from smarthub.annotate.scenes import compose_scenes, load_drawings
    from smarthub.annotate.train_detector import DetectorTrainOptions, predict_items, train_detector
    from smarthub.workspace import contain_library_caches

    started = time.perf_counter()
    saved: list = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        with tempfile.TemporaryDirectory(prefix="smarthub-newind-") as tmp:
            root = Path(tmp)
            contain_library_caches(root / "cache")
            drawings = {k: load_drawings(v, max_side_px=160, failed=[]) for k, v in CLASSES.items()}
            seen = {k: [d for i, d in enumerate(v) if i % 4] for k, v in drawings.items()}
            new = {k: [d for i, d in enumerate(v) if not i % 4] for k, v in drawings.items()}
            bgs = photos()
            size = (args.scene_px * 5 // 4, args.scene_px)  # scenes as the detection loop's (independent of arm imgsz)
            sets = {"corrected": (args.n, seen), "seen": (args.test, seen), "new individuals": (args.test, new)}
            for i, (name, (n, ds)) in enumerate(sets.items()):
                compose_scenes(root / name, n, ds, bgs, size=size, seed=seed + 101 * i,
                               prefix=name.replace(" ", "_") + "_")
            cfg = root / "cache" / "ultralytics"
            for arm in [a for a in args.arms.split(",") if a.strip()]:
                name, fields, extra = parse_arm(arm)
                opts = DetectorTrainOptions(**{"epochs": args.epochs, "patience": args.patience, "imgsz": args.imgsz,
                                               "batch": 8, **fields}, seed=seed, name=f"{name}-{seed}",
                                            ultralytics_args=extra)
                t0 = time.perf_counter()
                run = train_detector(root / "corrected", root / "models", opts)
                low = load_detector(run.run_dir, DetectorOptions(conf=0.001, run_thresholds=False, config_dir=cfg,
                                                                 max_det=100))
                ds = scan_labelme_dir(root / "corrected")
                record = dataset_split(ds, split=opts.split, seed=opts.seed)
                val_items = [it for it in ds.items if record.assignments[it.key] == "val"]
                row = {"arm": name, "seed": seed, "fields": fields, "extra": extra, "train_s": run.seconds,
                       "epochs": run.length.epochs if run.length else None, "val_map50": run.map50, "map50": {}}
                for key, items in (("val", val_items), *((b, scan_labelme_dir(root / b).items) for b in BATCHES)):
                    dets = predict_items(low, items)
                    row[key] = [(boxes_of(d), [(lab, tuple(xyxy), None) for lab, xyxy in it.boxes])
                                for it, d in zip(items, dets)]
                    if key != "val":
                        row["map50"][key] = coco_map([(p, t, it.width, it.height) for (p, t), it in
                                                      zip(row[key], items)], sorted(CLASSES))[0] or 0.0
                for k in range(args.more_tests):  # the same detector on more scenes: how much is the batch
                    for b, dr in (("seen", seen), ("new individuals", new)):
                        f = root / f"more {name} {b} {k}"
                        compose_scenes(f, args.test, dr, bgs, size=size, seed=1000 + 17 * k + (b == "seen"),
                                       prefix=b.replace(" ", "_"))
                        items = scan_labelme_dir(f).items
                        row.setdefault("more " + b, []).extend(
                            (boxes_of(d), [(lab, tuple(xyxy), None) for lab, xyxy in it.boxes])
                            for it, d in zip(items, predict_items(low, items)))
                saved.append(row)
                print(f"{name} seed {seed}: {run.length.epochs if run.length else '?'} epochs in "
                      f"{time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f}); val mAP50 "
                      f"{run.map50 or 0:.3f}; test mAP50 seen {row['map50']['seen']:.3f} new "
                      f"{row['map50']['new individuals']:.3f}", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(saved), encoding="utf-8")
    report(saved)
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
