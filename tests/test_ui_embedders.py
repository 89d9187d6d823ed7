"""The Clean tab's embedder menu: the strongest cached embedder offered, a one-click download (offline: the fix),
and the review ranked with the chosen embedder, saying which one ranked."""
from __future__ import annotations

from pathlib import Path

import pytest

from hub_cache import isolated_hub, safetensors_bytes, write_hub_repo
from smarthub.ui import tab_clean
from smarthub.ui.tab_clean import CleanState


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolated_hub(tmp_path, monkeypatch)


def test_menu_offers_the_strongest_cached_embedder_and_downloads_the_rest(hub: Path) -> None:
    choices, value = tab_clean.embedder_menu()
    assert (choices, value) == ([tab_clean.DEFAULT_EMBEDDER], tab_clean.DEFAULT_EMBEDDER)  # nothing cached
    get, first = tab_clean.download_menu()
    assert first == "dinov2_vitb14" and ("dinov2_vits14 (88 MB, Apache-2.0)", "dinov2_vits14") in get
    write_hub_repo(hub, "timm/vit_small_patch14_dinov2.lvd142m", {"model.safetensors": b"weights"})
    write_hub_repo(hub, "timm/vit_base_patch14_dinov2.lvd142m", {"README.md": b"a download that stopped early"})
    choices, value = tab_clean.embedder_menu()
    assert (choices, value) == (["dinov2_vits14", tab_clean.DEFAULT_EMBEDDER], "dinov2_vits14")
    assert "dinov2_vits14" not in [v for _, v in tab_clean.download_menu()[0]]


def test_download_offline_says_what_to_do_and_selects_nothing(hub: Path) -> None:
    message, got = tab_clean.download_embedder("dinov2_vits14")
    assert got is None
    assert message.startswith("**Problem:** cannot download dinov2_vits14: this machine is offline")
    assert f"copy its models--timm--vit_small_patch14_dinov2.lvd142m folder into {hub}" in message
    assert tab_clean.embedder_note().startswith("Offline here (HF_HUB_OFFLINE): on a machine online run")
    assert not any(hub.iterdir())


def test_review_ranks_with_the_chosen_embedder_and_the_health_view_says_so(hub: Path, small_ws) -> None:
    import timm

    write_hub_repo(hub, "timm/test_vit.r160_in1k",
                   {"model.safetensors": safetensors_bytes(timm.create_model("test_vit.r160_in1k").state_dict())})
    view = tab_clean.run_review(small_ws, CleanState(), "fast", 0.6, 3, None, (), "test_vit.r160_in1k")
    result = view.state.result
    assert result.options.train.arch == "test_vit.r160_in1k"
    assert tab_clean.ranked_by(result) == "test_vit.r160_in1k at 224 px"
    assert tab_clean.health_text(small_ws, result).startswith("Ranked by **test_vit.r160_in1k at 224 px** (fast")
    default = tab_clean.run_review(small_ws, CleanState(), "fast", 0.6, 3, None, (), tab_clean.DEFAULT_EMBEDDER)
    assert tab_clean.ranked_by(default.state.result) == "mobilenet_v2 at 224 px"
