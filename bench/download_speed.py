"""Download throughput: smarthub bootstrap (fetch + verify + normalise + dedupe + ledger) vs fastai's
`download_images` (its defaults) vs a sequential loop, same URLs, same loopback servers with 100 ms latency
per response, measured in the same run. Then dedupe throughput on 10,000 real images.

    .venv/bin/python bench/download_speed.py            # 200 images, 10,000 for dedupe
    .venv/bin/python bench/download_speed.py --quick     # 40 images, 1,000 for dedupe
"""
from __future__ import annotations

import argparse
import io
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from http_server import ImageServer, Route  # noqa: E402  (tests/http_server.py: the real loopback server)

CLIPART = Path("/usr/share/openclipart/png")
FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def real_images(n: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """`n` varied real images as (name, bytes, content type): crops of scikit-image photos (JPEG),
    upscaled Fashion-MNIST (PNG) and openclipart drawings (PNG with alpha)."""
    import gzip

    import skimage.data as skd

    rng = random.Random(seed)
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                 "cat", "camera", "coins", "colorwheel", "brick", "grass", "gravel", "moon", "stereo_motorcycle"):
        arr = getattr(skd, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        photos.append(Image.fromarray(arr).convert("RGB"))
    with gzip.open(FASHION, "rb") as f:
        f.read(16)
        fashion = np.frombuffer(f.read(28 * 28 * 2000), dtype=np.uint8).reshape(-1, 28, 28)
    cliparts = sorted(CLIPART.rglob("*.png"))
    rng.shuffle(cliparts)
    out: list[tuple[str, bytes, str]] = []
    n_photo, n_fashion = n // 2, n // 4
    for i in range(n_photo):
        img = photos[i % len(photos)]
        side = rng.randint(160, min(img.size) - 1)
        x, y = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
        crop = img.crop((x, y, x + side, y + int(side * rng.uniform(0.6, 1.0))))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=90)
        out.append((f"photo{i}.jpg", buf.getvalue(), "image/jpeg"))
    for i in range(n_fashion):
        img = Image.fromarray(fashion[i * 7], "L").resize((256, 256), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append((f"fashion{i}.png", buf.getvalue(), "image/png"))
    k = 0
    while len(out) < n:
        path = cliparts[k]
        k += 1
        if path.stat().st_size > 2_000_000:
            continue
        out.append((f"clip{k}.png", path.read_bytes(), "image/png"))
    return out


def _serve(routes: dict, hosts: int, latency_s: float, ports, stop) -> None:
    servers = [ImageServer(routes, latency_s=latency_s, host=f"127.0.0.{i + 1}").start() for i in range(hosts)]
    ports.put([srv.url("") for srv in servers])
    stop.wait()
    for srv in servers:
        srv.stop()


def run_downloads(n: int, hosts: int, latency_s: float, extra_workers: tuple[int, ...] = (16,)) -> dict[str, float]:
    import requests

    from smarthub.collect.bootstrap import bootstrap
    from smarthub.collect.download import DownloadOptions
    from smarthub.collect.search import UrlListBackend
    from smarthub.workspace import Workspace

    images = real_images(n)
    print(f"{len(images)} images, {sum(len(b) for _, b, _ in images) / 1e6:.1f} MB, {hosts} loopback host(s), "
          f"{latency_s * 1000:.0f} ms latency per response")
    routes = {f"/{name}": Route(body, ctype) for name, body, ctype in images}
    # the servers run in their own process, like remote hosts: their threads do not compete for our GIL
    ctx = multiprocessing.get_context("fork")
    ports, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(routes, hosts, latency_s, ports, stop), daemon=True)
    proc.start()
    try:
        bases = ports.get(timeout=30)
        urls = [f"{bases[i % hosts]}/{name}" for i, (name, _, _) in enumerate(images)]
        from fastai.vision.utils import download_images as fastai_download  # import before timing (torch)

        results: dict[str, float] = {}
        cpu: dict[str, float] = {}  # this process's CPU time (the servers run in another process)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            # warm-up (imports, Pillow plugins, thread pools) for both libraries, outside the timings
            (tmp / "warm.txt").write_text("\n".join(urls[:3]) + "\n")
            bootstrap(Workspace(tmp / "warm" / "data", tmp / "warm" / "models"), ["warm"], count=3,
                      backend=UrlListBackend(tmp / "warm.txt"))
            fastai_download(tmp / "warm-fastai", urls=urls[:3])
            # smarthub: the real bootstrap path (URL list backend → fetch, verify, normalise, dedupe, ledger)
            (tmp / "urls.txt").write_text("\n".join(urls) + "\n")
            for workers in extra_workers:
                name = "smarthub" if workers == 16 else f"smarthub-{workers}w"
                ws = Workspace(tmp / name / "data", tmp / name / "models")
                options = DownloadOptions(workers=workers)
                t0, c0 = time.perf_counter(), time.process_time()
                report = bootstrap(ws, ["bench"], count=10 * n, backend=UrlListBackend(tmp / "urls.txt"),
                                   download_options=options)
                results[name] = time.perf_counter() - t0
                cpu[name] = time.process_time() - c0
                r = report.reports["bench"]
                print(f"  {name}: {len(r.saved)} saved, {len(r.duplicates)} duplicates, {len(r.conflicts)} "
                      f"conflicts, {len(r.failed)} failed {r.reasons() or ''}")

            t0, c0 = time.perf_counter(), time.process_time()
            fastai_download(tmp / "fastai", urls=urls)
            results["fastai"] = time.perf_counter() - t0
            cpu["fastai"] = time.process_time() - c0
            print(f"  fastai:   {len(list((tmp / 'fastai').iterdir()))} files (not verified, not resized)")

            seq = tmp / "seq"
            seq.mkdir()
            t0, c0 = time.perf_counter(), time.process_time()
            with requests.Session() as s:
                for i, url in enumerate(urls):
                    resp = s.get(url, timeout=10)
                    (seq / f"{i}.bin").write_bytes(resp.content)
            results["sequential"] = time.perf_counter() - t0
            cpu["sequential"] = time.process_time() - c0
    finally:
        stop.set()
        proc.join(timeout=10)
    print(f"  {'method':<12}{'seconds':>9}{'images/s':>10}{'vs fastai':>11}{'CPU s':>8}")
    for name, secs in results.items():
        print(f"  {name:<12}{secs:>9.2f}{n / secs:>10.1f}{results['fastai'] / secs:>10.2f}x{cpu[name]:>8.2f}")
    return results


