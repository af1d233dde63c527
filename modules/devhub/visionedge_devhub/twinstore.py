"""The module twin the emulator plays: the desired and reported documents with their `$version`s, and how often a
module read it; guarded by the emulator's condition, which every change notifies."""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from visionedge.acks import merge_patch

Document = dict[str, Any]


@dataclass
class _Part:
    """One of the twin's documents with its `$version`."""

    body: Document = field(default_factory=dict)
    version: int = 1

    def snapshot(self) -> Document:
        """A copy, with its `$version`."""
        return {**copy.deepcopy(self.body), "$version": self.version}

    def patch(self, patch: Mapping[str, Any]) -> int:
        """Merge a patch (null deletes); returns the new `$version`."""
        merge_patch(self.body, patch)
        self.version += 1
        return self.version


class TwinStore:
    """Desired and reported documents; a change bumps its `$version` and wakes whoever waits on the condition."""

    def __init__(self, cond: threading.Condition, desired: Mapping[str, Any] | None = None) -> None:
        """`desired` seeds the desired document at `$version` 1."""
        self._cond = cond
        self._desired = _Part()
        merge_patch(self._desired.body, desired or {})
        self._reported = _Part()
        self._gets = 0

    def desired(self) -> Document:
        """A copy of the desired document, with its `$version`."""
        with self._cond:
            return self._desired.snapshot()

    def reported(self) -> Document:
        """A copy of the reported document, with its `$version`."""
        with self._cond:
            return self._reported.snapshot()

    @property
    def gets(self) -> int:
        """How many twin GET requests were answered."""
        with self._cond:
            return self._gets

    def patch_desired(self, patch: Mapping[str, Any]) -> int:
        """Merge a desired patch; returns the new `$version`."""
        return self._patch(self._desired, patch)

    def patch_reported(self, patch: Mapping[str, Any]) -> int:
        """Merge a reported patch; returns the new `$version`."""
        return self._patch(self._reported, patch)

    def read_for_module(self) -> Document:
        """The whole twin as a module's GET receives it, counted as one GET."""
        with self._cond:
            self._gets += 1
            self._cond.notify_all()
            return {"desired": self._desired.snapshot(), "reported": self._reported.snapshot()}

    def _patch(self, part: _Part, patch: Mapping[str, Any]) -> int:
        """Merge under the condition and wake the waiters."""
        with self._cond:
            version = part.patch(patch)
            self._cond.notify_all()
            return version
