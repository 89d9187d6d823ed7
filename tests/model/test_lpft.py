"""The LP-FT recipe on real images with the offline MobileNetV2 weights: the head fitted on cached embeddings
is exactly the Learner's head, embeddings are computed once per image (shared with review), head-only mode,
and the device choice reaches the Learner."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import write_fashion_folders
from smarthub.cli import main
from smarthub.errors import ModelError
from smarthub.workspace import Workspace

CLASSES = ("trouser", "bag", "sneaker")


def _fashion_ws(root: Path, per_class: int = 10) -> Workspace:
    ws = Workspace(root / "data", root / "models")
    write_fashion_folders(ws.data_dir, per_class=per_class, classes=CLASSES, size_px=28)
    return ws


def _recorder() -> tuple[list, object]:
    seen: list = []
    return seen, seen.append


def _embedded(events: list) -> int:
    """How many images stage 1 ran through the network (the embedding progress reports its total)."""
    totals = [p.batches for p in events if p.stage == "embedding" and p.batches]
    return max(totals) if totals else 0


def test_head_only_uses_the_embeddings_cache_and_is_the_learners_head(tmp_path: Path) -> None:
    from smarthub.model import embeddings
    from smarthub.model.inference import load_classifier, predict_probs
    from smarthub.model.options import TrainOptions
    from smarthub.model.train import train

    ws = _fashion_ws(tmp_path)
    options = TrainOptions(size_px=32, batch_size=8, head_only=True)
    events, progress = _recorder()
    result = train(ws, options, progress=progress)
    report = result.report
    assert _embedded(events) == 30  # every image once
    assert report["recipe"] == "head-only" and report["epochs_run"] == 0 and report["best_epoch"] == 0
    assert [h["stage"] for h in report["history"]] == ["head"]
    # the exported Learner's own validation accuracy is the head's, measured on the embeddings
    assert report["valid_accuracy"] == pytest.approx(report["head_valid_accuracy"], abs=1e-9)

    # the cached embeddings (review's cache: sha256 → vector) through the fitted Linear layer give the same
    # probabilities as the exported Learner on the same (pre-resized) images: same pixels, same pooled features
    learner = load_classifier(ws.export_path)
    cached = sorted((ws.cache_dir / "images" / "32px").rglob("*.png"))
    assert len(cached) == 30
    feats = embeddings.load_embedding_cache(ws, "mobilenet_v2", 32)
    x = np.stack([feats[p.stem] for p in cached])
    linear = learner.model[1][-1]  # pool → flatten → Linear
    logits = x @ linear.weight.detach().numpy().T + linear.bias.detach().numpy()
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(predict_probs(learner, cached), expected, atol=5e-3)  # float16 cache

    # a second run embeds nothing; one new image is embedded alone; review reads the same cache
    events, progress = _recorder()
    train(ws, options, progress=progress)
    assert _embedded(events) == 0
    write_fashion_folders(ws.data_dir, per_class=1, classes=("bag",), size_px=28, offset=400)
    events, progress = _recorder()
    train(ws, options, progress=progress)
    assert _embedded(events) == 1
    hashed = embeddings.hash_items(ws, [i for i in _scan(ws)])
    calls: list = []
    got, failed = embeddings.embed_items(ws, [i.path for i in hashed.items], hashed.shas, arch="mobilenet_v2",
                                         size_px=32, progress=lambda *a: calls.append(a))
    assert calls == [] and failed == [] and len(got) == 31


def _scan(ws: Workspace) -> list:
    from smarthub.dataset import scan_dataset

    return scan_dataset(ws.data_dir)


def test_lpft_cli_prints_the_head_then_total_epochs(tmp_path: Path, capsys, monkeypatch) -> None:
    from smarthub.cli import train as cli_train

    monkeypatch.setattr(cli_train, "LOG_PROGRESS_EVERY_S", float("inf"))  # only finished epochs, however slow the batches
    ws = _fashion_ws(tmp_path)
    rc = main(["train", "--data", str(ws.data_dir), "--models", str(ws.models_dir), "--size", "32",
               "--batch-size", "8", "--epochs", "2", "--patience", "2", "--device", "cpu", "--always-fine-tune"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(ws.report_path.read_text())
    assert report["recipe"] == "lp-ft" and report["device"] == "cpu" and report["mixed_precision"] is False
    assert report["epochs_run"] == 2 and [h["stage"] for h in report["history"]] == ["head", "training", "training"]
    assert 0 <= report["best_epoch"] <= 2 and report["valid_accuracy"] >= report["head_valid_accuracy"]
    assert len(report["valid_sha256"]) == report["n_valid"]
    assert "head fitted on cached embeddings" in err
    assert [ln.split(" (")[0] for ln in err.splitlines() if ln.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "recipe lp-ft on cpu" in out


@pytest.mark.parametrize(("device", "error"), [
    ("cpu", None),
    ("auto", None),
    ("cuda", r"--device cuda asked for, but torch sees no CUDA GPU here"),
    ("mps", r"--device mps asked for, but this machine has no Apple GPU"),
], ids=["cpu", "auto-is-cpu-here", "cuda-missing", "mps-missing"])
def test_device_flows_into_the_learner(tmp_path: Path, device: str, error: str | None) -> None:
    from smarthub.dataset import scan_dataset
    from smarthub.model.data import build_learner, split_items
    from smarthub.model.options import TrainOptions

    ws = _fashion_ws(tmp_path, per_class=4)
    items = scan_dataset(ws.data_dir)
    options = TrainOptions(size_px=32, batch_size=4, device=device)
    is_valid = split_items(items, valid_pct=0.25, seed=1)
    if error is not None:
        with pytest.raises(ModelError, match=error):
            build_learner(items, is_valid, options, work_dir=tmp_path / "work")
        return
    learn = build_learner(items, is_valid, options, work_dir=tmp_path / "work")
    assert learn.dls.device.type == "cpu" and learn.dls.train.device.type == "cpu"
    assert not hasattr(learn, "mixed_precision")  # fp16 on CUDA only


def test_review_style_fit_without_a_cache_computes_the_head_through_the_learner(tmp_path: Path) -> None:
    """`build_learner` + `fit` (review's K-fold entry points) run LP-FT without a workspace cache."""
    from smarthub.dataset import scan_dataset
    from smarthub.model.data import build_learner, split_items
    from smarthub.model.fit import fit
    from smarthub.model.inference import predict_probs
    from smarthub.model.options import TrainOptions

    ws = _fashion_ws(tmp_path, per_class=6)
    items = scan_dataset(ws.data_dir)
    is_valid = split_items(items, valid_pct=0.34, seed=3)
    options = TrainOptions(size_px=32, batch_size=4, epochs=1)
    learn = build_learner(items, is_valid, options, work_dir=tmp_path / "work")
    result = fit(learn, options)
    assert [h["stage"] for h in result.history] == ["head", "training"]
    assert result.head_accuracy is not None and result.head_accuracy > 0.5  # chance is 1/3
    probs = predict_probs(learn, [i.path for i in items])
    assert probs.shape == (18, 3)



def test_stage2_fine_tunes_the_body_at_a_tenth_of_the_head_rate_on_frozen_batchnorm(tmp_path: Path) -> None:
    """The stage-2 recipe measured in bench/time_to_accuracy.py: one-cycle with the head at DEFAULT_FINETUNE_LR,
    the body at FINETUNE_BODY_LR_DIV times less, its blocks up to stride 8 frozen (MobileNetV2: features[:7]),
    every BatchNorm layer on its ImageNet statistics while the weights learn, conv weights channels-last while
    training only."""
    import torch
    from fastai.callback.core import Callback

    from smarthub.dataset import scan_dataset
    from smarthub.model.options import DEFAULT_FINETUNE_LR, FINETUNE_BODY_LR_DIV
    from smarthub.model.data import build_learner, split_items
    from smarthub.model.fit import fit
    from smarthub.model.options import TrainOptions

    ws = _fashion_ws(tmp_path, per_class=6)
    items = scan_dataset(ws.data_dir)
    options = TrainOptions(size_px=32, batch_size=4, epochs=1)
    learn = build_learner(items, split_items(items, valid_pct=0.34, seed=3), options, work_dir=tmp_path / "work")
    bns = [m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    imagenet_mean = bns[0].running_mean.clone()
    convs = [m for m in learn.model[0].modules() if isinstance(m, torch.nn.Conv2d)]
    features = learn.model[0][0]
    early_conv = [m for m in features[6].modules() if isinstance(m, torch.nn.Conv2d)][-1]  # last stride-8 block
    late_conv = [m for m in features[7].modules() if isinstance(m, torch.nn.Conv2d)][0]  # first stride-16 block
    first_conv, start_weight = convs[0], convs[0].weight.detach().clone()
    early_start, late_start = early_conv.weight.detach().clone(), late_conv.weight.detach().clone()
    seen: dict[str, list] = {"lrs": [], "bn_training": [], "body_moved": [], "channels_last": []}

    class Spy(Callback):
        def after_batch(self) -> None:
            if self.training:
                seen["lrs"].append([h["lr"] for h in self.learn.opt.hypers])
                seen["bn_training"].append(any(m.training for m in bns))
                seen["body_moved"].append(not torch.equal(late_conv.weight, late_start))
                seen["channels_last"].append(first_conv.weight.is_contiguous(memory_format=torch.channels_last))

    result = fit(learn, options, cbs=[Spy()])
    assert seen["lrs"] and not any(seen["bn_training"]) and all(seen["body_moved"]) and all(seen["channels_last"])
    assert result.frozen_blocks == 7
    assert torch.equal(first_conv.weight, start_weight) and torch.equal(early_conv.weight, early_start)
    assert all(p.requires_grad for p in learn.model.parameters())  # frozen for stage 2 only
    # the speed-up layout is for training only: the Learner leaves fit() with ordinary (contiguous) weights
    assert all(p.is_contiguous() for p in learn.model.parameters())
    assert torch.equal(bns[0].running_mean, imagenet_mean)
    for body_lr, head_lr in seen["lrs"]:
        assert body_lr == pytest.approx(head_lr / FINETUNE_BODY_LR_DIV)
        assert 0 < head_lr <= DEFAULT_FINETUNE_LR
    assert max(h for _, h in seen["lrs"]) > DEFAULT_FINETUNE_LR / 25  # the one-cycle warm-up leaves its floor


@pytest.mark.parametrize(("head", "epochs", "patience", "expect"), [
    (0.80, [0.60, 0.70, 0.78, 0.87], 2, (4, 4, False)),
    (0.80, [0.70, 0.65, 0.60, 0.90], 2, (0, 3, True)),
    (0.50, [0.60, 0.70, 0.65, 0.64, 0.90], 2, (2, 4, True)),
    (0.50, [0.60, 0.70, 0.65, 0.66, 0.90], 2, (5, 5, False)),
    (0.50, [0.60, 0.55, 0.90], 1, (1, 2, True)),
    (0.50, [0.60, 0.70, 0.65], 1, (2, 3, False)),
    (0.50, [0.60, 0.40, 0.35, 0.70, 0.80, 0.75], 2, (5, 6, False)),
    (0.50, [0.60, 0.70, 0.65, 0.60, 0.55, 0.50], 2, (2, 4, True)),
], ids=["dip-below-the-head-then-past-it", "never-past-the-head", "stalls-after-improving", "climbing-again",
        "patience-1",
        "last-epoch-worse-no-early-stop", "no-stop-at-the-one-cycle-peak", "stops-once-annealed"])
def test_keep_best_stops_on_stalled_fine_tuning_and_restores_the_best_weights(
        head: float, epochs: list[float], patience: int, expect: tuple[int, int, bool]) -> None:
    """Early stopping compares fine-tuning epochs with each other (the one-cycle peak dips below the head
    first); the weights kept are the best of the head and every epoch."""
    from types import SimpleNamespace

    import torch
    from fastai.callback.core import CancelFitException

    from smarthub.model.lpft import HeadScore
    from smarthub.model.stopping import earliest_stop, make_keep_best

    model = torch.nn.Linear(1, 1)
    torch.nn.init.constant_(model.weight, 0.0)  # the weight holds the epoch number (0 = the head)
    recorder = SimpleNamespace(metric_names=["epoch", "train_loss", "valid_loss", "accuracy"], final_record=[])
    keep = make_keep_best(baseline=HeadScore(valid_loss=1.0, accuracy=head), patience=patience,
                          earliest=earliest_stop(len(epochs), 0.25))
    keep.learn = SimpleNamespace(model=model, recorder=recorder, n_epoch=len(epochs))
    keep.before_fit()
    for n, acc in enumerate(epochs, 1):
        torch.nn.init.constant_(model.weight, float(n))
        recorder.final_record = [0.5, 1.0, acc]
        try:
            keep.after_epoch()
        except CancelFitException:
            break
    keep.after_fit()
    best_epoch, epochs_run, stopped = expect
    assert (keep.best_epoch, keep.epochs_run, keep.stopped_early) == (best_epoch, epochs_run, stopped)
    assert model.weight.item() == best_epoch


def test_head_fit_runs_on_one_torch_thread_and_restores_the_count(monkeypatch):
    import torch

    from smarthub.model import lpft

    seen = []
    real = lpft._fit_linear_head
    monkeypatch.setattr(lpft, "_fit_linear_head", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(3), 10)
        head = lpft.fit_linear_head(rng.normal(size=(30, 8)) + labels[:, None], labels, 3)
        assert seen == [1] and torch.get_num_threads() == 2
        assert head.weight.shape == (3, 8)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("arch", "max_stride", "expect"), [
    ("mobilenet_v2", 8, 7), ("mobilenet_v2", 2, 2), ("mobilenet_v2", 0, 0),
    ("resnet18", 8, 6), ("resnet18", 32, 7), ("convnext_tiny", 2, 0)],
    ids=["mobilenet-stride-8", "mobilenet-stem", "off", "resnet-through-layer2", "resnet-never-the-last-block",
         "convnext-stem-is-stride-4"])
def test_frozen_early_layers_freezes_the_leading_blocks_by_stride_and_restores_them(
        arch: str, max_stride: int, expect: int) -> None:
    """The blocks whose output stride is at most `max_stride` take no gradient inside the block (a backward
    pass leaves them without .grad), the rest do, and everything is trainable again after."""
    from types import SimpleNamespace

    import torch
    from fastai.vision.learner import create_body, model_meta

    from smarthub.model.archs import resolve_arch
    from smarthub.model.lpft import frozen_early_layers

    model_fn = resolve_arch(arch).model_fn
    body = create_body(model_fn(), pretrained=False, cut=model_meta.get(model_fn, {}).get("cut"))
    learner = SimpleNamespace(model=torch.nn.Sequential(body, torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1),
                                                                                  torch.nn.Flatten())))
    blocks = list(body.children())
    while len(blocks) == 1:
        blocks = list(blocks[0].children())
    body.train()
    with frozen_early_layers(learner, max_stride) as frozen:
        assert body.training  # the stride probe leaves the training mode as it found it
        learner.model(torch.rand(2, 3, 64, 64)).sum().backward()
        # per block with parameters (ReLU, MaxPool have none): (frozen?, requires_grad, got a gradient)
        seen = [(k < frozen, all(p.requires_grad for p in b.parameters()), all(p.grad is not None for p in b.parameters()))
                for k, b in enumerate(blocks) if any(True for _ in b.parameters())]
    assert frozen == expect
    assert seen and all(trains == got_grad == (not is_frozen) for is_frozen, trains, got_grad in seen)
    assert all(p.requires_grad for p in body.parameters())


