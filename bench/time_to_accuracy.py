"""Accuracy against wall seconds: smarthub's LP-FT recipe (`train()`, what `smarthub train` runs) and fastai's
default `fine_tune` recipe, in the same process, same arch (MobileNetV2, ImageNet weights from the offline
package), same images, split, image size and batch size.

    .venv/bin/python bench/time_to_accuracy.py              # both datasets (a few minutes on 2 cores)
    .venv/bin/python bench/time_to_accuracy.py --threads 1  # when another job holds a core (see RESULTS.md)
    .venv/bin/python bench/time_to_accuracy.py --quick      # smoke run

Datasets (real, installable here): Fashion-MNIST class folders, 100 per class (Debian dataset-fashion-mnist),
openclipart drawings of eight subject folders, up to 100 per folder (Debian openclipart-png), flattened on
white once before either recipe starts so both read the same RGB pixels, and photos: 30 seeded crops of each of
eight scikit-image sample photos (`photo_folders`), where ImageNet features already suit and the head is best, and
the shipped demo's drawings at 96 px (`demo_folders`, issue 20's own case: 16 validation images).

Issue 20: each dataset and split also gets a `--head-only` run on a cold cache of its own (the default run's
time is printed as a multiple of it: fine-tuning only while it pays must end within 2x on data where the head
is best), `--budget SECONDS` adds a budgeted run, `--always-fine-tune` turns the stage-2 rule off, and
`--skip-fastai` leaves fastai out. A tiny head-only run warms the process up first.

fastai side: `DataBlock(ImageBlock, CategoryBlock, parent_label, Resize(squish), aug_transforms)` →
`vision_learner(mobilenet_v2)` → `fine_tune(E)` (one frozen epoch, then E; E = 3 by default: 4 passes over the
images), timed from building the DataLoaders; the accuracy after each epoch. smarthub side:
`train(ws, TrainOptions(...))` with its defaults (what `smarthub train` runs: 6 epochs, early blocks frozen; or
`--smarthub-epochs`) from a cold cache (image check, hashing, resizing, embedding all counted), the fitted
head's accuracy, then each epoch's; its final figure is report.json's (the best epoch kept). Targets (issue 11): smarthub reaches fastai's final
accuracy in ≤ 1/5 of fastai's wall time, and ends ≥ fastai + 5 points in no more total time.
Writes bench/out/time_to_accuracy.png (the curves) and .json (the figures).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLIPART = Path("/usr/share/openclipart/png")
CLIPART_CLASSES = {"mammal": "animals/mammals", "bird": "animals/birds", "bug": "animals/bugs",
                   "fruit": "food/fruit", "dessert": "food/desserts", "vehicle": "transportation/vehicles",
                   "music": "recreation/music", "clothing": "people/clothing"}


def fashion_folders(data_dir: Path, *, per_class: int) -> None:
    from helpers import write_fashion_folders

    write_fashion_folders(data_dir, per_class=per_class, size_px=28)


def clipart_folders(data_dir: Path, *, per_class: int) -> None:
    """Each subject folder's drawings (the first `per_class` readable ones by name), alpha flattened on white,
    as RGB PNGs."""
    from smarthub.errors import ImageError
    from smarthub.imaging import open_rgb

    for label, sub in CLIPART_CLASSES.items():
        target = data_dir / label
        target.mkdir(parents=True, exist_ok=True)
        written = 0
        for src in sorted((CLIPART / sub).rglob("*.png")):
            if written == per_class:
                break
            try:
                img = open_rgb(src, max_side_px=256)
            except ImageError:
                continue  # a few drawings exceed the pixel limit (smarthub refuses them everywhere)
            img.save(target / f"{written:03d}.png")
            written += 1


PHOTO_SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "camera")


def photo_folders(data_dir: Path, *, per_class: int, seed: int = 0) -> None:
    """Photos where ImageNet features already suffice: one class per scikit-image sample photo (an astronaut, a
    cup of coffee, a cat, a rocket, the Hubble deep field, a stained tissue slide, a retina, a cameraman), each
    class `per_class` seeded random crops (15-40 % of the shorter side, anywhere, mirrored half the time, with
    brightness and contrast jitter) saved as 128 px JPEGs."""
    import numpy as np
    import skimage.data
    from PIL import Image, ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    for name in PHOTO_SOURCES:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        w, h = photo.size
        target = data_dir / name.split("_")[0]
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(min(w, h) * rng.uniform(0.15, 0.4))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((128, 128), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                crop = ImageOps.mirror(crop)
            crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
            crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.7, 1.3))
            crop.save(target / f"{i:03d}.jpg", quality=90)


def demo_folders(data_dir: Path, *, per_class: int) -> None:
    """The shipped demo's drawings (smarthub/samples: 4 classes of 20), the first `per_class` of each: issue 20's own
    case, where six fine-tuning epochs never beat the head (16 validation images)."""
    import shutil

    from smarthub.demo import SAMPLES_DIR, sample_images

    for label, images in sample_images(SAMPLES_DIR).items():
        (data_dir / label).mkdir(parents=True, exist_ok=True)
        for src in images[:per_class]:
            shutil.copyfile(src, data_dir / label / src.name)


def fastai_fine_tune(items: list, is_valid: list[bool], *, size_px: int, epochs: int, batch_size: int) -> dict:
    """fastai's default recipe; returns {"curve": [(seconds, accuracy)], "seconds": total}."""
    from fastai.callback.core import Callback
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, parent_label
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from smarthub.model.archs import resolve_arch

    spec = resolve_arch("mobilenet_v2")  # registers fastai's model_meta entry (cut, stats, weights)
    curve: list[tuple[float, float]] = []
    t0 = time.monotonic()

    class Record(Callback):
        order = 60

        def after_epoch(self) -> None:
            values = dict(zip(self.recorder.metric_names[1:], self.recorder.final_record))
            curve.append((time.monotonic() - t0, float(values["accuracy"])))

    set_seed(42)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=parent_label,
                      splitter=IndexSplitter([i for i, v in enumerate(is_valid) if v]),
                      item_tfms=Resize(size_px, method=ResizeMethod.Squish), batch_tfms=aug_transforms())
    dls = block.dataloaders([it.path for it in items], bs=batch_size, num_workers=0)
    learn = vision_learner(dls, spec.model_fn, metrics=accuracy, cbs=[Record()])
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs)
    return {"curve": curve, "seconds": time.monotonic() - t0, "final": curve[-1][1]}


