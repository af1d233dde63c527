"""Session fixtures for every test folder: the workplace mirror, a data dir, a verifying fetcher, loaded models.

Nothing here is autouse and nothing is mocked: `fetcher` copies real files from the mirror and checks their sha256,
`model(name)` loads a real built-in model once per session. Subprocesses see the same data dir and mirror through
VISIONEDGE_DATA_DIR and VISIONEDGE_MIRROR.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from visionedge.config import RuntimeSettings
from visionedge.download import DownloadPolicy
from visionedge.models.catalog import ASSETS
from visionedge.models.fetch import MIRROR_ENV, Fetcher, mirrors_from_env, resolve_model
from visionedge.models.model import Model

MediaPath = Callable[[str], Path]
ModelFactory = Callable[..., Model]
RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def session_env() -> Iterator[pytest.MonkeyPatch]:
    """Environment changes that last the whole session and are undone after it."""
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="session")
def mirror_dirs(session_env: pytest.MonkeyPatch) -> list[Path]:
    """The workplace mirror (shared/models, shared/media), from VISIONEDGE_MIRROR or found upwards; never skipped."""
    dirs = [d for d in mirrors_from_env() if d.is_dir()]
    if not any(any(d.glob("*.onnx")) for d in dirs):
        pytest.fail(
            f"the model mirror was not found (looked in: {', '.join(map(str, mirrors_from_env())) or 'nothing'}); "
            f"set {MIRROR_ENV} to the folders holding the models and media, separated by '{os.pathsep}', "
            "e.g. ../shared/models:../shared/media",
            pytrace=False,
        )
    session_env.setenv(MIRROR_ENV, os.pathsep.join(str(d) for d in dirs))
    return dirs


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory, session_env: pytest.MonkeyPatch) -> Path:
    """A fresh module data dir for the session, exported as VISIONEDGE_DATA_DIR (its cache is data_dir/cache)."""
    path = tmp_path_factory.mktemp("data")
    session_env.setenv("VISIONEDGE_DATA_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def fetcher(data_dir: Path, mirror_dirs: list[Path]) -> Fetcher:
    """A Fetcher over the session cache (the same cache the CLI uses with VISIONEDGE_DATA_DIR), mirror first."""
    return Fetcher(data_dir / "cache", list(mirror_dirs), DownloadPolicy())


@pytest.fixture(scope="session")
def media(fetcher: Fetcher) -> MediaPath:
    """`media("vtest.avi")`: a catalog media file, copied from the mirror and sha256-verified."""

    def get(name: str) -> Path:
        asset = ASSETS.get(name)
        if asset is None or asset.kind != "media":
            known = ", ".join(sorted(a.name for a in ASSETS.values() if a.kind == "media"))
            pytest.fail(f"{name!r} is not a catalog media file ({known})", pytrace=False)
        return fetcher.ensure(asset)

    return get


@pytest.fixture(scope="session")
def street(mirror_dirs: list[Path]) -> Path:
    """TUD-Stadtmitte.mp4 from the shared media mirror: pedestrians on a square, on which SqueezeNet's top-1 is stable
    enough for an int8 variant calibrated on a few of its frames to agree (vtest.avi's is a near-tie on a quarter)."""
    for folder in mirror_dirs:
        video = folder / "mot" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
        if video.is_file():
            return video
    pytest.fail("mot/TUD-Stadtmitte/TUD-Stadtmitte.mp4 not found in the mirror folders")


@pytest.fixture(scope="session")
def model(fetcher: Fetcher) -> ModelFactory:
    """`model("yolox-nano", intra_op_threads=1)`: a built-in Model, loaded once per session per settings.

    The instances are shared between tests: do not call `set_overrides` on them; build your own Model for that.
    """
    loaded: dict[tuple[str, str], Model] = {}

    def get(name: str, **runtime: Any) -> Model:
        settings = RuntimeSettings(**runtime)
        key = (name, settings.model_dump_json())
        if key not in loaded:
            resolved = resolve_model(name, fetcher)
            loaded[key] = Model(resolved.manifest, resolved.model_path, resolved.labels_path, settings)
        return loaded[key]

    return get


@pytest.fixture(scope="session")
def cli_env(data_dir: Path, mirror_dirs: list[Path]) -> dict[str, str]:
    """The environment a CLI subprocess runs in: the session data dir and mirror, no stray config."""
    env = dict(os.environ)
    env.pop("VISIONEDGE_CONFIG", None)
    env.pop("IOTEDGE_MODULEID", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def run_cli(cli_env: dict[str, str]) -> RunCli:
    """`run_cli("analyze", path, ...)`: `python -m visionedge ARGS` to completion, text output captured."""

    def run(*args: str | Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "visionedge", *map(str, args)],
            capture_output=True, text=True, env=env or cli_env, timeout=timeout, check=False,
        )

    return run


@pytest.fixture(scope="session")
def vtest_clip(media: MediaPath, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """`vtest_clip(frames, fps, start=0)`: frames of vtest.avi from `start` re-encoded as an MJPG AVI at that rate,
    made once."""
    made: dict[tuple[int, float, int], Path] = {}

    def get(frames: int, fps: float, start: int = 0) -> Path:
        if (frames, fps, start) not in made:
            import cv2

            path = tmp_path_factory.mktemp("clip") / f"vtest_{start}+{frames}f_{fps:g}fps.avi"
            capture = cv2.VideoCapture(str(media("vtest.avi")))
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (768, 576))
            try:
                for _ in range(frames):
                    ok, image = capture.read()
                    assert ok, "vtest.avi ended early"
                    writer.write(image)
            finally:
                writer.release()
                capture.release()
            made[(frames, fps, start)] = path
        return made[(frames, fps, start)]

    return get


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`tmpfs("8m")`: a real, small file system (needs root), so 'disk full' is the kernel's; unmounted after."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        path = tmp_path / f"tmpfs-{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)