def test_frozen_early_layers_leaves_a_body_that_is_not_a_chain_alone() -> None:
    """A body whose forward is not its children in turn (a timm wrapper, a transformer) freezes nothing."""
    from types import SimpleNamespace

    import torch

    from smarthub.model.lpft import frozen_early_layers

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3, stride=2)
            self.tail = torch.nn.Conv2d(4, 4, 3, stride=2)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.tail(self.stem(x))

    for body in (Wrapper(), torch.nn.Sequential(Wrapper())):
        with frozen_early_layers(SimpleNamespace(model=[body]), 8) as frozen:
            assert frozen == 0 and all(p.requires_grad for p in body.parameters())


def test_an_empty_cached_copy_is_made_again(tmp_path: Path) -> None:
    """Resized copies are written without fsync; the empty file a power cut can leave is treated as missing
    (and never hard-linked to another label)."""
    from smarthub.dataset import scan_dataset
    from smarthub.model.embeddings import hash_items
    from smarthub.model.imagecache import resized_copies

    ws = _fashion_ws(tmp_path, per_class=2)
    items = scan_dataset(ws.data_dir)
    shas = hash_items(ws, items).shas
    first = resized_copies(ws.cache_dir, items, shas, size_px=32)
    first[0].path.write_bytes(b"")  # what a power cut after the rename can leave
    again = resized_copies(ws.cache_dir, items, shas, size_px=32)
    assert again[0].path == first[0].path and again[0].path.stat().st_size > 0
    from PIL import Image

    with Image.open(again[0].path) as img:
        assert img.size == (32, 32)
