"""Hostile files and names on the command line: each gets a one-line reason (or works), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from visionedge.config import YAML_MAX_DEPTH, ConfigError, ModelRef, load_config
from visionedge.durable import STATE_MAX_BYTES, read_json
from visionedge.errors import ModelError, SourceError
from visionedge.images import MAX_PIXELS, read_image
from visionedge.models.catalog import builtin_manifest
from visionedge.models.model import MAX_LABELS, read_labels

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single `visionedge: error:` line of a failed command (no traceback, no second error)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("visionedge: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def _squeezenet_with_labels(tmp_path: Path, mirror_dirs: list[Path], labels_name: str) -> Path:
    """A manifest beside a link to the mirror's SqueezeNet, naming a labels file the test writes."""
    manifest = builtin_manifest("squeezenet").model_dump(mode="json")
    onnx = next(d / manifest["file"] for d in mirror_dirs if (d / manifest["file"]).is_file())
    (tmp_path / "model.onnx").symlink_to(onnx)
    manifest.update(file="model.onnx", labels=labels_name)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return path


def test_file_name_with_spaces_non_ascii_and_shell_characters_is_analysed(run_cli, media, tmp_path):
    """A file called `a b ü $(x);'.png` is analysed; its source id keeps only safe characters."""
    odd = tmp_path / "a b ü $(x);'.png"
    odd.write_bytes(media("kitten_224.png").read_bytes())
    done = run_cli("analyze", odd, "--no-progress")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["source_id"] == "a_b_____x___"


def test_over_long_path_gets_one_line(run_cli):
    """A 300-character file name gets the system's reason; a 5,000-character path is refused before it is tried."""
    line = _one_line_error(run_cli("analyze", "x" * 300 + ".png", "--no-progress"))
    assert "File name too long" in line
    line = _one_line_error(run_cli("analyze", "x" * 5000 + ".png", "--no-progress"))
    assert line == "visionedge: error: invalid path: path.uri: String should have at most 4096 characters"


