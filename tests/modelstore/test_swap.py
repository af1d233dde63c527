"""Model swaps under a running pipeline: results never stop, never mix models, and name the model that made them."""

from __future__ import annotations

import itertools

from .conftest import MakeHarness, Refs

SQUEEZENET = "squeezenet@1.1-winml-fp16"
YOLOX = "yolox-nano@2024.2"


def test_squeezenet_to_yolox_and_back_keeps_every_frame_and_names_its_model(make_harness: MakeHarness, refs: Refs,
                                                                            video: object) -> None:
    """Two swaps while an ordered pipeline analyses vtest.avi: each frame analysed once, by exactly one model."""
    h = make_harness(video=video, watch_frames=15, watch_s=30.0)  # the default latency factor
    assert h.store.active() == SQUEEZENET
    h.wait_records(20)

    yolox = refs("yolox", "2024.2")
    assert h.request(yolox, 2)
    assert h.outcome(2) == {"value": yolox, "ac": 200, "av": 2, "ad": f"{YOLOX} is active"}
    h.wait_records(20)
    assert h.request({"name": "squeezenet"}, 3)
    assert h.outcome(3) == {"value": {"name": "squeezenet"}, "ac": 200, "av": 3, "ad": f"{SQUEEZENET} is active"}
    h.wait_records(20)
    h.stop()

    records = list(h.records)
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    runs = [key for key, _ in itertools.groupby(f"{r['model']['name']}@{r['model']['version']}" for r in records)]
    assert runs == [SQUEEZENET, YOLOX, SQUEEZENET]
    for record in records:
        detector = record["model"]["name"] == "yolox-nano"
        assert ("detections" in record, "classifications" in record) == (detector, not detector)
    assert [a["ad"] for a in h.acks if a["av"] == 2] == [
        *(f"downloading {YOLOX} {p}%" for p in range(0, 101, 10)),
        f"validating {YOLOX}", f"watching {YOLOX} for 15 frames or 30 s", f"{YOLOX} is active"]
    assert [a["ad"] for a in h.acks if a["av"] == 3] == [
        f"validating {SQUEEZENET}", f"watching {SQUEEZENET} for 15 frames or 30 s", f"{SQUEEZENET} is active"]
    assert (h.store.active(), h.store.previous(), h.store.trial()) == (SQUEEZENET, YOLOX, None)
    assert h.swaps == [YOLOX, SQUEEZENET]
