"""devhub's IoT Hub service side as the official SDK sees it: real HTTPS with devhub's CA, real SAS tokens, real
`azure-iot-hub` calls and IoT Hub's REST API over `requests` (visionedge's two FleetHub clients, every test through
each), and the deployment engine's merge rules on module twins."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from visionedge.fleet.hub import CLIENTS, FleetHub, HubError, connect
from visionedge_devhub.certs import generate_certs
from visionedge_devhub.emulator import HubEmulator
from visionedge_devhub.restapi import POLICY_NAME, RestApi
from visionedge_devhub.service import ServiceError, ServiceHub

DEVICES = 5


@dataclass
class Service:
    """A running service API over five registered devices (module twins held by unstarted emulators)."""

    hub: ServiceHub
    api: RestApi
    emulators: dict[str, HubEmulator]
    ca: Path
    client: FleetHub
    kind: str


@pytest.fixture(params=CLIENTS)
def service(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Service]:
    """Service API on 127.0.0.1 with its own CA; devices dev-0..dev-4 tagged site=a (0-2) or site=b (3-4); the
    client is the SDK one or the REST one."""
    certs = generate_certs(tmp_path / "certs", "127.0.0.1")
    hub = ServiceHub(metrics_interval_s=60)
    api = RestApi(hub, certs, "127.0.0.1", 0, {POLICY_NAME: base64.b64encode(secrets.token_bytes(32)).decode()})
    api.start()
    emulators = {}
    for i in range(DEVICES):
        device_id = f"dev-{i}"
        emulators[device_id] = HubEmulator(device_id, "visionedge")
        hub.add_device(device_id, "visionedge", emulators[device_id], lambda: True,
                       tags={"site": "a" if i < 3 else "b"})
    client = connect(api.connection_string(), certs.ca_cert, request.param)
    try:
        yield Service(hub, api, emulators, certs.ca_cert, client, request.param)
    finally:
        client.close()
        api.stop()


def base(config_id: str = "base", priority: int = 10, target: str = "tags.site='a' OR tags.site='b'",
         desired: dict[str, Any] | None = None) -> dict[str, Any]:
    """A base deployment with the module's whole desired properties."""
    return {"id": config_id, "priority": priority, "targetCondition": target, "labels": {},
            "content": {"modulesContent": {
                "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1"}},
                "$edgeHub": {"properties.desired": {"schemaVersion": "1.2"}},
                "visionedge": {"properties.desired": desired or {"source": {"uri": "sample"},
                                                                 "model": {"name": "squeezenet"}}}}}}


def layer(config_id: str, priority: int, target: str, model: dict[str, Any],
          metrics: dict[str, str] | None = None) -> dict[str, Any]:
    """A layered deployment that sets only the module's model."""
    return {"id": config_id, "priority": priority, "targetCondition": target, "labels": {"owner": "test"},
            "content": {"modulesContent": {"$edgeAgent": {"properties.desired.schemaVersion": "1.1"},
                                           "visionedge": {"properties.desired.model": model}}},
            "metrics": {"queries": metrics or {}}}


def desired_model(service: Service, device_id: str) -> Any:
    return service.emulators[device_id].desired.get("model")


def test_configurations_create_get_list_update_with_etag_and_delete(service: Service) -> None:
    """Create is idempotent by id, labels change only with the current etag, content never changes."""
    client = service.client
    created = client.create(base())
    assert client.create(base())["etag"] == created["etag"], "a second create returns the existing one"
    assert [c["id"] for c in client.configurations()] == ["base"]
    changed = {**created, "labels": {"state": "passed"}}
    updated = client.update(changed)
    assert updated["labels"] == {"state": "passed"}
    assert updated["etag"] != created["etag"]
    with pytest.raises(HubError) as stale:
        client.update({**created, "labels": {"state": "late"}})
    assert stale.value.status == 412
    other_content = {**updated, "content": base(desired={"model": {"name": "yolox-nano"}})["content"]}
    with pytest.raises(HubError) as immutable:
        client.update(other_content)
    assert immutable.value.status == 400
    assert "ConfigurationContentIsImmutable" in str(immutable.value)
    assert client.delete("base") is True
    assert client.delete("base") is False
    assert client.get("base") is None


