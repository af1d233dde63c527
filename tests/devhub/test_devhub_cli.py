"""`visionedge-devhub up` in a subprocess, driven by its client subcommands and a real SDK module client."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse

pytestmark = pytest.mark.timeout(60)


def _cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run one `python -m visionedge_devhub` command and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "visionedge_devhub", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def devhub_up(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """Run `up` until the ready line; yield its work dir and the exported environment; Ctrl-C it after."""
    work_dir = tmp_path / "devhub"
    process = subprocess.Popen(
        [sys.executable, "-m", "visionedge_devhub", "up", "--workdir", str(work_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    env: dict[str, str] = {}
    try:
        for line in process.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                env[name] = shlex.split(value)[0]
            if line.startswith("# devhub ready"):
                break
        else:
            pytest.fail(f"`up` exited with {process.wait()} before it was ready")
        yield work_dir, env
    finally:
        process.send_signal(signal.SIGINT)
        process.stdout.close()
        assert process.wait(timeout=15) == 0
    assert not (work_dir / "devhub.json").exists()


def test_up_prints_the_edge_environment_and_clients_drive_the_module(
    devhub_up: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exported environment connects a real SDK client; patch, twin, call and watch work against it."""
    work_dir, env = devhub_up
    assert {"IOTEDGE_GATEWAYHOSTNAME", "IOTEDGE_WORKLOADURI", "IOTEDGE_AUTHSCHEME"} <= set(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client: Any = IoTHubModuleClient.create_from_edge_environment()
    try:
        client.on_method_request_received = lambda request: client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"pong": request.payload})
        )
        client.connect()
        client.patch_twin_reported_properties({"state": "running"})

        patched = _cli("--workdir", str(work_dir), "patch", '{"fps": 4}')
        assert (patched.returncode, patched.stdout.strip()) == (0, "2")

        twin = _cli("twin", "--workdir", str(work_dir))
        assert twin.returncode == 0
        assert json.loads(twin.stdout) == {
            "desired": {"fps": 4, "$version": 2},
            "reported": {"state": "running", "$version": 2},
        }

        called = _cli("--workdir", str(work_dir), "call", "ping", '{"n": 1}')
        assert called.returncode == 0
        assert json.loads(called.stdout) == {"status": 200, "payload": {"pong": {"n": 1}}}

        watch = subprocess.Popen(
            [sys.executable, "-m", "visionedge_devhub", "--workdir", str(work_dir), "watch", "--all"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout is not None
        try:
            message = Message('{"label": "cat"}', content_encoding="utf-8", content_type="application/json")
            message.custom_properties["camera"] = "door"
            client.send_message_to_output(message, "labels")
            line = json.loads(watch.stdout.readline())
        finally:
            watch.send_signal(signal.SIGINT)
            watch.stdout.close()
            assert watch.wait(timeout=10) == 0
        assert (line["output"], line["properties"], line["body"]) == ("labels", {"camera": "door"}, {"label": "cat"})
        once = _cli("--workdir", str(work_dir), "watch", "--all", "--once")  # what has arrived, then exit 0
        assert once.returncode == 0
        assert [json.loads(text) for text in once.stdout.splitlines()] == [line]
    finally:
        client.shutdown()


def test_client_commands_without_a_devhub_say_how_to_start_one(tmp_path: Path) -> None:
    """Without a running devhub, a client command fails with one line that names the fix."""
    result = _cli("--workdir", str(tmp_path), "twin")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"visionedge-devhub: error: no devhub running in {tmp_path}: "
        f"start one with `visionedge-devhub up --workdir {tmp_path}`"
    )


def test_invalid_json_is_a_usage_error(devhub_up: tuple[Path, dict[str, str]]) -> None:
    """A patch that is not JSON exits 2 and quotes the bad argument."""
    work_dir, _ = devhub_up

    result = _cli("--workdir", str(work_dir), "patch", "{fps: 4}")

    assert result.returncode == 2
    assert "the patch is not valid JSON" in result.stderr
    assert os.linesep not in result.stderr.strip()
