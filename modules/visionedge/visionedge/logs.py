"""Logging set-up: readable text for people, one JSON object per line for log collectors."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

from visionedge.result import iso_utc


class JsonFormatter(logging.Formatter):
    """One JSON object per record with time, level, logger, thread and message."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise one record."""
        data = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Log to stderr so stdout stays a clean stream of result records."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("azure.iot.device", "paho", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
