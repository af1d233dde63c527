"""kill -9 at any moment of an update: the restart comes up on the last good model, offline, with no leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from visionedge.config import ModelRef
from visionedge.download import DownloadPolicy
from visionedge.models.fetch import Fetcher
from visionedge.modelstore import ModelManager, ModelStore
from visionedge_devhub.certs import CertBundle

from tests.support import wait_until

from .conftest import Refs
from .support import RUNTIME, ModelServer

CHILD = Path(__file__).with_name("crash_child.py")
SQUEEZENET = "squeezenet@1.1-winml-fp16"
YOLOX = "yolox-nano@2"


@pytest.mark.parametrize(("moment", "survivor"), [
    ("download", SQUEEZENET),
    ("install", SQUEEZENET),
    ("pointer", SQUEEZENET),
    ("swap", SQUEEZENET),
    ("none", YOLOX),
])
def test_kill_9_during_an_update_restarts_on_the_last_good_model(
        moment: str, survivor: str, tmp_path: Path, certs: CertBundle, fetcher: Fetcher, server: ModelServer,
        refs: Refs, policy: DownloadPolicy) -> None:
    """The child dies mid-update; a fresh store cleans staging and loads the last committed version."""
    root = tmp_path / "models"
    ModelStore(root, policy, fetcher).load_active(RUNTIME)
    kind = "slow/400000" if moment == "download" else "files"
    block = refs("yolox", "2", url=server.url("yolox_nano.onnx", kind=kind))
    marker = tmp_path / "marker"
    args = {"root": str(root), "ca": str(certs.ca_cert), "cache": str(fetcher.cache_dir),
            "mirrors": [str(m) for m in fetcher.mirrors], "block": block, "av": 2, "marker": str(marker),
            "pause": moment}
    log = (tmp_path / "child.log").open("w", encoding="utf-8")
    child = subprocess.Popen([sys.executable, str(CHILD), json.dumps(args)], stdout=log, stderr=log)
    part = root / "staging" / YOLOX / "model.onnx.part"
    try:
        def child_log() -> str:
            return (tmp_path / "child.log").read_text(encoding="utf-8")

        if moment == "download":
            wait_until(lambda: part.is_file() and part.stat().st_size > 300_000, 60, "a partial download",
                       detail=child_log)
        else:
            expected = "done 200" if moment == "none" else moment
            wait_until(lambda: marker.is_file() and marker.read_text(encoding="utf-8") == expected, 60,
                       f"the child to reach {expected!r}", detail=child_log)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        log.close()

    store = ModelStore(root, policy, fetcher)
    store.cleanup_staging()
    model = store.load_active(RUNTIME)
    assert f"{model.name}@{model.version}" == survivor
    assert (store.active(), store.trial()) == (survivor, None)
    assert list(store.staging_dir.iterdir()) == []
    assert [p.name for p in root.rglob("*") if p.name.endswith(".part") or p.name.startswith(".tmp-")] == []
    assert store.installed() == sorted({SQUEEZENET, survivor})
    assert store.interrupted_trial == (YOLOX if moment == "swap" else None)


def test_a_version_that_died_on_probation_is_not_retried_on_redelivery(
        tmp_path: Path, certs: CertBundle, fetcher: Fetcher, refs: Refs, policy: DownloadPolicy) -> None:
    """It may have killed the process: the same block re-sent after the restart is refused, not run again."""
    root = tmp_path / "models"
    first = ModelStore(root, policy, fetcher)
    first.load_active(RUNTIME)
    staged = first.stage(ModelRef(**refs("yolox", "2")), RUNTIME)
    first.install(staged)
    first.begin_trial(YOLOX)  # what the manager writes just before the swap; then the process died

    store = ModelStore(root, policy, fetcher)
    acks: list[dict[str, object]] = []
    manager = ModelManager(store, store.load_active(RUNTIME), swap=lambda m: None, report=acks.append)
    manager.start()
    try:
        assert manager.request(ModelRef(**refs("yolox", "2")), 9)
        wait_until(lambda: len(acks) == 1, 30, "the first acknowledgement")
    finally:
        manager.stop()
    assert acks == [{"value": {"name": "squeezenet"}, "ac": 500, "av": 9,
                     "ad": f"{YOLOX} was on probation when the module stopped unexpectedly, so it is not tried "
                           "again; publish it under a new version to retry"}]
    assert store.active() == SQUEEZENET
