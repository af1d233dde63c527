"""The rollout controller: one ring at a time, promoted only on fresh metrics that pass the gates, halted and rolled
back automatically otherwise. Its whole state is in the hub (deployment ids and labels), so it resumes anywhere.

Gates (AWS IoT Jobs' abort criteria are the model): a ring passes when at least `min_applied` % of its targeted
devices acknowledge the model with 200 (after an optional soak), confirmed by two consecutive fresh reads; any
started ring fails when, once `min_finished` devices have a verdict, more than `max_failed` % of them refused it or
rolled it back. Metrics count only once the hub's targeted count matches the ring's tagged devices; a failed read
(hub outage) restarts the confirmation and the soak, so nothing is promoted on data from before an outage. A resumed
controller keeps the wave timeout of the ring's `visionedge.started` label but soaks from its own first good read:
it cannot vouch for the time no controller watched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any

from visionedge.fleet.hub import FleetHub, HubError
from visionedge.fleet.plan import (
    LABEL_REASON,
    LABEL_ROLE,
    LABEL_ROLLOUT,
    LABEL_STARTED,
    LABEL_STATE,
    LABEL_WAVE,
    ROLE_CURRENT,
    ROLE_RING,
    Plan,
)
from visionedge.fleet.progress import LiveTable, RingStatus
from visionedge.fleet.rings import members

log = logging.getLogger(__name__)

CONFIRMING_READS = 2
ROLLBACK_CONFIRM_S = 300.0
REASON_CHARS = 120


class Exit(IntEnum):
    """Exit codes of `visionedge fleet rollout`."""

    COMPLETED = 0
    ERROR = 1
    USAGE = 2
    HALTED = 3


@dataclass(frozen=True)
class Gates:
    """When a ring passes and when the rollout halts."""

    min_applied: float = 90.0
    max_failed: float = 10.0
    min_finished: int = 1
    soak_s: float = 0.0
    wave_timeout_s: float = 1800.0
    poll_s: float = 15.0


@dataclass(frozen=True)
class Outcome:
    """How a rollout ended, with the line to show."""

    code: Exit
    message: str


def _now_label() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_time(text: str | None) -> float | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _runs_desired_model(twin: dict[str, Any]) -> bool:
    """The module acknowledged (200) the model its desired properties name now."""
    properties = twin.get("properties") or {}
    desired = (properties.get("desired") or {}).get("model") or {}
    ack = (properties.get("reported") or {}).get("model") or {}
    value = ack.get("value") or {}
    return bool(ack.get("ac") == 200 and value.get("name") == desired.get("name")
                and value.get("version") == desired.get("version"))


def rollout_configs(configs: list[dict[str, Any]], rid: str) -> list[dict[str, Any]]:
    """The deployments that belong to one rollout."""
    return [c for c in configs if (c.get("labels") or {}).get(LABEL_ROLLOUT) == rid]


def halted_condition(rid: str) -> str:
    """A target condition no device matches: the halted rollout's first ring stays as its record."""
    return f"tags.visionedge.halted='{rid}'"


