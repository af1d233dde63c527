"""Assembles config, model, source and sinks into a running pipeline; the CLI and the IoT Edge runtime share it."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from visionedge.config import ModuleConfig
from visionedge.download import DownloadPolicy
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
