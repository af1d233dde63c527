"""URL helpers shared by sources and downloads; credentials never reach a log line."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")


def redact_url(url: str) -> str:
    """A URL without user:password or query string, safe for logs and reported properties."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        port = parts.port
    except ValueError:  # an unparsable authority may still hold a secret: keep only the scheme
        return f"{url.split('://', 1)[0]}://***"
    if port:
        netloc = f"{netloc}:{port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def redact_text(text: str) -> str:
    """Every URL inside a free text (an error reason, a description) redacted."""
    def one(match: re.Match[str]) -> str:
        url = match.group(0)
        bare = url.rstrip(".,;:)]")  # sentence punctuation after a URL stays in the sentence
        return redact_url(bare) + url[len(bare):]

    return URL_RE.sub(one, text) if "://" in text else text


def redact_values(value: Any) -> Any:
    """A JSON-like value with every string redacted: what reported properties and method answers may carry."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v) for v in value]
    return value
