"""Architectures and pretrained weights: names resolve, the expected file comes from torchvision's URL,
missing weights give one line with the fix, `smarthub weights add` installs real weights and refuses others."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import MOBILENET_V2_FILE, mobilenet_weights_source
from smarthub.cli import main
from smarthub.errors import ModelError, SmartHubError


@pytest.mark.parametrize("name, expected", [
    ("resnet18", "resnet18-f37072fd.pth"),
    ("mobilenet_v2", "mobilenet_v2-b0353104.pth"),  # IMAGENET1K_V1, not torchvision's default V2
    ("resnet50", "resnet50-11ad3fa6.pth"),  # fastai's meta asks for DEFAULT (V2)
    ("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth"),
    ("convnext_tiny", "convnext_tiny-983f1562.pth"),
    ("no_such_net", SmartHubError),
    ("", SmartHubError),
], ids=["resnet18", "mobilenet_v2", "resnet50", "efficientnet_b0", "convnext_tiny", "unknown", "empty"])
def test_expected_weights_file(name: str, expected) -> None:
    from smarthub.model.archs import expected_weights_file

    if isinstance(expected, str):
        assert expected_weights_file(name) == expected
    else:
        with pytest.raises(expected, match=r"architecture"):
            expected_weights_file(name)


def test_unknown_arch_lists_valid_names_and_timm_hint() -> None:
    from smarthub.model.archs import resolve_arch

    with pytest.raises(SmartHubError, match=r"unknown architecture 'vit_giant'.*resnet18.*mobilenet_v2.*timm"):
        resolve_arch("vit_giant")


def test_mobilenet_v2_gets_a_fastai_model_meta_entry() -> None:
    import torchvision.models as tvm
    from fastai.vision.all import imagenet_stats
    from fastai.vision.learner import default_split, model_meta

    from smarthub.model.archs import ensure_model_meta, resolve_arch

    ensure_model_meta()
    meta = model_meta[tvm.mobilenet_v2]
    assert (meta["cut"], meta["split"], meta["stats"], meta["weights"]) == (
        -1, default_split, imagenet_stats, "IMAGENET1K_V1")
    assert resolve_arch("mobilenet_v2").meta["weights"] == "IMAGENET1K_V1"


def test_check_weights_available(torch_home: Path) -> None:
    from smarthub.model.archs import check_weights_available

    check_weights_available("mobilenet_v2")  # cached by the fixture
    expected = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ModelError) as info:
        check_weights_available("resnet18")  # not cached; the download fails fast offline
    message = str(info.value)
    assert "\n" not in message
    assert str(expected) in message and "smarthub weights add" in message and "--no-pretrained" in message
    assert not expected.exists()


@pytest.mark.parametrize("name, pretrained, n_features", [
    ("mobilenet_v2", True, 1280),
    ("resnet18", False, 512),
], ids=["mobilenet_v2-pretrained", "resnet18-random"])
def test_feature_extractor_gives_one_embedding_per_image(name: str, pretrained: bool, n_features: int) -> None:
    import torch

    from smarthub.model.archs import feature_extractor

    module, (mean, std) = feature_extractor(name, pretrained=pretrained)
    assert len(mean) == len(std) == 3
    with torch.no_grad():
        out = module(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, n_features)
    assert not module.training


def test_feature_extractor_pretrained_body_holds_imagenet_weights() -> None:
    import torch

    from smarthub.model.archs import feature_extractor

    module, _ = feature_extractor("mobilenet_v2", pretrained=True)
    reference = torch.load(mobilenet_weights_source(), map_location="cpu", weights_only=True)
    first_conv = module[0][0][0][0].weight
    assert torch.equal(first_conv, reference["features.0.0.weight"])


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_weights_add_installs_real_mobilenet_weights(empty_torch_home: Path, tmp_path: Path, capsys) -> None:
    from smarthub.model.archs import check_weights_available

    download = tmp_path / "downloads" / "some-name-a-user-chose.pth"
    download.parent.mkdir()
    download.write_bytes(mobilenet_weights_source().read_bytes())
    with pytest.raises(ModelError):
        check_weights_available("mobilenet_v2")
    rc = main(["weights", "add", str(download)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    target = empty_torch_home / "hub" / "checkpoints" / MOBILENET_V2_FILE
    assert target.read_bytes() == download.read_bytes()
    assert str(target) in out
    check_weights_available("mobilenet_v2")
    assert [p.name for p in target.parent.iterdir()] == [MOBILENET_V2_FILE]  # no temp files left

    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert any(ln.split() == ["mobilenet_v2", MOBILENET_V2_FILE, "yes"] for ln in listing.splitlines())
    assert any(ln.split() == ["resnet18", "resnet18-f37072fd.pth", "no"] for ln in listing.splitlines())


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a torch file" * 100)


def _text(path: Path) -> None:
    path.write_text(json.dumps({"weights": [1, 2, 3]}))


def _dict_of_ints(path: Path) -> None:
    import torch

    torch.save({"a": 1, "b": 2}, path)


def _empty_dict(path: Path) -> None:
    import torch

    torch.save({}, path)


def _other_model(path: Path) -> None:
    import torch

    torch.save(torch.nn.Linear(4, 2).state_dict(), path)


def _resnet18_random(path: Path) -> None:
    import torch
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)


def _full_pickled_module(path: Path) -> None:
    import torch

    torch.save(torch.nn.Linear(4, 2), path)  # a whole module: refused by weights_only loading


@pytest.mark.parametrize("make, arch, message", [
    (_garbage, None, r"is not a PyTorch weights file"),
    (_text, None, r"is not a PyTorch weights file"),
    (_dict_of_ints, None, r"is not a state dict"),
    (_empty_dict, None, r"is not a state dict"),
    (_full_pickled_module, None, r"is not a PyTorch weights file"),
    (_other_model, None, r"fits none of the torchvision models"),
    (_resnet18_random, "mobilenet_v2", r"does not fit mobilenet_v2"),
    (None, None, r"no weights file at"),
], ids=["garbage", "json-text", "dict-of-ints", "empty-dict", "pickled-module", "other-model",
        "wrong-arch", "missing"])
def test_weights_add_refuses_non_weights(empty_torch_home: Path, tmp_path: Path, capsys, make, arch, message):
    file = tmp_path / "weights.pth"
    if make is not None:
        make(file)
    argv = ["weights", "add", str(file)] + (["--arch", arch] if arch else [])
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert re.search(message, lines[0]), lines[0]
    assert not (empty_torch_home / "hub" / "checkpoints").exists() or not any(
        (empty_torch_home / "hub" / "checkpoints").iterdir())


def test_weights_add_with_arch_and_detects_resnet18(empty_torch_home: Path, tmp_path: Path) -> None:
    from smarthub.weights import add_weights

    file = tmp_path / "r18.pth"
    _resnet18_random(file)
    target = add_weights(file)  # detected
    assert target.name == "resnet18-f37072fd.pth"
    target.unlink()
    assert add_weights(file, arch="resnet18") == target
    with pytest.raises(SmartHubError, match="unknown architecture"):
        add_weights(file, arch="resnet9000")


def test_importing_the_modules_loads_no_heavy_library() -> None:
    code = ("import sys, smarthub.model.archs, smarthub.model.train, smarthub.model.inference, smarthub.model.predict, "
            "smarthub.weights, smarthub.cli.train; "
            "print([m for m in ('torch', 'fastai', 'torchvision', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout
    assert out.strip() == "[]"


def test_weights_add_installs_coco_detector_weights(empty_torch_home: Path, tmp_path: Path, capsys) -> None:
    """COCO detector weights (here: a real 91-class state dict with random values) go where torchvision
    looks for them, and `annotate`'s detector loader then finds them offline."""
    import torch

    from smarthub.annotate import detect
    from smarthub.cli import main

    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    file = tmp_path / "my-coco-detector.pth"
    torch.save(detect.build_torchvision_model(arch, 91).state_dict(), file)
    # the 320 and full-resolution variants share every tensor shape: the user must say which
    assert main(["weights", "add", str(file)]) == 2
    assert "fits several detectors" in capsys.readouterr().err
    assert main(["weights", "add", str(file), "--arch", arch]) == 0
    expected = detect.coco_weights_file(arch)[0]
    assert (empty_torch_home / "hub" / "checkpoints" / expected).exists()
    assert expected in capsys.readouterr().out
    detector = detect.load_detector(arch, detect.DetectorOptions())
    assert len(detector.class_names) > 80
    # a detector's weights named for another detector are refused with the fix
    with pytest.raises(SmartHubError, match="does not fit fcos_resnet50_fpn"):
        from smarthub.weights import add_weights
        add_weights(file, arch="fcos_resnet50_fpn")


