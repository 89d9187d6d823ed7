"""The app serves only what a page needs, whatever the workspace path's case, symlinks or encoding.

The workspace's real path is mixed-case and reached through a symlink (the case where gradio's
lower-casing block list let bookkeeping files through); every probe asks the real app over HTTP.
"""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from smarthub.workspace import Workspace
from tests.helpers import make_image, served_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from smarthub.ui._common import thumbnail

    root = tmp_path_factory.mktemp("serving")
    real = root / "Real Place" / "MyWork"
    real.mkdir(parents=True)
    link = root / "ws"
    link.symlink_to(real, target_is_directory=True)  # the workspace is named through the symlink
    ws = Workspace(link / "data", link / "models")
    image = make_image(ws.data_dir / "Cat" / "Kitty.png", pattern=1)
    make_image(ws.data_dir / "dog" / "rex.png", pattern=2)
    ws.meta_dir.mkdir(parents=True, exist_ok=True)
    for path in (ws.journal_path, ws.ledger_path, ws.keep_path):
        path.write_text('{"secret": true}\n')
    make_image(ws.trash_dir / "op1" / "Cat" / "gone.png", pattern=3)
    ws.models_dir.mkdir(parents=True)
    ws.export_path.write_bytes(b"pickle that must not leave the machine")
    make_image(ws.confusion_path, pattern=4)
    (ws.data_dir / "outside").symlink_to(root, target_is_directory=True)  # a class folder leading out
    secret = root / "secret.txt"
    secret.write_text("outside the workspace")
    thumb = thumbnail(ws, image)
    with served_app(ws) as url:
        yield {"ws": ws, "real": real, "link": link, "thumb": thumb, "image": image, "secret": secret,
               "base": f"{url}gradio_api/file="}


def _get(base: str, raw: str) -> int:
    try:
        with urllib.request.urlopen(base + raw, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def _variants(path: Path, served: dict) -> list[str]:
    """The same file named through the symlink, by its real path, lower- and upper-cased, and URL-encoded."""
    real = Path(str(path).replace(str(served["link"]), str(served["real"])))
    names = [str(path), str(real), str(real).lower(), str(real).upper(), str(path).lower()]
    out = [urllib.parse.quote(p, safe="/") for p in names]  # as a browser sends them
    out += [urllib.parse.quote(p, safe="") for p in names]  # every separator and dot-dot encoded too
    out.append(urllib.parse.quote(urllib.parse.quote(str(real), safe=""), safe=""))  # double-encoded
    return out


FORBIDDEN = {
    "journal": lambda ws: ws.journal_path,
    "ledger": lambda ws: ws.ledger_path,
    "keep list": lambda ws: ws.keep_path,
    "trashed image": lambda ws: ws.trash_dir / "op1" / "Cat" / "gone.png",
    "export.pkl": lambda ws: ws.export_path,
    "symlinked class folder leading out": lambda ws: ws.data_dir / "outside" / "secret.txt",
    "dotdot out of a class folder": lambda ws: ws.data_dir / "Cat" / ".." / ".." / ".." / "secret.txt",
    "dotdot into bookkeeping": lambda ws: ws.data_dir / "Cat" / ".." / ".smarthub" / "journal.jsonl",
}


@pytest.mark.parametrize("what", list(FORBIDDEN), ids=list(FORBIDDEN))
def test_bookkeeping_models_and_outside_files_are_never_served(served: dict, what: str) -> None:
    path = FORBIDDEN[what](served["ws"])
    codes = {raw: _get(served["base"], raw) for raw in _variants(path, served)}
    assert all(code in (403, 404) for code in codes.values()), {k: v for k, v in codes.items() if v == 200}


def test_files_outside_the_workspace_are_never_served(served: dict) -> None:
    for raw in (str(served["secret"]), "/etc/passwd", "../../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                "/proc/self/environ"):
        assert _get(served["base"], raw) in (403, 404), raw


@pytest.mark.parametrize("what", ["thumbnail", "dataset image", "confusion matrix"])
def test_what_a_page_needs_is_served(served: dict, what: str) -> None:
    path = {"thumbnail": served["thumb"], "dataset image": served["image"],
            "confusion matrix": served["ws"].confusion_path}[what]
    assert _get(served["base"], urllib.parse.quote(str(path))) == 200
    real = Path(str(path).replace(str(served["link"]), str(served["real"])))
    assert _get(served["base"], urllib.parse.quote(str(real))) == 200
