"""`visionedge fleet`: rings, plan, rollout, status and rollback of a model across a fleet, through IoT Hub."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from visionedge.fleet.hub import CA_ENV, CLIENT_ENV, CLIENTS, CONNECTION_ENV, FleetHub, HubError, connect
from visionedge.fleet.plan import (
    LABEL_RING,
    LABEL_ROLE,
    LABEL_ROLLOUT,
    LABEL_STATE,
    PlanError,
    build_plan,
    check_against_hub,
    load_model_block,
    schemas_dir_from,
)
from visionedge.fleet.progress import RingStatus, format_table, rows
from visionedge.fleet.rings import DEFAULT_RINGS, RingError, assign, members, parse_rings
from visionedge.fleet.rollout import Controller, Exit, Gates, rollout_configs

DEFAULT_RING_ORDER = "canary,early,broad"


class UsageError(Exception):
    """A wrong argument: exit code 2."""


def _number(low: float, high: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type for a gate: a finite number in [low, high] (above `low` when `above`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or value > high or (above and value == low):
            bound = f"above {low:g}" if above else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number {bound}"
                                             + (f" and at most {high:g}" if math.isfinite(high) else ""))
        return value

    return parse


PERCENT = _number(0.0, 100.0)
SECONDS = _number(0.0)
POSITIVE_SECONDS = _number(0.0, above=True)


def add_parser(sub: Any) -> None:
    """Register `fleet` and its subcommands on the main parser."""
    fleet = sub.add_parser("fleet", help="roll a model out across a fleet in rings, through IoT Hub deployments")
    fleet.add_argument("--connection-string", help=f"IoT Hub service connection string (default: ${CONNECTION_ENV}); "
                                                   "never printed")
    fleet.add_argument("--hub-ca", type=Path, help=f"extra CA (PEM) trusted for the hub (default: ${CA_ENV})")
    fleet.add_argument("--client", choices=CLIENTS, help=f"how to reach the hub: sdk (azure-iot-hub) or rest (its "
                                                         f"REST API over requests) (default: ${CLIENT_ENV}, else sdk)")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True)

    rings = fsub.add_parser("rings", help="ring tags on devices")
    rsub = rings.add_subparsers(dest="rings_command", required=True)
    rassign = rsub.add_parser("assign", help="tag devices with rings by a hash of their id (a re-run moves none)")
    rassign.add_argument("--rings", default=DEFAULT_RINGS, help=f"NAME=PERCENT,... (default {DEFAULT_RINGS})")
    rassign.add_argument("--where", help="only devices matching this twin condition, e.g. \"tags.site='lyon'\"")
    rassign.add_argument("--dry-run", action="store_true", help="show the assignment, write nothing")
    rsub.add_parser("show", help="devices per ring")

    def model_command(name: str, help_text: str) -> argparse.ArgumentParser:
        command: argparse.ArgumentParser = fsub.add_parser(name, help=help_text)
        command.add_argument("model", type=Path, help="MODEL.json: the twin `model` block to roll out")
        command.add_argument("--rings", default=DEFAULT_RING_ORDER, help=f"ring order (default {DEFAULT_RING_ORDER})")
        command.add_argument("--schemas", type=Path, help="SchemaStore IoT Edge schemas (default: "
                                                          "$VISIONEDGE_SCHEMAS_DIR)")
        return command

    plan = model_command("plan", "print the layered deployments a rollout would create, checked against the hub")
    plan.add_argument("--offline", action="store_true", help="do not contact the hub (checks the model block only)")
    plan.add_argument("--json", action="store_true", help="print the deployments as JSON (what `az iot edge "
                                                          "deployment create` takes), not a summary")
    rollout = model_command("rollout", "create the ring deployments one wave at a time, gated on device health")
    rollout.add_argument("--min-applied", type=PERCENT, default=90.0, help="%% of a ring acked 200 to pass (90)")
    rollout.add_argument("--max-failed", type=PERCENT, default=10.0, help="%% refused/rolled back that halts (10)")
    rollout.add_argument("--min-finished", type=int, default=1, help="devices with a verdict before --max-failed "
                                                                     "counts (1)")
    rollout.add_argument("--soak", type=SECONDS, default=0.0, help="seconds a ring must stay healthy (0)")
    rollout.add_argument("--wave-timeout", type=POSITIVE_SECONDS, default=1800.0,
                         help="seconds before a ring that does not pass halts the rollout (1800)")
    rollout.add_argument("--poll", type=POSITIVE_SECONDS, default=15.0, help="seconds between metric reads (15)")
    status = fsub.add_parser("status", help="rollouts on the hub and their rings")
    status.add_argument("rollout", nargs="?", help="only this rollout")
    status.add_argument("--json", action="store_true")
    rollback = fsub.add_parser("rollback", help="remove a rollout's deployments: its devices go back to the "
                                                "previous model")
    rollback.add_argument("rollout")


def run(args: argparse.Namespace) -> int:
    """Dispatch `visionedge fleet ...`; one line on stderr for every expected failure."""
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "rings": _rings, "plan": _plan, "rollout": _rollout, "status": _status, "rollback": _rollback}
    args.opened = []
    try:
        return commands[args.fleet_command](args)
    except UsageError as err:
        sys.stderr.write(f"visionedge fleet: error: {err}\n")
        return int(Exit.USAGE)
    except (HubError, PlanError, RingError) as err:
        sys.stderr.write(f"visionedge fleet: error: {err}\n")
        return int(Exit.ERROR)
    finally:
        for hub in args.opened:
            hub.close()


def _hub(args: argparse.Namespace) -> FleetHub:
    """The hub from --connection-string or the environment."""
    connection = args.connection_string or os.environ.get(CONNECTION_ENV)
    if not connection:
        raise UsageError(f"no hub: pass --connection-string or set {CONNECTION_ENV}")
    ca = args.hub_ca or (Path(os.environ[CA_ENV]) if os.environ.get(CA_ENV) else None)
    hub = connect(connection, ca, args.client or os.environ.get(CLIENT_ENV) or "sdk")
    args.opened.append(hub)
    return hub


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _rings(args: argparse.Namespace) -> int:
    hub = _hub(args)
    if args.rings_command == "assign":
        result = assign(hub, parse_rings(args.rings), args.where, args.dry_run)
        total = sum(len(ids) for ids in result.members.values())
        for ring, ids in result.members.items():
            _out(f"{ring:<12} {len(ids):>6} devices")
        verb = "would change" if args.dry_run else "changed"
        _out(f"{total} devices; {verb} {result.changed} ring tags")
        return 0
    counts: dict[str, int] = {}
    for twin in hub.query("SELECT * FROM devices WHERE IS_DEFINED(tags.visionedge.ring)"):
        ring = str(twin["tags"]["visionedge"]["ring"])
        counts[ring] = counts.get(ring, 0) + 1
    for ring, count in sorted(counts.items()):
        _out(f"{ring:<12} {count:>6} devices")
    return 0


def _ring_order(text: str) -> list[str]:
    rings = [r.strip() for r in text.split(",") if r.strip()]
    if not rings:
        raise UsageError("--rings needs at least one ring name, e.g. canary,early,broad")
    return rings


def _checked_plan(args: argparse.Namespace, hub: FleetHub | None) -> Any:
    plan = build_plan(load_model_block(args.model), _ring_order(args.rings))
    if hub is not None:
        sizes = {ring: len(members(hub, ring)) for ring in plan.rings}
        plan.warnings.extend(check_against_hub(plan, hub.configurations(), sizes, schemas_dir_from(args.schemas)))
    return plan


def _plan(args: argparse.Namespace) -> int:
    plan = _checked_plan(args, None if args.offline else _hub(args))
    if args.json:
        _out(json.dumps(plan.to_json(), indent=2))
    else:
        _out(f"rollout {plan.rollout_id}: {plan.model['name']} {plan.model['version']}, one wave per ring")
        for wave in plan.waves:
            _out(f"  {wave['id']}  priority {wave['priority']}  {wave['targetCondition']}")
        _out(f"then, once every ring passed: {plan.current['id']}  priority {plan.current['priority']}  "
             f"{plan.current['targetCondition']}")
        _out("(--json prints the deployments in full)")
    for warning in plan.warnings:
        sys.stderr.write(f"visionedge fleet: warning: {warning}\n")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    hub = _hub(args)
    plan = _checked_plan(args, hub)
    for warning in plan.warnings:
        sys.stderr.write(f"visionedge fleet: warning: {warning}\n")
    gates = Gates(min_applied=args.min_applied, max_failed=args.max_failed, min_finished=args.min_finished,
                  soak_s=args.soak, wave_timeout_s=args.wave_timeout, poll_s=args.poll)
    outcome = Controller(hub, plan, gates).run()
    _out(outcome.message)
    return int(outcome.code)


def _status(args: argparse.Namespace) -> int:
    configs = _hub(args).configurations()
    rollouts = sorted({str(c["labels"][LABEL_ROLLOUT]) for c in configs if (c.get("labels") or {}).get(LABEL_ROLLOUT)})
    if args.rollout:
        if args.rollout not in rollouts:
            raise HubError(f"no rollout {args.rollout!r} on the hub (rollouts: {', '.join(rollouts) or 'none'})")
        rollouts = [args.rollout]
    report = []
    for rid in rollouts:
        mine = rollout_configs(configs, rid)
        rings = [RingStatus.from_config(c) for c in mine if c["labels"].get(LABEL_ROLE) == "ring"]
        current = [c for c in mine if c["labels"].get(LABEL_ROLE) == "current"]
        state = "complete (current model)" if current else (
            "halted" if any(c["labels"].get(LABEL_STATE) == "halted" for c in mine) else "in progress")
        report.append({"rollout": rid, "state": state, "model": mine[0]["labels"].get("visionedge.model"),
                       "deployments": [c["id"] for c in mine],
                       "rings": [{**r.__dict__} for r in rings]})
        if not args.json:
            _out(f"{rid}  {mine[0]['labels'].get('visionedge.model')}  {state}")
            if rings:
                for line in format_table(rows(sorted(rings, key=lambda r: r.deployment), [])):
                    _out("  " + line)
    if args.json:
        _out(json.dumps(report, indent=2))
    elif not rollouts:
        _out("no visionedge rollouts on the hub")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    hub = _hub(args)
    mine = rollout_configs(hub.configurations(), args.rollout)
    if not mine:
        raise HubError(f"no rollout {args.rollout!r} on the hub (see `visionedge fleet status`)")
    for config in sorted(mine, key=lambda c: str((c.get("labels") or {}).get(LABEL_RING, "~"))):
        if hub.delete(config["id"]):
            _out(f"deleted {config['id']}")
    _out(f"rollout {args.rollout} removed: its devices apply the previous layer again")
    return 0
