"""URL helpers shared by sources and downloads; credentials never reach a log line."""

from __future__ import annotations

from urllib.parse import urlsplit


def redact_url(url: str) -> str:
    """A URL without user:password or query string, safe for logs and reported properties."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"
