"""On-device calibration's parts: the bounded sample of the camera's own frames and the low-priority quantizing
child. The phase end to end (switch, refusal, kill -9, discard on update) is tests/edge/test_calibration_e2e.py; its
slower, failed and out-of-time verdicts are tests/modelstore/test_calibrating.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from visionedge.download import sha256_file
from visionedge.frame import Frame
from visionedge.models.fetch import resolve_model
from visionedge.modelstore.calibration import FrameSample, start_quantizer
from visionedge.quantize import sample_frames

BUILTIN = Path(__file__).resolve().parents[2] / "modules/visionedge/visionedge/models/builtin/squeezenet.yaml"
CHILD_TIMEOUT_S = 600
BUSY_MACHINE_NICE = 0
"""The kill test needs the child to reach its scratch folder soon on a busy shared machine; the default priority is
checked on its own (test_the_quantizer_runs_at_the_lowest_priority_on_one_core)."""


@pytest.fixture(scope="module")
def squeezenet(fetcher):
    """The default SqueezeNet (the fp16 file) as resolved from the mirror."""
    return resolve_model("squeezenet", fetcher)


def fill(sample: FrameSample, frames: list[Frame]) -> None:
    """Offer frames as if they came SAMPLE_EVERY_S apart."""
    for i, frame in enumerate(frames):
        sample.offer(frame, now=i * sample.every_s)


def test_the_sample_is_bounded_in_count_and_bytes_and_gone_once_discarded(media, tmp_path):
    """Frames are kept only every few seconds, never beyond the caps, and a crash's leftovers are wiped at start."""
    frames = list(sample_frames([media("vtest.avi")], 12))
    sample = FrameSample(tmp_path / "sample", max_frames=5)
    assert not sample.offer(frames[0], now=0.0) or not sample.offer(frames[1], now=0.5), "one frame per interval"
    fill(sample, frames[1:])
    assert sample.count == 5
    assert sample.full
    assert sample.bytes == sum(p.stat().st_size for p in sample.paths())
    small = FrameSample(tmp_path / "small", max_bytes=sample.paths()[0].stat().st_size + 1)
    fill(small, frames)
    assert small.count == 1, "the byte cap stops the sample"
    sample.discard()
    assert not (tmp_path / "sample").exists()
    (tmp_path / "small" / "9999.jpg").write_bytes(b"left by a crash")
    assert FrameSample(tmp_path / "small").count == 0


def test_kill_9_during_calibration_leaves_no_variant_and_the_served_file_untouched(squeezenet, media, tmp_path):
    """The child dies mid-way: nothing is discoverable, the model file is as it was, the scratch goes next time."""
    before = sha256_file(squeezenet.model_path)
    sample = FrameSample(tmp_path / "sample")
    fill(sample, list(sample_frames([media("vtest.avi")], 20)))
    out = tmp_path / "variants"
    child = start_quantizer(BUILTIN, squeezenet.model_path, squeezenet.labels_path, sample, out,
                            nice=BUSY_MACHINE_NICE)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not list(out.glob(".calibrating-*")) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL, "killed before it finished"
    assert not list(out.glob("*.yaml"))
    assert not list(out.glob("*.onnx"))
    assert sha256_file(squeezenet.model_path) == before
    sample.discard()
    assert not (tmp_path / "sample").exists(), "no frame outlives its use"
    again = start_quantizer(BUILTIN, squeezenet.model_path, squeezenet.labels_path, FrameSample(tmp_path / "s2"), out)
    again.kill()
    again.communicate()
    assert not list(out.glob(".calibrating-*")), "a killed child's scratch is removed by the next start"


def test_the_quantizer_runs_at_the_lowest_priority_on_one_core(squeezenet, media, tmp_path):
    """By default the child yields to the serving model: nice 19, one core (that it dies with the module is
    tests/edge/test_calibration_e2e.py's kill -9 test)."""
    sample = FrameSample(tmp_path / "sample")
    fill(sample, list(sample_frames([media("vtest.avi")], 4)))
    child = start_quantizer(BUILTIN, squeezenet.model_path, squeezenet.labels_path, sample, tmp_path / "variants")
    try:
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert int(fields[16]) == 19, "niceness"
        assert len(os.sched_getaffinity(child.pid)) == 1
    finally:
        child.kill()
        child.communicate()
