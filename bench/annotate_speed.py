"""Images/second of `annotate_folder` against the raw detector forward on the same images, and the JSON cost.

    .venv/bin/python bench/annotate_speed.py [--quick] [--images 48] [--size 640x480] [--threads 1] [--model SPEC]

Baseline: `detector.forward` on images already decoded in memory (batches of --batch). Measured:
`annotate_folder` on the same files (decode + EXIF transpose + detect + Labelme JSON written atomically).
Both run alternately in one process, best of --repeats each, so machine load hits both sides.
Without --model an untrained fasterrcnn_mobilenet_v3_large_320_fpn checkpoint is used (same forward cost
as a trained one; no weights needed).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from smarthub.annotate.preannotate import DEFAULT_MAX_SIDE_PX, annotate_folder, load_for_detection  # noqa: E402
from smarthub.annotate.detect import DetectorOptions, load_detector  # noqa: E402
from smarthub.annotate.labelme import detections_to_labelme, save_labelme  # noqa: E402


def make_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        im = Image.fromarray(rng.integers(60, 200, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(3):
            s = int(rng.integers(20, min(size) // 2))
            x, y = int(rng.integers(0, size[0] - s)), int(rng.integers(0, size[1] - s))
            im.paste(tuple(int(c) for c in rng.integers(0, 255, 3)), (x, y, x + s, y + s))
        p = folder / f"img{i:04d}.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 4 == 0 else 1  # a quarter are phone photos stored rotated
        im.save(p, quality=90, exif=exif.tobytes())
        paths.append(p)
    return paths


def untrained_checkpoint(path: Path) -> Path:
    import torch

    from smarthub.annotate.detect import build_torchvision_model, save_detector_checkpoint

    torch.manual_seed(0)
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    labels = ["__background__", "a", "b", "c"]
    return save_detector_checkpoint(path, build_torchvision_model(arch, len(labels)), arch=arch, labels=labels)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 images, 1 repeat (smoke run)")
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core machine 2 threads spin and the figures "
                         "swing wildly; 0 = torch's default)")
    ap.add_argument("--model", help="detector spec (default: an untrained fasterrcnn_mobilenet_v3_large_320_fpn)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.repeats = 8, 1
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="smarthub-bench-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "imgs").mkdir()
        paths = make_images(tmp / "imgs", args.images, (w, h))
        spec = args.model or untrained_checkpoint(tmp / "det.pt")
        det = load_detector(spec, DetectorOptions(conf=0.05, max_det=20, batch=args.batch))
        images = [ImageOps.exif_transpose(Image.open(p)).convert("RGB") for p in paths]
        max_side = det.max_side_px or DEFAULT_MAX_SIDE_PX
        small = [load_for_detection(p, max_side_px=max_side, min_side_px=det.min_side_px)[0]
                 for p in paths]  # what annotate feeds the model
        det.detect(images[: args.batch])  # warm-up

        raw_s, small_s, ann_s = [], [], []  # (wall s, cpu s) per repeat
        report = None
        for _ in range(args.repeats):
            for imgs, out in ((images, raw_s), (small, small_s)):
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(0, len(imgs), args.batch):
                    det.forward(imgs[i:i + args.batch])
                out.append((time.perf_counter() - t0, time.process_time() - c0))
            t0, c0 = time.perf_counter(), time.process_time()
            report = annotate_folder(tmp / "imgs", det, overwrite=True)
            ann_s.append((time.perf_counter() - t0, time.process_time() - c0))
        assert report is not None and len(report.written) == len(paths), report.summary()

        # JSON cost alone: detections → Labelme → atomic write, for the detections of the first batch
        dets = det.detect(images[: args.batch])
        n_json = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < (0.5 if args.quick else 2.0):
            for k, d in enumerate(dets):
                lf = detections_to_labelme(d, image_path=f"img{k}.jpg", width=w, height=h, provenance=det.provenance())
                save_labelme(tmp / "json" / f"{n_json}.json", lf)
                n_json += 1
        json_ms = (time.perf_counter() - t0) / n_json * 1000

    n = len(paths)
    raw_ips, small_ips, ann_ips = (n / min(w for w, _ in x) for x in (raw_s, small_s, ann_s))
    raw_cpu, small_cpu, ann_cpu = (n / min(c for _, c in x) for x in (raw_s, small_s, ann_s))
    print(f"images: {len(paths)} x {w}x{h} JPEG (1 in 4 EXIF-rotated), batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}, detector {det.name}")
    print(f"raw forward, full-size decoded images     : {raw_ips:7.2f} images/s (best of {args.repeats})")
    print(f"raw forward, pre-scaled ({small[0].width}x{small[0].height})     : {small_ips:7.2f} images/s "
          f"(what annotate feeds it)")
    print(f"annotate_folder (decode+detect+JSON)      : {ann_ips:7.2f} images/s")
    print(f"ratio annotate / raw full-size            : {ann_ips / raw_ips:7.2f}  (target >= 0.85)")
    print(f"ratio annotate / raw pre-scaled           : {ann_ips / small_ips:7.2f}  (pure overhead of annotate)")
    print(f"CPU-time images/s (robust to other load)  : raw {raw_cpu:.2f}, pre-scaled {small_cpu:.2f}, "
          f"annotate {ann_cpu:.2f}; ratio annotate/raw {ann_cpu / raw_cpu:.2f}, annotate/pre-scaled "
          f"{ann_cpu / small_cpu:.2f}")
    print(f"JSON build + atomic write                 : {json_ms:7.2f} ms per file ({report.boxes / len(paths):.1f} boxes/image), "
          f"{json_ms / 1000 * raw_ips * 100:.1f}% of a raw forward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
