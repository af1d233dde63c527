"""What every command shares: the fetcher, model loading, the sample video, stop signals and the data dir check."""

from __future__ import annotations

import errno
import logging
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

from visionedge.config import LocalSettings, ModuleConfig
from visionedge.download import DownloadPolicy
from visionedge.errors import DataDirError
from visionedge.models.catalog import SAMPLE_VIDEO
from visionedge.models.fetch import Fetcher, mirrors_from_env, resolve_model
from visionedge.models.model import Model
from visionedge.models.variants import open_model, variants_root

log = logging.getLogger(__name__)


def make_fetcher(config: ModuleConfig) -> Fetcher:
    """Fetcher over the configured cache, the configured mirrors (else the environment's) and download limits."""
    local = config.local
    policy = DownloadPolicy(
        max_bytes=int(local.max_download_mb * 1024 * 1024),
        connect_timeout_s=local.connect_timeout_s,
        read_timeout_s=local.read_timeout_s,
        deadline_s=local.download_deadline_s,
        allow_insecure_http=local.allow_insecure_http,
        allowed_hosts=tuple(local.allowed_hosts),
        ca_bundle=local.ca_bundle,
    )
    mirrors = list(local.mirror_dirs) or mirrors_from_env()
    return Fetcher(local.cache(), mirrors, policy)


def load_model(spec: str, config: ModuleConfig, fetcher: Fetcher, manifest: Path | None = None) -> Model:
    """Resolve, fetch, load and verify a model, with the twin's threshold overrides applied."""
    resolved = resolve_model(spec, fetcher, manifest)
    model = open_model(resolved.manifest, resolved.model_path, resolved.labels_path, config.desired.runtime,
                       variants_root(config.local))
    model.set_overrides(config.desired.inference)
    log.info("model %s %s loaded (%s, input %dx%d %s) on %s", model.name, model.version, resolved.model_path.name,
             model.signature.width, model.signature.height, model.signature.dtype, ", ".join(model.providers))
    return model


def sample_video(fetcher: Fetcher) -> Path:
    """The bundled demo video, fetched on first use."""
    return fetcher.media(SAMPLE_VIDEO)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT and SIGTERM (what IoT Edge sends) set the stop event that every loop waits on."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def stop_after(seconds: float | None, stop: threading.Event) -> None:
    """--duration: a daemon timer, so a SIGTERM before it fires ends the process at once instead of at its end."""
    if seconds:
        timer = threading.Timer(seconds, stop.set)
        timer.daemon = True
        timer.start()


def check_data_dir(local: LocalSettings) -> None:
    """Fail in one line when the data dir (or a separate cache dir) cannot be written, naming the owner and the fix."""
    for path in dict.fromkeys((local.data_dir, local.cache())):
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as err:
            raise DataDirError(_unwritable(path, err)) from err


def _unwritable(path: Path, err: OSError) -> str:
    """Why PATH cannot be written, and what to do about it, in one line."""
    if err.errno == errno.EROFS:
        return (f"data dir {path} is on a read-only file system: mount a writable volume there "
                f"(e.g. docker run -v visionedge-data:{path} ...) or set --data-dir")
    existing = next(p for p in (path, *path.parents) if p.exists())
    info = existing.stat()
    return (f"data dir {path} is not writable by uid {os.getuid()} ({err.strerror}): {existing} is owned by "
            f"{info.st_uid}:{info.st_gid} with mode {info.st_mode & 0o7777:04o}; make it writable for this user "
            f"(e.g. chown -R {os.getuid()}:{os.getgid()} on the host), use a named volume, or set --data-dir")
