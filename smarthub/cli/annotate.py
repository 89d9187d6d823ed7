"""Pre-annotation commands: annotate, evaluate-annotations, train-detector, export-yolo, import-yolo."""
from __future__ import annotations

import argparse
from pathlib import Path

from smarthub.cli._common import add_workspace_args, progress_printer, workspace_from
from smarthub.workspace import contain_library_caches

from smarthub.annotate.options import DEFAULT_DETECTOR, DetectOptions, DetectorTrainOptions, ExportOptions
from smarthub.optionspec import add_arguments, from_args

ORDER = 50


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("annotate", help="pre-annotate images with a detector: Labelme JSON next to each image")
    p.add_argument("images_dir", type=Path, metavar="IMAGES_DIR")
    p.add_argument("--model", default=DEFAULT_DETECTOR, metavar="SPEC",
                   help="torchvision model name (COCO weights), a detector run folder (models/detectors/<run>), "
                        f"a smarthub detector checkpoint, or YOLO .pt/.onnx (default {DEFAULT_DETECTOR})")
    p.add_argument("--out", type=Path, metavar="DIR", help="write JSON into a mirrored tree under DIR")
    p.add_argument("--conf", type=float, help="minimum detection confidence for every class (default: a run "
                                              "folder's tuned per-class thresholds, else 0.25)")
    add_arguments(p, DetectOptions, only={"iou", "one_box_per_object", "imgsz", "max_det"})
    p.add_argument("--classes", help="keep only these model classes, comma-separated")
    p.add_argument("--label-map", default="", metavar="A=B,...", help="rename model classes, e.g. person=worker")
    add_arguments(p, DetectOptions, only={"batch", "device"})
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
    add_arguments(p, DetectorTrainOptions)
    p.set_defaults(func=run_train_detector)

    p = sub.add_parser("export-yolo", help="write a YOLO dataset (images, labels, data.yaml) from Labelme files")
    p.add_argument("labelme_dir", type=Path, metavar="LABELME_DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    add_arguments(p, ExportOptions)
    p.set_defaults(func=run_export_yolo)

    p = sub.add_parser("import-yolo", help="write Labelme files (with the images) from a YOLO dataset")
    p.add_argument("yolo_dir", type=Path, metavar="YOLO_DIR")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT whole")
    p.set_defaults(func=run_import_yolo)


def run_annotate(args: argparse.Namespace) -> int:
    import sys

    from smarthub.annotate.preannotate import annotate_folder, zip_outputs
    from smarthub.annotate.detect import parse_label_map
    from smarthub.annotate.next_images import write_ranking
    from smarthub.annotate.scored import scoring_detector
    from smarthub.model.devices import resolve_device
    from smarthub.workspace import Workspace, batch_placement_warning

    root = args.out or args.images_dir
    if Path(root).is_dir():
        contain_library_caches(Path(root) / ".smarthub" / "cache")
    conf = {} if args.conf is None else {"conf": args.conf}  # none given: the run's tuned thresholds, else the default
    options = from_args(
        DetectOptions, args, **conf, run_thresholds=args.conf is None,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None,
        label_map=parse_label_map(args.label_map), device=resolve_device(args.device),
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


def run_train_detector(args: argparse.Namespace) -> int:
    from smarthub.annotate.train_detector import train_detector

    ws = workspace_from(args)
    options = from_args(DetectorTrainOptions, args)

    def progress(p) -> None:  # one line per epoch; Ultralytics' own output goes to the run folder's train.log
        if p.stage in ("start", "epoch", "trial"):
            print(p.line(), flush=True)

    if options.tune_trials:
        from smarthub.annotate.tune_detector import tune_detector

        run = tune_detector(args.labelme_dir, ws.models_dir, options, trials=options.tune_trials,
                            progress=progress).run
    else:
        run = train_detector(args.labelme_dir, ws.models_dir, options, progress=progress)
    print(run.summary())
    print(f"use it: smarthub annotate IMAGES_DIR --model {run.run_dir}")
    return 0


def run_export_yolo(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import export_dataset

    options = from_args(ExportOptions, args)
    report = export_dataset(args.labelme_dir, args.out, fmt=options.fmt, split=options.split, seed=options.seed,
                            overwrite=options.overwrite)
    print(report.summary())
    return 0


def run_import_yolo(args: argparse.Namespace) -> int:
    from smarthub.annotate.export import import_yolo

    print(import_yolo(args.yolo_dir, args.out, overwrite=args.overwrite).summary())
    return 0
