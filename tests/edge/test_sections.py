"""Every desired-properties section is applied by someone, so a setting is never acknowledged 200 and then ignored."""

from __future__ import annotations

from visionedge.config import DesiredProperties
from visionedge.edge.runtime import APPLIERS, BOOT_STEPS, DEFERRED, PIPELINE_SECTIONS, SECTION_TABLE, boot_sections


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


def test_each_section_names_a_real_start_up_step() -> None:
    """A section read at start-up goes back to its default when its step fails on the saved settings; a step name
    that no start-up step has would leave it saved and failing on every start."""
    assert {section.boot for section in SECTION_TABLE.values()} == set(BOOT_STEPS)
    assert set(SECTION_TABLE) == set(APPLIERS)


def test_a_source_step_that_fails_at_start_reverts_every_source_section() -> None:
    """Saved `sources` that break capture at start go back to the default as `source` does (the boot table once
    reverted `source` only, so a module with a bad saved `sources` list failed the same way on every start)."""
    assert set(boot_sections("source")) == {"source", "sources"}
    assert set(boot_sections("model")) == {"runtime", "inference", "rollback", "shadow"}
    assert set(boot_sections("telemetry")) == {"telemetry", "outbox", "local_mqtt"}
    assert boot_sections("analytics") == ("analytics",)


def test_the_sections_that_rebuild_the_pipeline_are_refused_without_undoing() -> None:
    """Source lists and runtime settings replace the pipeline or the model; a refusal before that leaves both as they
    were, so nothing is applied again."""
    assert set(PIPELINE_SECTIONS) == {"source", "sources", "runtime"}
