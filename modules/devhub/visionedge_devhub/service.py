"""The service side of IoT Hub that `azure-iot-hub` talks to: configurations, twins, queries and the deployment engine.

State is in memory: a registry of edge devices, each with one module whose twin lives in that device's own
HubEmulator (so desired patches reach the real module over its own broker), plus the configurations. Every change
to a configuration or a tag re-evaluates the deployments at once and pushes the resulting desired patches; metrics
are recomputed every `metrics_interval_s`, like the real hub's periodic refresh (readers may see them a little late).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from visionedge.acks import merge_patch
from visionedge.fleet.twinrules import twin_problem

from visionedge_devhub.deployments import DESIRED, SYSTEM_MODULES, diff_patch, module_desired, modules_content, select
from visionedge_devhub.emulator import HubEmulator
from visionedge_devhub.query import QueryError, parse_condition, parse_query, parse_target_condition

_log = logging.getLogger(__name__)

MAX_CONFIGURATIONS = 100
MAX_CUSTOM_METRICS = 5
MAX_MODULES = 50
MAX_PROPERTY_BYTES = 4096
MAX_PRIORITY = 2**31 - 1
_CONFIG_ID = re.compile(r"^[a-z0-9\-+%_*!']{1,128}$")

Document = dict[str, Any]


class ServiceError(Exception):
    """A request the hub refuses: HTTP status and IoT Hub's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _now() -> str:
    """UTC time in the format IoT Hub returns."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class DeviceRecord:
    """One edge device in the registry: its tags and its one module, whose twin lives in `emulator`."""

    device_id: str
    module_id: str
    emulator: HubEmulator
    connected: Callable[[], bool]
    tags: Document = field(default_factory=dict)
    module_tags: Document = field(default_factory=dict)
    version: int = 1
    configurations: dict[str, str] = field(default_factory=dict)
    """Deployment id -> "Applied" or "Targeted", as IoT Hub shows in twins."""

    def device_twin(self) -> Document:
        """The device twin as the service API returns it."""
        return {
            "deviceId": self.device_id,
            "etag": _etag(self.version),
            "version": self.version,
            "status": "enabled",
            "connectionState": "Connected" if self.connected() else "Disconnected",
            "capabilities": {"iotEdge": True},
            "tags": copy.deepcopy(self.tags),
            "properties": {"desired": {"$version": 1}, "reported": {"$version": 1}},
            "configurations": {cid: {"status": status} for cid, status in self.configurations.items()},
        }

    def module_twin(self) -> Document:
        """The module twin as the service API returns it; desired/reported come from the device's emulator."""
        desired, reported = self.emulator.desired, self.emulator.reported
        version = int(desired["$version"]) + int(reported["$version"])
        return {
            "deviceId": self.device_id,
            "moduleId": self.module_id,
            "etag": _etag(version),
            "version": version,
            "status": "enabled",
            "connectionState": "Connected" if self.connected() else "Disconnected",
            "tags": copy.deepcopy(self.module_tags),
            "properties": {"desired": desired, "reported": reported},
        }


def _etag(version: int) -> str:
    """IoT Hub etags are opaque strings; ours count changes."""
    return f"AAAAAAAAAA{version}="


