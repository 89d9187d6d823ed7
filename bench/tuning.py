"""Tuned against default settings at equal total time, for both models (issue 20): the classifier through
`smarthub tune` (Optuna: learning rate, frozen depth, augmentation strength, image size) and the detector through
`train-detector --tune N` (Ultralytics' genetic tuner: lr0, image size, scale/translate/mosaic).

    .venv/bin/python bench/tuning.py                         # both models (minutes on an idle 2-core CPU)
    .venv/bin/python bench/tuning.py --only detector --trials 3 --detector-budget 3m
    .venv/bin/python bench/tuning.py --quick                 # smoke run

Classifier: openclipart drawings (bench/time_to_accuracy.py's eight subject folders, `--per-class` each, 64 px),
train()'s seeded split. Tuned: `tune(trials=N)`, every trial `--epochs` fine-tuning epochs; with no budget the best
trial's model is the tuned model (a final run with its settings would train it again); its wall time T. Default at equal time: `train()` with its defaults and
`budget_s=T` (the planner fills T with as many of up to 6·(N+1) epochs as fit); the default with its own epochs is
printed too. Scored on the validation split (what tuning and keep-best select on: the tuned figure carries a
selection bias) and on held-out drawings (the next `--per-class` of each folder, which neither run saw).

Detector: `--scenes` scenes of the shipped drawings on generated backgrounds (compose_scenes, 160×128), the split
train_detector makes. Tuned: `tune_detector(trials=N)` with `--detector-budget` B: trials of B/(N+1) each, then the
final run trains on from the best trial's weights for what is left, and the better of the two on validation is
kept (both printed); default: `train_detector` with the same B. Scored on validation (run.json's mAP50-95; the tuned side
selects on it) and on `--scenes` held-out scenes (mAP50-95 of the run's detections, through smarthub's own
evaluation). Both wall times are printed: a trial is a subprocess of Ultralytics' CLI, whose start-up counts.
Writes bench/out/tuning.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))


def clipart(data_dir: Path, held_dir: Path, *, per_class: int) -> None:
    """The first `per_class` drawings of each subject folder into data_dir, the next `per_class` into held_dir."""
    from time_to_accuracy import clipart_folders

    both = data_dir.parent / "both"
    clipart_folders(both, per_class=2 * per_class)
    for folder in sorted(p for p in both.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        for target, chosen in ((data_dir, files[:per_class]), (held_dir, files[per_class:])):
            (target / folder.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                f.rename(target / folder.name / f.name)


def held_out_accuracy(model: Path, held_dir: Path) -> float:
    from smarthub.model.predict import predict

    paths = sorted(held_dir.rglob("*.png"))
    preds = predict(model, paths, top_k=1, device="cpu")
    return sum(p.label == path.parent.name for p, path in zip(preds, paths)) / len(paths)


def classifier(root: Path, *, per_class: int, size_px: int, epochs: int, trials: int) -> dict:
    from smarthub.model.train import TrainOptions, train
    from smarthub.model.tune import TuneSpace, tune
    from smarthub.workspace import Workspace

    held = root / "held"
    ws = Workspace(root / "tuned" / "data", root / "tuned" / "models")
    clipart(ws.data_dir, held, per_class=per_class)
    base = TrainOptions(size_px=size_px, epochs=epochs, batch_size=32)
    space = TuneSpace(sizes_px=(size_px // 2, size_px, size_px * 3 // 2))
    t0 = time.monotonic()
    tuned = tune(ws, base, space=space, trials=trials, say=lambda line: print("  " + line, flush=True))
    tuned_s = time.monotonic() - t0
    out = {"tuned": {"seconds": tuned_s, "valid": tuned.final.report["valid_accuracy"],
                     "held_out": held_out_accuracy(ws.models_dir / "export.pkl", held),
                     "best": {"lr": tuned.best.lr, "freeze_stride": tuned.best.freeze_stride,
                              "aug_strength": tuned.best.aug_strength, "size_px": tuned.best.size_px},
                     "trials": [t.valid_accuracy for t in tuned.trials],
                     "promoted": tuned.promoted, "why": tuned.why}}
    for name, options in (("default_equal_time", TrainOptions(size_px=size_px, batch_size=32,
                                                              epochs=6 * (trials + 1), budget_s=tuned_s)),
                          ("default", TrainOptions(size_px=size_px, batch_size=32))):
        other = Workspace(root / name / "data", root / name / "models")
        other.data_dir.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(ws.data_dir, other.data_dir)  # the same images (train() only reads them)
        t0 = time.monotonic()
        report = train(other, options).report
        out[name] = {"seconds": time.monotonic() - t0, "valid": report["valid_accuracy"],
                     "held_out": held_out_accuracy(other.models_dir / "export.pkl", held),
                     "epochs_run": report["epochs_run"], "decision": report.get("finetune_decision", "")}
    return out


def scene_folder(folder: Path, n: int, *, seed: int) -> Path:
    from smarthub.annotate.scenes import compose_scenes, load_drawings, texture_backgrounds
    from smarthub.demo import SAMPLES_DIR

    draws = {c: load_drawings(SAMPLES_DIR / c, limit=8, max_side_px=96) for c in ("fish", "fruit", "bird")}
    compose_scenes(folder, n, draws, texture_backgrounds(4, size=(192, 160), seed=seed), size=(160, 128), seed=seed)
    return folder


def held_out_map(run_dir: Path, held: Path) -> float | None:
    """mAP50-95 of the run's detector on the held-out scenes (train_detector's own validation code)."""
    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.detset import scan_labelme_dir
    from smarthub.annotate.train_detector import EVAL_CONF, predict_items, validation_metrics

    run = json.loads((run_dir / "run.json").read_text())
    detector = load_detector(run_dir / run["weights"], DetectorOptions(conf=EVAL_CONF, max_det=100, imgsz=run["imgsz"],
                                                                       device="cpu"))
    items = scan_labelme_dir(held).items
    _, _, map50_95, _ = validation_metrics(items, predict_items(detector, items), run["names"], min_precision=None)
    return map50_95


def detector(root: Path, *, scenes: int, budget: str, trials: int, imgsz: int) -> dict:
    from smarthub.annotate.train_detector import DetectorTrainOptions, train_detector
    from smarthub.annotate.tune_detector import tune_detector

    lm = scene_folder(root / "lm", scenes, seed=0)
    held = scene_folder(root / "held", scenes, seed=1)
    options = DetectorTrainOptions(budget=budget, imgsz=imgsz, batch=8)
    out = {}
    t0 = time.monotonic()
    tuned = tune_detector(lm, root / "models-tuned", options, trials=trials,
                          progress=lambda p: p.stage == "trial" and print("  " + p.line(), flush=True))
    tuning = json.loads((tuned.run.run_dir / "run.json").read_text())["tuning"]
    out["tuned"] = {"seconds": time.monotonic() - t0, "valid": tuned.run.map50_95, "best": tuned.best,
                    "trials": [t.fitness for t in tuned.trials], "trial_seconds": [t.seconds for t in tuned.trials],
                    "held_out": held_out_map(tuned.run.run_dir, held), "promoted": tuned.promoted,
                    "why": tuning.get("why"), "trial_map50_95": tuning.get("trial_score"),
                    "final_map50_95": tuning.get("final_score"),
                    "final_held_out": None if tuned.final_run is None else held_out_map(tuned.final_run, held)}
    t0 = time.monotonic()
    run = train_detector(lm, root / "models-default", options)
    out["default"] = {"seconds": time.monotonic() - t0, "valid": run.map50_95,
                      "held_out": held_out_map(run.run_dir, held)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("classifier", "detector"))
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per classifier trial")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--detector-budget", default="4m")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = ap.parse_args()
    if args.quick:
        args.trials, args.per_class, args.epochs, args.scenes, args.detector_budget = 2, 12, 1, 16, "60s"
    import torch

    from helpers import fill_torch_home

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="smarthub-tuning-") as tmp:
        root = Path(tmp)
        os.environ["TORCH_HOME"] = str(fill_torch_home(root / "torch"))
        if args.only in (None, "classifier"):
            print(f"classifier: openclipart, 8 classes × {args.per_class} (+ as many held out), {args.size} px, "
                  f"{args.trials} trials of {args.epochs} epochs", flush=True)
            r = results["classifier"] = classifier(root / "classifier", per_class=args.per_class, size_px=args.size,
                                                   epochs=args.epochs, trials=args.trials)
            for name in ("tuned", "default_equal_time", "default"):
                x = r[name]
                print(f"  {name}: validation {x['valid']:.3f}, held-out {x['held_out']:.3f} in {x['seconds']:.0f}s"
                      + (f" ({x['epochs_run']} epochs)" if "epochs_run" in x
                         else f"; best {x['best']}; {x['why']}"), flush=True)
        if args.only in (None, "detector"):
            print(f"detector: {args.scenes} scenes (+ {args.scenes} held out), {args.trials} trials, budget "
                  f"{args.detector_budget}", flush=True)
            r = results["detector"] = detector(root / "detector", scenes=args.scenes, budget=args.detector_budget,
                                               trials=args.trials, imgsz=args.imgsz)
            for name in ("tuned", "default"):
                x = r[name]
                v = "-" if x["valid"] is None else f"{x['valid']:.3f}"
                h = "-" if x["held_out"] is None else f"{x['held_out']:.3f}"
                print(f"  {name}: validation mAP50-95 {v}, held-out {h} in {x['seconds']:.0f}s"
                      + (f"; best {x['best']}; {x['why']}" if "best" in x else ""), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tuning.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out / 'tuning.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