def test_unreadable_folder_gets_one_line(cli_env, media, tmp_path):
    """A folder the user may not list is refused with 'Permission denied' (root runs without its override)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "kitten.png").write_bytes(media("kitten_224.png").read_bytes())
    folder.chmod(0o000)
    no_override = (["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                    "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])
    try:
        done = subprocess.run([*no_override, sys.executable, "-m", "visionedge", "analyze", str(folder),
                               "--no-progress"], env=cli_env, capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o755)
    assert _one_line_error(done) == f"visionedge: error: cannot open source {folder}: Permission denied"


def test_data_dir_that_is_a_file_gets_one_line(run_cli, media, tmp_path):
    """VISIONEDGE_DATA_DIR naming a file says so, before anything is written."""
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("x", encoding="utf-8")
    done = run_cli("analyze", media("kitten_224.png"), "--no-progress",
                   env={"VISIONEDGE_DATA_DIR": str(not_a_dir)})
    assert _one_line_error(done) == (f"visionedge: error: data dir {not_a_dir} is a file, not a folder: "
                                     "pass --data-dir or set VISIONEDGE_DATA_DIR")


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("labels.txt", b"cat\n\xff\xfe dog\n", "is not UTF-8 text"),
    ("labels.json", b"[" * 100_000 + b"]" * 100_000, "is nested too deeply to be a list of labels"),
    ("labels.json", b'[["cat"], {"a": 1}]', "every label must be a string"),
    ("labels.txt", b"\x00" * 4096, "line 1 is longer than 1024 characters"),
    ("labels.txt", b"x\n" * (MAX_LABELS + 1), f"has more than {MAX_LABELS} lines"),
], ids=["not-utf8", "deep-json", "json-objects", "endless-line", "too-many"])
def test_hostile_labels_file_gets_one_line(run_cli, media, mirror_dirs, tmp_path, name, content, reason):
    """Labels that are not UTF-8, absurdly nested, not strings, or huge are refused while streaming, in one line."""
    manifest = _squeezenet_with_labels(tmp_path, mirror_dirs, name)
    (tmp_path / name).write_bytes(content)
    line = _one_line_error(run_cli("analyze", media("kitten_224.png"), "--model", manifest, "--no-progress"))
    assert f"labels file {tmp_path / name} {reason}" in line or f"labels file {tmp_path / name}: {reason}" in line


def test_gigabyte_labels_file_is_refused_without_reading_it(tmp_path):
    """A 1 GB labels file (sparse) is refused after one bounded line, not read whole."""
    path = tmp_path / "labels.txt"
    with path.open("wb") as f:
        f.truncate(1 << 30)
    with pytest.raises(ModelError, match="line 1 is longer than 1024 characters"):
        read_labels(path)


ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)])


@pytest.mark.parametrize(("content", "reason"), [
    (ALIAS_BOMB, "expands to more than 100000 values (aliases counted as copies)"),
    ("[" * 100_000 + "]" * 100_000, f"nested deeper than {YAML_MAX_DEPTH} levels"),
    ("local: {data_dir: \xff}", None),
], ids=["alias-bomb", "deep", "not-utf8"])
@pytest.mark.parametrize("how", ["--config", "VISIONEDGE_CONFIG"])
def test_hostile_config_yaml_gets_one_line(run_cli, tmp_path, content, reason, how):
    """Alias bombs and deep nesting are bounded before expansion, through --config and the environment alike."""
    path = tmp_path / "config.yaml"
    path.write_bytes(content.encode("latin-1") if reason is None else content.encode())
    args, env = (["--config", str(path)], None) if how == "--config" else ([], {"VISIONEDGE_CONFIG": str(path)})
    line = _one_line_error(run_cli(*args, "models", "list", env=env))
    assert line.startswith(f"visionedge: error: config file {path} ")
    assert (reason or "is not UTF-8 text (byte 18)") in line


def test_huge_jpeg_is_decoded_reduced(tmp_path):
    """A JPEG whose header announces 48 megapixels is decoded at half size, within the memory bound."""
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), np.full((6000, 8000, 3), 90, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 20])
    image = read_image(path)
    assert image.shape == (3000, 4000, 3)
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS


def test_png_announcing_a_huge_resolution_is_refused(run_cli, media, tmp_path):
    """A 100 000 x 100 000 PNG header is refused before any pixel is decoded."""
    small = media("kitten_224.png").read_bytes()
    path = tmp_path / "huge.png"
    path.write_bytes(small[:16] + (100_000).to_bytes(4, "big") * 2 + small[24:])
    line = _one_line_error(run_cli("analyze", path, "--no-progress"))
    assert line == f"visionedge: error: image {path} is 100000x100000 pixels, over the limit of 40 megapixels"


def test_one_pixel_high_strip_through_a_letterbox_model(run_cli, tmp_path):
    """A 2000x1 image through YOLOX-Nano (letterbox) is analysed without an error."""
    path = tmp_path / "strip.png"
    cv2.imwrite(str(path), np.full((1, 2000, 3), 200, np.uint8))
    done = run_cli("analyze", path, "--model", "yolox-nano", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["frame_size"] == [2000, 1]
    assert "errors 0" in done.stderr


@pytest.mark.parametrize("url", ["https://", "https:///model.onnx", "ftp://host/m.onnx", "https://[::1"])
def test_model_url_without_a_host_is_a_validation_error(url):
    """A model URL with no host (or an unusable one) fails validation, so the twin acknowledges it 400."""
    with pytest.raises(ValueError, match="url"):
        ModelRef(name="m", url=url, sha256="0" * 64)


# ---- property-based fuzzing of file inputs (in process, so hundreds of cases stay fast) -------------------------

T = TypeVar("T")


def _value_or_reason(call: Callable[[], T], expected: type[Exception]) -> tuple[T | None, str]:
    """The call's value, or the message of the one exception type it may raise; anything else fails the test."""
    try:
        return call(), ""
    except expected as err:
        return None, str(err)


yaml_text = st.one_of(
    st.text(max_size=400),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                 max_leaves=30).map(lambda v: yaml.safe_dump({"local": v, "desired": v})),
)


@FUZZ
@given(text=yaml_text)
def test_fuzzed_config_files_load_or_give_one_config_error(tmp_path_factory, text):
    """Any config file text either loads or raises ConfigError, whose message is one line."""
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    _, reason = _value_or_reason(lambda: load_config(path, env={}), ConfigError)
    assert "\n" not in reason


@FUZZ
@given(data=st.one_of(st.binary(max_size=600), st.text(max_size=600).map(lambda t: t.encode("utf-8")),
                      st.recursive(st.text(max_size=8) | st.integers(), lambda i: st.lists(i, max_size=4)
                                   | st.dictionaries(st.text(max_size=3), i, max_size=4)).map(
                          lambda v: json.dumps(v).encode())),
       suffix=st.sampled_from([".txt", ".json"]))
def test_fuzzed_labels_files_read_or_give_one_model_error(tmp_path_factory, data, suffix):
    """Any labels file bytes give a list of label strings or one ModelError line."""
    path = tmp_path_factory.mktemp("labels") / f"labels{suffix}"
    path.write_bytes(data)
    labels, reason = _value_or_reason(lambda: read_labels(path), ModelError)
    assert "\n" not in reason
    if labels is not None:
        assert labels
        assert all(isinstance(label, str) for label in labels)


