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


def one_line(text: str, limit: int = 300) -> str:
    """Text as one line of at most `limit` characters, whitespace runs collapsed; when cut, both ends are kept: the
    start says what failed, the end holds the system's reason."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = limit // 2
    return f"{text[:head]}…{text[len(text) - (limit - head - 1):]}"


def describe_error(err: BaseException, limit: int = 300) -> str:
    """An error as a one-line reason: ours by its message, anything else (a bug, a library's) with its type too."""
    return one_line(str(err) if isinstance(err, VisionEdgeError) else f"{type(err).__name__}: {err}", limit)


def first_line(err: BaseException, limit: int = 200) -> str:
    """An error's first line, at most `limit` characters: runtimes raise pages of internals, users need one line."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:limit]
