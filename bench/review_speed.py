"""Review benchmark: embedding throughput vs the raw model forward, wall time and top-k recall of each way.

On a planted-noise Fashion-MNIST workspace (a seeded 10 % moved to wrong folders) it measures:
  1. scoring images/second of the fast path's embedding pass (decode + resize + forward, the next batch
     decoded in a thread) against the raw model forward on the same pre-decoded batches (target ≥ 0.8×);
  2. wall time of the fast way (embeddings + K-fold linear head) and the finetune way (K fine-tunes);
  3. recall/precision of the planted errors in the top k (k = number planted) for both out-of-sample ways
     and for two in-sample rankings: the same linear head fit on all images, and a fastai fine-tune on
     all images scoring the images it trained on (what fastai's ImageClassifierCleaner ranks by);
  4. rank() latency over 20,000 cached images (what refresh costs after a relabel, minus the folder scan).

    .venv/bin/python bench/review_speed.py            # full run (several minutes on 2 cores)
    .venv/bin/python bench/review_speed.py --quick    # smoke run
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ("tshirt", "trouser", "pullover", "sneaker", "bag")


def ensure_weights() -> None:
    """Use $TORCH_HOME if it has MobileNetV2's weights, else a temp cache filled from the offline package."""
    from helpers import MOBILENET_V2_FILE, fill_torch_home

    home = os.environ.get("TORCH_HOME")
    if home and (Path(home) / "hub" / "checkpoints" / MOBILENET_V2_FILE).exists():
        return
    os.environ["TORCH_HOME"] = str(fill_torch_home(Path(tempfile.mkdtemp(prefix="bench-torch-home-"))))


def plant(data_dir: Path, *, per_class: int, image_px: int, seed: int) -> set[Path]:
    from helpers import plant_label_noise

    return plant_label_noise(data_dir, classes=CLASSES, per_class=per_class, size_px=image_px, seed=seed)


def topk(suspect_paths: list[Path], planted: set[Path]) -> tuple[float, float]:
    """(recall, precision) of the planted errors among the first k suspects, k = number planted."""
    k = len(planted)
    top = suspect_paths[:k]
    hits = len(set(top) & planted)
    return hits / k, hits / max(1, len(top))


def throughput(paths: list[Path], *, arch: str, size_px: int, batch_size: int, repeats: int) -> tuple[float, float]:
    """(pipeline images/s, raw forward images/s) on the same images, best of `repeats`, interleaved."""
    import torch

    from smarthub.model.embeddings import _load_batch, compute_embeddings, load_extractor, to_tensor

    extractor, stats = load_extractor(arch)
    batches = [to_tensor(_load_batch(paths[i:i + batch_size], size_px)[0], stats)
               for i in range(0, len(paths), batch_size)]
    best_pipe = best_raw = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                extractor(x)
        best_raw = max(best_raw, len(paths) / (time.perf_counter() - t))
        t = time.perf_counter()
        compute_embeddings(paths, extractor, stats, size_px=size_px, batch_size=batch_size)
        best_pipe = max(best_pipe, len(paths) / (time.perf_counter() - t))
    return best_pipe, best_raw


def in_sample_finetune(ws, *, options) -> dict:
    """A fastai fine-tune on all images scoring them all (the tests' in-sample baseline)."""
    from helpers import in_sample_suspects

    return {"paths": [s.path for s in in_sample_suspects(ws, options)]}


