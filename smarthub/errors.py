"""The smarthub error family: every expected failure is a SmartHubError with a readable message."""
from __future__ import annotations

from pathlib import Path


class SmartHubError(Exception):
    """Base class: the message names the file or field and what to do next."""


class LabelError(SmartHubError):
    """A class label (folder name) breaks the label rules."""


class DatasetError(SmartHubError):
    """The data folder is missing, empty or unusable for the job asked."""


class ImageError(SmartHubError):
    """An image cannot be read, decoded or is outside the accepted limits.

    `reason` says why in a few words ("truncated (…)", "decompression bomb (…)"); `path` names the file (or
    URL, or upload) when known. The message is "<path>: <reason>".
    """

    def __init__(self, reason: str, *, path: Path | str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None and str(path) else reason)
        self.reason = reason
        self.path = path


class FileOpError(SmartHubError):
    """A move, trash or undo of a user's file was refused or could not be completed."""


class MissingFileError(FileOpError):
    """The image to move is not there: it never was, or it was moved or deleted since it was listed."""

    def __init__(self, message: str, path: str = "", *, explained: bool = False) -> None:
        super().__init__(message)
        self.path = path  # relative to the data folder
        self.explained = explained  # the message says what happened to it (from the journal)


class ModelError(SmartHubError):
    """A model or weights file is missing, corrupt, or does not fit the data."""


class NetworkError(SmartHubError):
    """A remote service (image search, download host) could not be reached."""


class AnnotationError(SmartHubError):
    """A Labelme file is malformed or cannot be written."""
