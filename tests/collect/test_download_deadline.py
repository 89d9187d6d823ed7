"""Hostile servers cannot hold a download past its deadline; Stop and Ctrl-C end a collection promptly.

Every case runs against the real loopback server (tests/http_server.py). A broken deadline shows up as
the guard's TimeoutError (the fetch runs in a thread given far longer than the deadline), never as a hang.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from http_server import ImageServer, Route, encode, photo
from smarthub.collect.download import DownloadOptions, Fetcher, fetch_many
from smarthub.collect.netguard import redirect_refusal
from smarthub.errors import NetworkError
from smarthub.ledger import read_records
from smarthub.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
DEADLINE = DownloadOptions(connect_timeout_s=1.0, read_timeout_s=1.0, total_timeout_s=1.5, max_redirects=10_000,
                           min_side_px=16)
GUARD_S = 30  # far beyond the 1.5 s deadline: reaching it means the deadline did not hold


def _fetch_guarded(fetcher: Fetcher, url: str):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fetcher.fetch, url).result(timeout=GUARD_S)


HOSTILE = {
    "/trickle.jpg": Route(encode(photo(1), "JPEG"), behaviour="trickle", interval_s=0.2),
    "/trickle-no-length.jpg": Route(encode(photo(2), "JPEG"), behaviour="trickle_no_length", interval_s=0.2),
    "/slowloris": Route(behaviour="slow_headers", interval_s=0.2),
    "/endless": Route(behaviour="endless_redirect", delay_s=0.1),
}


@pytest.mark.parametrize("path", list(HOSTILE), ids=["trickle-with-length", "trickle-without-length",
                                                      "slowloris-headers", "endless-redirects"])
def test_no_server_behaviour_extends_the_deadline(path: str) -> None:
    routes = dict(HOSTILE)
    routes.update({f"/endless{'/x' * i}": HOSTILE["/endless"] for i in range(1, 200)})
    with ImageServer(routes) as srv:
        with pytest.raises(NetworkError, match=r"timed out \(download took more than 1.5 s\)"):
            _fetch_guarded(Fetcher(DEADLINE), srv.url(path))


def test_a_good_download_beside_a_trickle_still_succeeds() -> None:
    jpeg = encode(photo(3), "JPEG")
    with ImageServer({"/ok.jpg": Route(jpeg), **HOSTILE}) as srv:
        fetcher = Fetcher(DEADLINE)
        with pytest.raises(NetworkError, match="timed out"):
            _fetch_guarded(fetcher, srv.url("/trickle.jpg"))
        body, ctype = _fetch_guarded(fetcher, srv.url("/ok.jpg"))  # the same session recovers
    assert body == jpeg and ctype == "image/jpeg"


def test_stop_ends_fetch_many_with_fetches_in_flight() -> None:
    jpeg = encode(photo(4), "JPEG")
    routes = {"/ok.jpg": Route(jpeg), **{f"/t{i}.jpg": Route(jpeg, behaviour="trickle", interval_s=0.5)
                                         for i in range(6)}}
    patient = DownloadOptions(read_timeout_s=60, total_timeout_s=600, min_side_px=16, workers=8)
    stop = threading.Event()
    with ImageServer(routes) as srv:
        def consume() -> list:
            got = []
            for outcome in fetch_many(((srv.url(p), p) for p in routes), options=patient, should_stop=stop.is_set):
                got.append(outcome)
                if outcome.ok:
                    stop.set()  # the app's Stop button, pressed once something was saved
            return got

        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(consume).result(timeout=GUARD_S)
    assert [o.tag for o in got if o.ok] == ["/ok.jpg"]


@pytest.mark.parametrize("origin, target, refused", [
    ("http://93.184.216.34/a.jpg", "http://127.0.0.1/x", "public address\\) redirected to 127.0.0.1 \\(loopback"),
    ("http://93.184.216.34/a.jpg", "http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://93.184.216.34/a.jpg", "http://10.0.0.7/x", "private address"),
    ("http://93.184.216.34/a.jpg", "http://[::ffff:127.0.0.1]/x", "loopback"),
    ("http://93.184.216.34/a.jpg", "http://[::1]/x", "loopback"),
    ("http://127.0.0.1:8000/a.jpg", "http://169.254.169.254/x", "loopback address\\) redirected to 169.254"),
    ("http://10.0.0.1/a.jpg", "http://127.0.0.1/x", "private address\\) redirected to 127.0.0.1"),
    ("http://93.184.216.34/a.jpg", "http://100.64.0.1/x", "reserved"),
    ("http://93.184.216.34/a.jpg", "http://224.0.0.1/x", "reserved"),
    ("http://93.184.216.34/a.jpg", "http://8.8.8.8/b.jpg", ""),
    ("http://127.0.0.1:8000/a.jpg", "http://127.0.0.1:8000/b.jpg", ""),
    ("http://10.0.0.1/a.jpg", "http://10.0.0.2/b.jpg", ""),
    ("http://10.0.0.1/a.jpg", "http://8.8.8.8/b.jpg", ""),
], ids=["public-to-loopback", "public-to-metadata", "public-to-private", "public-to-mapped-loopback",
        "public-to-ipv6-loopback", "loopback-to-metadata", "private-to-loopback", "public-to-shared-nat-space",
        "public-to-multicast",
        "public-to-public", "loopback-to-itself", "private-to-private", "private-to-public"])
def test_redirect_rule(origin: str, target: str, refused: str) -> None:
    reason = redirect_refusal(origin, target)
    if refused:
        assert reason.startswith("redirect refused") and re.search(refused, reason), reason
    else:
        assert reason == ""


def test_loopback_server_redirect_into_link_local_is_refused_without_connecting() -> None:
    routes = {"/meta": Route(behaviour="redirect", location="http://169.254.169.254/latest/meta-data/")}
    with ImageServer(routes) as srv:
        with pytest.raises(NetworkError, match=r"redirect refused: 127.0.0.1 \(loopback address\) redirected to "
                                               r"169.254.169.254 \(link-local address\)"):
            _fetch_guarded(Fetcher(DEADLINE), srv.url("/meta"))


def test_ctrl_c_ends_a_collection_promptly_and_keeps_what_was_saved(tmp_path: Path) -> None:
    good = {f"/good{i}.jpg": Route(encode(photo(10 + i, (96, 80)), "JPEG")) for i in range(3)}
    trickles = {f"/t{i}.jpg": Route(encode(photo(20 + i), "JPEG"), behaviour="trickle", interval_s=0.5)
                for i in range(6)}
    ws = Workspace(data_dir=tmp_path / "data", models_dir=tmp_path / "models")
    with ImageServer({**good, **trickles}) as srv:
        urls = tmp_path / "urls.txt"
        urls.write_text("".join(srv.url(p) + "\n" for p in [*good, *trickles]))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, "-m", "smarthub", "bootstrap", "koi", "--urls-file", str(urls),
                                 "--count", "9", "--data", str(ws.data_dir), "--min-side", "16", "--workers", "9"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        folder = ws.data_dir / "koi"
        for _ in range(GUARD_S * 20):
            if folder.is_dir() and len(list(folder.glob("*.jpg"))) == 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None  # still collecting (the trickles hold it) when Ctrl-C comes
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=GUARD_S)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    kept = sorted(p.relative_to(ws.data_dir).as_posix() for p in folder.glob("*.jpg"))
    assert len(kept) == 3
    assert sorted(r.path for r in read_records(ws)) == kept  # what was saved keeps its provenance
