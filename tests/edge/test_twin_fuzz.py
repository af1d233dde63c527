"""Property-based fuzzing of twin patches through the real module and DevHub: no crash, every invalid patch is
acknowledged 400, and the module still answers getStatus.

One module and one DevHub serve every generated patch (hypothesis reuses the function's fixtures across examples),
with a fixed derandomized seed so CI runs the same 1,000+ patches each time.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from visionedge.acks import merge_patch
from visionedge.config import DesiredProperties
from visionedge.edge.twin import ABSENT, SECTIONS
from visionedge_devhub.hub import DevHub

from tests.edge.conftest import ModuleProcess, StartModule
from tests.edge.test_twin_methods import status_frames
from tests.support import wait_until

pytestmark = pytest.mark.timeout(420)

FUZZED = {name: adapter for name, adapter in SECTIONS.items() if name != "model"}  # model updates: tests/modelstore
EXAMPLES = 1000

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**9), 10**9), st.floats(allow_nan=False, width=32),
    st.text(max_size=10),
    st.sampled_from(["", "#", "site/+/x", "x" * 300, "sample", "cpu", "CUDAExecutionProvider", "on-change",
                     "aggregate", "drop-oldest", "/nonexistent/clip.mp4", "rtsp://u:p@127.0.0.1:9/s?token=t", "0.5",
                     "localhost", "127.0.0.1", "\u0000", "é/ü", "$SYS"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def section_value(name: str) -> st.SearchStrategy[Any]:
    """Mostly objects of the section's own fields (plus a stray one), sometimes any JSON value at all."""
    annotation = DesiredProperties.model_fields[name].annotation if name in FUZZED else None
    fields = [*getattr(annotation, "model_fields", {}), "bogus"]
    return st.one_of(st.dictionaries(st.sampled_from(fields), values, max_size=3), values)


patches = st.lists(st.sampled_from([*FUZZED, "colour"]).flatmap(lambda k: section_value(k).map(lambda v: (k, v))),
                   min_size=1, max_size=3).map(dict)


def valid(key: str, document: dict[str, Any]) -> bool:
    """What the module must accept before applying: the section after the merge validates."""
    if key not in FUZZED:
        return False
    try:
        FUZZED[key].validate_python(document.get(key, ABSENT[key]))
    except ValidationError:
        return False
    return True


@pytest.fixture
def fuzz_session(hub: DevHub, start_module: StartModule) -> tuple[DevHub, ModuleProcess, dict[str, Any]]:
    """A running module, and our copy of the desired document merged exactly as the module merges it."""
    module = start_module(hub, local={"status_interval_s": 30.0})
    # the reported status block comes at start (0 frames) and then every 30 s: ask getStatus once connected instead
    hub.emulator.wait_for_reported(lambda r: "status" in r, timeout=60)
    wait_until(lambda: status_frames(hub) > 0, 60, "frames being analysed")
    document = {k: v for k, v in hub.emulator.desired.items() if not k.startswith("$")}
    return hub, module, document


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(patch=patches)
def test_fuzzed_twin_patches_never_crash_and_every_invalid_one_is_refused(
    fuzz_session: tuple[DevHub, ModuleProcess, dict[str, Any]], patch: dict[str, Any]
) -> None:
    """Each generated patch: every touched key acknowledged for its $version, 400 whenever it cannot validate."""
    hub, module, document = fuzz_session
    version = hub.set_desired(copy.deepcopy(patch))
    merge_patch(document, copy.deepcopy(patch))
    reported = hub.emulator.wait_for_reported(
        lambda r: all(r.get(k, {}).get("av") == version for k in patch), timeout=30)
    for key in patch:
        ack = reported[key]
        if not valid(key, document):
            assert ack["ac"] == 400, (key, patch, ack)
            assert ack["ad"]
        else:
            assert ack["ac"] in (200, 400), (key, patch, ack)
    assert module.proc.poll() is None, module.log()[-3000:]
    if version % 50 == 0:
        status, payload = hub.emulator.call_method("getStatus", {}, timeout=10)
        assert status == 200
        assert payload["state"] == "running"
