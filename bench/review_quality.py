"""Review quality on planted label noise, every way in the same run, and ranking time at scale.

Quality: two real datasets installable here, Fashion-MNIST (Debian `dataset-fashion-mnist`, 10 classes) and
openclipart drawings (Debian `openclipart-png`, 6 top-level categories, alpha flattened on white). Images are
embedded once with torchvision MobileNetV2 (offline ImageNet weights); labels are then moved, 5 %, 10 % and
20 % of them, either uniformly to another class or to the most similar class (the class whose embedding
centroid is nearest: how real mistakes look). For each set-up and way it prints recall@k (k = planted count)
and the default queue's size, precision and recall:
  default      smarthub: out-of-sample head and neighbour agreement combined, one prune-and-refit round,
               queue = cleanlab find_label_issues
  no-refit     the same without the prune-and-refit round (the previous default)
  head         the 5-fold cross-validated linear head alone
  neighbours   kNN label agreement alone (k = 10, cosine, similarity-weighted)
  rank-mean    mean of the head's and the neighbours' ranks (the other way to combine, for the choice)
  in-sample    fastai fine-tune on all images ranking its own training images by loss (ImageClassifierCleaner)
  cleanlab-ft  cleanlab on out-of-fold probabilities of K fastai fine-tunes (1 frozen + 1 unfrozen epoch each)
  true-labels  a ceiling, not a way: the 5-fold head trained on the TRUE labels, ranking the noisy ones; what
               these embeddings can separate at best

Timing: the whole default ranking (head + neighbours + queue) on synthetic clustered vectors of the real
embedding dimension (1280) for the sizes given, against exact brute-force neighbours at the smallest size.

    .venv/bin/python bench/review_quality.py                       # quality, all rates, both datasets
    .venv/bin/python bench/review_quality.py --no-finetune         # cheap ways only (a minute)
    .venv/bin/python bench/review_quality.py --timing 10000,100000,1000000 --no-quality
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

CLIPART = Path("/usr/share/openclipart/png")
# object-like sub-folders with at least 50 drawings each (the top-level folders mix icons, maps and scenes)
CLIPART_CLASSES = ("animals/mammals", "animals/birds", "food/fruit", "transportation/vehicles", "people/clothing",
                   "signs_and_symbols/flags", "recreation/music")
RATES = (0.05, 0.10, 0.20)
NOISES = ("uniform", "similar")


def ensure_weights() -> None:
    from helpers import MOBILENET_V2_FILE, fill_torch_home

    home = os.environ.get("TORCH_HOME")
    if home and (Path(home) / "hub" / "checkpoints" / MOBILENET_V2_FILE).exists():
        return
    os.environ["TORCH_HOME"] = str(fill_torch_home(Path(tempfile.mkdtemp(prefix="bench-torch-home-"))))


def write_fashion(folder: Path, per_class: int, size_px: int) -> tuple[list[Path], np.ndarray, list[str]]:
    from helpers import FASHION_CLASSES, write_fashion_folders

    paths = write_fashion_folders(folder, per_class=per_class, size_px=size_px, offset=1000)
    vocab = sorted(FASHION_CLASSES)
    return paths, np.array([vocab.index(p.parent.name) for p in paths]), vocab


def write_clipart(folder: Path, per_class: int, size_px: int) -> tuple[list[Path], np.ndarray, list[str]]:
    from smarthub.errors import ImageError
    from smarthub.imaging import flatten_to_rgb, open_image

    from PIL import Image

    vocab = sorted(CLIPART_CLASSES)
    paths, labels = [], []
    for c, name in enumerate(vocab):
        files = sorted((CLIPART / name).rglob("*.png"))
        rng = np.random.default_rng(c)
        picked = 0
        for i in rng.permutation(len(files)):
            if picked == per_class:
                break
            try:
                img = flatten_to_rgb(open_image(files[i]).image, max_side_px=size_px * 4)
            except ImageError:
                continue  # a few drawings are huge rasters: over the pixel limit
            if min(img.size) < 8:
                continue
            img.thumbnail((size_px, size_px))
            canvas = Image.new("RGB", (size_px, size_px), "white")
            canvas.paste(img, ((size_px - img.width) // 2, (size_px - img.height) // 2))
            out = folder / name.replace("/", "-") / f"c{i:05d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            canvas.save(out)
            paths.append(out)
            labels.append(c)
            picked += 1
    return paths, np.array(labels), vocab


def embed(paths: list[Path], size_px: int, *, flip: bool = False) -> np.ndarray:
    from smarthub.model.embeddings import compute_embeddings, load_extractor

    extractor, stats = load_extractor("mobilenet_v2")
    feats, ok, failed = compute_embeddings(paths, extractor, stats, size_px=size_px)
    assert not failed and len(ok) == len(paths), failed
    if flip:  # test-time augmentation: mean of the image's and its mirror image's embeddings
        import torch

        flipped, _, _ = compute_embeddings(paths, lambda x: extractor(torch.flip(x, dims=[3])), stats, size_px=size_px)
        feats = (feats + flipped) / 2
    return feats


def plant(labels: np.ndarray, feats: np.ndarray, *, rate: float, noise: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, indices moved). similar: each moved image goes to the class nearest its own in embeddings."""
    from smarthub.clean.neighbours import unit_rows

    rng = np.random.default_rng(seed)
    n_classes = int(labels.max()) + 1
    moved = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    if noise == "uniform":
        for i in moved:
            noisy[i] = rng.choice([c for c in range(n_classes) if c != labels[i]])
    else:
        x = unit_rows(feats)
        centroids = unit_rows(np.stack([x[labels == c].mean(axis=0) for c in range(n_classes)]))
        sim = centroids @ centroids.T
        np.fill_diagonal(sim, -np.inf)
        noisy[moved] = sim.argmax(axis=1)[labels[moved]]
    return noisy, moved