def smarthub_recipe(ws, *, size_px: int, epochs: int, batch_size: int, seed: int = 42, freeze_stride: int,
                    probe: bool = True, head_only: bool = False, budget_s: float | None = None) -> dict:
    """smarthub's train() from a cold cache; returns the curve (head, then epochs), the kept accuracy and the
    stage-2 decision (probe, budget)."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    curve: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def progress(p) -> None:
        if "accuracy" in p.metrics and (p.stage == "head" or "valid_loss" in p.metrics):
            curve.append((time.monotonic() - t0, float(p.metrics["accuracy"])))

    result = train(ws, TrainOptions(arch="mobilenet_v2", size_px=size_px, epochs=epochs, batch_size=batch_size,
                                    seed=seed, freeze_stride=freeze_stride, probe=probe, head_only=head_only,
                                    budget_s=budget_s),
                   progress=progress)
    r = result.report
    return {"curve": curve, "seconds": time.monotonic() - t0, "final": float(r["valid_accuracy"]),
            "best_epoch": r["best_epoch"], "stopped_early": r["stopped_early"], "epochs_run": r["epochs_run"],
            "decision": r.get("finetune_decision", ""), "probe": r.get("probe")}


def fresh_workspace(ws, name: str):
    """A copy of `ws`'s images in a new workspace (a cold cache: nothing embedded or resized yet)."""
    import shutil

    from smarthub.workspace import Workspace

    other = Workspace(ws.data_dir.parent.parent / name / "data", ws.data_dir.parent.parent / name / "models")
    shutil.copytree(ws.data_dir, other.data_dir, ignore=shutil.ignore_patterns(".smarthub"))
    return other


def warm_up(root: Path) -> None:
    """One tiny head-only run first, so that no timed run pays for the process's first imports of fastai and torch
    or their first model build (seconds on a loaded machine)."""
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train
    from smarthub.workspace import Workspace

    ws = Workspace(root / "warm-up" / "data", root / "warm-up" / "models")
    fashion_folders(ws.data_dir, per_class=4)
    train(ws, TrainOptions(size_px=32, batch_size=8, head_only=True))


