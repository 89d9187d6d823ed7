"""The smarthub error family: every expected failure is a SmartHubError with a readable message.

A message may hold places that each shell names its own way (no shell rewrites another's words): `{train}`,
`{bootstrap}` or `{review}` (a job: `smarthub train` on the command line, the Train tab in the app) and, in an
OptionError, `{<field>}` (an option: its `--flag` on the command line, its control's label in the app).
`str(e)` is the command line's phrasing; the app calls `e.phrased(...)`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

# how the command line names each job a message may send the user to (the app names them in ui/_common.py)
CLI_JOBS = {"train": "`smarthub train`", "bootstrap": "`smarthub bootstrap`", "review": "`smarthub review`"}
# the key of an option's metadata in its record's dataclass field (smarthub/optionspec.py writes it)
OPTION_META = "smarthub.option"


class SmartHubError(Exception):
    """Base class: the message names the file or field and what to do next (places: see the module doc)."""

    def __str__(self) -> str:
        return self.phrased(jobs=CLI_JOBS)

    def phrased(self, *, jobs: Mapping[str, str], option: Callable[[str], str] | None = None) -> str:
        """The message with its places named: jobs by `jobs`, an OptionError's fields by `option(field)`."""
        text = super().__str__()
        for job, name in jobs.items():
            text = text.replace("{" + job + "}", name)
        return text


def option_flag(owner: type | None, field: str) -> str:
    """The command line's name of option `field` of record `owner`: its declared flag, else `--field-name`
    (a field of no record is named as written)."""
    if field.startswith("-") or owner is None:
        return field
    if dataclasses.is_dataclass(owner):
        for f in dataclasses.fields(owner):
            spec = f.metadata.get(OPTION_META)
            if f.name == field and spec is not None and spec.flag:
                return spec.flag
    return "--" + field.replace("_", "-")


class OptionError(SmartHubError):
    """An option's value is refused. `field` names it (a field of the record `owner`, e.g. ReviewOptions.folds);
    the message writes it as `{field}`, which the CLI prints as `--folds` and the app as the control's label."""

    def __init__(self, message: str, *, field: str, owner: type | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.owner = owner

    def phrased(self, *, jobs: Mapping[str, str], option: Callable[[str], str] | None = None) -> str:
        text = super().phrased(jobs=jobs)
        name = option or (lambda f: option_flag(self.owner, f))
        fields = {f.name for f in dataclasses.fields(self.owner)} if dataclasses.is_dataclass(self.owner) else set()
        for f in sorted(fields | {self.field}, key=len, reverse=True):
            text = text.replace("{" + f + "}", name(f))
        return text


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
