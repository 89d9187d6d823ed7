"""Review effort: how many images a person looks at to find the planted label errors, static vs re-ranked.

A simulated person pages through the review queue, 24 images a page (the Clean tab's page). On each page they
relabel every planted error to its true class and keep every other image. Two ways, in the same run:

  static      the ranking of the first review, paged in order (what the app did before issue 19: a decision
              only takes the image off the list)
  re-ranked   after every page the decisions become trusted labels and the queue is ranked again
              (`scorers.rerank_fast` then `review.queue`: what `review.relearn` runs for the Clean tab and the
              notebook), without re-embedding or refitting

Both page through the whole ranking (`show_all`), so 100 % is always reached. Reported: images looked at to find
50 %, 80 % and 100 % of the planted errors, as a count and as a multiple of the planted count (target: 80 % within
2×), and how often the suggested label (the predicted class shown with each suspect) is the true class of a
planted error when the person reaches it.

Data: Fashion-MNIST and openclipart drawings, loaded, embedded (MobileNetV2, 224 px) and noised exactly as
bench/review_quality.py does (10 % of labels moved uniformly, or to the most similar class).

    .venv/bin/python bench/review_effort.py                    # both datasets, both noises, 3 draws
    .venv/bin/python bench/review_effort.py --seeds 1 --cache /tmp/effort   # embeddings kept between runs
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
sys.path.insert(0, str(ROOT / "bench"))

import review_quality as rq  # noqa: E402  (the loaders, embedder and planted noise of the quality bench)

PAGE = 24
SHARES = (0.5, 0.8, 1.0)


def dataset(name: str, *, per_class: int, size_px: int, cache: Path | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(embeddings, true labels, vocab) of one dataset; embeddings kept in `cache` when given."""
    file = cache / f"{name}-{per_class}-{size_px}.npz" if cache is not None else None
    if file is not None and file.exists():
        with np.load(file) as z:
            return z["feats"], z["labels"], [str(v) for v in z["vocab"]]
    writer = rq.write_fashion if name == "fashion-mnist" else rq.write_clipart
    with tempfile.TemporaryDirectory() as tmp:
        paths, labels, vocab = writer(Path(tmp) / name, per_class, size_px)
        feats = rq.embed(paths, size_px)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        np.savez(file, feats=feats, labels=labels, vocab=np.array(vocab))
    return feats, labels, vocab


def simulate(feats: np.ndarray, true: np.ndarray, noisy: np.ndarray, vocab: list[str], *, rerank: bool,
             seed: int = 42, page: int = PAGE) -> tuple[list[int], int, list[float]]:
    """Page through the queue as a person would. Returns (images looked at when each planted error was found,
    suggestions that named the true class of a planted error, seconds of each re-rank)."""
    from smarthub.clean import review, scorers
    from smarthub.clean.records import Entry

    n = len(noisy)
    shas = [f"{i:08d}" for i in range(n)]
    feats_by_sha = dict(zip(shas, feats))
    labels = noisy.copy()

    def entries() -> list[Entry]:
        return [Entry(path=Path(f"{vocab[labels[i]]}/{i}.png"), label=vocab[labels[i]], sha256=shas[i])
                for i in range(n)]

    nb = scorers.neighbours_of(feats_by_sha, shas, seed=seed)
    planted = set(np.flatnonzero(true != noisy).tolist())
    trusted: set[str] = set()
    found_at: list[int] = []
    right, looked, seconds = 0, 0, []
    order: list[tuple[int, str]] = []
    parts = None
    while len(found_at) < len(planted):
        if not order or rerank:
            t = time.perf_counter()
            current = entries()
            if parts is None:  # the first review: the full fit
                parts = scorers.fast_scores(current, feats_by_sha, nb, vocab, folds=5, seed=seed)
                probs = parts[0]
            else:  # after a page: what the Clean tab and the notebook run (review.relearn)
                probs = scorers.rerank_fast(current, nb, parts[1], parts[2], vocab, trusted=trusted)
            q = review.queue(current, probs, vocab, threshold=0.6, kept=trusted, show_all=True)
            seconds.append(time.perf_counter() - t)
            order = [(int(s.sha256), s.suggested) for s in q.suspects]
        for i, suggested in order[:page]:
            looked += 1
            if i in planted:
                found_at.append(looked)
                right += int(suggested == vocab[true[i]])
                labels[i] = true[i]  # relabelled to its true class
            trusted.add(shas[i])  # relabelled or kept: a label a person checked
        order = order[page:]
    return found_at, right, seconds


def looked_for(found_at: list[int], share: float) -> int:
    """Images looked at when `share` of the planted errors had been found."""
    need = int(np.ceil(share * len(found_at)))
    return found_at[need - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rate", type=float, default=0.10)
    ap.add_argument("--seeds", type=int, default=3, help="noise draws per set-up (figures are their mean)")
    ap.add_argument("--datasets", type=lambda s: s.split(","), default=["fashion-mnist", "openclipart"])
    ap.add_argument("--cache", type=Path, default=None, help="keep the embeddings in this folder between runs")
    ap.add_argument("--embed-only", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    rq.ensure_weights()
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    rows: list[tuple] = []
    for name in args.datasets:
        t = time.perf_counter()
        feats, labels, vocab = dataset(name, per_class=args.per_class, size_px=args.size, cache=args.cache)
        print(f"# {name}: {len(labels)} images, {len(vocab)} classes ({time.perf_counter() - t:.0f} s)", flush=True)
        if args.embed_only:
            continue
        for noise in rq.NOISES:
            for seed in range(args.seeds):
                noisy, moved = rq.plant(labels, feats, rate=args.rate, noise=noise, seed=seed)
                for way, rerank in (("static", False), ("re-ranked", True)):
                    t = time.perf_counter()
                    found_at, right, secs = simulate(feats, labels, noisy, vocab, rerank=rerank)
                    at = [looked_for(found_at, share) for share in SHARES]
                    rows.append((name, noise, way, seed, len(moved), *at, right / len(moved), float(np.median(secs))))
                    print(f"{name:13s} {noise:7s} s{seed} {way:9s} planted {len(moved):3d}  looked at for "
                          + "  ".join(f"{int(100 * sh)} %: {a:4d} ({a / len(moved):.2f}x)" for sh, a in zip(SHARES, at))
                          + f"  suggestion right {right / len(moved):.2f}  rank {np.median(secs):.2f} s"
                          f" ({len(secs)} ranks, {time.perf_counter() - t:.0f} s)", flush=True)
    print("\n| dataset | noise (planted) | way | 50 % | 80 % | 100 % | suggestion = true class |")
    print("|---|---|---|---:|---:|---:|---:|")
    for key in dict.fromkeys((r[0], r[1], r[2]) for r in rows):
        sel = [r for r in rows if (r[0], r[1], r[2]) == key]
        m = np.mean([r[4:10] for r in sel], axis=0)
        cells = " | ".join(f"{m[i]:.0f} ({m[i] / m[0]:.2f}×)" for i in (1, 2, 3))
        print(f"| {key[0]} | {key[1]} ({m[0]:.0f}) | {key[2]} | {cells} | {m[4]:.2f} |")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