def rank_latency(n: int, n_classes: int, *, repeats: int) -> float:
    """Median seconds of rank() over n cached images (synthetic probabilities, no files)."""
    from smarthub.clean import review

    rng = np.random.default_rng(0)
    vocab = [f"c{i}" for i in range(n_classes)]
    probs = rng.dirichlet(np.full(n_classes, 0.3), size=n)
    entries = [review.Entry(Path(f"/x/{vocab[int(p.argmax())]}/{i}.jpg"), vocab[int(p.argmax())], f"{i:064x}")
               for i, p in enumerate(probs)]
    by_sha = {e.sha256: p for e, p in zip(entries, probs)}
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        review.rank(entries, by_sha, vocab, threshold=0.6, show_all=True)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def refresh_latency(n: int, n_classes: int, *, repeats: int) -> tuple[float, float, float]:
    """(first refresh s, median refresh s after a relabel, fileops.relabel s) on n real tiny image files.

    Probabilities are synthetic (cached state is what refresh reuses; no inference happens in it).
    """
    from PIL import Image

    from smarthub import fileops

    from smarthub.clean import review
    from smarthub.workspace import Workspace

    rng = np.random.default_rng(0)
    vocab = [f"c{i}" for i in range(n_classes)]
    with tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp:
        ws = Workspace(data_dir=Path(tmp) / "data", models_dir=Path(tmp) / "models")
        for c in vocab:
            (ws.data_dir / c).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(arr).save(ws.data_dir / vocab[i % n_classes] / f"{i:06d}.png")
        t = time.perf_counter()
        entries, _ = review._scan(ws, None)  # first pass hashes every file and writes the sha index
        first = time.perf_counter() - t
        probs = {e.sha256: rng.dirichlet(np.full(n_classes, 0.3)) for e in entries}
        suspects, _ = review.rank(entries, probs, vocab, threshold=0.6, show_all=True)
        result = review.ReviewResult(suspects=suspects, vocab=vocab, n_images=len(entries), method="fast",
                                     seconds=0.0, probs_by_sha=probs, entries=entries,
                                     options=review.ReviewOptions(train=None, show_all=True))
        times, moves = [], []
        for r in range(repeats):
            s = result.suspects[0]
            t = time.perf_counter()
            fileops.relabel(ws, [s.path], s.predicted)
            moves.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = review.refresh(ws, result)
            times.append(time.perf_counter() - t)
        return first, float(np.median(times)), float(np.median(moves))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--image-px", type=int, default=64, help="side of the written images")
    ap.add_argument("--size", type=int, default=64, help="model input side (--size of review/train)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="unfrozen epochs of each fine-tune (after 1 frozen)")
    ap.add_argument("--seeds", default="0", help="comma-separated planting seeds")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="throughput repeats (best of)")
    ap.add_argument("--throughput-only", action="store_true", help="only the embedding-pass measurement")
    args = ap.parse_args()
    if args.quick:
        args.per_class, args.folds, args.epochs = 20, 2, 1
    ensure_weights()
    from smarthub.clean import ranking
    from smarthub.clean import review
    from smarthub.model.options import TrainOptions
    from smarthub.workspace import Workspace

    print(f"machine: {os.cpu_count()} CPUs; {args.per_class} images x {len(CLASSES)} classes, "
          f"{args.image_px}px, model input {args.size}px, K={args.folds}, fine-tune 1+{args.epochs} epochs")
    topts = TrainOptions(arch="mobilenet_v2", size_px=args.size, epochs=args.epochs, batch_size=32, num_workers=0)
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
            ws = Workspace(data_dir=Path(tmp) / "data", models_dir=Path(tmp) / "models")
            planted = plant(ws.data_dir, per_class=args.per_class, image_px=args.image_px, seed=seed)
            paths = sorted(ws.data_dir.rglob("*.png"))
            if seed == int(args.seeds.split(",")[0]):
                pipe, raw = throughput(paths, arch="mobilenet_v2", size_px=args.size, batch_size=64,
                                       repeats=1 if args.quick else args.repeats)
                print(f"embedding pass: {pipe:.0f} img/s (decode+forward) vs raw forward {raw:.0f} img/s "
                      f"on the same batches: ratio {pipe / raw:.2f}x (target >= 0.8x)")
                if args.throughput_only:
                    return 0
            rows = []
            t = time.perf_counter()
            fast = review.review(ws, review.ReviewOptions(method="fast", folds=args.folds, train=topts, show_all=True))
            fast_s = time.perf_counter() - t
            rows.append(("fast (OOS linear head)", fast_s, *topk([s.path for s in fast.suspects], planted)))
            t = time.perf_counter()
            again = review.review(ws, review.ReviewOptions(method="fast", folds=args.folds, train=topts, show_all=True))
            rows.append(("fast, cached rerun", time.perf_counter() - t,
                         *topk([s.path for s in again.suspects], planted)))
            # in-sample linear head: same features, same C, fit on all and scoring the same images
            from smarthub.model.embeddings import load_embedding_cache

            cache = load_embedding_cache(ws, "mobilenet_v2", args.size)
            index = {c: i for i, c in enumerate(fast.vocab)}
            x = np.stack([cache[e.sha256] for e in fast.entries])
            y = np.array([index[e.label] for e in fast.entries])
            t = time.perf_counter()
            head = ranking.fit_linear_head(x, y)
            probs = ranking.head_probs(head, x, len(fast.vocab))
            ins, _ = review.rank(fast.entries, {e.sha256: p for e, p in zip(fast.entries, probs)}, fast.vocab,
                                 threshold=0.6, show_all=True)
            rows.append(("in-sample linear head (same C)", time.perf_counter() - t,
                         *topk([s.path for s in ins], planted)))
            if not args.skip_finetune:
                t = time.perf_counter()
                ft = review.review(ws, review.ReviewOptions(method="finetune", folds=args.folds, train=topts, show_all=True))
                rows.append((f"finetune ({args.folds} folds, OOS)", time.perf_counter() - t,
                             *topk([s.path for s in ft.suspects], planted)))
                t = time.perf_counter()
                fin = in_sample_finetune(ws, options=topts)
                rows.append(("in-sample fastai fine-tune", time.perf_counter() - t, *topk(fin["paths"], planted)))
            print(f"\nseed {seed}: {len(paths)} images, {len(planted)} planted errors (k)")
            print(f"{'way':34} {'wall s':>8} {'recall@k':>9} {'precision@k':>12}")
            for name, secs, rec, prec in rows:
                print(f"{name:34} {secs:8.1f} {rec:9.3f} {prec:12.3f}")
    n = 2_000 if args.quick else 20_000
    print(f"\nrank() over {n:,} cached images (refresh minus the folder scan): "
          f"{rank_latency(n, 10, repeats=3) * 1000:.0f} ms median")
    first, refresh_s, move_s = refresh_latency(n, 10, repeats=3 if args.quick else 5)
    print(f"refresh() on {n:,} real files after a relabel: {refresh_s * 1000:.0f} ms median "
          f"(first scan hashing every file: {first:.1f} s; the fileops.relabel itself: {move_s * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
