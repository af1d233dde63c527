"""The one holder of the serving model: the pipeline reads it at each dispatch, the model manager changes it (updates,
rollbacks, runtime reloads) under one lock, so a reload and an update never interleave."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from visionedge.config import InferenceSettings, RuntimeSettings
from visionedge.errors import VisionEdgeError
from visionedge.models.model import Model
from visionedge.modelstore.store import ModelStore

log = logging.getLogger(__name__)

SwapFn = Callable[[Model], None]


@dataclass(frozen=True)
class InUse:
    """A model with its key, the twin block that produced it and the runtime it was loaded with (a model kept for a
    rollback is loaded again when the runtime settings changed since)."""

    model: Model
    key: str
    block: dict[str, Any]
    runtime: RuntimeSettings


class Serving:
    """The model serving now and, during a probation, the one to go back to; `swapped(model)` hears of each change."""

    def __init__(self, store: ModelStore, initial: InUse, inference: InferenceSettings, swapped: SwapFn) -> None:
        self._store = store
        self._swapped = swapped
        self._lock = threading.Lock()
        """Held while the serving model is chosen and swapped."""
        self._settings = threading.Lock()
        self.held = initial
        self.fallback: InUse | None = None
        self.runtime = initial.runtime
        self.inference = inference

    @property
    def model(self) -> Model:
        """The model the next frame runs on (any thread)."""
        return self.held.model

    def reload(self, runtime: RuntimeSettings) -> Model:
        """Serve the model in use again, loaded with new runtime settings; later loads use them too. Raises when it
        cannot be loaded, and the model serving then stays."""
        with self._lock:
            held = self.held
            model = self._store.load(held.key, runtime)
            with self._settings:
                model.set_overrides(self.inference)
                self.runtime = runtime
            self._replace(InUse(model, held.key, held.block, runtime), self.fallback)
        log.info("model %s reloaded with the new runtime settings", held.key)
        return model

    def set_inference(self, inference: InferenceSettings) -> None:
        """Threshold overrides for the models held now and every one loaded later."""
        with self._settings:
            self.inference = inference
            for held in (self.held, self.fallback):
                if held is not None:
                    held.model.set_overrides(inference)

    def load(self, key: str) -> InUse:
        """An installed version loaded with the runtime settings in effect, not yet serving."""
        with self._settings:
            runtime = self.runtime
        model = self._store.load(key, runtime)
        return InUse(model, key, self._store.block(key), runtime)

    def swap_in(self, new: InUse, keep_fallback: bool) -> InUse:
        """Serve `new` (loaded again if the runtime changed meanwhile); returns the model it replaced, kept as the
        fallback during a probation."""
        with self._lock:
            old = self.held
            self._replace(self._current(new), old if keep_fallback else None)
        return old

    def restore(self) -> InUse:
        """A failed probation: the fallback serves again, loaded with the runtime settings in effect."""
        with self._lock:
            old = self.fallback
            assert old is not None, "restore() without a probation"
            self._replace(self._current(old), None)
            return self.held

    def commit(self) -> None:
        """The probation passed: nothing to go back to any more."""
        with self._lock:
            self.fallback = None

    def _replace(self, held: InUse, fallback: InUse | None) -> None:
        """Caller holds the lock."""
        self.held, self.fallback = held, fallback
        self._swapped(held.model)

    def _current(self, held: InUse) -> InUse:
        """`held`, loaded again when the runtime settings changed since it was loaded; on a failure to load it keeps
        serving as it was, which beats serving nothing."""
        with self._settings:
            runtime, inference = self.runtime, self.inference
        if held.runtime == runtime:
            held.model.set_overrides(inference)
            return held
        try:
            model = self._store.load(held.key, runtime)
        except VisionEdgeError as err:
            log.error("cannot load %s with the current runtime settings (%s); it runs on the previous ones",
                      held.key, err)
            held.model.set_overrides(inference)
            return held
        model.set_overrides(inference)
        return InUse(model, held.key, held.block, runtime)
