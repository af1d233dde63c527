"""Every desired-properties section is applied by someone, so a setting is never acknowledged 200 and then ignored."""

from __future__ import annotations

from visionedge.config import DesiredProperties
from visionedge.edge.runtime import APPLIERS, DEFERRED


def unapplied(sections: set[str]) -> set[str]:
    """Sections that neither the applier table nor a deferred owner (the model manager) takes care of."""
    return sections - set(APPLIERS) - DEFERRED


def test_every_desired_section_has_an_applier_or_an_owner() -> None:
    """Adding a field to DesiredProperties without an applier in edge/runtime.py fails here."""
    assert unapplied(set(DesiredProperties.model_fields)) == set()
    assert unapplied({*DesiredProperties.model_fields, "brand_new_section"}) == {"brand_new_section"}


def test_the_table_names_only_real_sections_and_each_has_one_owner() -> None:
    """A stale entry (a section renamed or removed) or one applied twice is a mistake too."""
    assert set(APPLIERS) | DEFERRED == set(DesiredProperties.model_fields)
    assert set(APPLIERS) & DEFERRED == set()
