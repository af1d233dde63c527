"""Exception hierarchy whose messages are the one-line reasons users see (CLI, logs, reported properties)."""

from __future__ import annotations


class VisionEdgeError(Exception):
    """Base for every failure the module explains to its user in one line."""


class ConfigError(VisionEdgeError):
    """A setting is invalid; the previous good value stays in use."""


class DataDirError(VisionEdgeError):
    """The data dir (model cache, outbox, saved settings) cannot be written."""


class ModelError(VisionEdgeError):
    """A model file, manifest or labels file cannot be used."""


class FetchError(VisionEdgeError):
    """A model or media file could not be obtained or did not verify."""


class SourceError(VisionEdgeError):
    """A frame source cannot be opened or stopped delivering."""


class AcceleratorError(VisionEdgeError):
    """An accelerator was required but only the CPU is available."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An error's first line, at most `limit` characters: runtimes raise pages of internals, users need one line."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
