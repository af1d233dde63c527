"""The module's update path in a child process that the crash tests kill -9 at a chosen moment.

argv[1] is JSON: root, ca, cache, mirrors, block, av, marker, pause. `pause` freezes the child (after writing
the marker) just before the step named: "install" (the rename into versions/), "pointer" (the pointer's
os.replace, after its tmp file is written and synced), "swap" (the trial is recorded, the swap is due), or
"none" (run to the 200, then idle). A "download" kill needs no freeze: the server is throttled.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from visionedge.config import ModelRef, RollbackSettings, RuntimeSettings
from visionedge.download import DownloadPolicy
from visionedge.models.fetch import Fetcher
from visionedge.models.model import Model
from visionedge.modelstore import ModelManager, ModelStore


def main() -> None:
    """Open the store, apply one update, then wait to be killed."""
    args = json.loads(sys.argv[1])
    marker, pause = Path(args["marker"]), args["pause"]

    def freeze(step: str) -> None:
        marker.write_text(step, encoding="utf-8")
        while True:
            time.sleep(60)

    policy = DownloadPolicy(ca_bundle=Path(args["ca"]), read_timeout_s=10.0)
    store = ModelStore(Path(args["root"]), policy, Fetcher(Path(args["cache"]), [Path(m) for m in args["mirrors"]]))
    store.cleanup_staging()
    model = store.load_active(RuntimeSettings(providers=["cpu"]))
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        target = Path(dst)
        if (pause == "install" and target.parent == store.versions_dir and not target.name.startswith(".")) or (
                pause == "pointer" and target.name == "active.json"):
            freeze(pause)
        real_replace(src, dst)

    os.replace = replace  # type: ignore[assignment]

    def swap(new: Model) -> None:
        if pause == "swap":
            freeze("swap")

    def report(ack: dict[str, Any]) -> None:
        print(json.dumps(ack), flush=True)
        if ack["ac"] != 202:
            marker.write_text(f"done {ack['ac']}", encoding="utf-8")

    manager = ModelManager(store, model, swap=swap, report=report, rollback=RollbackSettings(watch_frames=0,
                                                                                            watch_s=0.5))
    manager.start()
    manager.request(ModelRef(**args["block"]), args["av"])
    threading.Event().wait()


if __name__ == "__main__":
    main()
