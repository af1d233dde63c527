"""Fixtures for the core pipeline tests: golden values, the CLI as a subprocess, real servers, real media."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import pytest
from visionedge.result import result_schema

from .support import FileServer

MediaPath = Callable[[str], Path]


@pytest.fixture(scope="session")
def expected_outputs(mirror_dirs: list[Path]) -> dict[str, Any]:
    """The golden outputs recorded beside the models (shared/models/expected_outputs.json), keyed model -> image."""
    for folder in mirror_dirs:
        path = folder / "expected_outputs.json"
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["models"]
            return data
    pytest.fail(f"expected_outputs.json is in none of the mirror folders {mirror_dirs}", pytrace=False)


@pytest.fixture(scope="session")
def record_validator() -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for the shipped result-record schema, with format checking."""
    schema = result_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="session")
def vtest_jpegs(media: MediaPath) -> list[bytes]:
    """The first 40 frames of vtest.avi as JPEG files in memory, for the MJPEG camera."""
    capture = cv2.VideoCapture(str(media("vtest.avi")))
    jpegs = []
    try:
        while len(jpegs) < 40:
            ok, image = capture.read()
            assert ok, "vtest.avi ended early"
            jpegs.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    finally:
        capture.release()
    return jpegs


@pytest.fixture(scope="session")
def fast_video(vtest_clip: Callable[[int, float], Path]) -> Path:
    """The first 200 frames of vtest.avi re-encoded as a 100 fps MJPG AVI: a camera faster than the detector."""
    return vtest_clip(200, 100.0)


@pytest.fixture(scope="session")
def short_video(vtest_clip: Callable[[int, float], Path]) -> Path:
    """The first 48 frames of vtest.avi as a 100 fps MJPG AVI: enough for order and fairness, cheap to analyse."""
    return vtest_clip(48, 100.0)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    """A real local http server whose routes a test sets (files, 404, stalls)."""
    server = FileServer()
    yield server
    server.close()
