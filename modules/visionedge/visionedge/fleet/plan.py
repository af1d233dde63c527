"""A rollout plan: one layered deployment per ring that sets only the module's `model`, with labels and metrics.

Each ring deployment merges `properties.desired.model` into the `visionedge` module (other settings stay as the
base deployment sets them), targets one ring tag, ranks above the base and above the fleet's current model layer,
carries labels that name the rollout (its state lives in the hub) and five custom metrics (twin queries). When the
last ring passes, the rings fold into one `<rollout>-current` layer for all of them, so the hub keeps few deployments.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from visionedge.config import ModelRef, describe_validation_error
from visionedge.download import DownloadPolicy
from visionedge.fleet.rings import ring_condition
from visionedge.fleet.twinrules import twin_problem
from visionedge.intake import IntakeError, check_tree, read_json
from visionedge.modelstore.errors import UpdateRejected
from visionedge.modelstore.refs import block_of, resolve

MODULE_ID = "visionedge"
RING_PRIORITY = 100
CURRENT_PRIORITY = 90
MAX_DEPLOYMENTS = 100
MAX_METRICS = 5
MAX_PROPERTY_BYTES = 4096
MAX_MODEL_FILE_BYTES = 64 * 1024
"""MODEL.json on disk: a 4 KB block with room for indentation; refused before it is read past this."""
TWIN_DEPTH = 10
"""IoT Hub refuses twin documents nested deeper than 10 levels; the block counts as the first."""
SCHEMAS_ENV = "VISIONEDGE_SCHEMAS_DIR"
MANIFEST_SCHEMA = "azure-iot-edge-deployment-2.0.json"

LABEL_ROLLOUT = "visionedge.rollout"
LABEL_ROLE = "visionedge.role"
LABEL_RING = "visionedge.ring"
LABEL_WAVE = "visionedge.wave"
LABEL_RINGS = "visionedge.rings"
LABEL_MODEL = "visionedge.model"
LABEL_STATE = "visionedge.state"
LABEL_STARTED = "visionedge.started"
LABEL_REASON = "visionedge.reason"

ROLE_RING = "ring"
ROLE_CURRENT = "current"
AGENT_SCHEMA = "1.1"
"""The edgeAgent schemaVersion every layer restates: IoT Hub wants `$edgeAgent` in every edge deployment's content,
and this is the one path a layer can set to the value the base already has, changing nothing on the device."""


class PlanError(ValueError):
    """The model block or the plan cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class Plan:
    """What a rollout will create, wave by wave, and the layer it leaves behind."""

    rollout_id: str
    module_id: str
    model: dict[str, Any]
    rings: tuple[str, ...]
    waves: tuple[dict[str, Any], ...]
    current: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The plan as printed by `visionedge fleet plan --json`."""
        return {"rollout": self.rollout_id, "model": self.model, "rings": list(self.rings),
                "deployments": list(self.waves), "afterCompletion": self.current, "warnings": self.warnings}


def load_model_block(path: Path) -> dict[str, Any]:
    """Read MODEL.json (a twin `model` block, or {"model": block}) and check it as the module would.

    A regular file of at most 64 KB, nested at most as deep as a twin allows, finite numbers only: anything else is
    one line of error, before it can hang (a FIFO), exhaust memory (a huge file) or the stack (deep nesting).
    """
    try:
        data = read_json(path, MAX_MODEL_FILE_BYTES, "MODEL.json", depth=TWIN_DEPTH + 1)
        if isinstance(data, dict) and set(data) == {"model"}:
            data = data["model"]
        check_tree(data, f"the model block in {path}", TWIN_DEPTH)
    except IntakeError as err:
        raise PlanError(str(err)) from None
    return check_model_block(data, str(path))


def check_model_block(data: Any, origin: str = "the model block") -> dict[str, Any]:
    """Validate a `model` block with the module's own rules (schema, names, https, sha256, manifest)."""
    size = len(json.dumps(data, separators=(",", ":")).encode("utf-8"))
    if size > MAX_PROPERTY_BYTES:
        raise PlanError(f"{origin}: the model block is {size} bytes; IoT Hub takes at most {MAX_PROPERTY_BYTES} per "
                        "property (move an inline manifest to manifest_url)")
    problem = twin_problem(data, origin)
    if problem:
        raise PlanError(f"IoT Hub would refuse the block: {problem}")
    try:
        ref = ModelRef.model_validate(data)
    except ValidationError as err:
        raise PlanError(f"{origin}: {describe_validation_error(err, 'model')}") from None
    try:
        resolve(ref, DownloadPolicy())
    except UpdateRejected as err:
        raise PlanError(f"{origin}: the module would refuse it: {err}") from None
    if ref.version is None:
        raise PlanError(f"{origin}: model.version is required for a rollout: it is how devices report progress")
    block: dict[str, Any] = block_of(ref)
    return block


