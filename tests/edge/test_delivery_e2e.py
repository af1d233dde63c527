"""Delivery after a hub outage, through the real module, SDK and DevHub: live events first, then a prompt drain."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from visionedge_devhub.emulator import Telemetry
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.edge.test_offline_e2e import wait_complete, wait_drained

pytestmark = pytest.mark.timeout(180)

SDK_RETRY_S = 5.0
"""The module client's connection_retry_interval: after the hub returns, the SDK connects within this."""


def unpacked(message: Telemetry) -> list[dict[str, Any]]:
    """The events one message carried."""
    body = message.json
    if not isinstance(body, dict):
        return []
    return list(body["events"]) if body.get("type") == "batch" else [body]


def made_at(event: dict[str, Any]) -> float:
    """When the module made a result event (its frame's wall-clock time)."""
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_after_an_outage_the_first_message_carries_a_live_event_and_the_backlog_follows(
    hub: DevHub, start_module: StartModule
) -> None:
    """Hub down 10 s: the first result message the sender makes after it returns holds an event made after that,
    within a few seconds; live events made during the drain wait at most ~2 s; every event arrives.

    The SDK's MQTT session (clean_session=False) may first complete the one publish that was in flight when the
    link dropped: that message may come first, and then holds only events made before the drop.
    """
    hub.set_desired({"telemetry": {"policy": "every-frame", "batch": True}})
    start_module(hub)
    hub.emulator.wait_for_telemetry(lambda m: m.output == "results", timeout=60, count=3)
    cut = time.time()
    hub.front.set_down(True)
    hub.front.drop()
    time.sleep(10)
    seen = hub.emulator.last_seq
    back = time.time()
    hub.front.set_down(False)
    firsts = hub.emulator.wait_for_telemetry(lambda m: m.seq > seen and m.output == "results",
                                             timeout=SDK_RETRY_S + 10, count=2)
    live = [m for m in firsts if max(made_at(e) for e in unpacked(m)) >= back]
    assert live, "the first messages after the outage were all backlog"
    if live[0] is not firsts[0]:
        assert max(made_at(e) for e in unpacked(firsts[0])) <= cut, "backlog went before live events"
    assert live[0].received_at - back < SDK_RETRY_S + 5, "the first live message came too late"
    drained = wait_drained(hub, timeout=60)
    assert drained["telemetry"]["outbox"]["dropped"] == 0
    wait_complete(hub)
    since = live[0].received_at
    hub.emulator.wait_for_telemetry(lambda m: m.output == "results" and any(made_at(e) > since + 2
                                                                            for e in unpacked(m)), timeout=30)
    waits = [m.received_at - made_at(e) for m in hub.emulator.telemetry() if m.output == "results"
             for e in unpacked(m) if made_at(e) > since]
    assert max(waits) < 5.0, f"live events waited up to {max(waits):.1f} s during the drain"
