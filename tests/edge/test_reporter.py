"""The reporter replaces reported values although the hub merges patches: fields that went away are nulled."""

from __future__ import annotations

import threading
from typing import Any, cast

from visionedge.acks import merge_patch
from visionedge.edge.client import HubClient
from visionedge.edge.reporter import Reporter

from tests.support import wait_until


class FakeClient:
    """Merges reported patches as IoT Hub does (null deletes, objects merge at every depth)."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.reported: dict[str, Any] = {}
        self.patches: list[dict[str, Any]] = []

    def patch_reported(self, patch: dict[str, Any]) -> None:
        self.patches.append(patch)
        merge_patch(self.reported, patch)


DOWNLOADED = {"name": "squeezenet-custom", "version": "3", "url": "https://models.example/sq.onnx",
              "sha256": "0" * 64, "manifest": {"task": "classify", "decoder": {"type": "yolox", "strides": [8]}}}


def sent(reporter: Reporter, client: FakeClient, patch: dict[str, Any]) -> None:
    count = len(client.patches)
    reporter.report(patch)
    wait_until(lambda: len(client.patches) > count, timeout=5, what="the patch to be sent")


def test_a_new_value_replaces_the_old_one_in_the_twin() -> None:
    """A built-in model's ack after a downloaded model's: the twin holds exactly the new value, no version/url left."""
    client = FakeClient()
    reporter = Reporter(cast(HubClient, client), retry_s=0.05)
    reporter.start()
    try:
        sent(reporter, client, {"model": {"value": DOWNLOADED, "ac": 202, "av": 3, "ad": "downloading"}})
        builtin = {"value": {"name": "squeezenet"}, "ac": 200, "av": 4, "ad": "squeezenet@1.1 is already active"}
        sent(reporter, client, {"model": builtin})
        assert client.reported["model"] == builtin
        sent(reporter, client, {"model": {**builtin, "value": {**DOWNLOADED, "manifest": {"task": "classify"}}}})
        sent(reporter, client, {"model": {**builtin, "value": DOWNLOADED}})
        assert client.reported["model"]["value"] == DOWNLOADED
    finally:
        reporter.stop()


def test_what_the_twin_held_at_connect_is_replaced_too() -> None:
    """After a restart the module knows the old value only from the twin it read at connect."""
    client = FakeClient()
    client.reported = {"model": {"value": dict(DOWNLOADED), "ac": 400, "av": 3, "ad": "sha256 mismatch"}}
    reporter = Reporter(cast(HubClient, client), retry_s=0.05)
    reporter.seed({**client.reported, "$version": 7})
    reporter.start()
    try:
        builtin = {"value": {"name": "squeezenet"}, "ac": 200, "av": 4, "ad": "squeezenet@1.1 is already active"}
        sent(reporter, client, {"model": builtin})
        assert client.reported["model"] == builtin
    finally:
        reporter.stop()
