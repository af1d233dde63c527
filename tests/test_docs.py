"""The docs are part of the product: the configuration reference must match the code and every link must resolve."""

from __future__ import annotations

import re
from pathlib import Path

from visionedge.docs import BEGIN, END, reference

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)#]+)(#[^)]*)?\)")


def test_configuration_reference_matches_the_settings_models() -> None:
    """Regenerate with `python -m visionedge.docs` after changing config.py."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == reference()


def test_readme_names_both_setup_commands_and_ci_runs_the_test_one() -> None:
    """A new user needs exactly two commands; CI must run the same test command."""
    text = README.read_text(encoding="utf-8")
    assert "./scripts/demo.sh" in text
    assert "./scripts/test.sh" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci


def test_readme_maps_every_document_in_docs() -> None:
    """A document the README's map does not name is a document nobody finds."""
    text = README.read_text(encoding="utf-8")
    documents = sorted(path.name for path in DOCS.glob("*.md"))
    assert documents, "docs/ has no documents"
    assert [name for name in documents if f"(docs/{name})" not in text] == []


def test_every_relative_link_in_the_docs_resolves() -> None:
    """Moving or renaming a document must not leave a dead link behind."""
    dead = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target, _anchor in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" not in target and not (page.parent / target).exists():
                dead.append(f"{page.relative_to(ROOT)} -> {target}")
    assert dead == []