@pytest.fixture(scope="module")
def image_seeds(media) -> list[bytes]:
    """Real small files of each format whose headers the fuzzer mutates."""
    image = cv2.imread(str(media("kitten_224.png")))
    return [cv2.imencode(ext, image)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".webp", ".tiff")]


@FUZZ
@given(which=st.integers(0, 4), cuts=st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=4)),
                                               max_size=6), truncate=st.none() | st.integers(0, 400))
def test_fuzzed_image_headers_decode_or_give_one_source_error(tmp_path_factory, image_seeds, which, cuts, truncate):
    """Real images with corrupted headers decode within the pixel bound or raise one SourceError line."""
    data = bytearray(image_seeds[which])
    for offset, patch in cuts:
        data[offset:offset + len(patch)] = patch
    path = tmp_path_factory.mktemp("img") / "image.png"
    path.write_bytes(bytes(data[:truncate] if truncate is not None else data))
    image, reason = _value_or_reason(lambda: read_image(path), SourceError)
    assert "\n" not in reason
    if image is not None:
        assert image.ndim == 3
        assert image.shape[0] * image.shape[1] <= MAX_PIXELS


# ---- state files the module saved, found changed on disk -------------------------------------------------------

@pytest.mark.timeout(20)
@pytest.mark.parametrize("content", [
    '{"history": [1e999]}', '{"history": [NaN]}', "[" * 100_000 + "]" * 100_000, "fifo", "big",
    '{"n": ' + "9" * 30 + "}",
], ids=["infinite", "nan", "deep", "fifo", "big", "huge-int"])
def test_saved_state_files_breaking_the_intake_rule_read_as_absent(tmp_path, content):
    """A state file with a non-finite or 100-digit number, nested 100,000 deep, a FIFO or 2 MiB reads as absent
    (the caller falls back to its default), at once and without a traceback."""
    path = tmp_path / "updates.json"
    if content == "fifo":
        os.mkfifo(path)
    elif content == "big":
        path.write_text('{"pad": "' + "x" * (STATE_MAX_BYTES + 10) + '"}', encoding="utf-8")
    else:
        path.write_text(content, encoding="utf-8")
    assert read_json(path) is None


# ---- the intake rule at every reader: no special files, finite numbers ------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_as_config_manifest_or_labels_get_one_line_at_once(run_cli, media, mirror_dirs, tmp_path,
                                                                         kind):
    """A FIFO with no writer (which would block forever) or a device (which never ends) named as the config file,
    a model manifest or a labels file is refused in one line, without opening it."""
    special = tmp_path / "special.yaml"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        special.symlink_to("/dev/zero")
    what = "a FIFO, device or socket, not a regular file"
    line = _one_line_error(run_cli("--config", special, "models", "list"))
    assert line == f"visionedge: error: config file {special} is {what}"
    line = _one_line_error(run_cli("analyze", media("kitten_224.png"), "--model", special, "--no-progress"))
    assert line == f"visionedge: error: model manifest {special} is {what}"
    for name in ("labels.txt", "labels.json"):
        labels = tmp_path / name
        if kind == "fifo":
            os.mkfifo(labels)
        else:
            labels.symlink_to("/dev/zero")
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        manifest = _squeezenet_with_labels(folder, mirror_dirs, f"../{name}")
        line = _one_line_error(run_cli("analyze", media("kitten_224.png"), "--model", manifest, "--no-progress"))
        assert line == f"visionedge: error: labels file {folder}/../{name} is {what}"


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("config.yaml", "desired:\n  outbox: {max_mb: .inf}\n", "desired.outbox.max_mb: Input should be a finite number"),
    ("config.yaml", "desired:\n  shadow: {max_s: .nan}\n", "desired.shadow.max_s: Input should be a finite number"),
    ("labels.json", '["cat", NaN]', "is not valid JSON: NaN is not a number JSON allows"),
], ids=["yaml-inf", "yaml-nan", "labels-nan"])
def test_non_finite_numbers_in_config_and_labels_get_one_line(run_cli, media, mirror_dirs, tmp_path, name, content,
                                                              reason):
    """YAML .inf/.nan in a setting and NaN in a JSON labels file are refused in one line, never used."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    if name == "config.yaml":
        line = _one_line_error(run_cli("--config", path, "models", "list"))
    else:
        manifest = _squeezenet_with_labels(tmp_path, mirror_dirs, name)
        line = _one_line_error(run_cli("analyze", media("kitten_224.png"), "--model", manifest, "--no-progress"))
    assert reason in line, line
