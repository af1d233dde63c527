"""`FleetHub` through the official service SDK `azure-iot-hub` 2.7.0: the only file that imports it (or msrest).

The SDK imports uamqp (deprecated, no wheels for new Pythons); where it cannot be installed, `rest.py` provides the
same interface without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from visionedge.fleet.hub import PAGE, TIMEOUT_S, CaBundle, HubError, create_once, host_of, unless_absent


class SdkHub:
    """Configurations and twins of one hub, via IoTHubConfigurationManager and IoTHubRegistryManager."""

    def __init__(self, connection_string: str, ca_file: Path | None = None) -> None:
        self.host = host_of(connection_string)
        try:
            from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
        except ImportError as err:
            raise HubError("the SDK client needs the [fleet] extra: pip install 'visionedge[fleet]' "
                           f"({err.name} is missing), or use --client rest") from err
        for noisy in ("msrest", "azure", "uamqp", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._bundle = CaBundle(self, ca_file) if ca_file is not None else None
        self._configs = IoTHubConfigurationManager.from_connection_string(connection_string)
        self._registry = IoTHubRegistryManager.from_connection_string(connection_string)
        verify: str | bool = str(self._bundle.path) if self._bundle is not None else True
        for client in (self._configs.protocol, self._registry.protocol):
            client.config.connection.verify = verify
            client.config.connection.timeout = TIMEOUT_S

    def close(self) -> None:
        """Close the SDK's HTTP sessions and remove the CA bundle file."""
        for client in (self._configs.protocol, self._registry.protocol):
            client.close()
        if self._bundle is not None:
            self._bundle.close()

    def _call(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        """Run one SDK call, turning its exceptions into a HubError that names the hub but holds no secret."""
        from msrest.exceptions import ClientRequestError, HttpOperationError

        try:
            return func(*args)
        except HttpOperationError as err:
            status = err.response.status_code if err.response is not None else 0
            detail = ""
            try:
                body = err.response.json()
                detail = str(body.get("Message") or body)[:200]
            except (ValueError, AttributeError):
                detail = (err.response.text or "")[:200] if err.response is not None else ""
            raise HubError(f"{self.host}: {what} failed: HTTP {status} {detail}".rstrip(), status) from None
        except ClientRequestError as err:
            raise HubError(f"{self.host}: {what} failed: hub unreachable ({type(err.inner_exception).__name__})"
                           ) from None

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration (deployment) on the hub."""
        items = self._call("listing deployments", self._configs.get_configurations, 1000)
        return [item.serialize(keep_readonly=True) for item in items]

    def get(self, config_id: str) -> dict[str, Any] | None:
        """One configuration, or None when it does not exist."""
        item = unless_absent(lambda: self._call(f"reading deployment {config_id}", self._configs.get_configuration,
                                                config_id))
        result: dict[str, Any] | None = item.serialize(keep_readonly=True) if item is not None else None
        return result

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create a configuration; an existing one with this id is returned as is."""
        from azure.iot.hub.models import Configuration

        def create() -> dict[str, Any]:
            item = self._call(f"creating deployment {config['id']}", self._configs.create_configuration,
                              Configuration.deserialize(config))
            result: dict[str, Any] = item.serialize(keep_readonly=True)
            return result

        return create_once(config["id"], create, self.get)

    def update(self, config: dict[str, Any]) -> dict[str, Any]:
        """Update labels, target condition, priority or metrics, guarded by the etag it was read with."""
        from azure.iot.hub.models import Configuration

        item = self._call(f"updating deployment {config['id']}", self._configs.update_configuration,
                          Configuration.deserialize(config), config["etag"])
        result: dict[str, Any] = item.serialize(keep_readonly=True)
        return result

    def delete(self, config_id: str) -> bool:
        """Delete a configuration; False when it was already gone."""
        def delete() -> bool:
            self._call(f"deleting deployment {config_id}", self._configs.delete_configuration, config_id)
            return True

        return unless_absent(delete) is not None

    def query(self, text: str) -> Iterator[dict[str, Any]]:
        """Every row of a twin query, page by page."""
        from azure.iot.hub.models import QuerySpecification

        token = None
        while True:
            page = self._call("querying twins", self._registry.query_iot_hub, QuerySpecification(query=text),
                              token, PAGE)
            for item in page.items or []:
                yield item.serialize(keep_readonly=True) if hasattr(item, "serialize") else item
            token = page.continuation_token
            if not token:
                return

    def set_tags(self, device_id: str, tags: dict[str, Any], etag: str) -> None:
        """Merge tags into a device twin, only if it is unchanged since it was read."""
        from azure.iot.hub.models import Twin

        self._call(f"tagging {device_id}", self._registry.update_twin, device_id, Twin(tags=tags), etag)
