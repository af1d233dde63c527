"""Crash-safe file operations: after kill -9 a reader sees the old state or the new one, never a mix."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Persist a directory's entries: a rename or create is durable only once its directory is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush every file under path, then the directories, so a later rename publishes complete data."""
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        with file.open("rb") as f:
            os.fsync(f.fileno())
    for folder in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(folder)
    fsync_dir(path)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write tmp, fsync, os.replace, fsync the directory: the file is either the old one or the new one.

    Files are 0600: saved desired documents and model blocks can hold URLs with tokens.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a tmp left by a crash keeps its old mode otherwise
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """JSON through write_bytes_atomic, indented for people who inspect the volume."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def move_aside(path: Path, companions: Sequence[str] = ()) -> Path:
    """Rename a corrupt file to `<name>.corrupt-<UTC time>` (with companions such as SQLite's `-wal`), kept for a
    post-mortem and out of the way of every later start; returns the new path."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    for suffix in companions:
        extra = Path(f"{path}{suffix}")
        if extra.exists():
            os.replace(extra, Path(f"{aside}{suffix}"))
    return aside


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from path; None when absent, unreadable or not an object (the caller falls back)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_tree(path: Path, trash: Path) -> None:
    """Rename into trash first, so a crash mid-delete leaves only trash that start-up cleaning removes."""
    if not path.exists():
        return
    trash.mkdir(parents=True, exist_ok=True)
    doomed = trash / f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)
