"""Guards for outbound fetches: a wall-clock deadline no server can extend, and no redirect into a private network.

`Watchdog` runs one daemon thread that shuts the sockets of fetches past their deadline (or all of them on
abort); `watched_adapter_class()` is a requests adapter whose connections report their sockets to the
fetch running in their thread. `redirect_refusal` decides whether a redirect may be followed.
"""
from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit


current_watch = threading.local()  # .watch: the Watch of the fetch running in this thread


class Watch:
    """One fetch's deadline and the sockets it used; `expire` shuts them."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.reason = ""  # '' while running; 'deadline' or 'stopped' once ended from outside
        self._socks: list[Any] = []
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        """Remember `conn`'s socket (http.client drops its reference on `Connection: close`; the body still reads it)."""
        sock = getattr(conn, "sock", None)
        if sock is None:
            return
        with self._lock:
            self._socks.append(sock)
        if self.reason:
            _shut(sock)

    def expire(self, reason: str) -> None:
        """Mark the fetch ended (first reason wins) and shut its sockets."""
        with self._lock:
            self.reason = self.reason or reason
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)

    def message(self, total_s: float) -> str:
        if self.reason == "stopped":
            return "stopped (the collection was stopped)"
        return f"timed out (download took more than {total_s:g} s)"


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread


class Watchdog:
    """A daemon thread that expires fetches past their deadline, ten times a second, while any run."""

    TICK_S = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: set[Watch] = set()
        self._thread: threading.Thread | None = None

    def start(self, deadline: float) -> Watch:
        watch = Watch(deadline)
        with self._lock:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="smarthub-deadline", daemon=True)
                self._thread.start()
        return watch

    def finish(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def abort_all(self) -> None:
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.expire("stopped")

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            now = time.monotonic()
            with self._lock:
                if not self._watches:
                    self._thread = None
                    return
                due = [w for w in self._watches if w.reason or now >= w.deadline]
            for watch in due:  # again each tick: a socket still connecting at the deadline is shut once it exists
                watch.expire("deadline")


@functools.lru_cache(maxsize=1)
def watched_adapter_class() -> type:
    """A requests HTTPAdapter whose connections register with the running fetch's `Watch`."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def attach(conn: Any) -> None:
        watch = getattr(current_watch, "watch", None)
        if watch is not None:
            watch.attach(conn)

    class WatchedHTTPConnection(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            attach(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            attach(self)  # a kept-alive connection is not connected again
            super().request(*args, **kwargs)

    class WatchedHTTPSConnection(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            attach(self)

        def request(self, *args: Any, **kwargs: Any) -> None:
            attach(self)
            super().request(*args, **kwargs)

    class WatchedHTTPPool(HTTPConnectionPool):
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPSConnection

    class WatchedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": WatchedHTTPPool, "https": WatchedHTTPSPool}

    return WatchedAdapter


# ---------------------------------------------------------------- redirects into private networks


def address_kind(host: str) -> str:
    """'public', 'private', 'loopback', 'link-local' or 'reserved' for a host name or address (resolved).

    A name with several addresses takes the most private one; an unresolvable name is 'public'
    (the request itself will fail).
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return "public"
    kinds = {_ip_kind(info[4][0]) for info in infos}
    for kind in ("link-local", "loopback", "private", "reserved"):
        if kind in kinds:
            return kind
    return "public"


def _ip_kind(text: str) -> str:
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_private:
        return "private"
    if not ip.is_global or ip.is_multicast or ip.is_unspecified:
        return "reserved"
    return "public"


def redirect_refusal(origin_url: str, target_url: str) -> str:
    """Why a redirect from the listed `origin_url` to `target_url` is refused, or '' when it may be followed.

    A redirect may stay within the kind of address it started from or go public; it may not go from a
    public address to a private, loopback, link-local or reserved one, nor between different private kinds
    (the cloud metadata address 169.254.169.254 is link-local).
    """
    target_host = urlsplit(target_url).hostname or ""
    target = address_kind(target_host)
    if target == "public":
        return ""
    origin = address_kind(urlsplit(origin_url).hostname or "")
    if origin == target:
        return ""
    return (f"redirect refused: {urlsplit(origin_url).hostname} ({origin} address) redirected to "
            f"{target_host} ({target} address)")