def test_hub_limits_are_enforced(service: Service) -> None:
    """At most 5 custom metrics, 4 KB per property, 100 deployments per hub."""
    many = {f"m{i}": "SELECT deviceId FROM devices" for i in range(6)}
    with pytest.raises(HubError, match="TooManyCustomMetrics"):
        service.client.create(layer("six-metrics", 20, "*", {"name": "x"}, many))
    with pytest.raises(HubError, match="TwinPropertyTooLarge"):
        service.client.create(layer("too-big", 20, "*", {"name": "x", "pad": "y" * 5000}))
    for i in range(100):
        service.hub.put_configuration(f"c{i}", layer(f"c{i}", 20, "tags.site='none'", {"name": "x"}), None)
    with pytest.raises(HubError, match="TooManyConfigurationsOnHub"):
        service.client.create(layer("one-more", 20, "*", {"name": "x"}))


def changed(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of a configuration with one field set (a dotted path into it; None deletes)."""
    copy = json.loads(json.dumps(config))
    *parents, leaf = path.split("/")
    node = copy
    for part in parents:
        node = node[part]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return copy


LAYER = layer("ring-x", 100, "tags.site='a'", {"name": "x"})


@pytest.mark.parametrize(("path", "value", "reason"), [
    ("content/modulesContent/$edgeAgent", None, "must include \\$edgeAgent"),
    ("id", "Ring-X", "InvalidConfigurationId"),
    ("id", "ring.x", "InvalidConfigurationId"),
    ("id", "r" * 129, "InvalidConfigurationId"),
    ("priority", -1, "priority must be an integer from 0"),
    ("priority", 2**31, "priority must be an integer from 0"),
    ("targetCondition", "tags.site IN ['a', 'b']", "InvalidConfigurationTargetCondition.*IN is not accepted"),
    ("targetCondition", "properties.desired.x = 1", "InvalidConfigurationTargetCondition.*deviceId, tags or"),
    ("content/modulesContent/visionedge/properties.desired.model", {"a.b": 1}, "twin key 'a.b'"),
    ("content/modulesContent/visionedge/properties.desired.model", {"$x": 1}, "twin key '\\$x'"),
    ("content/modulesContent/visionedge/properties.desired.model", {"n": 2**53}, "outside -2\\^52"),
    ("content/modulesContent/visionedge/properties.desired.model",
     json.loads('{"a":' * 11 + "1" + "}" * 11), "nest at most 10 levels"),
    ("content/modulesContent/visionedge/desired", {"x": 1}, "neither properties.desired"),
])
def test_the_hub_refuses_what_iot_hub_refuses(service: Service, path: str, value: Any, reason: str) -> None:
    """Each rule docs/fleet.md lists with its source: a 400 naming it, and nothing created."""
    config = changed(LAYER, path, value)
    with pytest.raises(HubError, match=reason) as refused:
        service.client.create(config)
    assert refused.value.status == 400
    assert service.client.configurations() == []


def test_labels_are_strings(service: Service) -> None:
    """The SDK's model makes every label a string; the hub refuses any other value (sent raw here)."""
    with pytest.raises(ServiceError, match="labels must map names to strings"):
        service.hub.put_configuration("ring-x", changed(LAYER, "labels", {"n": 1}), None)


def test_the_deepest_and_widest_a_twin_takes_are_accepted(service: Service) -> None:
    """Ten levels, keys of 1,024 bytes and +-2^52 pass: the limits are not off by one."""
    deepest = json.loads('{"a":' * 9 + "1" + "}" * 9)
    model = {"name": "x", "deep": deepest, "k" * 1024: 2**52 - 1, "low": -(2**52)}
    client = service.client
    client.create(base())
    client.create(layer("edge-of-limits", 100, "deviceId = 'dev-0' OR tags.site = 'b'", model))
    assert desired_model(service, "dev-0") == model


def test_wrong_key_or_untrusted_ca_is_refused(service: Service, tmp_path: Path) -> None:
    """A token signed with another key gets 401; a client that does not trust devhub's CA cannot connect at all."""
    wrong = service.api.connection_string().rsplit("SharedAccessKey=", 1)[0] + "SharedAccessKey=" + \
        base64.b64encode(b"k" * 32).decode()
    other_ca = generate_certs(tmp_path / "other", "127.0.0.1").ca_cert
    wrong_key = connect(wrong, service.ca, service.kind)
    untrusting = connect(service.api.connection_string(), other_ca, service.kind)
    try:
        with pytest.raises(HubError) as refused:
            wrong_key.configurations()
        assert refused.value.status == 401
        with pytest.raises(HubError, match="unreachable"):
            untrusting.configurations()
    finally:
        wrong_key.close()
        untrusting.close()


def test_twin_query_pages_and_filters(service: Service) -> None:
    """Queries page with continuation tokens (1000 per page by the SDK, 2 here) and filter on tags."""
    from azure.iot.hub import IoTHubRegistryManager
    from azure.iot.hub.models import QuerySpecification

    rows = list(service.client.query("SELECT * FROM devices WHERE tags.site = 'a'"))
    assert sorted(r["deviceId"] for r in rows) == ["dev-0", "dev-1", "dev-2"]
    registry = IoTHubRegistryManager.from_connection_string(service.api.connection_string())
    registry.protocol.config.connection.verify = str(service.ca)
    first = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), None, 2)
    assert len(first.items) == 2
    assert first.continuation_token
    second = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), first.continuation_token, 2)
    assert {t.device_id for t in first.items}.isdisjoint({t.device_id for t in second.items})
    with pytest.raises(HubError, match="400"):
        list(service.client.query("SELECT * FROM devices WHERE tags.site = "))


