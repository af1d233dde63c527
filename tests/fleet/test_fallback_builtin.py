"""A halted ring whose fallback is the base deployment's built-in model, a `model` block with only a name.

The hub merges reported patches key by key, so the device's ack of `{"name": "squeezenet"}` must null the fields of
the ring's model it reported before (version, url, sha256, ...): else the twin shows name squeezenet with the ring's
version, and the controller's rollback check (and the `applied` metric) never sees the device back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge_devhub.certs import CertBundle
from visionedge_devhub.fleet import BASE_TAG_CONDITION, MODULE_ID, Fleet

from tests.fleet.conftest import reported_model
from tests.modelstore.conftest import Refs, certs, refs, served, server  # noqa: F401 - fixtures reused here
from tests.support import wait_until

pytestmark = pytest.mark.timeout(240)

RING = "ve-fallback-test-canary"


@pytest.fixture
def one_device(tmp_path: Path, certs: CertBundle, mirror_dirs: list[Path]) -> Iterator[Fleet]:  # noqa: F811
    """One device on the base deployment (`model: {name: squeezenet}`), acked 200."""
    with Fleet(1, tmp_path / "fleet", fps=1.0, model_ca=certs.ca_cert, metrics_interval_s=0.5) as running:
        wait_until(lambda: all(reported_model(running, d).get("ac") == 200 for d in running.devices),
                   timeout=120, what="the device to run its first model", poll=0.5)
        yield running


def ring_layer(block: dict[str, Any]) -> dict[str, Any]:
    """A ring's layered deployment as `visionedge fleet` creates it (only properties.desired.model, priority 100)."""
    return {"id": RING, "priority": 100, "targetCondition": BASE_TAG_CONDITION,
            "content": {"modulesContent": {"$edgeAgent": {"properties.desired.schemaVersion": "1.1"},
                                           MODULE_ID: {"properties.desired.model": block}}}}


def desired_version(fleet: Fleet, device_id: str) -> int:
    version: int = fleet.service.get_module_twin(device_id, MODULE_ID)["properties"]["desired"]["$version"]
    return version


@pytest.mark.parametrize("refused", [True, False], ids=["ring-model-refused", "ring-model-applied"])
def test_removing_the_ring_layer_brings_the_builtin_model_back_in_the_twin(
    one_device: Fleet, refs: Refs, refused: bool  # noqa: F811
) -> None:
    """The ring's model is refused (wrong sha256) or applied; the layer goes; the device acks the built-in model 200
    at the new desired $version, and its reported value is exactly the base's block, nothing of the ring's left."""
    fleet = one_device
    (device_id,) = fleet.devices
    code = 400 if refused else 200
    block = refs("squeezenet", "3", sha256="0" * 64) if refused else refs("squeezenet", "3")
    fleet.service.put_configuration(RING, ring_layer(block), None)
    wait_until(lambda: reported_model(fleet, device_id).get("ac") == code
               and reported_model(fleet, device_id).get("av") == desired_version(fleet, device_id),
               timeout=120, what=f"the device to ack the ring's model {code}", poll=0.5)
    fleet.service.delete_configuration(RING, "*")
    desired = fleet.service.get_module_twin(device_id, MODULE_ID)["properties"]["desired"]
    assert desired["model"] == {"name": "squeezenet"}, "the hub must null the ring's fields in the desired model"
    wait_until(lambda: reported_model(fleet, device_id).get("av") == desired["$version"]
               and reported_model(fleet, device_id).get("ac") == 200, timeout=90,
               what="the device to ack the built-in fallback", poll=0.5,
               detail=lambda: reported_model(fleet, device_id))
    assert reported_model(fleet, device_id)["value"] == {"name": "squeezenet"}
