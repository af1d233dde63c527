"""Disk and state faults at start: a full disk, an outbox of another schema, saved settings of the wrong shape."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from visionedge.config import DesiredProperties, OutboxSettings
from visionedge.download import DownloadPolicy
from visionedge.edge.twin import DesiredState
from visionedge.errors import FetchError
from visionedge.models.catalog import ASSETS
from visionedge.models.fetch import Fetcher
from visionedge.telemetry.events import Event
from visionedge.telemetry.outbox import Outbox

from tests.support import fill_disk


@pytest.fixture
def full_disk(tmpfs: Callable[[str], Path]) -> Path:
    """1 MB: smaller than any model, so a first-boot copy runs out of space."""
    return tmpfs("1m")


def test_first_boot_copy_on_a_full_disk_gives_one_line_and_leaves_no_part_file(
    full_disk: Path, mirror_dirs: list[Path]
) -> None:
    """Copying SqueezeNet from the mirror into a 1 MB cache fails with the system's reason; no .part remains."""
    fetcher = Fetcher(full_disk / "cache", list(mirror_dirs), DownloadPolicy())
    asset = ASSETS["squeezenet1.1_fp16.onnx"]
    reason = r"cannot copy squeezenet1\.1_fp16\.onnx from mirror .*: No space left on device"
    with pytest.raises(FetchError, match=reason):
        fetcher.ensure(asset)
    assert list((full_disk / "cache").rglob("*.part")) == []


def test_an_outbox_of_another_schema_is_moved_aside_and_counted(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A database with an `events` table of other columns is set aside (kept), counted, and a fresh one used."""
    conn = sqlite3.connect(tmp_path / "outbox.sqlite")
    conn.execute("CREATE TABLE events (x TEXT)")
    conn.commit()
    conn.close()
    with caplog.at_level(logging.ERROR):
        outbox = Outbox(tmp_path, OutboxSettings())
    try:
        assert outbox.stats().corrupt_resets == 1
        assert len(list(tmp_path.glob("outbox.sqlite.corrupt-*"))) == 1
        assert any("unexpected schema {'events': ['x']}" in m for m in caplog.messages)
    finally:
        outbox.close()


@pytest.mark.parametrize("content", ['["a", "list"]', '{"version": 3}', '{"version": "x", "settings": {}}', "\xff{"],
                         ids=["list", "no-settings", "bad-version", "not-utf8"])
def test_saved_settings_of_the_wrong_shape_are_moved_aside(tmp_path: Path, content: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Unusable saved settings: one error line, the file kept beside under .corrupt-*, the defaults in effect."""
    cache = tmp_path / "twin-desired.json"
    cache.write_bytes(content.encode("latin-1"))
    state = DesiredState(DesiredProperties(), cache=cache)
    with caplog.at_level(logging.ERROR):
        settings = state.restore()
    assert settings == DesiredProperties()
    assert not cache.exists()
    assert len(list(tmp_path.glob("twin-desired.json.corrupt-*"))) == 1
    errors = [m for m in caplog.messages if "are unusable" in m]
    assert len(errors) == 1
    assert "\n" not in errors[0]


def test_only_accepted_settings_are_saved_and_restored(tmp_path: Path) -> None:
    """A value reverted after it failed to apply is not what the next start restores."""
    cache = tmp_path / "twin-desired.json"
    state = DesiredState(DesiredProperties(), cache=cache)
    before = state.settings
    state.apply({"source": {"uri": "/missing.mp4"}, "inference": {"top_k": 3}}, 7, full=True)
    state.revert("source", before)
    state.commit()
    saved = json.loads(cache.read_text(encoding="utf-8"))
    assert saved["settings"]["source"]["uri"] == "sample"
    assert (cache.stat().st_mode & 0o777) == 0o600
    restored = DesiredState(DesiredProperties(), cache=cache).restore()
    assert (restored.source.uri, restored.inference.top_k) == ("sample", 3)


def test_an_outbox_on_a_full_disk_keeps_true_counts_and_recovers(tmpfs: Callable[[str], Path]) -> None:
    """Writes refused by a full disk (the COMMIT itself) change no counter; freed, the same outbox works on."""
    disk = tmpfs("2m")
    outbox = Outbox(disk / "data", OutboxSettings())
    try:
        events = [Event("results", {"type": "result", "n": i, "pad": "x" * 200}, f"m{i}", "cam", i, time.time())
                  for i in range(1, 61)]
        outbox.put(events[:50])
        filler = disk / "filler"
        fill_disk(filler)
        batch = outbox.next_batch(10, True)
        for attempt in (lambda: outbox.put(events[50:]), lambda: outbox.ack([i.row_id for i in batch])):
            with pytest.raises(sqlite3.OperationalError, match="full"):
                attempt()
            assert outbox.stats().depth == 50
        filler.unlink()
        outbox.ack([i.row_id for i in batch])
        outbox.put(events[50:])
        assert outbox.stats().depth == 50
    finally:
        outbox.close()
