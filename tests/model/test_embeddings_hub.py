"""Strong embedders load end to end from the libraries' own caches, offline: timm and DINOv2 (timm, from the
Hugging Face hub cache) and open_clip (`hf-hub:` repositories), each with a small randomly initialised checkpoint
written where a download would have put it. The embedding must be the checkpoint's, not a fresh random init."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import make_image
from hub_cache import isolated_hub, safetensors_bytes, write_hub_repo
from smarthub.errors import ModelError, SmartHubError

pytest.importorskip("timm")

TINY_CLIP = {
    "model_cfg": {"embed_dim": 32,
                  "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_hub(tmp_path, monkeypatch)


def _timm_state(name: str, *, seed: int = 0, **kw) -> dict:
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False, **kw).state_dict()


def _batch(tmp_path: Path, size_px: int, n: int = 3):
    from smarthub.model.embeddings import load_image_array

    paths = [make_image(tmp_path / "img" / f"{i}.png", color=(40 * i, 200 - 30 * i, 90), pattern=i) for i in range(n)]
    return np.stack([load_image_array(p, size_px) for p in paths])


def _expected_timm(name: str, state: dict, batch: np.ndarray, stats, size_px: int) -> np.ndarray:
    import timm
    import torch

    from smarthub.model.embeddings import to_tensor

    model = timm.create_model(name, pretrained=False, num_classes=0)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
    if hasattr(model, "set_input_size"):
        model.set_input_size(img_size=(size_px, size_px))
    with torch.inference_mode():
        return model.eval()(to_tensor(batch, stats)).float().numpy()


def _embed(arch: str, batch: np.ndarray, size_px: int):
    import torch

    from smarthub.model.embeddings import load_extractor, to_tensor

    extractor, stats = load_extractor(arch, size_px=size_px)
    with torch.inference_mode():
        return extractor(to_tensor(batch, stats)).float().numpy(), stats


def test_timm_model_loads_its_checkpoint_from_the_hub_cache(hub: Path, tmp_path: Path) -> None:
    state = _timm_state("test_vit.r160_in1k", seed=1)
    write_hub_repo(hub, "timm/test_vit.r160_in1k", {"model.safetensors": safetensors_bytes(state)})
    batch = _batch(tmp_path, 64)
    got, stats = _embed("test_vit.r160_in1k", batch, 64)
    assert [list(s) for s in stats] == [[0.5] * 3] * 2  # timm's own config, not ImageNet's
    want = _expected_timm("test_vit.r160_in1k", state, batch, stats, 64)
    assert got.shape == (3, 64)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    other = _expected_timm("test_vit.r160_in1k", _timm_state("test_vit.r160_in1k", seed=2), batch, stats, 64)
    assert not np.allclose(got, other, atol=1e-3)  # a fresh init differs: the cached weights were used


def test_dinov2_name_loads_vit_s14_through_timm_at_the_review_size(hub: Path, tmp_path: Path) -> None:
    import torch

    state = {k: v.half() for k, v in _timm_state("vit_small_patch14_dinov2.lvd142m").items()}  # half the bytes
    write_hub_repo(hub, "timm/vit_small_patch14_dinov2.lvd142m", {"model.safetensors": safetensors_bytes(state)})
    batch = _batch(tmp_path, 56, n=2)  # 4 × 4 patches of 14 px: DINOv2's 518 px position embedding resampled
    got, stats = _embed("dinov2_vits14", batch, 56)
    assert got.shape == (2, 384)
    want = _expected_timm("vit_small_patch14_dinov2.lvd142m", {k: v.to(torch.float32) for k, v in state.items()},
                          batch, stats, 56)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

    from smarthub.model import embedders

    assert embedders.strongest() == "dinov2_vits14"  # cached and stronger than the torch cache's mobilenet_v2
    assert embedders.available()[-1] == "mobilenet_v2"


def test_open_clip_hf_hub_repository_loads_config_and_weights_offline(hub: Path, tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    import torch
    from open_clip.model import CLIP

    from smarthub.model.embeddings import check_embedder, to_tensor

    torch.manual_seed(3)
    model = CLIP(**TINY_CLIP["model_cfg"])
    write_hub_repo(hub, "tiny-org/tiny-clip", {"open_clip_config.json": json.dumps(TINY_CLIP).encode(),
                                              "open_clip_model.safetensors": safetensors_bytes(model.state_dict())})
    name = check_embedder(" open_clip:hf-hub:tiny-org/tiny-clip ")
    assert name == "open_clip:hf-hub:tiny-org/tiny-clip"
    batch = _batch(tmp_path, 64, n=2)
    got, stats = _embed(name, batch, 64)
    assert stats[0] == pytest.approx(TINY_CLIP["preprocess_cfg"]["mean"])
    with torch.inference_mode():
        want = model.eval().encode_image(to_tensor(batch, stats)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match=r"takes 64 px images: use --size 64"):
        _embed(name, batch, 96)
    assert open_clip.__version__


def test_review_ranks_with_a_cached_timm_embedder_and_says_so(hub: Path, small_ws, capsys) -> None:
    from smarthub.cli import main

    write_hub_repo(hub, "timm/test_vit.r160_in1k",
                   {"model.safetensors": safetensors_bytes(_timm_state("test_vit.r160_in1k"))})
    rc = main(["review", "--data", str(small_ws.data_dir), "--models", str(small_ws.models_dir),
               "--embedder", "test_vit.r160_in1k", "--size", "64", "--folds", "3", "--summary"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "embedder test_vit.r160_in1k at 64 px" in out
    assert "ranked by test_vit.r160_in1k at 64 px" in out
    cache = list((small_ws.data_dir / ".smarthub" / "cache" / "review").glob("emb-test_vit.r160_in1k-64.npz"))
    assert cache, "the embeddings were cached under the embedder's name"


def test_a_recommended_embedder_not_cached_names_the_download_and_the_offline_fix(hub: Path, small_ws,
                                                                                  capsys) -> None:
    from smarthub.cli import main

    rc = main(["review", "--data", str(small_ws.data_dir), "--models", str(small_ws.models_dir),
               "--embedder", "dinov2_vits14", "--folds", "3"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err, err
    err = err.splitlines()[-1]  # after the progress lines: one error line
    assert re.fullmatch(rf"error: --embedder dinov2_vits14: its weights are not in the Hugging Face cache "
                        rf"{re.escape(str(hub))}; offline here: on a machine with internet run `smarthub weights download dinov2_vits14` "
                        rf"and copy its models--timm--vit_small_patch14_dinov2.lvd142m folder into {re.escape(str(hub))}"
                        rf" — for review, pick another embedder: --embedder mobilenet_v2 \(its weights are cached\)",
                        err), err


def test_corrupt_or_wrong_shaped_checkpoint_is_one_clear_line(hub: Path, tmp_path: Path) -> None:
    good = safetensors_bytes(_timm_state("test_vit.r160_in1k"))
    write_hub_repo(hub, "timm/test_vit.r160_in1k", {"model.safetensors": good[: len(good) // 2]})
    batch = _batch(tmp_path, 32, n=1)
    with pytest.raises(ModelError, match=r"--embedder test_vit.r160_in1k: its cached checkpoint is unreadable"):
        _embed("test_vit.r160_in1k", batch, 32)
    write_hub_repo(hub, "timm/test_convnext.r160_in1k", {"model.safetensors": good})  # a ViT's weights
    with pytest.raises(ModelError, match=r"--embedder test_convnext.r160_in1k: its cached checkpoint is another "
                                         r"model's \(no tensor 'blocks.0.attn.proj.weight'\)"):
        _embed("test_convnext.r160_in1k", batch, 32)


def test_open_clip_repository_without_weights_is_not_cached_and_says_what_to_do(hub: Path) -> None:
    pytest.importorskip("open_clip")
    from smarthub.model import embedders
    from smarthub.model.embeddings import load_extractor

    rec = embedders.recommended("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    write_hub_repo(hub, rec.repo, {"open_clip_config.json": b"{}"})  # a download stopped after the first file
    assert not embedders.status(rec).cached
    assert rec.name not in embedders.available()
    with pytest.raises(ModelError, match=r"not available here .*; offline here: on a machine with internet run .*"
                                         r"models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K folder"):
        load_extractor(rec.name, size_px=224)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vitb14", "vit_base_patch16_siglip_224.v2_webli"])
def test_recommended_download_sizes_match_the_models(name: str) -> None:
    import timm
    import torch

    from smarthub.model import embedders

    rec = embedders.recommended(name)
    with torch.device("meta"):
        model = timm.create_model(embedders.hub_name(name), pretrained=False)
    mb = sum(t.numel() * 4 for t in model.state_dict().values()) / 1e6
    assert rec.size_mb == pytest.approx(mb, rel=0.02)
    assert rec.repo == "timm/" + embedders.hub_name(name)
    assert rec.licence.lower() == timm.models.get_pretrained_cfg(embedders.hub_name(name)).license


def test_download_offline_and_unknown_names_are_one_line(hub: Path) -> None:
    from smarthub.model import embedders

    with pytest.raises(ModelError, match=r"cannot download dinov2_vits14: this machine is offline \(HF_HUB_OFFLINE"
                                         r".*`smarthub weights download dinov2_vits14`"):
        embedders.download("dinov2_vits14")
    with pytest.raises(SmartHubError, match=r"'resnet18' is not a recommended embedder: use one of dinov2_vitb14"):
        embedders.download("resnet18")
    assert not list(hub.iterdir())  # nothing written