def test_weights_list_shows_recommended_embedders_cached_or_what_a_download_fetches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pytest.importorskip("timm")
    from hub_cache import isolated_hub, write_hub_repo

    hub = isolated_hub(tmp_path, monkeypatch)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"dinov2_vits14 +88 MB +Apache-2.0 +not cached: `weights download` fetches it from "
                     r"timm/vit_small_patch14_dinov2.lvd142m", out)
    assert "strongest that loads here: mobilenet_v2" in out  # the torch cache's only weights
    snapshot = write_hub_repo(hub, "timm/vit_small_patch14_dinov2.lvd142m", {"model.safetensors": b"x"})
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"dinov2_vits14 +88 MB +Apache-2.0 +cached \({re.escape(str(snapshot))}\)", out)
    assert "strongest that loads here: dinov2_vits14" in out


def test_weights_download_offline_is_one_line_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys) -> None:
    pytest.importorskip("timm")
    from hub_cache import isolated_hub

    hub = isolated_hub(tmp_path, monkeypatch)
    assert main(["weights", "download", "dinov2_vitb14"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot download dinov2_vitb14: this machine is offline (HF_HUB_OFFLINE is set); on a "
                   f"machine with internet run `smarthub weights download dinov2_vitb14` and copy its "
                   f"models--timm--vit_base_patch14_dinov2.lvd142m folder into {hub}")
    assert main(["weights", "download", "mobilenet_v2"]) == 2
    assert "not a recommended embedder" in capsys.readouterr().err
