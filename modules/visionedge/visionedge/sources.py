"""Frame sources: files and folders read in order, live cameras and streams that reconnect by themselves."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from urllib.parse import urlsplit

import cv2

from visionedge.config import SourceSettings
from visionedge.errors import SourceError
from visionedge.frame import Frame
from visionedge.images import read_image
from visionedge.retry import backoff_delay
from visionedge.urls import redact_url

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
STREAM_SCHEMES = {"rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp"}
DEVICE_RE = re.compile(r"^/dev/video(\d+)$")


class SourceState(str, Enum):
    """What a source is doing, as shown in status, logs, metrics and events."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RETRYING = "retrying"
    FAILED = "failed"
    ENDED = "ended"


StateListener = Callable[[str, SourceState, str], None]


class Source:
    """Iterates frames until exhausted or stopped; `live` sources hand over only the newest frame."""

    live = False
    fps: float | None = None
    """Target analysis rate from the source's settings; None = as fast as the model goes."""
    watchdog_s: float | None = None
    """Reopen after this long without a frame (live sources only)."""

    def __init__(self, source_id: str, description: str) -> None:
        self.source_id = source_id
        self.description = description
        self.state = SourceState.CONNECTING
        self.reason = ""
        self.listeners: list[StateListener] = []

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames in capture order; returns when the source ends or stop is set."""
        raise NotImplementedError

    def note_stall(self, reason: str) -> None:
        """The pipeline's watchdog gave up on the current connection; the next attempt counts as a retry."""
        self._set_state(SourceState.RETRYING, reason)

    def _set_state(self, state: SourceState, reason: str = "") -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        log.info("source %s (%s): %s%s", self.source_id, self.description, state.value, f": {reason}" if reason else "")
        for listener in self.listeners:
            listener(self.source_id, state, reason)