class ServiceHub:
    """Registry, configurations and the deployment engine behind the HTTPS API; thread-safe."""

    def __init__(self, metrics_interval_s: float = 2.0) -> None:
        self.metrics_interval_s = metrics_interval_s
        self._lock = threading.RLock()
        self._devices: dict[str, DeviceRecord] = {}
        self._configurations: dict[str, Document] = {}
        self._etags = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.history: list[tuple[float, str, str]] = []
        """(time, action, configuration id) for every create/update/delete: what tests audit afterwards."""

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the periodic metrics refresh."""
        self._thread = threading.Thread(target=self._metrics_loop, name="devhub-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the metrics refresh."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _metrics_loop(self) -> None:
        while not self._stop.wait(self.metrics_interval_s):
            try:
                self.refresh_metrics()
            except Exception:  # noqa: BLE001 - a refresh failure must not end the refresh thread
                _log.exception("metrics refresh failed")

    # ---- registry -------------------------------------------------------------------------------------------

    def add_device(self, device_id: str, module_id: str, emulator: HubEmulator,
                   connected: Callable[[], bool], tags: Mapping[str, Any] | None = None) -> None:
        """Register an edge device with its module (whose twin is `emulator`'s) and apply deployments to it."""
        with self._lock:
            self._devices[device_id] = DeviceRecord(device_id, module_id, emulator, connected,
                                                    tags=copy.deepcopy(dict(tags or {})))
        self.reconcile()

    def device_ids(self) -> list[str]:
        """Registered device ids, sorted."""
        with self._lock:
            return sorted(self._devices)

    def _device(self, device_id: str) -> DeviceRecord:
        record = self._devices.get(device_id)
        if record is None:
            raise ServiceError(404, "DeviceNotFound", f"device {device_id!r} is not registered")
        return record

    def _module(self, device_id: str, module_id: str) -> DeviceRecord:
        record = self._device(device_id)
        if record.module_id != module_id:
            raise ServiceError(404, "ModuleNotFound", f"module {module_id!r} is not on device {device_id!r}")
        return record

    # ---- twins ----------------------------------------------------------------------------------------------

    def get_twin(self, device_id: str) -> Document:
        """GET /twins/{id}."""
        with self._lock:
            return self._device(device_id).device_twin()

    def patch_twin(self, device_id: str, patch: Mapping[str, Any], if_match: str | None) -> Document:
        """PATCH /twins/{id}: merge tags (desired properties of the device itself are not used by edge devices)."""
        with self._lock:
            record = self._device(device_id)
            _check_etag(if_match, record.device_twin()["etag"], f"twin of {device_id}")
            tags = patch.get("tags")
            if isinstance(tags, Mapping):
                _check_property_sizes(tags, "tags")
                merge_patch(record.tags, tags)
                record.version += 1
            twin = record.device_twin()
        self.reconcile()
        return twin

    def get_module_twin(self, device_id: str, module_id: str) -> Document:
        """GET /twins/{id}/modules/{mid}."""
        with self._lock:
            return self._module(device_id, module_id).module_twin()

    def patch_module_twin(self, device_id: str, module_id: str, patch: Mapping[str, Any],
                          if_match: str | None) -> Document:
        """PATCH /twins/{id}/modules/{mid}: merge tags and desired properties (pushed to the module)."""
        with self._lock:
            record = self._module(device_id, module_id)
            _check_etag(if_match, record.module_twin()["etag"], f"twin of {device_id}/{module_id}")
            tags = patch.get("tags")
            if isinstance(tags, Mapping):
                merge_patch(record.module_tags, tags)
            desired = (patch.get("properties") or {}).get("desired")
        if isinstance(desired, Mapping):
            _check_property_sizes(desired, "properties.desired")
            record.emulator.set_desired(desired)
        with self._lock:
            return record.module_twin()

    # ---- queries --------------------------------------------------------------------------------------------

    def query(self, text: str) -> list[Document]:
        """Run a query over device twins (`devices`) or module twins (`devices.modules`)."""
        try:
            parsed = parse_query(text)
        except QueryError as err:
            raise ServiceError(400, "BadRequest", f"query: {err}") from err
        with self._lock:
            rows = self._rows(parsed.source, self._devices.values())
        return parsed.run(rows)

    def _rows(self, source: str, records: Any) -> list[Document]:
        return [r.device_twin() if source == "devices" else r.module_twin() for r in records]

    # ---- configurations -------------------------------------------------------------------------------------

    def list_configurations(self, top: int | None = None) -> list[Document]:
        """GET /configurations (oldest first)."""
        with self._lock:
            items = sorted(self._configurations.values(), key=lambda c: str(c["createdTimeUtc"]))
            return copy.deepcopy(items[:top] if top else items)

    def get_configuration(self, config_id: str) -> Document:
        """GET /configurations/{id}."""
        with self._lock:
            return copy.deepcopy(self._configuration(config_id))

    def _configuration(self, config_id: str) -> Document:
        config = self._configurations.get(config_id)
        if config is None:
            raise ServiceError(404, "ConfigurationNotFound", f"configuration {config_id!r} does not exist")
        return config

    def put_configuration(self, config_id: str, body: Mapping[str, Any], if_match: str | None) -> tuple[int, Document]:
        """PUT /configurations/{id}: create (201), or update labels/target/priority/metrics with an etag (200)."""
        _validate_configuration(config_id, body)
        with self._lock:
            existing = self._configurations.get(config_id)
            if existing is None:
                if if_match not in (None, "*"):
                    raise ServiceError(404, "ConfigurationNotFound", f"configuration {config_id!r} does not exist")
                if len(self._configurations) >= MAX_CONFIGURATIONS:
                    raise ServiceError(409, "TooManyConfigurationsOnHub",
                                       f"the hub already holds {MAX_CONFIGURATIONS} configurations")
                stamp = _now()
                config: Document = {
                    "id": config_id,
                    "schemaVersion": "1.0",
                    "labels": dict(body.get("labels") or {}),
                    "content": copy.deepcopy(body.get("content") or {}),
                    "targetCondition": body.get("targetCondition") or "",
                    "priority": int(body.get("priority") or 0),
                    "createdTimeUtc": stamp,
                    "lastUpdatedTimeUtc": stamp,
                    "systemMetrics": {"results": {}, "queries": {}},
                    "metrics": {"results": {}, "queries": dict((body.get("metrics") or {}).get("queries") or {})},
                    "etag": _etag(next(self._etags)),
                }
                self._configurations[config_id] = config
                status, action = 201, "create"
            else:
                if if_match is None:
                    raise ServiceError(409, "ConfigurationAlreadyExists",
                                       f"configuration {config_id!r} exists: update it with its etag")
                _check_etag(if_match, existing["etag"], f"configuration {config_id}")
                if _comparable_content(body.get("content")) != _comparable_content(existing["content"]):
                    raise ServiceError(400, "ConfigurationContentIsImmutable",
                                       f"the content of configuration {config_id!r} cannot change")
                existing["labels"] = dict(body.get("labels") or {})
                existing["targetCondition"] = body.get("targetCondition") or ""
                existing["priority"] = int(body.get("priority") or 0)
                existing["metrics"]["queries"] = dict((body.get("metrics") or {}).get("queries") or {})
                existing["lastUpdatedTimeUtc"] = _now()
                existing["etag"] = _etag(next(self._etags))
                config = existing
                status, action = 200, "update"
            self.history.append((time.time(), action, config_id))
            answer = copy.deepcopy(config)
        self.reconcile()
        self.refresh_metrics()
        return status, answer

    def delete_configuration(self, config_id: str, if_match: str | None) -> None:
        """DELETE /configurations/{id} (If-Match '*' or the etag)."""
        with self._lock:
            existing = self._configuration(config_id)
            _check_etag(if_match or "*", existing["etag"], f"configuration {config_id}")
            del self._configurations[config_id]
            self.history.append((time.time(), "delete", config_id))
        self.reconcile()

    def test_queries(self, body: Mapping[str, Any]) -> Document:
        """POST /configurations/testQueries: report what does not parse."""
        answer: Document = {"targetConditionError": "", "customMetricQueryErrors": {}}
        try:
            parse_condition(str(body.get("targetCondition") or "*"))
        except QueryError as err:
            answer["targetConditionError"] = str(err)
        for name, text in (body.get("customMetricQueries") or {}).items():
            try:
                parse_query(str(text))
            except QueryError as err:
                answer["customMetricQueryErrors"][name] = str(err)
        return answer

    # ---- the deployment engine ------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Re-evaluate every device's deployments and push what changed in its module's desired properties."""
        pushes: list[tuple[DeviceRecord, dict[str, Any]]] = []
        with self._lock:
            configs = [c for c in self._configurations.values() if modules_content(c)]
            conditions = {c["id"]: _condition(c) for c in configs}
            for record in self._devices.values():
                twin = record.device_twin()
                targeting = [c for c in configs if conditions[c["id"]](twin)]
                selection = select(targeting)
                record.configurations = {cid: "Targeted" for cid in selection.targeted_only}
                record.configurations.update({cid: "Applied" for cid in selection.applied})
                desired = module_desired(selection, record.module_id)
                if desired is None:
                    continue
                patch = diff_patch(record.emulator.desired, desired)
                if patch:
                    pushes.append((record, patch))
        for record, patch in pushes:
            version = record.emulator.set_desired(patch)
            _log.info("deployment engine: %s/%s desired $version %s (%s)", record.device_id, record.module_id,
                      version, ", ".join(sorted(patch)))

    def refresh_metrics(self) -> None:
        """Recompute system and custom metrics of every deployment from the twins as they are now."""
        with self._lock:
            devices = list(self._devices.values())
            twins = {r.device_id: r.device_twin() for r in devices}
            modules = {r.device_id: r.module_twin() for r in devices}
            for config in self._configurations.values():
                cid = config["id"]
                targeted = [r for r in devices if cid in r.configurations]
                applied = [r for r in targeted if r.configurations[cid] == "Applied"]
                config["systemMetrics"]["results"] = {
                    "targetedCount": len(targeted),
                    "appliedCount": len(applied),
                    "reportedSuccessfulCount": sum(1 for r in applied if r.connected()),
                    "reportedFailedCount": sum(1 for r in applied if not r.connected()),
                }
                results: dict[str, int] = {}
                for name, text in config["metrics"]["queries"].items():
                    try:
                        parsed = parse_query(text)
                    except QueryError:
                        continue
                    pool = twins if parsed.source == "devices" else modules
                    rows = [pool[r.device_id] for r in targeted]
                    results[name] = len(parsed.run(rows)) if parsed.count_as is None else parsed.run(rows)[0][
                        parsed.count_as]
                config["metrics"]["results"] = results


def _condition(config: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], bool]:
    """The target condition of a stored configuration (validated when it was stored)."""
    text = str(config.get("targetCondition") or "")
    return parse_condition(text) if text else lambda twin: False