def compare(name: str, make, *, per_class: int, size_px: int, epochs: int, smarthub_epochs: int, batch_size: int,
            root: Path, seed: int = 42, freeze_stride: int, always: bool = False, budget_s: float | None = None,
            skip_fastai: bool = False) -> dict:
    import torch

    from smarthub.dataset import scan_dataset
    from smarthub.model.data import split_items
    from smarthub.workspace import Workspace

    ws = Workspace(root / f"{name}-{seed}" / "data", root / f"{name}-{seed}" / "models")
    make(ws.data_dir, per_class=per_class)
    items = scan_dataset(ws.data_dir)
    is_valid = split_items(items, valid_pct=0.2, seed=seed)  # what train() uses with the same seed
    print(f"{name}: {len(items)} images, {sum(is_valid)} valid, {len({i.label for i in items})} classes, "
          f"{size_px} px", flush=True)
    head_ws, budget_ws = fresh_workspace(ws, f"{name}-{seed}-head"), fresh_workspace(ws, f"{name}-{seed}-budget")
    if skip_fastai:
        fa = {"curve": [(0.0, 0.0)], "seconds": float("nan"), "final": float("nan")}
    else:
        fa = fastai_fine_tune(items, is_valid, size_px=size_px, epochs=epochs, batch_size=batch_size)
        print(f"  fastai fine_tune({epochs}): " + ", ".join(f"{a:.3f}@{t:.0f}s" for t, a in fa["curve"]), flush=True)
    sh = smarthub_recipe(ws, size_px=size_px, epochs=smarthub_epochs, batch_size=batch_size, seed=seed,
                         freeze_stride=freeze_stride, probe=not always)
    print(f"  smarthub LP-FT ({smarthub_epochs}): " + ", ".join(f"{a:.3f}@{t:.0f}s" for t, a in sh["curve"])
          + f"; kept {sh['final']:.3f} (epoch {sh['best_epoch']}) in {sh['seconds']:.0f}s"
          + (f"; {sh['decision']}" if sh["decision"] else ""), flush=True)
    head = smarthub_recipe(head_ws, size_px=size_px, epochs=smarthub_epochs, batch_size=batch_size, seed=seed,
                           freeze_stride=freeze_stride, head_only=True)
    print(f"  smarthub --head-only: {head['final']:.3f} in {head['seconds']:.1f}s; the default run took "
          f"{sh['seconds'] / head['seconds']:.2f}x that", flush=True)
    budgeted = None
    if budget_s is not None:
        budgeted = smarthub_recipe(budget_ws, size_px=size_px, epochs=smarthub_epochs, batch_size=batch_size,
                                   seed=seed, freeze_stride=freeze_stride, probe=not always, budget_s=budget_s)
        print(f"  smarthub --budget {budget_s:g}s: kept {budgeted['final']:.3f} after {budgeted['epochs_run']} epochs "
              f"in {budgeted['seconds']:.1f}s ({budgeted['seconds'] / budget_s:.2f}x the budget); "
              f"{budgeted['decision']}", flush=True)
    reach = next((t for t, a in sh["curve"] if a >= fa["final"] - 1e-6), None)  # equal counts (rounding)
    out = {"dataset": name, "n_images": len(items), "n_valid": sum(is_valid), "size_px": size_px,
           "fastai_fine_tune_epochs": epochs, "smarthub_epochs": smarthub_epochs,
           "smarthub_freeze_stride": freeze_stride, "torch_threads": torch.get_num_threads(),
           "fastai": fa, "smarthub": sh, "smarthub_head_only": head, "smarthub_budget": budgeted,
           "budget_s": budget_s, "head_time_ratio": sh["seconds"] / head["seconds"],
           "smarthub_reaches_fastai_final_s": reach,
           "reach_ratio": None if reach is None else reach / fa["seconds"],
           "final_gain_points": 100 * (sh["final"] - fa["final"]), "time_ratio": sh["seconds"] / fa["seconds"]}
    ok1 = out["reach_ratio"] is not None and out["reach_ratio"] <= 0.2
    ok2 = out["final_gain_points"] >= 5 and out["time_ratio"] <= 1.0
    print(f"  reach fastai's final {fa['final']:.3f}: "
          + (f"{reach:.1f}s = {out['reach_ratio']:.3f}× fastai's {fa['seconds']:.0f}s" if reach is not None else "never")
          + f" ({'✔' if ok1 else '✘'} ≤ 0.2×); final {sh['final']:.3f} vs {fa['final']:.3f}: "
            f"{out['final_gain_points']:+.1f} points in {out['time_ratio']:.2f}× the time ({'✔' if ok2 else '✘'})",
          flush=True)
    return out


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(results), 4.5), dpi=100)
    for k, r in enumerate(results):
        ax = fig.add_subplot(1, len(results), k + 1)
        for key, label, style in (("fastai", "fastai fine_tune(E): 1 frozen + E epochs", "o-"),
                                  ("smarthub", f"smarthub LP-FT: head, then {r['smarthub_epochs']} epochs", "s-")):
            xs = [0.0] + [t for t, _ in r[key]["curve"]]
            ys = [None] + [a for _, a in r[key]["curve"]]
            ax.plot(xs[1:], ys[1:], style, label=label)
        ax.axhline(r["fastai"]["final"], color="grey", linestyle="--", linewidth=0.8)
        ax.axvline(0.2 * r["fastai"]["seconds"], color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(f"{r['dataset']}: {r['n_images']} images, {r['size_px']} px, MobileNetV2")
        ax.set_xlabel("wall seconds (2 shared CPU cores)")
        ax.set_ylabel("validation accuracy")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--epochs", type=int, default=3, help="E: fastai fine_tune(E) (default 3)")
    parser.add_argument("--smarthub-epochs", type=int, default=None,
                        help="smarthub --epochs (default: smarthub train's)")
    parser.add_argument("--freeze-stride", type=int, default=None,
                        help="smarthub --freeze-stride (default: smarthub train's; 0 fine-tunes every layer)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both recipes (default: torch's, one per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--only", default=None,
                        help="datasets, comma-separated: fashion-mnist, openclipart, photos, demo (default: all four)")
    parser.add_argument("--always-fine-tune", action="store_true",
                        help="smarthub without its probe (stage 2 always runs: the recipe before issue 20)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="also run smarthub with this --budget (seconds) on a cold cache of its own")
    parser.add_argument("--skip-fastai", action="store_true", help="no fastai run (smarthub's figures only)")
    parser.add_argument("--split-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[42],
                        help="seeds of the 80/20 split, comma-separated (default 42, train()'s); with several, "
                             "the mean figures per dataset are printed at the end")
    args = parser.parse_args()

    import os

    import torch

    from helpers import fill_torch_home

    if args.threads:
        torch.set_num_threads(args.threads)

    from smarthub.model.options import TrainOptions

    defaults = TrainOptions()
    sh_epochs = 1 if args.quick else (args.smarthub_epochs or defaults.epochs)
    freeze = defaults.freeze_stride if args.freeze_stride is None else args.freeze_stride
    with tempfile.TemporaryDirectory(prefix="smarthub-tta-") as tmp:
        root = Path(tmp)
        os.environ["TORCH_HOME"] = str(fill_torch_home(root / "torch"))
        per_fashion, per_clip = (20, 12) if args.quick else (100, 100)
        epochs = 1 if args.quick else args.epochs
        datasets = {"fashion-mnist": (fashion_folders, per_fashion, 64), "openclipart": (clipart_folders, per_clip, 96),
                    "photos": (photo_folders, 8 if args.quick else 30, 128), "demo": (demo_folders, 20, 96)}
        only = args.only.split(",") if args.only else list(datasets)
        warm_up(root)
        results = [compare(name, make, per_class=n, size_px=size, epochs=epochs, smarthub_epochs=sh_epochs,
                           batch_size=32, root=root, seed=seed, freeze_stride=freeze, always=args.always_fine_tune,
                           budget_s=args.budget, skip_fastai=args.skip_fastai)
                   for name, (make, n, size) in datasets.items() if name in only
                   for seed in args.split_seeds]
    if len(args.split_seeds) > 1:
        for name in dict.fromkeys(r["dataset"] for r in results):
            rs = [r for r in results if r["dataset"] == name]
            mean = {k: sum(r[k] for r in rs) / len(rs) for k in ("final_gain_points", "time_ratio", "head_time_ratio")}
            finals = [100 * r["smarthub"]["final"] for r in rs]
            se = (sum((f - sum(finals) / len(finals)) ** 2 for f in finals) / max(len(finals) - 1, 1)) ** 0.5 / len(finals) ** 0.5
            print(f"{name}, {len(rs)} splits: smarthub kept {sum(finals) / len(finals):.1f} % (standard error "
                  f"{se:.1f} points) in {mean['head_time_ratio']:.2f}x the head-only run's time")
            reach = [r["reach_ratio"] for r in rs]
            print(f"{name}, {len(rs)} splits: fastai final {sum(r['fastai']['final'] for r in rs) / len(rs):.3f}, "
                  f"smarthub {sum(r['smarthub']['final'] for r in rs) / len(rs):.3f}: {mean['final_gain_points']:+.1f} "
                  f"points in {mean['time_ratio']:.2f}x the time; reaches fastai's final at "
                  + ", ".join("never" if x is None else f"{x:.2f}x" for x in reach))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "time_to_accuracy.png")
    (args.out / "time_to_accuracy.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'time_to_accuracy.png'} and {args.out / 'time_to_accuracy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
