"""The Gradio app (the only package that imports gradio).

`build_app(ws)` builds the Blocks; `launch(ws, ...)` serves it on 127.0.0.1 by default. Importing this
package does not import gradio: `build_app` and `launch` do, after disabling gradio's analytics.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smarthub.dataset import SPLIT_NAMES
from smarthub.errors import SmartHubError
from smarthub.libwarnings import quiet_library_warnings
from smarthub.workspace import Workspace

if TYPE_CHECKING:
    import gradio as gr

__all__ = ["build_app", "launch", "is_loopback", "parse_auth", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _prepare_env(ws: Workspace | None = None) -> None:
    """Before gradio is imported: no analytics, and its upload/cache folder inside the workspace."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if ws is not None and "gradio" not in sys.modules:
        os.environ.setdefault("GRADIO_TEMP_DIR", str(ws.cache_dir / "gradio"))
    if ws is not None:
        ws.contain_library_caches()
    quiet_library_warnings()


def build_app(ws: Workspace, **kwargs: Any) -> gr.Blocks:
    """Build (not launch) the app for workspace `ws`; see `smarthub.ui.app.build_app`."""
    _prepare_env(ws)
    from smarthub.ui.app import build_app as _build

    return _build(ws, **kwargs)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'user:pass' → ('user', 'pass'); None stays None. Raises SmartHubError on another shape."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise SmartHubError("--auth must look like user:password (both non-empty)")
    return user, password


def check_host(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse a non-loopback host without credentials: anyone on the network could move or delete images."""
    if not is_loopback(host) and auth is None:
        raise SmartHubError(f"refusing to serve on {host} without --auth user:password "
                            f"(anyone who can reach it could relabel and delete your images); "
                            f"add --auth or use --host {DEFAULT_HOST}")


def port_free(host: str, port: int) -> bool:
    """True when (host, port) can be bound right now."""
    import socket  # here, not at the top: `smarthub --help` reads DEFAULT_HOST and DEFAULT_PORT from this package

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def served_paths(ws: Workspace) -> list[str]:
    """What a page may load, by real path: the thumbnail cache, annotate outputs, the confusion matrix and
    the class folders (each only when its real path lies inside the workspace).

    Gradio lower-cases paths before resolving them against its block list, so a block list fails on a
    mixed-case real path reached through a symlink; an allow-list of resolved real paths does not (its
    allow check resolves both sides and keeps the case). Nothing else of the workspace is served:
    not `.smarthub/` (journal, ledger, keep list, trash), not `models/` (export.pkl).
    """
    from smarthub.ui._common import thumbs_dir
    from smarthub.annotate.inputs import runs_dir

    data_root = ws.data_dir.resolve()
    roots = [thumbs_dir(ws).resolve(), runs_dir(ws).resolve()]
    if ws.confusion_path.is_file() and ws.contains(ws.confusion_path):
        roots.append(ws.confusion_path.resolve())
    if ws.data_dir.is_dir():
        for folder in sorted(_class_folders(ws.data_dir)):
            real = folder.resolve()
            if data_root in real.parents and ws.meta_dir.resolve() not in (real, *real.parents):
                roots.append(real)
    return [str(r) for r in roots]


def _class_folders(data_dir: Path) -> list[Path]:
    """Class folders (and those under train/ valid/ splits), bookkeeping folders skipped."""
    out = []
    for p in data_dir.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        out.append(p)
        if p.name in SPLIT_NAMES:
            out.extend(q for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
    return out


def launch(ws: Workspace, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, auth: tuple[str, str] | None = None,
           prevent_thread_lock: bool = False, quiet: bool = False, inbrowser: bool = False,
           selected_tab: str | None = None) -> gr.Blocks:
    """Build and serve the app; blocks until closed unless `prevent_thread_lock`.

    Only what a page needs is served (`served_paths`: thumbnails, annotate outputs, the confusion matrix,
    class folders, by real path); the journal, ledger, keep list, trash and the exported pickle are also
    on gradio's block list.

    Raises:
        SmartHubError: non-loopback host without auth, or the port is taken.
    """
    check_host(host, auth)
    if not 1 <= port <= 65535:
        raise SmartHubError(f"port {port} is out of range; pick one in 1..65535 with --port")
    if not port_free(host, port):
        raise SmartHubError(f"port {port} on {host} is already in use; pick another with --port")
    app = build_app(ws, selected_tab=selected_tab)
    from smarthub.ui.app import CSS, HEAD

    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        allowed_paths=served_paths(ws),
        blocked_paths=[str(ws.trash_dir), str(ws.journal_path), str(ws.ledger_path), str(ws.keep_path),
                       str(ws.export_path)],
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        inbrowser=inbrowser,
        show_error=True,
        share=False,
        footer_links=[],
        css=CSS,
        head=HEAD,
        ssr_mode=False,
        mcp_server=False,
    )
    return app