class ImageSource(Source):
    """One image file or every image in a folder, in name order."""

    def __init__(self, path: Path, source_id: str) -> None:
        super().__init__(source_id, str(path))
        if path.is_dir():
            self.paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self.paths:
                raise SourceError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            read_image(path)  # like a video, a lone file that cannot be decoded is refused when opened
            self.paths = [path]
        self.total: int | None = len(self.paths)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Every image once; an undecodable one in a folder is logged and skipped."""
        self._set_state(SourceState.STREAMING)
        for index, path in enumerate(self.paths):
            if stop.is_set():
                return
            try:
                image = read_image(path)
            except SourceError as err:
                if len(self.paths) == 1:
                    raise
                log.warning("skipping %s: not a decodable image (%s)", path, err)
                continue
            yield Frame(image, self.source_id, index, time.time())
        self._set_state(SourceState.ENDED)


class VideoFileSource(Source):
    """A video file: every frame in order, optionally looped and paced at the file's own rate."""

    def __init__(self, path: Path, source_id: str, *, loop: bool = False, realtime: bool = False) -> None:
        super().__init__(source_id, str(path))
        self.path = path
        self.loop = loop
        self.realtime = realtime
        self.live = realtime
        capture = self._open()
        self.file_fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.total = None if loop else (count if count > 0 else None)
        capture.release()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open video {self.path}: unreadable or not a video file")
        return capture

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Decode sequentially; when pacing, sleep until each frame's due time like a camera would.

        Unpaced (analysis), a frame's timestamp is its position in the video from the moment reading began, so a
        report's time axis and the gate's max_skip_s follow the video, not how fast this machine decodes it.
        """
        index = 0
        period = 1.0 / self.file_fps
        started = time.monotonic()
        began = time.time()
        while not stop.is_set():
            capture = self._open()
            self._set_state(SourceState.STREAMING)
            try:
                first = index
                while not stop.is_set():
                    ok, image = capture.read()
                    if not ok:
                        break
                    if self.realtime:
                        delay = started + index * period - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    stamp = time.time() if self.realtime else began + index * period
                    yield Frame(image, self.source_id, index, stamp)
                    index += 1
            finally:
                capture.release()
            if stop.is_set():
                break  # stopped before or while reading: not the file's fault
            if index == first:
                raise SourceError(f"video {self.path} has no decodable frames")
            if not self.loop:
                if self.total is not None and index + 1 < self.total:
                    log.warning("video %s ended after %d of the %d frames it declares: truncated or damaged",
                                self.path, index, self.total)
                break
        self._set_state(SourceState.ENDED)


class LiveSource(Source):
    """A camera or network stream: reconnects with exponential backoff and jitter, forever, until stopped."""

    live = True
    total = None

    def __init__(self, target: str | int, source_id: str, settings: SourceSettings) -> None:
        shown = redact_url(target) if isinstance(target, str) else f"camera {target}"
        super().__init__(source_id, shown)
        self.target = target
        self.settings = settings
        self.attempts = 0

    def note_stall(self, reason: str) -> None:
        """Count a watchdog reopen as a failed attempt, so backoff and the retrying state apply to it."""
        self.attempts += 1
        super().note_stall(reason)

    def _ended(self, silent_s: float) -> str:
        """Why the stream ended: the read timeout (set to watchdog_s) says what the watchdog would have said."""
        if silent_s >= self.settings.watchdog_s * 0.9:
            return f"no frame for {self.settings.watchdog_s:g} s: reopening"
        return f"{self.description} stopped delivering frames"

    def _open(self) -> cv2.VideoCapture | None:
        timeout_ms = int(min(self.settings.watchdog_s, 30.0) * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        if isinstance(self.target, int):
            capture = cv2.VideoCapture(self.target)
        else:
            capture = cv2.VideoCapture(self.target, cv2.CAP_ANY, params)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def backoff(self) -> float:
        """Next wait: the shared retry schedule, counted from this source's first failed attempt."""
        return backoff_delay(self.attempts - 1, self.settings.reconnect_initial_s, self.settings.reconnect_max_s)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Newest frames as they arrive; outages become retrying states, never exceptions."""
        index = 0
        while not stop.is_set():
            self._set_state(SourceState.CONNECTING if self.attempts == 0 else self.state, self.reason)
            capture = self._open()
            if capture is None:
                self.attempts += 1
                self._set_state(SourceState.RETRYING, f"cannot open {self.description} (attempt {self.attempts})")
                if stop.wait(self.backoff()):
                    return
                continue
            self.attempts = 0
            self._set_state(SourceState.STREAMING)
            last = time.monotonic()
            try:
                while not stop.is_set():
                    ok, image = capture.read()
                    if not ok or image is None:
                        break
                    last = time.monotonic()
                    yield Frame(image, self.source_id, index, time.time())
                    index += 1
            finally:
                capture.release()
            if stop.is_set():
                return
            self.attempts += 1
            self._set_state(SourceState.RETRYING, self._ended(time.monotonic() - last))
            if stop.wait(self.backoff()):
                return


def open_source(settings: SourceSettings, *, resolve_sample: Callable[[], Path] | None = None,
                for_analysis: bool = False) -> Source:
    """Pick the source type from the URI, carrying the settings' rate and watchdog."""
    source = _open(settings, resolve_sample, for_analysis)
    source.fps = settings.fps
    source.watchdog_s = settings.watchdog_s
    return source


def _open(settings: SourceSettings, resolve_sample: Callable[[], Path] | None, for_analysis: bool) -> Source:
    """Analysis reads files fully, in order, without pacing or looping."""
    uri = settings.uri.strip()
    if uri == "sample":
        if resolve_sample is None:
            raise SourceError("source 'sample' needs the sample video; run `visionedge models fetch`")
        uri = str(resolve_sample())
    if uri.isdigit():
        return LiveSource(int(uri), settings.id, settings)
    device = DEVICE_RE.match(uri)
    if device:
        return LiveSource(uri, settings.id, settings)
    if urlsplit(uri).scheme.lower() in STREAM_SCHEMES:
        return LiveSource(uri, settings.id, settings)
    path = Path(uri)
    try:
        if not path.exists():
            raise SourceError(f"source {uri} does not exist (expected a file, folder, camera index or stream URL)")
        if not (path.is_file() or path.is_dir()):  # a FIFO or socket would block the decoder (and its lock) forever
            raise SourceError(f"source {uri} is not a regular file or folder (a FIFO, socket or device node)")
        if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageSource(path, settings.id)
        if for_analysis:
            return VideoFileSource(path, settings.id)
        return VideoFileSource(path, settings.id, loop=settings.loop, realtime=settings.realtime)
    except OSError as err:  # a path too long, a folder that cannot be listed
        raise SourceError(f"cannot open source {uri}: {err.strerror}") from err
