"""Pre-annotation commands: annotate, evaluate-annotations, export-yolo."""
from __future__ import annotations

import argparse
from pathlib import Path

from smarthub.cli._common import progress_printer
from smarthub.workspace import contain_library_caches

ORDER = 50
DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("annotate", help="pre-annotate images with a detector: Labelme JSON next to each image")
    p.add_argument("images_dir", type=Path, metavar="IMAGES_DIR")
    p.add_argument("--model", default=DEFAULT_DETECTOR, metavar="SPEC",
                   help="torchvision model name (COCO weights), smarthub detector checkpoint, or YOLO .pt/.onnx "
                        f"(default {DEFAULT_DETECTOR})")
    p.add_argument("--out", type=Path, metavar="DIR", help="write JSON into a mirrored tree under DIR")
    p.add_argument("--conf", type=float, default=0.25, help="minimum detection confidence (default 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--imgsz", type=int, help="detector input size in pixels")
    p.add_argument("--max-det", type=int, default=300, help="at most this many boxes per image (default 300)")
    p.add_argument("--classes", help="keep only these model classes, comma-separated")
    p.add_argument("--label-map", default="", metavar="A=B,...", help="rename model classes, e.g. person=worker")
    p.add_argument("--batch", type=int, default=4, help="images per detector call (default 4)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--classifier", type=Path, metavar="EXPORT_PKL",
                   help="label each box by classifying its crop with this smarthub classifier")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace Labelme files a person edited")
    g.add_argument("--merge", action="store_true", help="keep a person's shapes and add new boxes")
    p.add_argument("--embed-image", action="store_true", help="embed the image in imageData")
    p.add_argument("--zip", type=Path, metavar="ZIP", help="also zip the written JSON files to ZIP")
    p.set_defaults(func=run_annotate)

    p = sub.add_parser("evaluate-annotations", help="precision/recall/mAP of pre-annotations against corrected files")
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR")
    p.add_argument("truth_dir", type=Path, metavar="TRUTH_DIR")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("export-yolo", help="write a YOLO dataset (images, labels, data.yaml) from Labelme files")
    p.add_argument("labelme_dir", type=Path, metavar="LABELME_DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    p.set_defaults(func=run_export_yolo)


def run_annotate(args: argparse.Namespace) -> int:
    from smarthub.annotate.preannotate import annotate_folder, zip_outputs
    from smarthub.annotate.detect import DetectorOptions, load_detector, parse_label_map

    root = args.out or args.images_dir
    if Path(root).is_dir():
        contain_library_caches(Path(root) / ".smarthub" / "cache")
    options = DetectorOptions(
        conf=args.conf, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        label_map=parse_label_map(args.label_map), batch=args.batch, device=args.device,
        config_dir=root / ".smarthub" / "ultralytics")
    detector = load_detector(args.model, options)
    report = annotate_folder(args.images_dir, detector, out_dir=args.out, overwrite=args.overwrite, merge=args.merge,
                             embed_image=args.embed_image, classifier=args.classifier,
                             progress=progress_printer("annotating"))
    print(report.summary())
    if args.zip:
        print(f"zipped to {zip_outputs(report, zip_path=args.zip)}")
    return 1 if report.failed else 0


def run_evaluate(args: argparse.Namespace) -> int:
    from smarthub.annotate.evaluate import evaluate_annotations

    print(evaluate_annotations(args.pred_dir, args.truth_dir).summary())
    return 0


def run_export_yolo(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import export_yolo, parse_split

    report = export_yolo(args.labelme_dir, args.out, split=parse_split(args.split), seed=args.seed)
    print(report.summary())
    return 1 if report.failed else 0
