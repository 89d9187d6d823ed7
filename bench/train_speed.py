"""Training throughput: smarthub's loop (data.build_learner + fit.fit, what `smarthub train` runs)
against a plain PyTorch loop on the same images, model, batch size and thread count, in the same process.

    .venv/bin/python bench/train_speed.py            # full run
    .venv/bin/python bench/train_speed.py --quick    # smoke run

Both sides train the same architecture from scratch for the same epochs (one-cycle Adam, cross-entropy), with
per-epoch validation, and comparable augmentation (fastai: Resize + aug_transforms on the batch; plain:
resize + flip/affine/colour jitter per image with torchvision). Reported: training images per wall second and per CPU second (median of the repeats),
counted as n_train * epochs / wall seconds of the whole fit (validation included on both sides).
Also compares DataLoader num_workers=0 against 2 for smarthub's loop.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (DataLoader workers): robust to a busy machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def plain_loop(model, train_paths, train_labels, valid_paths, valid_labels, *, size_px, batch_size, epochs,
               num_workers, lr=1e-3):
    """A straightforward PyTorch training loop; returns (wall seconds, CPU seconds)."""
    import torch
    from PIL import Image, ImageOps
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import v2

    train_tf = v2.Compose([v2.ToImage(), v2.Resize((size_px, size_px), antialias=True), v2.RandomHorizontalFlip(),
                           v2.RandomAffine(degrees=10, scale=(1.0, 1.1)), v2.ColorJitter(0.2, 0.2),
                           v2.ToDtype(torch.float32, scale=True)])
    valid_tf = v2.Compose([v2.ToImage(), v2.Resize((size_px, size_px), antialias=True),
                           v2.ToDtype(torch.float32, scale=True)])

    class Images(Dataset):
        def __init__(self, paths, labels, tf):
            self.paths, self.labels, self.tf = paths, labels, tf

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            with Image.open(self.paths[i]) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
            return self.tf(img), self.labels[i]

    train_dl = DataLoader(Images(train_paths, train_labels, train_tf), batch_size=batch_size, shuffle=True,
                          drop_last=True, num_workers=num_workers)
    valid_dl = DataLoader(Images(valid_paths, valid_labels, valid_tf), batch_size=batch_size * 2,
                          num_workers=num_workers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(train_dl))
    loss_fn = torch.nn.CrossEntropyLoss()
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(epochs):
        model.train()
        for x, y in train_dl:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in valid_dl:
                correct += int((model(x).argmax(1) == y).sum())
    return time.perf_counter() - start, _cpu_seconds() - cpu


def smarthub_loop(items, is_valid, options, work_dir):
    """What `smarthub train` runs for the fitting part; returns (wall seconds, CPU seconds, learner)."""
    from smarthub.model.data import build_learner
    from smarthub.model.fit import fit

    learn = build_learner(items, is_valid, options, work_dir=work_dir)
    start, cpu = time.perf_counter(), _cpu_seconds()
    fit(learn, options)
    return time.perf_counter() - start, _cpu_seconds() - cpu, learn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny smoke run")
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", default="resnet18")
    args = ap.parse_args()
    if args.quick:
        args.per_class, args.epochs, args.repeats = 24, 1, 1

    import torch

    from helpers import write_fashion_folders
    from smarthub.dataset import scan_dataset
    from smarthub.model.data import split_items
    from smarthub.model.options import TrainOptions

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_fashion_folders(data, per_class=args.per_class, classes=("trouser", "bag", "sneaker"),
                              size_px=args.size)
        items = scan_dataset(data)
        is_valid = split_items(items, valid_pct=0.2, seed=42)
        vocab = sorted({it.label for it in items})
        tr = [(it.path, vocab.index(it.label)) for it, v in zip(items, is_valid) if not v]
        va = [(it.path, vocab.index(it.label)) for it, v in zip(items, is_valid) if v]
        n_train = len(tr)
        print(f"{len(items)} images ({n_train} train / {len(va)} valid), {args.size} px, batch {args.batch_size}, "
              f"{args.epochs} epoch(s), {args.arch} from scratch, torch threads {torch.get_num_threads()}", flush=True)

        results: dict[str, list[float]] = {}
        cpu_results: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for workers in (0, 2):
                opts = TrainOptions(arch=args.arch, epochs=args.epochs, size_px=args.size,
                                    batch_size=args.batch_size, pretrained=False, num_workers=workers)
                secs, cpu, learn = smarthub_loop(items, is_valid, opts, Path(tmp) / "models")
                results.setdefault(f"smarthub workers={workers}", []).append(n_train * args.epochs / secs)
                cpu_results.setdefault(f"smarthub workers={workers}", []).append(n_train * args.epochs / cpu)
                print(f"  smarthub workers={workers}: {secs:.1f} s wall, {cpu:.1f} CPU s", flush=True)
                if workers == 0:
                    # the same architecture (fastai body + head), fresh copy, plain loop
                    model = copy.deepcopy(learn.model)
                    for m in model.modules():
                        if hasattr(m, "reset_parameters"):
                            m.reset_parameters()
                torch.set_num_threads(args.threads)
                secs, cpu = plain_loop(copy.deepcopy(model), [p for p, _ in tr], [y for _, y in tr],
                                  [p for p, _ in va], [y for _, y in va], size_px=args.size,
                                  batch_size=args.batch_size, epochs=args.epochs, num_workers=workers)
                results.setdefault(f"plain workers={workers}", []).append(n_train * args.epochs / secs)
                cpu_results.setdefault(f"plain workers={workers}", []).append(n_train * args.epochs / cpu)
                print(f"  plain    workers={workers}: {secs:.1f} s wall, {cpu:.1f} CPU s", flush=True)

    # wall-clock figures swing with other work on a shared machine; CPU seconds (this process + its
    # DataLoader workers) measure the work each loop does per image and are the main figure.
    for title, res in (("per wall second", results), ("per CPU second", cpu_results)):
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"train images {title} (median; runs)")
        for k, v in med.items():
            print(f"  {k:24s} {v:7.1f}   ({', '.join(f'{x:.1f}' for x in res[k])})")
        print(f"  ratio smarthub/plain, workers=0: {med['smarthub workers=0'] / med['plain workers=0']:.2f}x")
        print(f"  ratio smarthub/plain, workers=2: {med['smarthub workers=2'] / med['plain workers=2']:.2f}x")
        print(f"  smarthub workers=2 vs workers=0: {med['smarthub workers=2'] / med['smarthub workers=0']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