def quality_rank(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    from smarthub.clean.ranking import label_issue_scores

    quality, _ = label_issue_scores(labels, probs)
    return np.argsort(quality, kind="stable")


def scores(order: np.ndarray, queue: np.ndarray, moved: np.ndarray) -> tuple[float, int, float, float]:
    """(recall@k, queue size, queue precision, queue recall)."""
    truth = set(moved.tolist())
    k = len(truth)
    at_k = len(set(order[:k].tolist()) & truth) / k
    q = set(np.flatnonzero(queue).tolist())
    hits = len(q & truth)
    return at_k, len(q), hits / max(1, len(q)), hits / k


def cheap_ways(feats: np.ndarray, noisy: np.ndarray, n_classes: int,
               true_labels: np.ndarray | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """way → (order worst first, queue mask) for the embedding-only ways."""
    from smarthub.clean import ranking
    from smarthub.clean.neighbours import nearest

    head = ranking.cross_val_probs(feats, noisy, n_classes=n_classes, folds=5, seed=42)
    nb = nearest(feats, k=ranking.KNN_K)
    knn = ranking.neighbour_label_probs(nb.index, nb.similarity, noisy, n_classes=n_classes)
    out = {}
    for name, probs in (("head", head), ("neighbours", knn)):
        out[name] = (quality_rank(noisy, probs), ranking.estimated_issues(noisy, probs))
    for w in (0.3, 0.5, 0.7):
        probs = ranking.combine_probs(head, knn, head_weight=w)
        out[f"mean-probs w={w}"] = (quality_rank(noisy, probs), ranking.estimated_issues(noisy, probs))
    ranks = np.argsort(out["head"][0]) + np.argsort(out["neighbours"][0])  # position of each image in each order
    out["rank-mean"] = (np.argsort(ranks, kind="stable"), out["mean-probs w=0.5"][1])
    default = ranking.default_label_probs(feats, noisy, n_classes=n_classes, folds=5, seed=42)
    out["default"] = (quality_rank(noisy, default), ranking.estimated_issues(noisy, default))
    no_refit = ranking.default_label_probs(feats, noisy, n_classes=n_classes, folds=5, seed=42, refit_rounds=0)
    out["no-refit"] = (quality_rank(noisy, no_refit), ranking.estimated_issues(noisy, no_refit))
    if true_labels is not None:
        ceiling = ranking.cross_val_probs(feats, true_labels, n_classes=n_classes, folds=5, seed=42)
        out["true-labels (ceiling)"] = (quality_rank(noisy, ceiling), ranking.estimated_issues(noisy, ceiling))
    from cleanlab.count import num_label_issues

    n_est = num_label_issues(noisy, default)
    counted = np.zeros(len(noisy), bool)
    counted[out["default"][0][:n_est]] = True
    out["default, counted queue"] = (out["default"][0], counted)
    return out


def fastai_fine_tune(paths: list[Path], labels: list[str], valid: list[int], *, size_px: int) -> object:
    """fastai's own recipe: vision_learner(mobilenet_v2) + fine_tune(1) (1 frozen + 1 unfrozen epoch)."""
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter
    from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from smarthub.model.archs import resolve_arch

    by_path = dict(zip(paths, labels))

    def label_of(path: Path) -> str:
        return by_path[path]

    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=label_of, splitter=IndexSplitter(valid),
                      item_tfms=Resize(size_px, method=ResizeMethod.Squish), batch_tfms=aug_transforms())
    learn = vision_learner(block.dataloaders(paths, bs=32, num_workers=0), resolve_arch("mobilenet_v2").model_fn)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(1)
    return learn


def fastai_probs(learn: object, paths: list[Path], vocab: list[str]) -> np.ndarray:
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(paths))  # type: ignore[attr-defined]
    learner_vocab = [str(v) for v in learn.dls.vocab]  # type: ignore[attr-defined]
    return np.asarray(probs, dtype=np.float64)[:, [learner_vocab.index(c) for c in vocab]]