def run_dedupe(n: int, n_random: int = 100_000) -> None:
    """Hash n real images (Fashion-MNIST at 64 px + photo crops), then index-query them; plus 100k synthetic."""
    import gzip

    from smarthub.collect.dedupe import DEFAULT_NEAR_THRESHOLD, group_hashes, hamming, hash_files

    with gzip.open(FASHION, "rb") as f:
        f.read(16)
        fashion = np.frombuffer(f.read(28 * 28 * n), dtype=np.uint8).reshape(-1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(n):
            p = Path(tmp) / f"{i}.png"
            Image.fromarray(fashion[i], "L").resize((64, 64)).save(p)
            paths.append(p)
        t0 = time.perf_counter()
        hashed, failed = hash_files(paths)
        t_hash = time.perf_counter() - t0
    items = [(hashed[p].sha256, hashed[p].phash) for p in paths]
    t0 = time.perf_counter()
    groups = group_hashes(items, threshold=DEFAULT_NEAR_THRESHOLD)
    t_index = time.perf_counter() - t0
    m = min(n, 2000)  # brute force on a subset, extrapolated quadratically
    t0 = time.perf_counter()
    for i in range(m):
        hi = items[i][1]
        for j in range(i):
            hamming(hi, items[j][1])
    t_brute = (time.perf_counter() - t0) * (n / m) ** 2
    print(f"dedupe on {n:,} Fashion-MNIST images (64 px PNG): hashing {t_hash:.1f} s ({n / t_hash:,.0f} images/s), "
          f"index build+query {t_index:.2f} s ({n / t_index:,.0f} images/s), {len(groups)} duplicate groups; "
          f"brute-force pairwise would take ~{t_brute:.1f} s")
    rng = random.Random(1)
    big = [(f"s{i}", rng.getrandbits(64)) for i in range(n_random)]
    planted = [(f"p{i}", big[i * (n_random // 500)][1] ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64)))
               for i in range(500)]
    t0 = time.perf_counter()
    groups = group_hashes(big + planted, threshold=DEFAULT_NEAR_THRESHOLD)
    t_big = time.perf_counter() - t0
    found = sum(1 for g in groups if any(i >= n_random for i in g))
    print(f"index on {n_random + 500:,} random 64-bit hashes (500 planted near copies): {t_big:.2f} s, "
          f"{found}/500 planted found, {len(groups)} groups")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--hosts", type=int, default=4, help="loopback hosts serving the images (default 4)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per response (default 0.1)")
    parser.add_argument("--workers", type=int, nargs="*", default=[16, 32],
                        help="smarthub worker counts to measure (default: 16 = the default, and 32)")
    parser.add_argument("--dedupe", type=int, default=None, help="images for the dedupe benchmark")
    args = parser.parse_args()
    n = args.images or (40 if args.quick else 200)
    run_downloads(n, args.hosts, args.latency, tuple(args.workers))
    run_dedupe(args.dedupe or (1000 if args.quick else 10_000), 20_000 if args.quick else 100_000)


if __name__ == "__main__":
    main()
