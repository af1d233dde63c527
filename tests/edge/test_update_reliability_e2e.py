"""Model updates as a fleet gets them, end to end at default gates: after a runtime change, on first boot, across
model families, and under kill -9 after each acknowledgement (issue 26)."""

from __future__ import annotations

from typing import Any

import pytest
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import StartModule
from tests.edge.test_model_updates_e2e import model_ack, result_models, wait_for_results_from
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here

pytestmark = pytest.mark.timeout(300)


def section_ack(hub: DevHub, key: str, version: int, timeout: float = 60.0) -> dict[str, Any]:
    """The reported acknowledgement of one desired section for desired $version."""
    doc = hub.emulator.wait_for_reported(lambda r: r.get(key, {}).get("av") == version, timeout=timeout)
    block: dict[str, Any] = doc[key]
    return block


def test_a_runtime_change_then_a_model_update_ends_200_and_serving(
    hub: DevHub, start_module: StartModule, refs: Refs, certs: Any  # noqa: F811
) -> None:
    """A fleet that tuned `runtime` still takes rollouts: the shadow compares against the model serving now (loaded
    with the new runtime settings), so the same weights under a new version pass every default gate and serve."""
    start_module(hub, local={"ca_bundle": str(certs.ca_cert)})
    wait_for_results_from(hub, "squeezenet")
    tuned = hub.set_desired({"runtime": {"intra_op_threads": 1, "workers": 1}})
    assert section_ack(hub, "runtime", tuned)["ac"] == 200
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet")
    version = hub.set_desired({"model": refs("squeezenet", "3")})
    done = model_ack(hub, version, 200, timeout=240)
    assert done["ad"].startswith("squeezenet-custom@3 is active (shadow: agreement 1.00 over "), done["ad"]
    hub.emulator.clear_telemetry()
    wait_for_results_from(hub, "squeezenet-custom", count=5)
    assert set(result_models(hub)) == {"squeezenet-custom"}
    _status, payload = hub.emulator.call_method("getStatus", {})
    assert payload["model"] == {"name": "squeezenet-custom", "version": "3"}
