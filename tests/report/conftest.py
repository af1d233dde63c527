"""Fixtures for the offline report: a short real clip, real analyze runs, and a real headless Chromium."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts" / "report"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DRAWN = "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))"
DECODED = "[...document.querySelectorAll('{}')].filter(i => i.naturalWidth > 0).length"
CHARTS = "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('svg.main-svg')).length"


@dataclass
class PageLoad:
    """What a real browser saw when it opened a report from a file:// path with every other request refused."""

    requests: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Console errors and warnings, uncaught page errors and dialogs (an injected script would open one)."""
    charts: int = 0
    """Rendered plotly charts (each draws an svg.main-svg)."""
    pictures: int = 0
    """Key-frame pictures that decoded (naturalWidth > 0)."""
    side_by_side: int = 0
    """Pictures in the comparison view's pairs that decoded."""
    text: str = ""
    screenshot: Path | None = None


@pytest.fixture(scope="session")
def short_clip(vtest_clip: Callable[[int, float], Path]) -> Path:
    """The first 120 frames of vtest.avi (12 s at 10 fps): a real scene, quick to analyse."""
    return vtest_clip(120, 10.0)


@pytest.fixture(scope="session")
def detector_run(run_cli: Any, short_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`visionedge analyze CLIP --model yolox-nano --jsonl --report --csv --parquet` once for the session."""
    out = tmp_path_factory.mktemp("detector")
    done = run_cli("analyze", short_clip, "--model", "yolox-nano", "--no-progress", "--jsonl", out / "day.jsonl",
                   "--report", out / "report.html", "--csv", out / "day.csv", "--parquet", out / "day.parquet")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium, driven by Playwright (scripts/test.sh installs the package when it is missing)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium package (scripts/test.sh does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def open_report(browser: Any, request: pytest.FixtureRequest) -> Callable[[Path], PageLoad]:
    """`open_report(path)`: load the file offline, let the charts draw, keep a screenshot in .artifacts/report."""

    def load(path: Path) -> PageLoad:
        seen = PageLoad()
        context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        try:
            def route(handle: Any) -> None:
                seen.requests.append(handle.request.url)
                if handle.request.url == path.as_uri():
                    handle.continue_()
                else:
                    handle.abort()

            context.route("**/*", route)
            page = context.new_page()
            page.on("console", lambda m: seen.problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda err: seen.problems.append(f"page error: {err}"))
            page.on("dialog", lambda d: (seen.problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(path.as_uri(), wait_until="load")
            page.wait_for_function(DRAWN, timeout=20_000)
            seen.charts = page.evaluate(CHARTS)
            seen.pictures = page.evaluate(DECODED.format("figure.keyframe img"))
            seen.side_by_side = page.evaluate(DECODED.format(".pair figure img"))
            seen.text = page.inner_text("body")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            seen.screenshot = ARTIFACTS / f"{request.node.name}.png"
            page.screenshot(path=str(seen.screenshot), full_page=True)
        finally:
            context.close()
        return seen

    return load


def write_jsonl(path: Path, records: list[dict[str, Any]], extra_lines: dict[int, str] | None = None) -> Path:
    """Records one per line; extra_lines puts raw text at given 1-based line numbers (corrupt lines)."""
    lines = [json.dumps(r, separators=(",", ":")) for r in records]
    for number, text in sorted((extra_lines or {}).items()):
        lines.insert(number - 1, text)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def copy_artifact(path: Path) -> None:
    """Keep a generated report beside the screenshots for a person to open."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)