def _slug(text: str, limit: int) -> str:
    """Lowercase letters, digits and '-' only (deployment ids are lowercase)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "x"


def rollout_id(block: dict[str, Any]) -> str:
    """A stable id per model block: the same MODEL.json is the same rollout, from any machine."""
    digest = hashlib.sha256(json.dumps(block, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:8]
    return f"ve-{_slug(block['name'], 40)}-{_slug(str(block['version']), 24)}-{digest}"


def metric_queries(block: dict[str, Any], module_id: str = MODULE_ID) -> dict[str, str]:
    """Five twin queries over the module (counted by the hub on the deployment's devices).

    applied: acknowledged 200 with this name and version. pending: still 202 on it. refused: its desired model is
    this one and it answered 400/500, or its shadow evaluation rejected or rolled back this candidate.
    shadowRejected: the shadow verdict alone. healthy: applied and not judged against by modelHealth.
    """
    name, version = _quote(block["name"]), _quote(str(block["version"]))
    module = f"SELECT deviceId FROM devices.modules WHERE moduleId = {_quote(module_id)}"
    ack = "properties.reported.model"
    health = "properties.reported.modelHealth"
    is_this = f"{ack}.value.name = {name} AND {ack}.value.version = {version}"
    desired = f"properties.desired.model.name = {name} AND properties.desired.model.version = {version}"
    shadow = (f"{health}.candidate.name = {name} AND {health}.candidate.version = {version} "
              f"AND {health}.verdict IN ['rejected', 'rolledBack']")
    return {
        "applied": f"{module} AND {ack}.ac = 200 AND {is_this}",
        "pending": f"{module} AND {ack}.ac = 202 AND {is_this}",
        "refused": f"{module} AND (({desired} AND {ack}.ac IN [400, 500]) OR ({shadow}))",
        "shadowRejected": f"{module} AND {shadow}",
        "healthy": (f"{module} AND {ack}.ac = 200 AND {is_this} AND (NOT IS_DEFINED({health}.verdict) "
                    f"OR {health}.verdict IN ['promoted', 'none'])"),
    }


def _quote(text: str) -> str:
    """An IoT Hub query string literal."""
    return "'" + text.replace("'", "''") + "'"


def build_plan(block: dict[str, Any], rings: list[str], *, module_id: str = MODULE_ID,
               priority: int = RING_PRIORITY, current_priority: int = CURRENT_PRIORITY) -> Plan:
    """The deployments for a model block and an ordered list of rings."""
    if not rings:
        raise PlanError("give at least one ring, e.g. --rings canary,early,broad")
    if len(set(rings)) != len(rings):
        raise PlanError(f"rings repeat: {','.join(rings)}")
    if not 0 < current_priority < priority:
        raise PlanError(f"the current-model layer priority ({current_priority}) must be positive and below the "
                        f"ring priority ({priority})")
    rid = rollout_id(block)
    metrics = metric_queries(block, module_id)
    content = {"modulesContent": {"$edgeAgent": {"properties.desired.schemaVersion": AGENT_SCHEMA},
                                  module_id: {"properties.desired.model": block}}}
    model_label = f"{block['name']}@{block['version']}"[:128]
    waves = []
    for index, ring in enumerate(rings):
        waves.append({
            "id": f"{rid}-{_slug(ring, 32)}",
            "priority": priority,
            "targetCondition": ring_condition(ring),
            "labels": {LABEL_ROLLOUT: rid, LABEL_ROLE: ROLE_RING, LABEL_RING: ring, LABEL_WAVE: str(index),
                       LABEL_RINGS: ",".join(rings), LABEL_MODEL: model_label, LABEL_STATE: "running"},
            "content": content,
            "metrics": {"queries": metrics},
        })
    current = {
        "id": f"{rid}-current",
        "priority": current_priority,
        "targetCondition": " OR ".join(ring_condition(r) for r in rings),  # IoT Hub refuses IN in a target
        "labels": {LABEL_ROLLOUT: rid, LABEL_ROLE: ROLE_CURRENT, LABEL_RINGS: ",".join(rings),
                   LABEL_MODEL: model_label, LABEL_STATE: "current"},
        "content": content,
        "metrics": {"queries": metrics},
    }
    if len(metrics) > MAX_METRICS:
        raise PlanError(f"more than {MAX_METRICS} custom metrics per deployment")
    for deployment in (*waves, current):
        if len(str(deployment["id"])) > 128:
            raise PlanError(f"deployment id {deployment['id']!r} is longer than 128 characters")
    return Plan(rid, module_id, block, tuple(rings), tuple(waves), current)


# ---- checks against the hub -----------------------------------------------------------------------------------


def is_layered(config: dict[str, Any]) -> bool:
    """A deployment is layered when a module sets a sub-path of its desired properties."""
    modules = ((config.get("content") or {}).get("modulesContent")) or {}
    return any(isinstance(b, dict) and any(k.startswith("properties.desired.") for k in b) for b in modules.values())


def check_against_hub(plan: Plan, existing: list[dict[str, Any]], ring_sizes: dict[str, int],
                      schemas_dir: Path | None) -> list[str]:
    """Problems that stop the rollout (raises PlanError) and warnings (returned): limits, bases, schema, rings."""
    warnings: list[str] = []
    ours = {c["id"] for c in existing}
    new = [d for d in (*plan.waves, plan.current) if d["id"] not in ours]
    if len(existing) + len(new) > MAX_DEPLOYMENTS:
        raise PlanError(f"the hub holds {len(existing)} deployments and this rollout needs {len(new)} more: over "
                        f"the limit of {MAX_DEPLOYMENTS} (remove finished ones with `visionedge fleet rollback`)")
    bases = [c for c in existing if not is_layered(c) and (c.get("content") or {}).get("modulesContent")]
    if not bases:
        raise PlanError("the hub has no base deployment: layered deployments apply only on top of one")
    module_id = plan.module_id
    for base in bases:
        if int(base.get("priority") or 0) >= plan.current["priority"]:
            raise PlanError(f"base deployment {base['id']} has priority {base.get('priority')}: the rollout's layers "
                            f"({plan.current['priority']}, {plan.waves[0]['priority']}) must rank above every base")
        agent = base["content"]["modulesContent"].get("$edgeAgent", {}).get("properties.desired", {})
        if agent.get("schemaVersion") != AGENT_SCHEMA:
            raise PlanError(f"base deployment {base['id']} has $edgeAgent schemaVersion "
                            f"{agent.get('schemaVersion')!r}; the rollout's layers restate {AGENT_SCHEMA!r} (IoT Hub "
                            "wants $edgeAgent in every layer), which would change it")
        if module_id not in (agent.get("modules") or {}):
            warnings.append(f"base deployment {base['id']} does not deploy module {module_id!r}")
        if schemas_dir is not None:
            _validate_effective(base, plan, schemas_dir)
    if schemas_dir is None:
        warnings.append(f"deployment schemas not found (set {SCHEMAS_ENV} or --schemas): checked limits only")
    first = plan.rings[0]
    if ring_sizes.get(first, 0) == 0:
        raise PlanError(f"ring {first!r} has no device: run `visionedge fleet rings assign` first; a rollout never "
                        "starts without a first ring to watch")
    for ring in plan.rings[1:]:
        if ring_sizes.get(ring, 0) == 0:
            warnings.append(f"ring {ring!r} has no device")
    return warnings


def _validate_effective(base: dict[str, Any], plan: Plan, schemas_dir: Path) -> None:
    """The base with this rollout's layer merged in must still be a valid deployment manifest (schema 2.0)."""
    from jsonschema import Draft4Validator

    path = schemas_dir / MANIFEST_SCHEMA
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PlanError(f"cannot read the deployment schema {path}: {err}") from err
    manifest = json.loads(json.dumps({"modulesContent": base["content"]["modulesContent"]}))
    for module_id, block in plan.waves[0]["content"]["modulesContent"].items():
        desired = manifest["modulesContent"].setdefault(module_id, {}).setdefault("properties.desired", {})
        for key, value in block.items():
            *parents, leaf = key.split(".")[2:]
            node = desired
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    errors = sorted(Draft4Validator(schema).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path)
        raise PlanError(f"base {base['id']} with this rollout's layer is not a valid deployment ({MANIFEST_SCHEMA}) "
                        f"at {where or 'top'}: {errors[0].message}")


def schemas_dir_from(flag: Path | None) -> Path | None:
    """--schemas, else VISIONEDGE_SCHEMAS_DIR, else None; a given folder must hold the 2.0 manifest schema."""
    candidate = flag or (Path(os.environ[SCHEMAS_ENV]) if os.environ.get(SCHEMAS_ENV) else None)
    if candidate is None:
        return None
    if not (candidate / MANIFEST_SCHEMA).is_file():
        raise PlanError(f"{candidate} does not hold {MANIFEST_SCHEMA} (the SchemaStore IoT Edge schemas)")
    return candidate
