"""Helpers shared by the tabs: error → message, thumbnails, small formatting."""
from __future__ import annotations

import hashlib
import html
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from smarthub.atomicio import atomic_write_with
from smarthub.errors import ImageError, SmartHubError
from smarthub.imaging import thumbnail as thumbnail_image
from smarthub.workspace import Workspace

THUMB_SIDE_PX = 160
PREVIEW_SIDE_PX = 384


# how the app names each job a core message may send the user to (the CLI's names: errors.CLI_JOBS)
APP_JOBS = {"train": "the Train tab", "bootstrap": "the Bootstrap tab", "review": "the Clean tab"}


def app_message(e: SmartHubError, labels: Mapping[str, str] | None = None) -> str:
    """A core error as the page says it: jobs as tabs, a refused option as its control's label (`labels`:
    field → label, from the tab's options record: optionspec.labels)."""
    names = labels or {}
    return e.phrased(jobs=APP_JOBS, option=lambda field: f"'{names.get(field, field.replace('_', ' '))}'")


@contextmanager
def user_errors(labels: Mapping[str, str] | None = None) -> Iterator[None]:
    """Turn a SmartHubError raised inside the block into a gr.Error (the app keeps running).

    `labels` maps the fields of the tab's options records to their controls' labels (optionspec.labels), so a
    refused option is named as the control the user changes.
    """
    try:
        yield
    except SmartHubError as e:
        raise gr.Error(html.escape(app_message(e, labels), quote=False), title=type(e).__name__) from e


def problem(e: gr.Error) -> str:
    """A status-area line for an error a handler raised (its text is escaped already)."""
    return f"**Problem:** {e.message}"


class StopSwitch:
    """The Stop button of one long job of this app (training, collecting): Stop sets it, the job polls it.

    The app serves one person on 127.0.0.1, so one switch per tab stops the job that tab runs.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def reset(self) -> None:
        """Called when a job starts: an earlier Stop does not stop the new job."""
        self._event.clear()

    def stop(self) -> None:
        self._event.set()

    def __call__(self) -> bool:
        return self._event.is_set()


def ok(text: str) -> str:
    """A success line for a status Markdown (text is escaped)."""
    return f"**Done:** {html.escape(text)}"


def warn(text: str) -> str:
    """A warning line for a status Markdown (text is escaped)."""
    return f"**Problem:** {html.escape(text)}"


def rel(ws: Workspace, path: Path) -> str:
    """`path` relative to the data folder when inside it (POSIX), else as given."""
    try:
        return Path(path).relative_to(ws.data_dir).as_posix()
    except ValueError:
        return Path(path).as_posix()


def thumbs_dir(ws: Workspace) -> Path:
    return ws.cache_dir / "thumbs"


def thumbnail(ws: Workspace, path: Path, *, side_px: int = THUMB_SIDE_PX) -> Path:
    """A cached small JPEG of `path` (keyed by path, size and mtime); a placeholder when unreadable.

    Raises:
        FileNotFoundError: never; a missing or corrupt image gives the placeholder.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return placeholder(ws, "missing")
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{side_px}".encode()).hexdigest()[:32]
    out = thumbs_dir(ws) / key[:2] / f"{key}.jpg"
    if out.exists():
        return out
    try:
        image = thumbnail_image(path, max_side_px=side_px)
    except ImageError:
        return placeholder(ws, "unreadable")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(out, lambda f: image.save(f, format="JPEG", quality=85), durable=False)  # a cache
    return out


def placeholder(ws: Workspace, reason: str) -> Path:
    """A grey tile with a word on it, cached under the thumbnails folder."""
    from PIL import Image, ImageDraw

    out = thumbs_dir(ws) / f"placeholder_{reason}.png"
    if not out.exists():
        im = Image.new("RGB", (THUMB_SIDE_PX, THUMB_SIDE_PX), (200, 200, 200))
        ImageDraw.Draw(im).text((12, THUMB_SIDE_PX // 2 - 6), reason, fill=(120, 0, 0))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_with(out, lambda f: im.save(f, format="PNG"))
    return out


def parse_labels(text: str) -> list[str]:
    """Labels from a text box: one per line or comma-separated; blanks dropped, order kept, no repeats."""
    seen: list[str] = []
    for line in (text or "").replace(",", "\n").splitlines():
        label = line.strip()
        if label and label not in seen:
            seen.append(label)
    return seen
