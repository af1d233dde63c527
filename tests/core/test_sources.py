"""Frame sources: files in order without drops, image folders, and a live MJPEG camera that goes away and comes back."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import threading
from collections.abc import Iterator

import pytest
from visionedge.config import SourceSettings
from visionedge.pipeline import Pipeline
from visionedge.sources import ImageSource, LiveSource, SourceState, VideoFileSource, open_source

from tests.support import wait_until

from .support import CollectSink, MjpegCamera, epoch

LIVE = {"reconnect_initial_s": 0.2, "reconnect_max_s": 0.5, "watchdog_s": 5.0}


class Running:
    """A pipeline running on its own thread, with the source's state changes recorded in order."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.stop = threading.Event()
        self.states: list[SourceState] = []
        pipeline.feeds[0].source.listeners.append(lambda _id, state, _reason: self.states.append(state))
        self.thread = threading.Thread(target=pipeline.run, args=(self.stop,), name="test-pipeline", daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "pipeline did not stop within 10 s of the stop event"


@pytest.fixture
def camera(vtest_jpegs) -> Iterator[MjpegCamera]:
    """A live MJPEG camera at 20 fps on a local port."""
    cam = MjpegCamera(vtest_jpegs, fps=20).start()
    yield cam
    cam.stop()


@pytest.mark.timeout(120)
def test_analyze_video_file_gives_every_frame_in_order(run_cli, media, tmp_path, record_validator):
    """`visionedge analyze vtest.avi` writes 795 records, frame_index 0..794 in order, none dropped."""
    out = tmp_path / "vtest.jsonl"
    done = run_cli("analyze", media("vtest.avi"), "--model", "squeezenet", "--jsonl", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 795
    assert [r["frame_index"] for r in records] == list(range(795))
    assert {r["source_id"] for r in records} == {"vtest"}
    assert {tuple(r["frame_size"]) for r in records} == {(768, 576)}
    for record in records:
        record_validator.validate(record)
    assert "frames 795 in" in done.stderr
    assert "skipped 0, errors 0" in done.stderr
    # timestamps are video time (vtest is 10 fps), not read time: the day of a report is the video's length
    times = [epoch(r["timestamp"]) for r in records]
    assert times[-1] - times[0] == pytest.approx(79.4, abs=0.002)
    assert all(b - a == pytest.approx(0.1, abs=0.002) for a, b in itertools.pairwise(times))


def test_a_stop_before_the_first_frame_is_not_a_broken_video(media):
    """SIGTERM just as capture starts: the source ends quietly; "no decodable frames" (exit 1) is for real files."""

    class StopWhileOpening(threading.Event):
        """Not set when the source looks before opening the file, set from the next look on."""

        looks = 0

        def is_set(self) -> bool:
            self.looks += 1
            return self.looks > 1

    source = VideoFileSource(media("vtest.avi"), "vtest")
    assert list(source.frames(StopWhileOpening())) == []
    assert source.state == SourceState.ENDED


def test_a_truncated_video_is_analysed_up_to_its_break_and_says_so(media, tmp_path, caplog):
    """A video cut short (a copy interrupted, a card pulled) gives every frame it still has, then one warning."""
    cut = tmp_path / "cut.avi"
    data = media("vtest.avi").read_bytes()
    cut.write_bytes(data[:len(data) // 3])
    source = open_source(SourceSettings(id="cut", uri=str(cut)), for_analysis=True)
    frames = list(source.frames(threading.Event()))
    assert 100 < len(frames) < 795
    assert [f.index for f in frames] == list(range(len(frames)))
    assert f"ended after {len(frames)} of the 795 frames it declares: truncated or damaged" in caplog.text
    assert source.state == SourceState.ENDED


def test_video_file_source_for_analysis_neither_loops_nor_paces(media):
    """A video opened for analysis reports its frame count and is read once, unpaced; for `run` it loops."""
    settings = SourceSettings(uri=str(media("vtest.avi")))
    analysis = open_source(settings, for_analysis=True)
    assert isinstance(analysis, VideoFileSource)
    assert (analysis.total, analysis.loop, analysis.realtime, analysis.live) == (795, False, False, False)
    live = open_source(settings)
    assert isinstance(live, VideoFileSource)
    assert (live.total, live.loop, live.realtime, live.live) == (None, True, True, True)


def test_image_folder_is_read_in_name_order_skipping_undecodable_files(tmp_path, media, model, caplog):
    """A folder gives one record per decodable image, in name order; a broken .jpg is skipped with a warning."""
    folder = tmp_path / "shots"
    folder.mkdir()
    shutil.copyfile(media("kitten_224.png"), folder / "a_kitten.png")
    (folder / "b_broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    shutil.copyfile(media("fish_224.png"), folder / "c_fish.png")
    (folder / "d_notes.txt").write_text("not an image", encoding="utf-8")
    shutil.copyfile(media("golden_retriever.jpg"), folder / "e_golden.jpg")
    source = open_source(SourceSettings(uri=str(folder), id="shots"), for_analysis=True)
    assert isinstance(source, ImageSource)
    assert source.total == 4
    sink = CollectSink()
    caplog.set_level(logging.WARNING, logger="visionedge")
    Pipeline(source, model("squeezenet"), [sink]).run(threading.Event())
    assert [r["frame_index"] for r in sink.records] == [0, 2, 3]
    assert [r["classifications"][0]["label"] for r in sink.records] == [
        "tabby, tabby cat", "tench, Tinca tinca", "golden retriever"
    ]
    assert any(m.startswith(f"skipping {folder / 'b_broken.jpg'}: not a decodable image") for m in caplog.messages)
    assert source.state is SourceState.ENDED


@pytest.mark.timeout(90)
def test_live_mjpeg_stream_reconnects_after_an_outage(camera, model):
    """Records flow from an MJPEG camera; when it dies the source is retrying, when it returns records resume."""
    source = LiveSource(camera.url(), "door", SourceSettings(uri=camera.url(), **LIVE))
    sink = CollectSink()
    with Running(Pipeline(source, model("squeezenet"), [sink])) as running:
        assert sink.wait_for(5, timeout=30), f"no records from the camera (state {source.state}: {source.reason})"
        assert source.state is SourceState.STREAMING

        camera.stop()
        wait_until(lambda: source.state is SourceState.RETRYING, 20, "retrying", detail=lambda: source.state)
        assert "stopped delivering frames" in source.reason or "cannot open" in source.reason
        before = len(sink.records)
        last_index = sink.records[-1]["frame_index"]

        camera.start()  # same port: the camera is back
        wait_until(lambda: source.state is SourceState.STREAMING, 20, "streaming", detail=lambda: source.reason)
        assert sink.wait_for(before + 5, timeout=30), "records did not resume after the camera came back"

    assert running.states[:2] == [SourceState.STREAMING, SourceState.RETRYING]
    assert running.states[-1] is SourceState.STREAMING
    resumed = [r["frame_index"] for r in sink.records[before:]]
    assert resumed[-1] > last_index
    assert resumed == sorted(resumed)
    assert camera.connections >= 2
    assert {r["source_id"] for r in sink.records} == {"door"}


@pytest.mark.timeout(90)
def test_stream_credentials_never_reach_logs_or_description(vtest_jpegs, model, caplog, capfd):
    """user:secret in a stream URL is used to connect but never appears in logs, native output or the description."""
    camera = MjpegCamera(vtest_jpegs, fps=20, credentials=("viewer", "s3cr3t-pw")).start()
    camera.stop()  # the port is known; the camera is down at first, so the retry path logs too
    url = camera.url(userinfo="viewer:s3cr3t-pw")
    caplog.set_level(logging.DEBUG)
    source = LiveSource(url, "gate", SourceSettings(uri=url, **LIVE))
    assert source.description == f"http://***@127.0.0.1:{camera.port}/video"
    sink = CollectSink()
    try:
        with Running(Pipeline(source, model("squeezenet"), [sink])):
            wait_until(lambda: source.state is SourceState.RETRYING, 20, "retrying", detail=lambda: source.state)
            camera.start()
            assert sink.wait_for(3, timeout=30), f"no frames with credentials ({source.state}: {source.reason})"
    finally:
        camera.stop()
    assert camera.connections >= 1  # only an authorised request gets frames
    native = capfd.readouterr()
    assert "s3cr3t-pw" not in caplog.text
    assert "s3cr3t-pw" not in native.out + native.err
    assert "s3cr3t-pw" not in source.description + source.reason
    assert f"http://***@127.0.0.1:{camera.port}/video" in caplog.text