def test_engine_merges_highest_base_and_every_layer_then_reverts_when_a_layer_goes(service: Service) -> None:
    """Base at 10 everywhere; a layer at 100 on site a sets the model (other settings stay); a layer at 50 on dev-0
    is outranked for the model; deleting the 100 layer brings back the 50 one, then the base, fields removed."""
    client = service.client
    client.create(base())
    assert desired_model(service, "dev-4") == {"name": "squeezenet"}
    url_model = {"name": "custom", "version": "2", "url": "https://models.example/m.onnx", "sha256": "a" * 64}
    client.create(layer("ring-a", 100, "tags.site='a'", url_model))
    client.create(layer("dev0", 50, "deviceId='dev-0'", {"name": "yolox-nano"}))
    assert desired_model(service, "dev-0") == url_model
    assert service.emulators["dev-0"].desired["source"] == {"uri": "sample"}, "a layered path merges"
    assert desired_model(service, "dev-3") == {"name": "squeezenet"}
    statuses = service.hub.get_twin("dev-0")["configurations"]
    assert statuses == {"base": {"status": "Applied"}, "ring-a": {"status": "Applied"}, "dev0": {"status": "Applied"}}
    client.delete("ring-a")
    assert desired_model(service, "dev-0") == {"name": "yolox-nano"}
    assert desired_model(service, "dev-1") == {"name": "squeezenet"}, "url, sha256 and version were removed"
    client.delete("dev0")
    assert desired_model(service, "dev-0") == {"name": "squeezenet"}


def test_newest_base_wins_at_equal_priority_and_a_layer_needs_a_base(service: Service) -> None:
    """Two bases at one priority: the newer applies, the older is only targeted; without a base nothing applies."""
    client = service.client
    client.create(layer("orphan", 100, "*", {"name": "yolox-nano"}))
    assert desired_model(service, "dev-0") is None
    client.create(base("old", desired={"model": {"name": "squeezenet"}}))
    client.create(base("new", desired={"model": {"name": "squeezenet-fp32"}}))
    client.delete("orphan")
    assert desired_model(service, "dev-0") == {"name": "squeezenet-fp32"}
    service.hub.refresh_metrics()
    old, new = client.get("old"), client.get("new")
    assert old is not None
    assert new is not None
    assert old["systemMetrics"]["results"]["targetedCount"] == DEVICES
    assert old["systemMetrics"]["results"]["appliedCount"] == 0
    assert new["systemMetrics"]["results"]["appliedCount"] == DEVICES


def test_metrics_count_the_targeted_devices_matching_each_query(service: Service) -> None:
    """System metrics and custom metrics (twin queries) are computed over the deployment's targeted devices."""
    client = service.client
    client.create(base())
    metrics = {"custom": "SELECT deviceId FROM devices.modules WHERE properties.desired.model.name = 'custom'",
               "all": "SELECT deviceId FROM devices"}
    client.create(layer("ring-b", 100, "tags.site='b'", {"name": "custom"}, metrics))
    service.hub.refresh_metrics()
    ring = client.get("ring-b")
    assert ring is not None
    assert ring["systemMetrics"]["results"]["targetedCount"] == 2
    assert ring["metrics"]["results"] == {"custom": 2, "all": 2}


def test_outage_answers_503_until_it_ends(service: Service) -> None:
    """During an outage every call fails (after the SDK's own retries) and nothing changes; then all is back."""
    service.api.outage = True
    with pytest.raises(HubError):
        service.client.create(base())
    service.api.outage = False
    assert service.client.configurations() == []