class Controller:
    """Drives one plan to completion or to a halt; every decision is re-derived from the hub."""

    def __init__(self, hub: FleetHub, plan: Plan, gates: Gates, table: LiveTable | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.hub = hub
        self.plan = plan
        self.gates = gates
        self.table = table or LiveTable(f"rollout {plan.rollout_id}")
        self.sleep = sleep
        self.started_at = time.monotonic()

    # ---- entry ----------------------------------------------------------------------------------------------

    def run(self) -> Outcome:
        """Resume from what the hub holds, then go wave by wave."""
        mine = rollout_configs(self.hub.configurations(), self.plan.rollout_id)
        if any((c.get("labels") or {}).get(LABEL_ROLE) == ROLE_CURRENT for c in mine):
            self._finish_completion()
            return Outcome(Exit.COMPLETED, f"rollout {self.plan.rollout_id} is complete: every ring runs "
                                           f"{self.plan.model['name']} {self.plan.model['version']}")
        halted = [c for c in mine if (c.get("labels") or {}).get(LABEL_STATE) == "halted"]
        if halted:
            reason = str(halted[0]["labels"].get(LABEL_REASON, "no reason recorded"))
            self._finish_rollback()
            return Outcome(Exit.HALTED, f"rollout {self.plan.rollout_id} was halted: {reason}; it stays halted "
                                        f"(`visionedge fleet rollback {self.plan.rollout_id}` removes its record)")
        for index, wave in enumerate(self.plan.waves):
            config = self.hub.get(wave["id"]) or self._start_wave(wave)
            if (config.get("labels") or {}).get(LABEL_STATE) == "passed":
                continue
            failure = self._watch(index)
            if failure is not None:
                return self._halt(failure)
            self._set_labels(wave["id"], {LABEL_STATE: "passed"})
        self._complete()
        elapsed = time.monotonic() - self.started_at
        return Outcome(Exit.COMPLETED, f"rollout {self.plan.rollout_id} complete in {elapsed:.0f} s: "
                                       f"{', '.join(self.plan.rings)} run {self.plan.model['name']} "
                                       f"{self.plan.model['version']}")

    def _start_wave(self, wave: dict[str, Any]) -> dict[str, Any]:
        """Create one ring's deployment, stamped with its start time."""
        config = {**wave, "labels": {**wave["labels"], LABEL_STARTED: _now_label()}}
        created = self.hub.create(config)
        self.table.say(f"started ring {wave['labels']['visionedge.ring']} ({wave['id']})")
        return created

    # ---- watching -------------------------------------------------------------------------------------------

    def _watch(self, index: int) -> str | None:
        """Poll until ring `index` passes (None) or a started ring fails (the reason)."""
        wave = self.plan.waves[index]
        good_reads = 0
        soak_from: float | None = None
        expected: dict[str, int] = {}
        while True:
            try:
                configs = [self.hub.get(w["id"]) for w in self.plan.waves[: index + 1]]
                for w in self.plan.waves[: index + 1]:
                    ring = w["labels"]["visionedge.ring"]
                    if ring not in expected:
                        expected[ring] = len(members(self.hub, ring))
            except HubError as err:
                good_reads, soak_from = 0, None
                self._show([], index, f"hub unreachable, holding (nothing is promoted on old data): {err}")
                self.sleep(self.gates.poll_s)
                continue
            for w, config in zip(self.plan.waves, configs, strict=False):
                if config is None:
                    return f"deployment {w['id']} was removed from the hub (rolled back by an operator?)"
            statuses = [RingStatus.from_config(c) for c in configs if c is not None]
            for status in statuses:
                failure = self._failure(status)
                if failure:
                    self._show(statuses, index, failure)
                    return failure
            current = statuses[index]
            started = _label_time((configs[index] or {}).get("labels", {}).get(LABEL_STARTED)) or time.time()
            if current.targeted != expected[current.ring]:
                good_reads = 0
                note = (f"waiting for the hub's metrics: {current.targeted} of {expected.pop(current.ring)} devices "
                        f"of ring {current.ring} counted so far")
            else:
                soak_from = soak_from or time.time()
                share = 100.0 * current.applied / current.targeted if current.targeted else 100.0
                soaked = time.time() - max(started, soak_from)
                if share >= self.gates.min_applied and soaked >= self.gates.soak_s:
                    good_reads += 1
                    note = f"ring {current.ring}: {share:.0f}% applied; confirming ({good_reads}/{CONFIRMING_READS})"
                else:
                    good_reads = 0
                    note = (f"ring {current.ring}: {share:.0f}% applied, need {self.gates.min_applied:g}%"
                            + (f"; soak {soaked:.0f}/{self.gates.soak_s:.0f} s" if self.gates.soak_s else ""))
            self._show(statuses, index, note)
            if good_reads >= CONFIRMING_READS:
                self.table.say(f"ring {current.ring} passed: {current.applied}/{current.targeted} applied, "
                               f"{current.refused} refused")
                return None
            if time.time() - started > self.gates.wave_timeout_s:
                return (f"ring {wave['labels']['visionedge.ring']} timed out after {self.gates.wave_timeout_s:.0f} s "
                        f"with {current.applied}/{current.targeted} applied")
            self.sleep(self.gates.poll_s)

    def _failure(self, status: RingStatus) -> str | None:
        """The abort criterion on one ring, or None."""
        if status.finished < max(1, self.gates.min_finished):
            return None
        share = 100.0 * status.refused / status.finished
        if share > self.gates.max_failed:
            return (f"ring {status.ring}: {status.refused} of {status.finished} devices refused or rolled back the "
                    f"model ({share:.0f}% > {self.gates.max_failed:g}%)")
        return None

    def _show(self, statuses: list[RingStatus], index: int, note: str) -> None:
        started = {s.ring for s in statuses}
        waiting = [r for r in self.plan.rings if r not in started]
        self.table.show(statuses, waiting, note)

    # ---- halting --------------------------------------------------------------------------------------------

    def _halt(self, reason: str) -> Outcome:
        """Record the halt in every started ring's labels, then roll back."""
        self.table.say(f"HALT: {reason}")
        mine = rollout_configs(self._configs_or_retry(), self.plan.rollout_id)
        if not mine:
            return Outcome(Exit.HALTED, f"rollout {self.plan.rollout_id} stopped: {reason}")
        for config in mine:
            self._set_labels(config["id"], {LABEL_STATE: "halted", LABEL_REASON: reason[:REASON_CHARS]})
        ids = {c["id"] for c in mine}
        started = [w["labels"]["visionedge.ring"] for w in self.plan.waves if w["id"] in ids]
        removed = self._finish_rollback()
        confirmed = self._confirm_rollback(started)
        return Outcome(Exit.HALTED, f"rollout {self.plan.rollout_id} halted and rolled back ({removed}; {confirmed}): "
                                    f"{reason}")

    def _finish_rollback(self) -> str:
        """Delete every started ring but the first, which is retargeted to no device and kept as the record."""
        mine = [c for c in rollout_configs(self._configs_or_retry(), self.plan.rollout_id)
                if (c.get("labels") or {}).get(LABEL_ROLE) == ROLE_RING]
        mine.sort(key=lambda c: int((c.get("labels") or {}).get(LABEL_WAVE, 0)))
        for config in mine[1:]:
            self._delete(config["id"])
        if mine:
            self._set_labels(mine[0]["id"], {}, target=halted_condition(self.plan.rollout_id))
        rings = ", ".join(str(c["labels"].get("visionedge.ring")) for c in mine)
        return f"rings {rings} back on the previous model" if mine else "nothing was started"

    def _confirm_rollback(self, rings: list[str]) -> str:
        """Wait until every device of the started rings runs the model its twin now asks for again, or time out."""
        module = self.plan.module_id
        deadline = time.monotonic() + min(self.gates.wave_timeout_s, ROLLBACK_CONFIRM_S)
        devices: set[str] = set()
        back: set[str] = set()
        while True:
            try:
                devices = {d for ring in rings for d in members(self.hub, ring)}
                back = {str(t["deviceId"]) for t in self.hub.query(
                    f"SELECT * FROM devices.modules WHERE moduleId = '{module}'")
                    if str(t["deviceId"]) in devices and _runs_desired_model(t)}
            except HubError as err:
                self.table.say(f"retrying: {err}")
            if back == devices or time.monotonic() > deadline:
                break
            self.sleep(self.gates.poll_s)
        state = "confirmed" if back == devices else "NOT confirmed"
        return f"rollback {state}: {len(back)}/{len(devices)} devices run their previous model"

    # ---- completing -----------------------------------------------------------------------------------------

    def _complete(self) -> None:
        """Fold the rings into one current-model layer, then remove the ring deployments and old layers."""
        self._retry(lambda: self.hub.create({**self.plan.current,
                                             "labels": {**self.plan.current["labels"], LABEL_STARTED: _now_label()}}))
        self._finish_completion()

    def _finish_completion(self) -> None:
        """Delete this rollout's ring deployments and all but the previous current-model layer of older rollouts."""
        configs = self._configs_or_retry()
        for config in rollout_configs(configs, self.plan.rollout_id):
            if (config.get("labels") or {}).get(LABEL_ROLE) == ROLE_RING:
                self._delete(config["id"])
        older = sorted((c for c in configs if (c.get("labels") or {}).get(LABEL_ROLE) == ROLE_CURRENT
                        and c["labels"].get(LABEL_ROLLOUT) != self.plan.rollout_id),
                       key=lambda c: str(c.get("createdTimeUtc")))
        for config in older[:-1]:
            self._delete(config["id"])

    # ---- hub helpers ----------------------------------------------------------------------------------------

    def _set_labels(self, config_id: str, labels: dict[str, str], target: str | None = None) -> None:
        """Merge labels (and maybe retarget) with the etag, re-reading when someone else changed it first."""

        def attempt() -> None:
            config = self.hub.get(config_id)
            if config is None:
                return
            config["labels"] = {**(config.get("labels") or {}), **labels}
            if target is not None:
                config["targetCondition"] = target
            self.hub.update(config)

        self._retry(attempt)

    def _delete(self, config_id: str) -> None:
        self._retry(lambda: self.hub.delete(config_id))

    def _configs_or_retry(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._retry(self.hub.configurations)
        return result

    def _retry(self, action: Callable[[], Any], attempts: int = 40) -> Any:
        """Halting and cleaning up must finish: retry through an outage (or a lost etag race) for a while."""
        for attempt in range(attempts):
            try:
                return action()
            except HubError as err:
                if attempt == attempts - 1:
                    raise
                self.table.say(f"retrying: {err}")
                self.sleep(self.gates.poll_s)
        return None
