"""How good are the pre-annotations, and how much drawing do they save? The whole loop on real drawings.

    .venv/bin/python bench/annotate_quality.py [--train 300] [--batch 40] [--epochs 60] [--imgsz 160]   # ~6 min

1. Scenes: public-domain openclipart drawings (Debian `openclipart-png`, with alpha) of two classes, `fish`
   and `fruit`, 1-3 per scene, pasted at random sizes and places onto crops of real photos (scikit-image's
   sample photos). The ground truth is written as Labelme files with smarthub's codec. The unseen batch uses
   drawings the detector never saw.
2. Train: `export-yolo` on the training scenes, then Ultralytics `YOLO("yolov8n.yaml")` trained from scratch
   on the CPU (no pretrained weights can be had offline).
3. Pre-annotate two new batches with `annotate_folder` and score each with `evaluate_annotations` against
   its truth: mAP50, mAP50-95, per-label precision/recall, and the correction effort. Batch "new drawings"
   holds drawings the detector never saw (new individuals of a class); batch "seen drawings" holds new
   scenes of drawings it trained on (the same objects photographed again).

Baseline (same run): annotating a batch by hand, every box drawn. The effort is priced as a person spends it
(evaluate.ActionCosts: verify 1.6 s, adjust 3.5 s, relabel/delete 1.6 s, draw 7.0 s; sources in
smarthub/annotate/evaluate.py); the ratio printed is the estimated time to correct ÷ the time to draw every
box (below 1 pre-annotation saves time). bench/detection_loop.py compares starts (scratch vs pretrained).
Needs the test dependencies (`scripts/setup.sh --test`: ultralytics, openclipart-png).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIPART = Path("/usr/share/openclipart/png")
CLASSES = {"fish": CLIPART / "animals" / "fish", "fruit": CLIPART / "food" / "fruit"}
PHOTOS = ("grass", "gravel", "brick", "coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field", "moon",
          "camera", "coins")


def backgrounds() -> list[Image.Image]:
    import skimage.data as skd

    out = []
    for name in PHOTOS:
        arr = getattr(skd, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        out.append(Image.fromarray(arr).convert("RGB"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=300, help="training scenes (default 300)")
    parser.add_argument("--batch", type=int, default=40, help="scenes per batch to pre-annotate (default 40)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--conf", type=float, default=0.25, help="annotate --conf (default 0.25, the CLI's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("YOLO_VERBOSE", "False")  # the epoch table, not a line per batch
    from smarthub.annotate.preannotate import annotate_folder
    from smarthub.annotate.detect import DetectorOptions, import_ultralytics, load_detector
    from smarthub.annotate.evaluate import evaluate_annotations
    from smarthub.annotate.export import export_yolo
    from smarthub.annotate.scenes import compose_scenes, load_drawings

    skipped: list[tuple[Path, str]] = []  # a few drawings are rasters beyond the pixel limit
    drawings = {label: load_drawings(folder, failed=skipped) for label, folder in CLASSES.items()}
    # the unseen batch uses drawings the detector never saw: every 4th drawing of each class is held out
    seen = {label: [d for i, d in enumerate(ds) if i % 4] for label, ds in drawings.items()}
    unseen = {label: [d for i, d in enumerate(ds) if not i % 4] for label, ds in drawings.items()}
    photos = backgrounds()
    size = (args.imgsz, args.imgsz * 3 // 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_train = compose_scenes(root / "train", args.train, seen, photos, size=size, seed=args.seed,
                                 side_frac=(0.22, 0.55))
        batches = {"new drawings": unseen, "seen drawings": seen}
        n_truth = {name: compose_scenes(root / name, args.batch, ds, photos, size=size, seed=args.seed + 1 + k,
                                       side_frac=(0.22, 0.55))
                   for k, (name, ds) in enumerate(batches.items())}
        print(f"{args.train} training scenes ({n_train} boxes), batches of {args.batch} scenes "
              f"({', '.join(f'{k}: {v} boxes' for k, v in n_truth.items())}), {size[0]}x{size[1]} px; drawings: "
              + ", ".join(f"{k} {len(seen[k])} seen / {len(unseen[k])} held out" for k in drawings), flush=True)
        export = export_yolo(root / "train", root / "yolo", split=(0.85, 0.15, 0.0), seed=args.seed)
        YOLO = import_ultralytics(root / "ultralytics")
        model = YOLO("yolov8n.yaml")
        t0 = time.perf_counter()
        model.train(data=str(export.data_yaml), epochs=args.epochs, imgsz=args.imgsz, batch=16, workers=0,
                    device="cpu", plots=False, amp=False, project=str(root / "runs"), name="q", exist_ok=True,
                    verbose=False, seed=args.seed)
        t_train = time.perf_counter() - t0
        print(f"trained yolov8n from scratch: {args.epochs} epochs in {t_train:.0f} s")
        detector = load_detector(root / "runs" / "q" / "weights" / "best.pt",
                                 DetectorOptions(conf=args.conf, imgsz=args.imgsz, config_dir=root / "ultralytics"))
        for name in batches:
            images, truth = root / f"{name} images", root / f"{name} truth"
            images.mkdir()
            truth.mkdir()
            for p in sorted((root / name).iterdir()):  # the images alone; the truth apart
                p.rename((images if p.suffix == ".jpg" else truth) / p.name)
            report = annotate_folder(images, detector, out_dir=root / f"{name} pred")
            result = evaluate_annotations(root / f"{name} pred", truth)
            e = result.effort
            print(f"\nbatch '{name}': {len(report.written)} images pre-annotated")
            print(result.summary())
            print(f"boxes by hand {n_truth[name]}: estimated {e.seconds():.0f} s to correct vs {e.hand_seconds():.0f} s "
                  f"to draw (ratio {e.ratio():.2f}; verify {e.verify}, adjust {e.adjust}, relabel {e.relabel}, "
                  f"delete {e.delete}, draw {e.draw})")


if __name__ == "__main__":
    main()
