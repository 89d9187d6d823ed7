"""Pre-annotation commands: annotate, evaluate-annotations, train-detector, export-yolo, import-yolo."""
from __future__ import annotations

import argparse
from pathlib import Path

from smarthub.cli._common import add_workspace_args, progress_printer, workspace_from
from smarthub.workspace import contain_library_caches

ORDER = 50
DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"
DETECTOR_BUDGET = "10m"  # = train_detector.DEFAULT_BUDGET (checked by a test; importing it here would be slow)
DETECTOR_PATIENCE = 10  # = train_detector.DEFAULT_PATIENCE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("annotate", help="pre-annotate images with a detector: Labelme JSON next to each image")
    p.add_argument("images_dir", type=Path, metavar="IMAGES_DIR")
    p.add_argument("--model", default=DEFAULT_DETECTOR, metavar="SPEC",
                   help="torchvision model name (COCO weights), a detector run folder (models/detectors/<run>), "
                        f"a smarthub detector checkpoint, or YOLO .pt/.onnx (default {DEFAULT_DETECTOR})")
    p.add_argument("--out", type=Path, metavar="DIR", help="write JSON into a mirrored tree under DIR")
    p.add_argument("--conf", type=float, help="minimum detection confidence for every class (default: a run "
                                              "folder's tuned per-class thresholds, else 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--imgsz", type=int, help="detector input size in pixels")
    p.add_argument("--max-det", type=int, default=300, help="at most this many boxes per image (default 300)")
    p.add_argument("--classes", help="keep only these model classes, comma-separated")
    p.add_argument("--label-map", default="", metavar="A=B,...", help="rename model classes, e.g. person=worker")
    p.add_argument("--batch", type=int, default=4, help="images per detector call (default 4)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")
    p.add_argument("--silver-min-conf", type=float, metavar="CONF",
                   help="flag boxes scored at least CONF (and images whose boxes all are) as silver")
    p.add_argument("--classifier", type=Path, metavar="EXPORT_PKL",
                   help="label each box by classifying its crop with this smarthub classifier")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true", help="replace Labelme files a person edited")
    g.add_argument("--merge", action="store_true", help="keep a person's shapes and add new boxes")
    p.add_argument("--embed-image", action="store_true", help="embed the image in imageData")
    p.add_argument("--zip", type=Path, metavar="ZIP", help="also zip the written JSON files to ZIP")
    p.add_argument("--order", default="both", choices=("both", "uncertainty", "diversity", "none"),
                   help="rank the batch in .smarthub/next_images.csv: which images to correct first (uncertain "
                        "boxes, and diverse images; default both)")
    p.add_argument("--floor", type=float, default=0.05, metavar="CONF",
                   help="keep every box scored at least CONF in .smarthub/scored_boxes.json, so thresholds can "
                        "move later without running the detector again (default 0.05)")
    p.set_defaults(func=run_annotate)

    p = sub.add_parser("evaluate-annotations", help="precision/recall/mAP of pre-annotations against corrected files")
    p.add_argument("pred_dir", type=Path, metavar="PRED_DIR")
    p.add_argument("truth_dir", type=Path, metavar="TRUTH_DIR")
    p.add_argument("--iou", type=float, default=0.5, help="IoU at which a box counts as found (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser("train-detector", help="train a detector on corrected Labelme files (split, train, "
                                              "validate, tune per-class thresholds)")
    p.add_argument("labelme_dir", type=Path, metavar="LABELME_DIR")
    add_workspace_args(p)
    p.add_argument("--model", default="auto", metavar="SPEC",
                   help="auto (default: COCO yolov8n.pt/yolo11n.pt when cached, else a YOLOv8 head on a cached "
                        "ImageNet torchvision backbone, else yolov8n.yaml from scratch), a YOLO .pt/.yaml, a torchvision "
                        "backbone name (e.g. mobilenet_v2), or a torchvision detector name")
    p.add_argument("--epochs", type=int, help="train at most this many epochs (wins over --budget)")
    p.add_argument("--budget", default=DETECTOR_BUDGET, metavar="DURATION",
                   help=f"time for training, e.g. 90s, 5m, 1h (default {DETECTOR_BUDGET}); it stops earlier when "
                        f"the validation mAP stops improving")
    p.add_argument("--patience", type=int, default=DETECTOR_PATIENCE,
                   help=f"stop after this many epochs without a better validation mAP (default {DETECTOR_PATIENCE}; "
                        f"0: never early)")
    p.add_argument("--imgsz", type=int, default=320, help="training image size in pixels (default 320)")
    p.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N|mps (default auto)")
    p.add_argument("--split", default="0.8,0.2,0", help="train,val,test fractions for new images (default 0.8,0.2,0)")
    p.add_argument("--seed", type=int, default=0, help="split and training seed (default 0)")
    p.add_argument("--tune", type=_tune_value, default="time", metavar="time|f1|N",
                   help="per-class thresholds: the least estimated correction time on validation (default), or "
                        "the best F1; a number N: first N trials of Ultralytics' genetic search for the learning "
                        "rate, augmentation strength and image size (sharing --budget with the final run)")
    p.add_argument("--min-precision", type=float, metavar="P",
                   help="per-class threshold: the most recall reaching precision P (instead of --tune)")
    p.add_argument("--silver", type=Path, metavar="DIR", help="add silver-flagged Labelme files of DIR to training")
    p.add_argument("--name", help="run folder name (default: the time)")
    p.set_defaults(func=run_train_detector)

    p = sub.add_parser("export-yolo", help="write a YOLO dataset (images, labels, data.yaml) from Labelme files")
    p.add_argument("labelme_dir", type=Path, metavar="LABELME_DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--split", default="0.8,0.1,0.1", help="train,val,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, default=0, help="split seed for new images (default 0)")
    p.add_argument("--format", default="yolo", choices=("yolo", "coco"), help="yolo (default) or coco JSON")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT whole")
    p.set_defaults(func=run_export_yolo)

    p = sub.add_parser("import-yolo", help="write Labelme files (with the images) from a YOLO dataset")
    p.add_argument("yolo_dir", type=Path, metavar="YOLO_DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT whole")
    p.set_defaults(func=run_import_yolo)


def run_annotate(args: argparse.Namespace) -> int:
    import sys

    from smarthub.annotate.preannotate import annotate_folder, zip_outputs
    from smarthub.annotate.detect import DetectorOptions, parse_label_map
    from smarthub.annotate.next_images import write_ranking
    from smarthub.annotate.scored import scoring_detector
    from smarthub.model.devices import resolve_device
    from smarthub.workspace import Workspace, batch_placement_warning

    root = args.out or args.images_dir
    if Path(root).is_dir():
        contain_library_caches(Path(root) / ".smarthub" / "cache")
    options = DetectorOptions(
        conf=0.25 if args.conf is None else args.conf, run_thresholds=args.conf is None, iou=args.iou, imgsz=args.imgsz, max_det=args.max_det,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        label_map=parse_label_map(args.label_map), batch=args.batch, device=resolve_device(args.device),
        config_dir=root / ".smarthub" / "ultralytics")
    detector, thresholds, tuned = scoring_detector(args.model, options, floor=args.floor)
    warning = batch_placement_warning(Workspace.from_args(), Path(root))
    if warning:  # after the detector loaded: bad input stays one line
        print(f"warning: {warning}", file=sys.stderr)
    report = annotate_folder(args.images_dir, detector, out_dir=args.out, overwrite=args.overwrite, merge=args.merge,
                             embed_image=args.embed_image, classifier=args.classifier,
                             progress=progress_printer("annotating"), silver_min_conf=args.silver_min_conf,
                             thresholds=thresholds, thresholds_tuned=tuned)
    print(report.summary())
    if report.scored is not None and report.scored.images:
        ranking = write_ranking(report.scored, thresholds, order=args.order)
        top = ", ".join(r.image for r in ranking.rows[:5])
        note = f"; {ranking.note}" if ranking.note else ""
        print(f"next images to correct ({args.order}{note}): {ranking.path}\n  first: {top}")
    if args.zip:
        print(f"zipped to {zip_outputs(report, zip_path=args.zip)}")
    return 1 if report.failed else 0


def run_evaluate(args: argparse.Namespace) -> int:
    from smarthub.annotate.evaluate import evaluate_annotations

    import json
    import sys

    report = evaluate_annotations(args.pred_dir, args.truth_dir, iou=args.iou)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(json.dumps(report.to_json(), indent=2) if args.json else report.summary())
    return 0


def _tune_value(text: str) -> str | int:
    """--tune: 'time', 'f1' or a number of tuning trials (checked by tune_detector.check_trials)."""
    if text in ("time", "f1"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tune takes time, f1 or a number of trials (got {text!r})") from None


def run_train_detector(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import parse_split
    from smarthub.annotate.train_detector import DetectorTrainOptions, train_detector

    ws = workspace_from(args)
    options = DetectorTrainOptions(model=args.model, epochs=args.epochs, budget=args.budget, patience=args.patience,
                                   imgsz=args.imgsz, batch=args.batch, device=args.device,
                                   split=parse_split(args.split), seed=args.seed, min_precision=args.min_precision,
                                   tune=args.tune if isinstance(args.tune, str) else "time",
                                   silver_dir=args.silver, name=args.name)

    def progress(p) -> None:  # one line per epoch; Ultralytics' own output goes to the run folder's train.log
        if p.stage in ("start", "epoch", "trial"):
            print(p.line(), flush=True)

    if isinstance(args.tune, int):
        from smarthub.annotate.tune_detector import tune_detector

        run = tune_detector(args.labelme_dir, ws.models_dir, options, trials=args.tune, progress=progress).run
    else:
        run = train_detector(args.labelme_dir, ws.models_dir, options, progress=progress)
    print(run.summary())
    print(f"use it: smarthub annotate IMAGES_DIR --model {run.run_dir}")
    return 0


def run_export_yolo(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import export_dataset, parse_split

    report = export_dataset(args.labelme_dir, args.out, fmt=args.format, split=parse_split(args.split),
                            seed=args.seed, overwrite=args.overwrite)
    print(report.summary())
    return 0


def run_import_yolo(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import import_yolo

    print(import_yolo(args.yolo_dir, args.out, overwrite=args.overwrite).summary())
    return 0
