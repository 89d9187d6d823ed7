"""Which images to correct next, measured: at an equal number of corrected images, round 2's test mAP50 when the
batch is chosen by `annotate --order` ranking vs chosen at random.

    .venv/bin/python bench/active_learning.py [--n 40] [--pool 40] [--copies 10x3] [--k 20] [--test 40]
                                              [--epochs 40] [--imgsz 128] [--arms random,both,uncertainty] [--seeds 0,1,2]

Scenes as in bench/detection_loop.py (openclipart `fish` and `fruit` on crops of scikit-image's photos, planted
truth). The unlabelled pool holds `--pool` distinct scenes plus near-copies of some of them (`--copies AxB`: B
re-encoded copies, brightness 0.9-1.1, of each of the first A scenes), as a batch of burst photos or video
frames has. Round 1: `train_detector` on N corrected scenes. The round-1 detector pre-annotates the pool once
(every box down to the floor, scored) and each arm picks K pool images: the top K of the ranking (`both`:
uncertainty + diversity, `uncertainty` alone) or K at random (seeded). Round 2 trains one detector per arm on
N + its K corrected images (their planted truth), same seed and epochs; all are scored on one fixed test set
(mAP50 from every box at conf >= 0.01). One process, same scenes for every arm.
Needs ultralytics and openclipart-png (`scripts/setup.sh --test`).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def near_copies(folder: Path, names: list[str], copies: int, *, seed: int) -> int:
    """Write `copies` re-encoded, slightly brighter or darker copies of each named scene (and its truth)."""
    import json
    import random

    from PIL import Image, ImageEnhance

    rng = random.Random(seed)
    n = 0
    for name in names:
        with Image.open(folder / f"{name}.jpg") as im:
            base = im.convert("RGB")
        truth = json.loads((folder / f"{name}.json").read_text())
        for c in range(copies):
            copy_name = f"{name}_copy{c}"
            ImageEnhance.Brightness(base).enhance(rng.uniform(0.9, 1.1)).save(folder / f"{copy_name}.jpg", quality=85)
            (folder / f"{copy_name}.json").write_text(json.dumps({**truth, "imagePath": f"{copy_name}.jpg"}))
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="corrected scenes in round 1")
    ap.add_argument("--pool", type=int, default=40, help="distinct scenes in the unlabelled pool")
    ap.add_argument("--copies", default="10x3", help="AxB: B near-copies of each of the first A pool scenes")
    ap.add_argument("--k", type=int, default=20, help="pool images corrected for round 2 (every arm)")
    ap.add_argument("--test", type=int, default=40, help="fixed test scenes")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--arms", default="random,both,uncertainty")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (scenes, training, random choice): "
                    "several give mean +- sd and the paired difference ranked - random")
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    started = time.perf_counter()
    results = [run_seed(args, seed) for seed in (int(s) for s in args.seeds.split(","))]
    summarise(results)
    print(f"total {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)


def summarise(results: list[dict]) -> None:
    """Mean +- sd of each arm's round-2 test mAP50 over seeds, and of its paired difference to random."""
    import numpy as np

    if len(results) < 2:
        return
    print(f"\nover {len(results)} seeds ({', '.join(str(r['seed']) for r in results)}): test mAP50 mean +- sd")
    print(f"  round 1: {np.mean([r['round1'] for r in results]):.3f} +- {np.std([r['round1'] for r in results], ddof=1):.3f}")
    for arm in results[0]["arms"]:
        v = np.array([r["arms"][arm] for r in results])
        line = f"  {arm}: {v.mean():.3f} +- {v.std(ddof=1):.3f}"
        if arm != "random" and "random" in results[0]["arms"]:
            d = v - np.array([r["arms"]["random"] for r in results])
            line += (f"; paired difference to random {d.mean():+.3f} +- {d.std(ddof=1):.3f} "
                     f"(standard error {d.std(ddof=1) / np.sqrt(len(d)):.3f}; ranked better in {(d > 0).sum()} of {len(d)})")
        print(line)


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """One seed of the bench: round 1, the pool ranked, round 2 per arm; {'seed', 'round1', 'arms': {arm: mAP50}}."""
    import numpy as np

    from detection_loop import CLASSES, photos
    from smarthub.annotate.detect import DetectorOptions, load_detector
    from smarthub.annotate.evaluate import evaluate_annotations
    from smarthub.annotate.next_images import batch_embeddings, rank_scored
    from smarthub.annotate.preannotate import annotate_folder
    from smarthub.annotate.scenes import compose_scenes, load_drawings
    from smarthub.annotate.scored import scoring_detector
    from smarthub.annotate.train_detector import DetectorTrainOptions, train_detector
    from smarthub.workspace import contain_library_caches

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    a_copies, b_copies = (int(v) for v in args.copies.lower().split("x"))
    started = time.perf_counter()
    size = (args.imgsz * 5 // 4, args.imgsz)
    with tempfile.TemporaryDirectory(prefix="smarthub-al-") as tmp:
        root = Path(tmp)
        contain_library_caches(root / "cache")
        drawings = {k: load_drawings(v, max_side_px=160, failed=[]) for k, v in CLASSES.items()}
        seen = {k: v[: int(len(v) * 0.7)] for k, v in drawings.items()}
        bgs = photos()
        for i, (name, n) in enumerate({"corrected": args.n, "pool": args.pool, "test": args.test}.items()):
            compose_scenes(root / name, n, seen, bgs, size=size, seed=seed + 101 * i, prefix=name + "_")
        names = sorted(p.stem for p in (root / "pool").glob("*.jpg"))[:a_copies]
        copies = near_copies(root / "pool", names, b_copies, seed=seed)
        truth_pool = root / "pool truth"
        truth_pool.mkdir()
        for p in sorted((root / "pool").glob("*.json")):
            p.rename(truth_pool / p.name)
        truth_test = root / "test truth"
        truth_test.mkdir()
        for p in sorted((root / "test").glob("*.json")):
            p.rename(truth_test / p.name)
        pool_size = args.pool + copies
        print(f"scenes {size[0]}x{size[1]} px: corrected {args.n}, pool {args.pool} distinct + {copies} near-copies "
              f"of {len(names)}, test {args.test}; K = {args.k}; epochs {args.epochs} at {args.imgsz} px; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        models = root / "models"
        cfg = root / "cache" / "ultralytics"

        def train(name: str, folder: Path):
            t0 = time.perf_counter()
            run = train_detector(folder, models, DetectorTrainOptions(epochs=args.epochs, imgsz=args.imgsz, batch=16,
                                                                      seed=seed, name=name))
            print(f"{name}: trained in {time.perf_counter() - t0:.0f} s, validation mAP50 {run.map50 or 0:.3f}",
                  flush=True)
            return run

        def test_map(run) -> float:
            det = load_detector(run.run_dir, DetectorOptions(conf=0.01, run_thresholds=False, config_dir=cfg))
            out = root / f"{run.run_dir.name} test pred"
            annotate_folder(root / "test", det, out_dir=out)
            return evaluate_annotations(out, truth_test).map50 or 0.0

        r1 = train("round1", root / "corrected")
        map1 = test_map(r1)
        print(f"round 1 test mAP50 {map1:.3f}", flush=True)
        t0 = time.perf_counter()
        det, thresholds, _ = scoring_detector(r1.run_dir, DetectorOptions(config_dir=cfg))
        report = annotate_folder(root / "pool", det, out_dir=root / "pool pred", thresholds=thresholds)
        scored = report.scored
        emb, note = batch_embeddings([scored.image_path(it) for it in scored.images], scored.root)
        t_rank = time.perf_counter()
        picks: dict[str, list[str]] = {}
        for arm in arms:
            if arm == "random":
                rng = np.random.default_rng(seed)
                picks[arm] = [scored.images[i].image for i in rng.choice(len(scored.images), args.k, replace=False)]
            else:
                picks[arm] = [r.image for r in rank_scored(scored, thresholds, order=arm, embeddings=emb)[: args.k]]
        print(f"pool pre-annotated and embedded ({note}) in {t_rank - t0:.1f} s; ranked {len(arms)} ways in "
              f"{time.perf_counter() - t_rank:.2f} s", flush=True)

        rows = []
        for arm in arms:
            folder = root / f"round2 {arm}"
            shutil.copytree(root / "corrected", folder)
            for image in picks[arm]:
                stem = Path(image).stem
                shutil.copyfile(root / "pool" / image, folder / image)
                shutil.copyfile(truth_pool / f"{stem}.json", folder / f"{stem}.json")
            distinct = len({Path(i).stem.split("_copy")[0] for i in picks[arm]})
            run = train(f"round2-{arm}", folder)
            rows.append((arm, distinct, test_map(run)))
            print(f"round 2, {arm}: {distinct} distinct scenes among its {args.k}, test mAP50 {rows[-1][2]:.3f} "
                  f"(round 1: {map1:.3f}); load {os.getloadavg()[0]:.1f}", flush=True)

        print(f"\npool {pool_size} images ({args.pool} distinct scenes); every arm corrects K = {args.k}")
        print(f"{'choice':<12} {'distinct scenes in K':>20} {'train images':>12} {'test mAP50':>10}")
        print(f"{'round 1':<12} {'-':>20} {args.n:>12} {map1:>10.3f}")
        for arm, distinct, m in rows:
            print(f"{arm:<12} {distinct:>20} {args.n + args.k:>12} {m:>10.3f}")
        base = dict((a, m) for a, _, m in rows).get("random")
        if base:
            print("ratio to random: " + ", ".join(f"{a} {m / base:.2f}x" for a, _, m in rows if a != "random"))
        print(f"seed {seed}: {time.perf_counter() - started:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        return {"seed": seed, "round1": map1, "arms": {a: m for a, _, m in rows}}


if __name__ == "__main__":
    main()
