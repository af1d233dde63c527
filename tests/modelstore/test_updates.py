"""Update bookkeeping: supersede, idempotent re-delivery, operator rollback, start-up fallbacks."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from visionedge.config import ModelRef
from visionedge.download import DownloadPolicy
from visionedge.models.fetch import Fetcher
from visionedge.modelstore import ModelManager, ModelStore

from tests.support import wait_until

from .conftest import MakeHarness, Refs
from .support import RUNTIME, ModelServer

SQUEEZENET = "squeezenet@1.1-winml-fp16"
SQUEEZENET_NAMED = {"name": "squeezenet", "version": "1.1-winml-fp16"}


def test_a_newer_desired_version_cancels_a_slow_download(make_harness: MakeHarness, refs: Refs,
                                                         server: ModelServer) -> None:
    """Version 2 crawls in from a throttled server; version 3 arrives, cancels it, and only 3 ends active."""
    h = make_harness()
    slow = server.url("yolox_nano.onnx", kind="slow/300000")
    assert h.request(refs("yolox", "2", url=slow), 2)
    wait_until(lambda: any(a["ad"] == "downloading yolox-nano@2 10%" for a in h.acks), 30, "a 10% progress ack",
               detail=lambda: h.acks)
    assert h.request(refs("squeezenet", "3"), 3)
    assert h.outcome(3)["ad"] == "squeezenet-custom@3 is active"
    assert [a for a in h.acks if a["av"] == 2 and a["ac"] != 202] == []
    assert h.store.active() == "squeezenet-custom@3"
    assert h.store.installed() == ["squeezenet-custom@3", SQUEEZENET]
    assert list(h.store.staging_dir.iterdir()) == []
    assert h.swaps == ["squeezenet-custom@3"]
    assert server.hits["/slow/300000/yolox_nano.onnx"] == 1


def test_redelivered_desired_version_does_nothing_even_after_a_restart(make_harness: MakeHarness, refs: Refs,
                                                                       server: ModelServer, policy: DownloadPolicy,
                                                                       fetcher: Fetcher) -> None:
    """The SDK re-sends the whole desired document after reconnects: no second download, no second swap."""
    h = make_harness()
    url = server.url("yolox_nano.onnx", kind="files/redelivery")
    block = refs("yolox", "5", url=url)
    assert h.request(block, 5)
    assert h.outcome(5)["ac"] == 200
    acks = len(h.acks)
    assert not h.request(block, 5)
    time.sleep(0.3)
    assert len(h.acks) == acks
    assert h.request(block, 6)  # another desired key changed: a new $version, the same model content
    assert h.outcome(6) == {"value": block, "ac": 200, "av": 6, "ad": "yolox-nano@5 is already active"}
    assert h.swaps == ["yolox-nano@5"]
    h.stop()

    store = ModelStore(h.store.root, policy, fetcher)
    restarted = ModelManager(store, store.load_active(RUNTIME), swap=h.swaps.append, report=h.acks.append)
    assert not restarted.request(ModelRef(**block), 6)
    assert server.hits["/files/redelivery/yolox_nano.onnx"] == 1


def test_rollback_model_goes_back_and_sticks_until_the_block_changes(make_harness: MakeHarness,
                                                                      refs: Refs) -> None:
    """rollbackModel returns to the previous version and keeps the one it left as previous; re-deliveries of the
    undone block do not re-apply it."""
    h = make_harness()
    assert h.request(refs("yolox", "2"), 2)
    assert h.outcome(2)["ac"] == 200
    text = f"rolled back yolox-nano@2 to {SQUEEZENET} on request (rollbackModel)"
    yolox = {"name": "yolox-nano", "version": "2"}
    assert h.manager.rollback_now() == {
        "status": 200, "payload": {"message": text, "active": SQUEEZENET_NAMED, "previous": yolox}}
    assert h.acks[-1] == {"value": {"name": "squeezenet"}, "ac": 200, "av": 2, "ad": text}
    assert (h.store.active(), h.store.previous(), h.swaps) == (SQUEEZENET, "yolox-nano@2",
                                                               ["yolox-nano@2", SQUEEZENET])
    assert h.store.installed() == sorted([SQUEEZENET, "yolox-nano@2"])

    assert h.request(refs("yolox", "2"), 3)
    assert h.outcome(3) == {"value": {"name": "squeezenet"}, "ac": 200, "av": 3, "ad": text}
    assert h.manager.status()["previous"] == yolox
    assert h.request(refs("yolox", "2.1"), 4)
    assert h.outcome(4)["ad"] == "yolox-nano@2.1 is active"
    assert h.manager.status() == {
        "state": "idle", "active": {"name": "yolox-nano", "version": "2.1"}, "previous": SQUEEZENET_NAMED,
        "trial": None, "progress": None, "desired_version": 4, "last_error": "", "ack": h.acks[-1]}


def test_a_damaged_active_version_falls_back_to_the_previous_one(make_harness: MakeHarness, refs: Refs,
                                                                  policy: DownloadPolicy, fetcher: Fetcher) -> None:
    """A restart verifies the active files again; a damaged version is skipped, never run."""
    h = make_harness()
    assert h.request(refs("yolox", "2"), 2)
    assert h.outcome(2)["ac"] == 200
    h.stop()
    model_file = h.store.versions_dir / "yolox-nano@2" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])

    store = ModelStore(h.store.root, policy, fetcher)
    model = store.load_active(RUNTIME)
    assert (model.name, model.version) == ("squeezenet", "1.1-winml-fp16")
    assert store.history() == (SQUEEZENET,)
    assert store.load_errors == ["yolox-nano@2: installed model yolox-nano@2 is damaged: installed "
                                 "yolox-nano@2/model.onnx: size 1000 bytes, expected 3660092"]
    assert store.installed() == [SQUEEZENET]


def test_an_unreadable_pointer_comes_up_on_the_built_in_default(tmp_path: Path, policy: DownloadPolicy,
                                                                 fetcher: Fetcher) -> None:
    """No usable pointer: the built-in default is fetched (mirror), installed and made active."""
    root = tmp_path / "models"
    root.mkdir()
    (root / "active.json").write_text("{not json", encoding="utf-8")
    store = ModelStore(root, policy, fetcher)
    model = store.load_active(RUNTIME)
    assert (model.name, model.version) == ("squeezenet", "1.1-winml-fp16")
    assert json.loads((root / "active.json").read_text(encoding="utf-8"))["history"] == [SQUEEZENET]


def test_a_built_in_name_without_url_is_fetched_through_the_catalog(make_harness: MakeHarness) -> None:
    """{"name": "yolox-nano"} comes from the mirror (pinned sha256) and is stored and pointed to like any other."""
    h = make_harness()
    assert h.request({"name": "yolox-nano"}, 2)
    assert h.outcome(2) == {"value": {"name": "yolox-nano"}, "ac": 200, "av": 2,
                            "ad": "yolox-nano@0.1.1-coco is active"}
    assert (h.store.active(), h.store.previous()) == ("yolox-nano@0.1.1-coco", SQUEEZENET)
    files = h.store.info("yolox-nano@0.1.1-coco")["files"]  # type: ignore[index]
    assert sorted(files) == ["labels.txt", "manifest.yaml", "model.onnx"]
    assert files["model.onnx"] == {"size": 3660092,
                                   "sha256": "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"}
    assert h.request({"name": "yolox-nano", "version": "2"}, 3)
    assert h.outcome(3)["ad"] == ("built-in model 'yolox-nano' is version '0.1.1-coco', not '2'; other versions "
                                  "need url and sha256")


def test_a_bug_in_the_manager_loop_restarts_it_and_updates_still_land(
        make_harness: MakeHarness, refs: Refs, caplog: pytest.LogCaptureFixture) -> None:
    """The model-manager thread is supervised: a crash is logged with its reason, the loop comes back, the update
    queued meanwhile is applied."""
    h = make_harness()
    serve = h.manager._serve_rollbacks
    crashes = []

    def crash_once() -> None:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("injected bug")
        serve()

    h.manager._serve_rollbacks = crash_once  # type: ignore[method-assign]
    wait_until(lambda: h.manager.part.reason != "", 5, "the crash to be recorded")
    assert h.request(refs("squeezenet", "7"), 7)
    assert h.outcome(7)["ad"] == "squeezenet-custom@7 is active"
    assert h.manager.part.restarts == 1
    assert "injected bug" in caplog.text
    h.stop()
