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

Baseline (same run): annotating a batch by hand, every box drawn. The ratio printed is box edits by hand ÷
box edits after pre-annotation (added + deleted + moved + relabelled; above 1 pre-annotation saves edits).
Needs the test dependencies (`scripts/setup.sh --test`: ultralytics, openclipart-png).
"""
from __future__ import annotations

import argparse
import os
import random
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


def load_drawings(folder: Path, max_side: int = 256) -> list[Image.Image]:
    """The RGBA drawings of one class, trimmed to their visible pixels."""
    out = []
    for path in sorted(folder.glob("*.png")):
        im = Image.open(path).convert("RGBA")
        bbox = im.getchannel("A").getbbox()
        if bbox is None:
            continue
        im = im.crop(bbox)
        im.thumbnail((max_side, max_side))
        out.append(im)
    return out


def backgrounds() -> list[Image.Image]:
    import skimage.data as skd

    out = []
    for name in PHOTOS:
        arr = getattr(skd, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        out.append(Image.fromarray(arr).convert("RGB"))
    return out


def make_scenes(folder: Path, n: int, drawings: dict[str, list[Image.Image]], photos: list[Image.Image], *,
                size: tuple[int, int], seed: int) -> int:
    """Write n scenes (JPEG) with their Labelme truth next to them; return the number of boxes."""
    from smarthub.annotate.labelme import LabelmeFile, Shape, save_labelme

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    n_boxes = 0
    for i in range(n):
        photo = rng.choice(photos)
        scale = rng.uniform(0.3, 1.0)
        cw, ch = int(min(photo.width, w / scale * 1.0)), int(min(photo.height, h / scale * 1.0))
        x0, y0 = rng.randint(0, photo.width - cw), rng.randint(0, photo.height - ch)
        im = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BILINEAR)
        shapes: list[Shape] = []
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(rng.randint(1, 3)):
            label = rng.choice(sorted(drawings))
            d = rng.choice(drawings[label])
            side = rng.randint(int(0.22 * h), int(0.55 * h))
            d = d.copy()
            d.thumbnail((side, side))
            for _attempt in range(20):
                x, y = rng.randint(0, w - d.width), rng.randint(0, h - d.height)
                box = (x, y, x + d.width, y + d.height)
                if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in boxes):
                    break
            else:
                continue
            im.paste(d, (x, y), d)
            boxes.append(box)
            shapes.append(Shape(label=label, points=[[float(box[0]), float(box[1])], [float(box[2]), float(box[3])]]))
        name = f"scene{i:04d}.jpg"
        im.save(folder / name, quality=90)
        save_labelme(folder / f"scene{i:04d}.json", LabelmeFile(image_path=name, image_height=h, image_width=w,
                                                                shapes=shapes))
        n_boxes += len(shapes)
    return n_boxes


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

    drawings = {label: load_drawings(folder) for label, folder in CLASSES.items()}
    # the unseen batch uses drawings the detector never saw: every 4th drawing of each class is held out
    seen = {label: [d for i, d in enumerate(ds) if i % 4] for label, ds in drawings.items()}
    unseen = {label: [d for i, d in enumerate(ds) if not i % 4] for label, ds in drawings.items()}
    photos = backgrounds()
    size = (args.imgsz, args.imgsz * 3 // 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_train = make_scenes(root / "train", args.train, seen, photos, size=size, seed=args.seed)
        batches = {"new drawings": unseen, "seen drawings": seen}
        n_truth = {name: make_scenes(root / name, args.batch, ds, photos, size=size, seed=args.seed + 1 + k)
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
            print(f"box edits: by hand {n_truth[name]}, after pre-annotation {e.edits} (kept {e.kept}, added "
                  f"{e.added}, deleted {e.deleted}, moved {e.moved}, relabelled {e.relabelled}); "
                  f"ratio {n_truth[name] / max(e.edits, 1):.2f}")


if __name__ == "__main__":
    main()
