"""`FleetHub` through IoT Hub's documented service REST API (api-version 2021-04-12) over `requests`.

No uamqp and no SDK: it installs wherever `requests` does. The SAS token is made in one place, `sas_token`, exactly
as the service SDK makes it (HMAC-SHA256 of the url-encoded host name and the expiry, with the policy's key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import requests

from visionedge.fleet.hub import (
    PAGE,
    TIMEOUT_S,
    CaBundle,
    HubError,
    create_once,
    parse_connection_string,
    unless_absent,
)

API_VERSION = "2021-04-12"
TOKEN_TTL_S = 3600
RENEW_BEFORE_S = 300


def sas_token(host: str, key_name: str, key: str, expiry: int) -> str:
    """A service SharedAccessSignature for the whole hub, valid until `expiry` (Unix seconds)."""
    resource = quote_plus(host)
    digest = hmac.new(base64.b64decode(key), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return f"SharedAccessSignature sr={resource}&sig={quote(base64.b64encode(digest))}&se={expiry}&skn={key_name}"


class RestHub:
    """Configurations and twins of one hub over HTTPS; one `requests` session, verification always on.

    `verify` goes with each request: a session's own setting would lose to REQUESTS_CA_BUNDLE in the environment.
    """

    def __init__(self, connection_string: str, ca_file: Path | None = None) -> None:
        fields = parse_connection_string(connection_string)
        self.host = fields["HostName"]
        self._key_name, self._key = fields["SharedAccessKeyName"], fields["SharedAccessKey"]
        try:
            base64.b64decode(self._key, validate=True)
        except ValueError:
            raise HubError("the connection string's SharedAccessKey is not base64") from None
        self._bundle = CaBundle(self, ca_file) if ca_file is not None else None
        self._session = requests.Session()
        self._verify: str | bool = str(self._bundle.path) if self._bundle is not None else True
        self._token, self._expiry = "", 0

    def close(self) -> None:
        """Close the session and remove the CA bundle file."""
        self._session.close()
        if self._bundle is not None:
            self._bundle.close()

    def _authorization(self) -> str:
        """The current token, renewed well before it expires."""
        now = int(time.time())
        if self._expiry - now < RENEW_BEFORE_S:
            self._expiry = now + TOKEN_TTL_S
            self._token = sas_token(self.host, self._key_name, self._key, self._expiry)
        return self._token

    def _request(self, what: str, method: str, path: str, body: Any = None,
                 headers: dict[str, str] | None = None) -> requests.Response:
        """One call; any answer but 2xx is a HubError with the status and the hub's message."""
        url = f"https://{self.host}/{'/'.join(quote(part, safe='') for part in path.split('/'))}"
        sent = {"Authorization": self._authorization(), "Accept": "application/json", **(headers or {})}
        try:
            response = self._session.request(method, url, params={"api-version": API_VERSION}, json=body,
                                             headers=sent, timeout=TIMEOUT_S, verify=self._verify)
        except requests.RequestException as err:
            raise HubError(f"{self.host}: {what} failed: hub unreachable ({type(err).__name__})") from None
        if response.status_code >= 300:
            try:
                detail = str(response.json().get("Message") or response.text)[:200]
            except (ValueError, AttributeError):
                detail = response.text[:200]
            raise HubError(f"{self.host}: {what} failed: HTTP {response.status_code} {detail}".rstrip(),
                           response.status_code)
        return response

    def configurations(self) -> list[dict[str, Any]]:
        """Every configuration (deployment) on the hub."""
        items: list[dict[str, Any]] = self._request("listing deployments", "GET", "configurations").json()
        return items

    def get(self, config_id: str) -> dict[str, Any] | None:
        """One configuration, or None when it does not exist."""
        response = unless_absent(lambda: self._request(f"reading deployment {config_id}", "GET",
                                                       f"configurations/{config_id}"))
        config: dict[str, Any] | None = response.json() if response is not None else None
        return config

    def create(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create a configuration; an existing one with this id is returned as is."""
        def create() -> dict[str, Any]:
            created: dict[str, Any] = self._request(f"creating deployment {config['id']}", "PUT",
                                                    f"configurations/{config['id']}", config).json()
            return created

        return create_once(config["id"], create, self.get)

    def update(self, config: dict[str, Any]) -> dict[str, Any]:
        """Update labels, target condition, priority or metrics, guarded by the etag it was read with."""
        updated: dict[str, Any] = self._request(f"updating deployment {config['id']}", "PUT",
                                                f"configurations/{config['id']}", config,
                                                {"If-Match": str(config["etag"])}).json()
        return updated

    def delete(self, config_id: str) -> bool:
        """Delete a configuration; False when it was already gone."""
        deleted = unless_absent(lambda: self._request(f"deleting deployment {config_id}", "DELETE",
                                                      f"configurations/{config_id}", headers={"If-Match": "*"}))
        return deleted is not None

    def query(self, text: str) -> Iterator[dict[str, Any]]:
        """Every row of a twin query, page by page."""
        token = ""
        while True:
            headers = {"x-ms-max-item-count": str(PAGE), **({"x-ms-continuation": token} if token else {})}
            response = self._request("querying twins", "POST", "devices/query", {"query": text}, headers)
            yield from response.json()
            token = response.headers.get("x-ms-continuation", "")
            if not token:
                return

    def set_tags(self, device_id: str, tags: dict[str, Any], etag: str) -> None:
        """Merge tags into a device twin, only if it is unchanged since it was read."""
        self._request(f"tagging {device_id}", "PATCH", f"twins/{device_id}", {"tags": tags}, {"If-Match": etag})