def _comparable_content(content: Any) -> Any:
    """Content as compared for immutability: absent sections and nulls mean the same."""
    if isinstance(content, Mapping):
        return {k: _comparable_content(v) for k, v in content.items() if v is not None}
    return content


def _check_etag(if_match: str | None, etag: str, what: str) -> None:
    """If-Match semantics: '*' or no header matches anything; quotes are optional."""
    if if_match is None or if_match.strip() == "*":
        return
    if if_match.strip().strip('"') != etag.strip('"'):
        raise ServiceError(412, "PreconditionFailed", f"{what} changed since it was read (etag mismatch)")


def _check_property_sizes(document: Mapping[str, Any], where: str) -> None:
    """IoT Hub refuses any single property value above 4 KB."""
    for key, value in document.items():
        size = len(json.dumps(value, separators=(",", ":")).encode("utf-8"))
        if size > MAX_PROPERTY_BYTES:
            raise ServiceError(400, "TwinPropertyTooLarge",
                               f"{where}.{key} is {size} bytes; a property value is limited to {MAX_PROPERTY_BYTES}")


def _validate_configuration(config_id: str, body: Mapping[str, Any]) -> None:
    """What the hub checks on PUT (docs/fleet.md lists each rule and its source): id, priority, labels, target
    condition, metrics, and the content: `$edgeAgent` present, at most 50 modules, twin rules on every value."""
    if not _CONFIG_ID.match(config_id):
        raise ServiceError(400, "InvalidConfigurationId",
                           f"configuration id {config_id!r}: 1-128 lowercase letters, digits and -+%_*!' only")
    if body.get("id") not in (None, config_id):
        raise ServiceError(400, "BadRequest", f"body id {body.get('id')!r} differs from the URL's {config_id!r}")
    priority = body.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise ServiceError(400, "BadRequest", f"priority must be an integer from 0 to {MAX_PRIORITY}, not {priority!r}")
    labels = body.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise ServiceError(400, "BadRequest", "labels must map names to strings")
    try:
        if body.get("targetCondition"):
            parse_target_condition(str(body["targetCondition"]))
    except QueryError as err:
        raise ServiceError(400, "InvalidConfigurationTargetCondition", str(err)) from err
    try:
        queries = dict((body.get("metrics") or {}).get("queries") or {})
        for text in queries.values():
            parse_query(str(text))
    except QueryError as err:
        raise ServiceError(400, "BadRequest", str(err)) from err
    if len(queries) > MAX_CUSTOM_METRICS:
        raise ServiceError(400, "TooManyCustomMetrics",
                           f"{len(queries)} custom metrics; a configuration may have {MAX_CUSTOM_METRICS}")
    modules = (body.get("content") or {}).get("modulesContent") or {}
    if modules and "$edgeAgent" not in modules:
        raise ServiceError(400, "BadRequest", "an edge deployment's modulesContent must include $edgeAgent "
                                              "(a layered one: a properties.desired.<path> of it)")
    if len([m for m in modules if m not in SYSTEM_MODULES]) > MAX_MODULES:
        raise ServiceError(400, "BadRequest", f"more than {MAX_MODULES} modules in one deployment")
    for module_id, block in modules.items():
        if not isinstance(block, Mapping):
            raise ServiceError(400, "BadRequest", f"modulesContent.{module_id} must be an object")
        for key, value in block.items():
            if key != DESIRED and not key.startswith(DESIRED + "."):
                raise ServiceError(400, "BadRequest", f"modulesContent.{module_id}: {key!r} is neither "
                                                      f"{DESIRED} nor {DESIRED}.<path>")
            problem = twin_problem(value, f"{module_id}.{key}", key.count(".") - 2)
            if problem:
                raise ServiceError(400, "BadRequest", problem)
            if module_id not in SYSTEM_MODULES:
                if key == DESIRED and isinstance(value, Mapping):
                    _check_property_sizes(value, f"{module_id}.{DESIRED}")
                else:
                    _check_property_sizes({key: value}, module_id)
