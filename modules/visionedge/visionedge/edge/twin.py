"""Desired properties to validated settings, with a Plug and Play acknowledgement per top-level key."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from visionedge.acks import ack, merge_patch
from visionedge.config import DesiredProperties, describe_validation_error
from visionedge.durable import move_aside, write_json_atomic

log = logging.getLogger(__name__)



def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    """Validates one section alone, with the constraints the field declares (e.g. unique source ids)."""
    if info.metadata:
        return TypeAdapter(Annotated[(info.annotation, *info.metadata)])
    return TypeAdapter(info.annotation)


SECTIONS: dict[str, TypeAdapter[Any]] = {name: _adapter(info) for name, info in DesiredProperties.model_fields.items()}
ABSENT: dict[str, Any] = {name: [] if get_origin(info.annotation) is list else {}
                          for name, info in DesiredProperties.model_fields.items()}
"""What a section that is not in the desired document validates from: its defaults."""


@dataclass
class Outcome:
    """What one desired patch did: settings now in effect, sections that changed, and the reported patch."""

    settings: DesiredProperties
    changed: set[str] = field(default_factory=set)
    reported: dict[str, Any] = field(default_factory=dict)


class DesiredState:
    """Keeps the raw desired document and the last accepted value of every section; applying is idempotent."""

    def __init__(self, defaults: DesiredProperties, cache: Path | None = None,
                 deferred: frozenset[str] = frozenset()) -> None:
        self.deferred = deferred
        """Sections validated and acknowledged by whoever applies them (the model manager: 202, then 200/400/500)."""
        self.settings = defaults
        self.document: dict[str, Any] = {}
        self.version = 0
        self.cache = cache
        self.acked: dict[str, tuple[int, Any]] = {}
        self.moved_aside = 0
        """Saved settings files found corrupt and moved aside at start."""

    def restore(self) -> DesiredProperties:
        """Start offline on the last ACCEPTED settings; a file of the wrong shape is moved aside with one line."""
        if self.cache is None or not self.cache.exists():
            return self.settings
        try:
            saved = json.loads(self.cache.read_text(encoding="utf-8"))
            if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict):
                raise ValueError("not an object with 'version' and 'settings'")
            version = int(saved.get("version", 0))
        except (OSError, ValueError, TypeError) as err:
            self._move_aside(f"{type(err).__name__}: {err}" if not isinstance(err, OSError) else str(err.strerror))
            return self.settings
        values = self.settings.model_dump(mode="json")
        for key, value in saved["settings"].items():
            if key not in SECTIONS:
                continue
            try:
                values[key] = SECTIONS[key].dump_python(SECTIONS[key].validate_python(value), mode="json")
            except ValidationError as err:
                log.warning("saved setting %r is no longer valid (%s); starting on its default",
                            key, describe_validation_error(err, key))
        try:
            self.settings = DesiredProperties.model_validate(values)
        except ValidationError as err:  # sections valid alone but not together (a newer module's rules)
            self._move_aside(describe_validation_error(err))
            return self.settings
        self.version = version
        log.info("restored the settings accepted at desired $version %s from %s", version, self.cache)
        return self.settings

    def _move_aside(self, reason: str) -> None:
        """Keep a corrupt file for inspection, out of the way of every later start."""
        assert self.cache is not None
        self.moved_aside += 1
        try:
            aside = move_aside(self.cache)
            log.error("saved settings %s are unusable (%s): moved to %s; starting on the defaults until the hub "
                      "sends the desired properties", self.cache, reason, aside.name)
        except OSError as err:
            log.error("saved settings %s are unusable (%s) and cannot be moved aside: %s", self.cache, reason,
                      err.strerror)

    def apply(self, patch: dict[str, Any], version: int, full: bool = False) -> Outcome:
        """Merge a patch (or replace with the whole document), validate each touched section, acknowledge it."""
        body = {k: v for k, v in patch.items() if not k.startswith("$")}
        if full:
            self.document = copy.deepcopy(body)
            touched = set(body) | set(SECTIONS)
        else:
            merge_patch(self.document, body)
            touched = set(body)
        self.version = version
        outcome = Outcome(self.settings)
        values = self.settings.model_dump()
        for key in sorted(touched):
            if key not in SECTIONS:
                reason = f"unknown setting {key!r}; known settings: {', '.join(SECTIONS)}"
                outcome.reported[key] = ack(None, 400, version, reason)
                log.warning("desired $version %s: %s", version, reason)
                continue
            if key in self.deferred:
                self._apply_deferred(key, values, outcome)
                continue
            raw = self.document.get(key, ABSENT[key])
            try:
                section = SECTIONS[key].validate_python(raw)
            except ValidationError as err:
                reason = f"rejected: {describe_validation_error(err, key)}; keeping the previous value"
                outcome.reported[key] = ack(values[key], 400, version, reason)
                log.warning("desired $version %s: %s", version, reason)
                continue
            new_value = SECTIONS[key].dump_python(section, mode="json")
            if new_value != values[key]:
                outcome.changed.add(key)
                values[key] = new_value
            if self.acked.get(key) != (version, new_value):
                outcome.reported[key] = ack(new_value, 200, version, "applied")
        self.settings = DesiredProperties.model_validate(values)
        outcome.settings = self.settings
        for key, reported in outcome.reported.items():
            self.acked[key] = (version, reported["value"])
        return outcome

    def _apply_deferred(self, key: str, values: dict[str, Any], outcome: Outcome) -> None:
        """Deferred sections are validated and acknowledged by their owner; keep only the value when it parses."""
        if key not in self.document:
            return
        outcome.changed.add(key)
        try:
            adapter = SECTIONS[key]
            values[key] = adapter.dump_python(adapter.validate_python(self.document[key]), mode="json")
        except ValidationError:
            return

    def revert(self, key: str, previous: DesiredProperties) -> None:
        """Keep the previous value of one section in effect (its new value failed when applied)."""
        values = self.settings.model_dump()
        values[key] = previous.model_dump()[key]
        self.settings = DesiredProperties.model_validate(values)
        self.acked.pop(key, None)

    def commit(self) -> None:
        """Save the settings in effect once every section was applied for real: a restart starts on these, never
        on a value that was refused (the raw desired document is not saved; the hub sends it at every connect)."""
        if self.cache is None:
            return
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.cache, {"version": self.version, "settings": self.settings.model_dump(mode="json")})
        except OSError as err:
            log.warning("cannot save desired properties to %s: %s", self.cache, err.strerror)
