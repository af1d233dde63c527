"""The command line as a user runs it: records out, one-line reasons for bad input, clean exits on signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from visionedge import __version__
from visionedge.models.catalog import ASSETS, builtin_manifest
from visionedge_devhub.broker import free_port

SIGNAL_EXIT_S = 5.0
"""docker stop and IoT Edge send SIGKILL 10 s after SIGTERM: a clean exit must come well inside that (it takes a
second or two; 2.1 s was seen on a loaded 2-core machine, so the old 2 s bound failed on load, not on a user's
concern)."""


def _single_error(stderr: str) -> str:
    """The one error line of a failed command; fails if there is a traceback or more than one."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line or " ERROR " in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_version(run_cli):
    """`python -m visionedge --version` prints the package version."""
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"visionedge {__version__}"


def test_analyze_image_with_detector_writes_valid_records(run_cli, media, tmp_path, record_validator):
    """`analyze IMAGE --model yolox-nano --jsonl OUT`: schema-valid records in the file, the summary on stderr."""
    out = tmp_path / "out.jsonl"
    done = run_cli("analyze", media("dog_bicycle_car.jpg"), "--model", "yolox-nano", "--jsonl", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1
    for record in records:
        record_validator.validate(record)
    record = records[0]
    assert record["model"] == {"name": "yolox-nano", "version": builtin_manifest("yolox-nano").version}
    assert (record["source_id"], record["frame_index"], record["frame_size"]) == ("dog_bicycle_car", 0, [768, 576])
    assert record["counts"] == {"dog": 1, "bicycle": 1, "car": 1, "truck": 1}
    summary = [line for line in done.stderr.splitlines() if line.startswith("frames ")]
    assert len(summary) == 1
    assert summary[0].startswith("frames 1 in ")
    assert summary[0].endswith("skipped 0, errors 0; counts: dog 1, bicycle 1, car 1, truck 1")


def test_analyze_image_with_default_classifier_prints_records_on_stdout(run_cli, media, record_validator):
    """Without --model and --jsonl, the default SqueezeNet's record is the only thing on stdout."""
    done = run_cli("analyze", media("kitten_224.png"), "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    record_validator.validate(record)
    assert record["model"]["name"] == "squeezenet"
    assert record["classifications"][0]["label"] == "tabby, tabby cat"
    assert record["counts"] == {"tabby, tabby cat": 1}


@pytest.fixture
def bad_model_dir(tmp_path, fetcher) -> Path:
    """A folder with a manifest whose width contradicts yolox_nano.onnx, and random bytes named x.onnx."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(fetcher.ensure(ASSETS["yolox_nano.onnx"]), folder / "wide.onnx")
    shutil.copyfile(fetcher.ensure(ASSETS["coco.names"]), folder / "coco.names")
    data = builtin_manifest("yolox-nano").model_dump(mode="json", exclude_none=True)
    (folder / "wide.yaml").write_text(yaml.safe_dump({**data, "file": "wide.onnx", "width": 640}), encoding="utf-8")
    (folder / "x.onnx").write_bytes(os.urandom(2048))
    (folder / "x.yaml").write_text(yaml.safe_dump({**data, "file": "x.onnx"}), encoding="utf-8")
    return folder


def test_analyze_missing_file(run_cli, tmp_path):
    """A path that does not exist: exit 1 and one line saying what a source can be."""
    done = run_cli("analyze", tmp_path / "nope.jpg")
    assert done.returncode == 1
    assert _single_error(done.stderr) == (
        f"visionedge: error: source {tmp_path / 'nope.jpg'} does not exist "
        "(expected a file, folder, camera index or stream URL)"
    )


def test_analyze_unreadable_video(run_cli, tmp_path):
    """A text file named x.avi: exit 1 and 'cannot open video'."""
    (tmp_path / "x.avi").write_text("this is not a video\n", encoding="utf-8")
    done = run_cli("analyze", tmp_path / "x.avi")
    assert done.returncode == 1
    assert _single_error(done.stderr) == (
        f"visionedge: error: cannot open video {tmp_path / 'x.avi'}: unreadable or not a video file"
    )


def test_analyze_unreadable_image(run_cli, tmp_path):
    """A text file named x.jpg: exit 1 and 'cannot decode image'."""
    (tmp_path / "x.jpg").write_text("this is not an image\n", encoding="utf-8")
    done = run_cli("analyze", tmp_path / "x.jpg", "--no-progress")
    assert done.returncode == 1
    assert _single_error(done.stderr) == (
        f"visionedge: error: cannot decode image {tmp_path / 'x.jpg'}: not an image file or unsupported format"
    )


def test_analyze_unknown_model(run_cli, media):
    """An unknown model name: exit 1 and the list of built-in models."""
    done = run_cli("analyze", media("kitten_224.png"), "--model", "mobilenet")
    assert done.returncode == 1
    assert _single_error(done.stderr) == (
        "visionedge: error: unknown model 'mobilenet': built-in models are squeezenet, squeezenet-fp32, "
        "tiny-yolov2, yolov3-tiny, yolox-nano, or give a path to an .onnx file with a manifest beside it"
    )


def test_analyze_manifest_not_matching_model(run_cli, media, bad_model_dir):
    """A manifest saying width 640 for a 416-wide model: exit 1 and both numbers."""
    done = run_cli("analyze", media("kitten_224.png"), "--model", bad_model_dir / "wide.onnx")
    assert done.returncode == 1
    assert _single_error(done.stderr) == (
        "visionedge: error: manifest width 640 does not match model input 'images' width 416"
    )


def test_analyze_file_that_is_not_onnx(run_cli, media, bad_model_dir):
    """Random bytes as the model: exit 1 and one line naming the file."""
    done = run_cli("analyze", media("kitten_224.png"), "--model", bad_model_dir / "x.onnx")
    assert done.returncode == 1
    assert _single_error(done.stderr).startswith("visionedge: error: x.onnx is not a loadable ONNX model: ")


class LineReader:
    """Reads a subprocess's stdout lines on a thread so the child never blocks on a full pipe."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        self._thread = threading.Thread(target=self._read, name="stdout-reader", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line)

    def wait_for(self, count: int, timeout: float) -> bool:
        """True once `count` lines have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline and self._process.poll() is None:
            time.sleep(0.02)
        return len(self.lines) >= count

    def join(self) -> None:
        """Wait for end of output."""
        self._thread.join(timeout=5)


def _rest_of_stderr(process: subprocess.Popen[str]) -> str:
    """What the ended process still had on stderr; its pipes are closed (no unclosed-file warnings)."""
    rest = process.stderr.read() if process.stderr else ""
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    return rest


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.timeout(90)
def test_run_streams_records_and_exits_cleanly_on_signal(signum, cli_env, media, record_validator):
    """`visionedge run` streams records on stdout; SIGTERM or SIGINT stops it with exit 0 well inside
    the 10 s a container runtime waits before SIGKILL."""
    command = [sys.executable, "-m", "visionedge", "run", "--source", str(media("vtest.avi")), "--model", "squeezenet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        reader = LineReader(process)
        assert reader.wait_for(3, timeout=60), process.stderr.read() if process.poll() is not None else "no records"
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join()
    stderr = _rest_of_stderr(process)
    assert code == 0, stderr
    assert took < SIGNAL_EXIT_S, f"exited {took:.2f} s after {signum.name}"
    assert "Traceback" not in stderr
    assert f"received {signum.name}: stopping" in stderr
    records = [json.loads(line) for line in reader.lines]
    assert len(records) >= 3
    for record in records:
        record_validator.validate(record)
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    assert {r["model"]["name"] for r in records} == {"squeezenet"}


@pytest.mark.timeout(120)
def test_sigterm_at_any_moment_of_start_up_ends_cleanly(cli_env, media):
    """SIGTERM landing anywhere in start-up (native imports, model load) exits 143 or 0, never a traceback or 1.

    An exception raised by the early handler inside a native module's import (pydantic_core) once ended a
    container with exit 1 and a panic; the sweep puts the signal at points across the whole start.
    """
    script = Path(sys.executable).with_name("visionedge")
    command = [str(script), "run", "--source", str(media("vtest.avi")), "--duration", "30"]
    outcomes = []
    for delay in [i * 0.04 for i in range(20)]:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env)
        time.sleep(delay)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)  # --duration 30: a lingering timer would hold the exit
        # -15: the signal came before Python ran any code, and the default action ended it
        code = process.returncode
        assert code in (0, 128 + signal.SIGTERM, -signal.SIGTERM), f"exit {code} at {delay:.2f} s: {stderr}"
        assert "Traceback" not in stderr, stderr
        assert "Panic" not in stderr, stderr
        outcomes.append(process.returncode)
    assert 128 + signal.SIGTERM in outcomes  # the sweep did land in start-up, not only in the running loop


@pytest.mark.timeout(90)
def test_run_with_no_arguments_plays_the_sample_video(run_cli):
    """`visionedge run --duration 2` (the demo) analyses the bundled sample video with the default model."""
    done = run_cli("run", "--duration", "2", timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records, done.stderr
    assert {r["model"]["name"] for r in records} == {"squeezenet"}
    assert {r["source_id"] for r in records} == {"camera"}
    assert {tuple(r["frame_size"]) for r in records} == {(768, 576)}
    assert "stopped after" in done.stderr


CI_MARKERS = ("CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "BUILD_BUILDID")
"""onnxruntime suppresses its telemetry by itself under these; the test below must not rely on that."""


def test_onnxruntime_leaves_nothing_under_home(run_cli, cli_env, media, tmp_path):
    """`analyze` writes no onnxruntime telemetry (a device id and upload queue under $HOME when it is on)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in cli_env.items() if k not in CI_MARKERS and k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(home)
    done = run_cli("analyze", media("kitten_224.png"), "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []


@pytest.mark.timeout(90)
def test_local_run_serves_health_and_metrics(cli_env, media, tmp_path):
    """Outside IoT Edge, `run` answers /healthz (ready) and /metrics on local.metrics_port, as the image expects."""
    port = free_port()
    config = tmp_path / "visionedge.yaml"
    config.write_text(yaml.safe_dump({"local": {"metrics_port": port}}), encoding="utf-8")
    command = [sys.executable, "-m", "visionedge", "--config", str(config), "run", "--source", str(media("vtest.avi")),
               "--sink", f"jsonl:{tmp_path / 'out.jsonl'}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env)
    health: dict[str, object] = {}
    analyzed = 0.0
    try:
        deadline = time.monotonic() + 60
        while not (health.get("ready") and analyzed) and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    health = json.loads(answer.read())
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                    lines = answer.read().decode().splitlines()
                analyzed = float(next(x for x in lines if x.startswith("visionedge_frames_analyzed_total")).split()[-1])
            except OSError:
                pass
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = _rest_of_stderr(process)
    assert (health["ready"], health["model"], health["source_state"], health["hub_connected"]) == (
        True, True, "streaming", False), stderr
    assert analyzed >= 1
    assert code == 0, stderr