def finetune_ways(paths: list[Path], noisy: np.ndarray, vocab: list[str], *, size_px: int,
                  folds: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """in-sample fastai top losses (what ImageClassifierCleaner shows) and cleanlab on K-fold fastai fine-tunes."""
    from fastai.torch_core import set_seed

    from smarthub.clean import ranking

    labels = [vocab[y] for y in noisy]
    out = {}
    set_seed(42)
    learn = fastai_fine_tune(paths, labels, [0], size_px=size_px)  # fastai needs a validation set: one image
    probs = fastai_probs(learn, paths, vocab)
    p_given = probs[np.arange(len(noisy)), noisy]
    out["in-sample"] = (np.argsort(p_given, kind="stable"), probs.argmax(axis=1) != noisy)
    fold = ranking.fold_assignment(noisy, folds=folds, seed=42)
    oof = np.zeros_like(probs)
    for k in range(int(fold.max()) + 1):
        held = np.flatnonzero(fold == k)
        learn = fastai_fine_tune(paths, labels, held.tolist(), size_px=size_px)
        oof[held] = fastai_probs(learn, [paths[i] for i in held], vocab)
    out["cleanlab-ft"] = (quality_rank(noisy, oof), ranking.estimated_issues(noisy, oof))
    return out


def run_quality(args: argparse.Namespace) -> None:
    ensure_weights()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, writer in (("fashion-mnist", write_fashion), ("openclipart", write_clipart)):
            if name not in args.datasets:
                continue
            t = time.perf_counter()
            paths, labels, vocab = writer(Path(tmp) / name, args.per_class, args.size)
            feats = embed(paths, args.size, flip=args.flip)
            print(f"# {name}: {len(paths)} images, {len(vocab)} classes, embedded in {time.perf_counter() - t:.1f} s",
                  flush=True)
            for noise in NOISES:
                for rate in args.rates:
                    for seed in range(args.seeds):
                        noisy, moved = plant(labels, feats, rate=rate, noise=noise, seed=seed)
                        ways = cheap_ways(feats, noisy, len(vocab), true_labels=labels)
                        if (args.finetune and seed < args.finetune_seeds
                                and (args.finetune_rates is None or rate in args.finetune_rates)):
                            t = time.perf_counter()
                            ways.update(finetune_ways(paths, noisy, vocab, size_px=args.size, folds=args.ft_folds))
                            print(f"  fine-tunes {time.perf_counter() - t:.0f} s", flush=True)
                        for way, (order, queue) in ways.items():
                            rows.append((name, noise, rate, seed, way, *scores(order, queue, moved), len(moved)))
                            r = rows[-1]
                            print(f"{name:13s} {noise:7s} {rate:4.2f} s{seed} {way:18s} recall@k {r[5]:.3f} "
                                  f"queue {r[6]:4d} (2x truth {2 * r[9]:4d}) precision {r[7]:.3f} recall {r[8]:.3f}",
                                  flush=True)
    print("\n| dataset | noise | rate | way | draws | recall@k | queue (truth) | queue precision | queue recall |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    way_order = list(dict.fromkeys(r[4] for r in rows))  # first-seen order: the same in every set-up
    keys = sorted({(r[0], r[1], r[2], r[4]) for r in rows}, key=lambda k: (k[0], k[1], k[2], way_order.index(k[3])))
    for key in keys:
        sel = [r for r in rows if (r[0], r[1], r[2], r[4]) == key]
        m = np.mean([r[5:9] for r in sel], axis=0)
        print(f"| {key[0]} | {key[1]} | {int(key[2] * 100)} % | {key[3]} | {len(sel)} | {m[0]:.3f} | {m[1]:.0f} ({sel[0][9]}) | "
              f"{m[2]:.3f} | {m[3]:.3f} |")


def synthetic(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered non-negative vectors (like pooled ReLU features), 10 % of labels moved uniformly."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, size=(n_classes, dim)).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        x[start:stop] = centres[labels[start:stop]] + rng.gamma(1.0, 1.0, size=(stop - start, dim)).astype(np.float32)
    flip = rng.random(n) < 0.1
    labels[flip] = rng.integers(0, n_classes, int(flip.sum()))
    return x, labels


def run_timing(sizes: list[int], dim: int) -> None:
    from smarthub.clean import ranking
    from smarthub.clean.neighbours import nearest

    base = None
    for n in sizes:
        x, y = synthetic(n, dim, 10, seed=0)
        t = time.perf_counter()
        probs = ranking.default_label_probs(x, y, n_classes=10, folds=5, seed=42)
        ranking.label_issue_scores(y, probs)
        total = time.perf_counter() - t
        line = f"ranking {n:>9,d} x {dim}: {total:7.1f} s"
        if base is None:
            t = time.perf_counter()
            nearest(x, k=ranking.KNN_K, exact=True)
            base = time.perf_counter() - t
            line += f"   (exact neighbours alone at this size: {base:.1f} s)"
        print(line, flush=True)
        del x, y, probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100, help="images per class (the bootstrap case: 50-200)")
    ap.add_argument("--size", type=int, default=224, help="image side in px (written and model input; 224 is "
                    "what review embeds at without a trained model)")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=list(RATES))
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per set-up (figures are their mean)")
    ap.add_argument("--finetune-seeds", type=int, default=1, help="of those, how many also run the fine-tunes")
    ap.add_argument("--no-finetune", dest="finetune", action="store_false")
    ap.add_argument("--finetune-rates", type=lambda s: [float(x) for x in s.split(",")], default=None)
    ap.add_argument("--ft-folds", type=int, default=3)
    ap.add_argument("--datasets", type=lambda s: s.split(","), default=["fashion-mnist", "openclipart"])
    ap.add_argument("--flip", action="store_true", help="flip test-time augmentation of the embeddings")
    ap.add_argument("--no-quality", dest="quality", action="store_false")
    ap.add_argument("--timing", type=lambda s: [int(x) for x in s.split(",")], default=[])
    ap.add_argument("--dim", type=int, default=1280, help="embedding dimension for timing (MobileNetV2: 1280)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    if args.quality:
        run_quality(args)
    if args.timing:
        run_timing(args.timing, args.dim)


if __name__ == "__main__":
    main()
