"""The README is part of the product: its generated configuration reference must match the code."""

from __future__ import annotations

from pathlib import Path

from visionedge.docs import BEGIN, END, reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_reference_matches_the_settings_models() -> None:
    """Regenerate with `python -m visionedge.docs` after changing config.py."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == reference()


def test_readme_names_both_setup_commands_and_ci_runs_the_test_one() -> None:
    """A new user needs exactly two commands; CI must run the same test command."""
    text = README.read_text(encoding="utf-8")
    assert "./scripts/demo.sh" in text
    assert "./scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci
