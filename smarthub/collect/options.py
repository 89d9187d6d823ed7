"""The one source of bootstrap's defaults: `BootstrapOptions` (read by `smarthub bootstrap` and the Bootstrap tab).

Kept free of heavy imports so `smarthub --help` can read it (smarthub/optionspec.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from smarthub.optionspec import check, option

SAFESEARCH = ("on", "moderate", "off")  # ddgs' safe-search levels
DEFAULT_NEAR_THRESHOLD = 6  # pHash Hamming distance counted as a near duplicate (collect/dedupe.py)


@dataclass(frozen=True)
class BootstrapOptions:
    """How many images to collect per label, the search filters and how downloads are fetched and normalised."""

    count: int = option(100, range=(1, None), ui=(1, 1000, 1), label="images per label",
                        help="images wanted per class")
    region: str = option("wt-wt", help="search region, e.g. us-en, de-de (wt-wt: none)")
    safesearch: str = option("moderate", choices=SAFESEARCH, help="safe search level")
    workers: int = option(16, range=(1, None), help="concurrent downloads")
    per_host: int = option(8, range=(1, None), help="concurrent downloads per host")
    timeout_s: float = option(10.0, flag="--timeout", metavar="S", help="connect/read timeout in seconds")
    max_bytes: int = option(20 * 1024 * 1024, range=(1, None), help="largest download in bytes (default 20 MiB)")
    max_side_px: int = option(512, flag="--max-side", range=(1, None), metavar="PX",
                              help="shrink so the longest side is at most PX")
    min_side_px: int = option(64, flag="--min-side", range=(0, None), metavar="PX",
                              help="refuse images whose shorter side is under PX")
    keep_original: bool = option(False, help="save the original bytes (no re-encoding)")
    near_threshold: int = option(DEFAULT_NEAR_THRESHOLD, flag="--threshold", range=(0, 63), cli=False,
                                 metavar="BITS", help="pHash Hamming distance counted as a near duplicate")

    def __post_init__(self) -> None:
        check(self)
