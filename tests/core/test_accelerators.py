"""Execution providers: preference order filtered by what onnxruntime offers, and require_accelerator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
from visionedge.config import RuntimeSettings
from visionedge.errors import AcceleratorError
from visionedge.models.runtime import choose_providers

from tests.conftest import MediaPath, ModelFactory


def test_preference_order_is_kept_and_filtered_by_what_is_available() -> None:
    """Requested providers that this build lacks are skipped; order is kept; CPU is always the last resort."""
    settings = RuntimeSettings(providers=["tensorrt", "cuda", "openvino", "cpu"])
    offered = ["CUDAExecutionProvider", "TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(settings, offered) == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                   "CPUExecutionProvider"]
    assert choose_providers(RuntimeSettings(providers=["cuda"]), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_providers_in_effect_are_recorded(model: ModelFactory) -> None:
    """The model records session.get_providers(): on this CPU-only build, the CPU provider."""
    assert model("squeezenet").providers == ort.InferenceSession.get_providers(model("squeezenet").session)


def test_require_accelerator_fails_loudly_on_a_cpu_only_machine(model: ModelFactory) -> None:
    """With only the CPU available, require_accelerator refuses to load and says what was asked and offered."""
    if set(ort.get_available_providers()) - {"CPUExecutionProvider", "AzureExecutionProvider"}:
        pytest.fail("this test expects a CPU-only onnxruntime build")
    with pytest.raises(AcceleratorError, match="require_accelerator is set but only the CPU is in effect"):
        model("squeezenet", require_accelerator=True, providers=["cuda", "cpu"])


def test_require_accelerator_from_the_config_file_exits_non_zero_with_one_line(
    tmp_path: Path, media: MediaPath
) -> None:
    """The CLI turns the refusal into one line on stderr and exit code 1."""
    config = tmp_path / "config.yaml"
    config.write_text("desired:\n  runtime:\n    require_accelerator: true\n", encoding="utf-8")
    image = media("kitten_224.png")
    done = subprocess.run([sys.executable, "-m", "visionedge", "--config", str(config), "analyze", str(image),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "visionedge: error: require_accelerator is set but only the CPU is in effect" in done.stderr
    assert "Traceback" not in done.stderr
