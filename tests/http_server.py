"""A real threaded HTTP server on 127.0.0.1 serving good and bad image downloads, and the bodies it serves."""
from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image


@dataclass
class Route:
    """What the server does for one path."""

    body: bytes = b""
    content_type: str = "image/jpeg"
    status: int = 200
    delay_s: float = 0.0  # sleep before answering (slower than a client's timeout)
    behaviour: str = "normal"  # normal | reset | redirect | no_length | trickle | trickle_no_length | slow_headers
    #                             | endless_redirect
    interval_s: float = 0.0  # trickle / slow_headers: seconds between bytes or header lines
    location: str = ""  # redirect target (path or URL)
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as nginx and CDNs do on keep-alive connections
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's name
        return  # keep test output clean

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        srv = self.server
        path = self.path.split("?", 1)[0]
        with srv.lock:
            srv.hits[path] += 1
        if srv.latency_s:
            time.sleep(srv.latency_s)
        route = srv.routes.get(path)
        if route is None:
            route = Route(body=b"not found", content_type="text/plain", status=404)
        if route.delay_s:
            time.sleep(route.delay_s)
        if route.behaviour == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if route.behaviour in ("trickle", "trickle_no_length", "slow_headers", "endless_redirect"):
            self._hostile(route)
            return
        if route.behaviour == "redirect":
            self.send_response(route.status if route.status in (301, 302, 303, 307, 308) else 302)
            self.send_header("Location", route.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        for k, v in route.headers.items():
            self.send_header(k, v)
        if route.behaviour == "no_length":
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
        try:
            self.wfile.write(route.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (byte cap, timeout): fine

    def _hostile(self, route: Route) -> None:
        """A server that never finishes: a byte at a time, headers without end, or redirects without end."""
        self.close_connection = True
        try:
            if route.behaviour == "endless_redirect":
                self.send_response(302)
                self.send_header("Location", self.path.split("?", 1)[0] + "/x")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            if route.behaviour == "slow_headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for i in range(100_000):
                    time.sleep(route.interval_s)
                    self.wfile.write(f"X-Slow-{i}: a\r\n".encode())
                return
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            if route.behaviour == "trickle":
                self.send_header("Content-Length", str(len(route.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(len(route.body)):
                self.wfile.write(route.body[i:i + 1])
                self.wfile.flush()
                time.sleep(route.interval_s)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up: what the test wants

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the socket was reset on purpose


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        return  # resets and client aborts are part of the tests


class ImageServer:
    """`with ImageServer(routes) as srv: srv.url("/a.jpg")` — serves `routes` until the block ends."""

    def __init__(self, routes: dict[str, Route] | None = None, *, latency_s: float = 0.0,
                 host: str = "127.0.0.1") -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.routes = dict(routes or {})
        self._server.latency_s = latency_s
        self._server.hits = Counter()
        self._server.lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self.host = host

    @property
    def routes(self) -> dict[str, Route]:
        return self._server.routes

    @property
    def hits(self) -> Counter:
        return self._server.hits

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- bodies


def photo_array(seed: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A smooth, photo-like RGB array (gradients + blobs) distinct per seed, stable under resizing."""
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        arr[..., c] = rng.uniform(40, 200) + rng.uniform(-60, 60) * (xx / w) + rng.uniform(-60, 60) * (yy / h)
    for _ in range(5):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(min(w, h) / 8, min(w, h) / 3)
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
        arr[mask] = rng.uniform(0, 255, 3)
    return np.clip(arr, 0, 255).astype(np.uint8)


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    return Image.fromarray(photo_array(seed, size), "RGB")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims `width`x`height` (no pixels allocated anywhere)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def exif_rotated_jpeg(seed: int) -> tuple[bytes, Image.Image]:
    """A JPEG stored landscape (160x120) with EXIF orientation 6 (display rotated 90° clockwise).

    Returns the bytes and the upright image a viewer shows (120x160).
    """
    stored = photo(seed, (160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())
    upright = stored.transpose(Image.Transpose.ROTATE_270)
    return data, upright


def animated_gif(seed: int) -> bytes:
    frames = [photo(seed + i, (120, 100)).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def palette_png_with_transparency(seed: int) -> bytes:
    """A palette PNG whose left half is fully transparent (must come out white)."""
    img = photo(seed, (120, 100)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    arr = np.asarray(img).copy()
    arr[:, :60] = 63
    out = Image.fromarray(arr, "P")
    out.putpalette(img.getpalette())
    return encode(out, "PNG", transparency=63)


def png16(seed: int) -> bytes:
    """A 16-bit greyscale PNG: a horizontal ramp over the whole 0..65535 range."""
    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (96, 1))
    return encode(Image.fromarray(ramp), "PNG")


def cmyk_jpeg(seed: int) -> bytes:
    return encode(photo(seed, (120, 100)).convert("CMYK"), "JPEG", quality=90)
