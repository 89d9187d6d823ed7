"""Real-data check (not a test): `smarthub train` on a few thousand Fashion-MNIST images as class folders,
MobileNetV2 pretrained on ImageNet, then the validation accuracy from report.json and the wall time.

    TORCH_HOME=<folder holding hub/checkpoints/mobilenet_v2-b0353104.pth> \
        .venv/bin/python bench/fashion_check.py [--per-class 300] [--epochs 2] [--size 64] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--keep", type=Path, default=None, help="write the workspace here instead of a temp dir")
    args = ap.parse_args()
    if args.quick:
        args.per_class, args.epochs = 20, 1

    from helpers import FASHION_CLASSES, write_fashion_folders
    from smarthub.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        data, models = root / "data", root / "models"
        write_fashion_folders(data, per_class=args.per_class, size_px=args.size)
        start = time.perf_counter()
        rc = cli(["train", "--data", str(data), "--models", str(models), "--arch", "mobilenet_v2",
                  "--epochs", str(args.epochs), "--size", str(args.size), "--batch-size", str(args.batch_size)])
        wall = time.perf_counter() - start
        if rc != 0:
            return rc
        report = json.loads((models / "report.json").read_text())
    print(f"\n{len(FASHION_CLASSES)} classes x {args.per_class} images at {args.size} px "
          f"({report['n_train']} train / {report['n_valid']} valid), mobilenet_v2 pretrained, "
          f"1 frozen + {args.epochs} epochs, batch {args.batch_size}")
    print(f"valid accuracy {report['valid_accuracy']:.4f}; wall time {wall:.0f} s (report: {report['seconds']} s)")
    worst = sorted(report["per_class"].items(), key=lambda kv: kv[1]["f1"])[:3]
    print("weakest classes (F1): " + ", ".join(f"{k} {v['f1']:.2f}" for k, v in worst))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
