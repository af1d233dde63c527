"""The devhub's parts on their own: twin merge rules, topic properties, SAS checks, workload API, lifecycle."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from visionedge.acks import merge_patch
from visionedge_devhub.emulator import parse_properties
from visionedge_devhub.front import AuthError, ConnectPacket, Identity, verify_connect
from visionedge_devhub.hub import DevHub, DevHubError, random_key
from visionedge_devhub.testing import running_devhub
from visionedge_devhub.unixhttp import request_json
from visionedge_devhub.workload import sign

pytestmark = pytest.mark.timeout(30)

IDENTITY = Identity(hostname="hub.example.net", device_id="dev1", module_id="visionedge")
KEY = base64.b64encode(b"k" * 32).decode()


def _connect(
    *,
    client_id: str = "dev1/visionedge",
    username: str = "hub.example.net/dev1/visionedge/?api-version=2019-10-01",
    resource: str = "hub.example.net/devices/dev1/modules/visionedge",
    key: str = KEY,
    expiry: int | None = None,
) -> ConnectPacket:
    """A CONNECT packet with a SAS token built the way the SDK builds it."""
    sr = quote(resource, safe="")
    se = str(expiry if expiry is not None else int(time.time()) + 3600)
    sig = quote(sign(key, f"{sr}\n{se}".encode()), safe="")
    token = f"SharedAccessSignature sr={sr}&sig={sig}&se={se}"
    return ConnectPacket(client_id=client_id, username=username, password=token.encode(), keepalive=60, raw=b"")


def test_merge_patch_merges_objects_and_null_deletes() -> None:
    """Twin patches merge nested objects, delete on null, replace scalars and lists, and ignore `$` keys."""
    document = {"a": 1, "nested": {"x": 1, "y": 2}, "list": [1, 2]}

    merge_patch(document, {"nested": {"x": None, "z": 3}, "a": None, "list": [3], "new": {"k": None}, "$version": 9})

    assert document == {"nested": {"y": 2, "z": 3}, "list": [3], "new": {}}


def test_properties_segment_is_decoded_with_unquote_not_unquote_plus() -> None:
    """'+' stays '+', percent escapes decode, and a key without '=' has no value."""
    assert parse_properties("%24.on=out&cam=a%2Fb+c%26d&flag") == {"$.on": "out", "cam": "a/b+c&d", "flag": None}


def test_valid_sas_token_is_accepted() -> None:
    """A CONNECT with the right client id, username and signature passes."""
    verify_connect(_connect(), IDENTITY, KEY, time.time())


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (_connect(client_id="dev1/other"), "client id 'dev1/other' is not 'dev1/visionedge'"),
        (_connect(username="other/dev1/visionedge/"), "username 'other/dev1/visionedge/' does not start with"),
        (_connect(resource="hub.example.net/devices/dev1"), "SAS token resource 'hub.example.net/devices/dev1'"),
        (_connect(key=random_key()), "SAS token signature does not match the module key"),
        (_connect(expiry=int(time.time()) - 100), "SAS token expired"),
    ],
)
def test_bad_connects_are_rejected_with_the_reason(packet: ConnectPacket, reason: str) -> None:
    """Each broken part of a CONNECT is refused with a reason that names it."""
    with pytest.raises(AuthError) as caught:
        verify_connect(packet, IDENTITY, KEY, time.time())
    assert str(caught.value).startswith(reason)


def test_workload_api_signs_with_the_module_key_and_rejects_unknown_generations(tmp_path: Path) -> None:
    """The workload API serves the CA, signs with the module key, and answers 404 for an unknown generation id."""
    with running_devhub(tmp_path) as hub:
        socket_path = hub.workload.socket_path
        status, bundle = request_json(socket_path, "GET", "/trust-bundle?api-version=2019-01-30")
        assert status == 200
        assert bundle["certificate"].startswith("-----BEGIN CERTIFICATE-----")

        data = base64.b64encode(b"resource\n123").decode()
        request = {"keyId": "primary", "algo": "HMACSHA256", "data": data}
        url = f"/modules/visionedge/genid/{hub.generation_id}/sign?api-version=2019-01-30"
        status, signed = request_json(socket_path, "POST", url, request)
        assert (status, signed) == (200, {"digest": sign(hub.module_key, b"resource\n123")})

        status, refused = request_json(socket_path, "POST", "/modules/visionedge/genid/nope/sign", request)
        assert status == 404
        assert refused["message"] == "module 'visionedge' with generation id 'nope' not found"


def test_two_devhubs_run_side_by_side_and_clean_up(tmp_path: Path) -> None:
    """Each DevHub takes its own loopback IP; stop ends the broker and removes its temporary files and sockets."""
    with running_devhub(tmp_path / "a") as first, running_devhub(tmp_path / "b") as second:
        assert first.ip != second.ip
        runtime_dir, broker, workload_socket = first.runtime_dir, first.broker, first.workload.socket_path

    assert not broker.running
    assert not workload_socket.exists()
    assert not runtime_dir.exists()
    assert not first.running


def test_a_taken_ip_gives_a_clear_error(tmp_path: Path) -> None:
    """Asking for a loopback IP whose port 8883 is in use says so."""
    with running_devhub(tmp_path / "a") as first:
        second = DevHub(ip=first.ip)
        with pytest.raises(DevHubError, match=rf"port 8883 is taken on {first.ip}"):
            second.start()
        assert not second.running


def test_desired_set_before_start_is_kept(tmp_path: Path) -> None:
    """set_desired works before the hub starts: the twin starts from the merged document."""
    hub = DevHub(desired={"fps": 5})
    assert hub.set_desired({"fps": 8, "zone": "door"}) == 2
    with hub:
        assert hub.emulator.twin()["desired"] == {"fps": 8, "zone": "door", "$version": 2}
