"""The topic plan: SPEC §5 names, co-partitioning, compaction and retention, with no broker."""

from __future__ import annotations

import pytest

from streams.errors import InvalidCatalog
from streams.runtime.topics import TopicSpec, topic_specs
from streams.settings import Settings

CHANGELOGS = {
    f"inventory-streams-{t}-changelog"
    for t in ("skus", "sku_parts", "orders", "reservations", "listings")
}
CO_PARTITIONED = {
    "inventory.events",
    "inventory.positions",
    "inventory.commands",
    "inventory.reservation-decisions",
    *CHANGELOGS,
}


def test_spec_topics_and_internal_topics_with_their_layout() -> None:
    settings = Settings(topic_partitions=6, events_retention_ms=-1)
    specs = {s.name: s for s in topic_specs(settings, ["shopify-us", "amazon", "shopify-us"])}

    assert set(specs) == CO_PARTITIONED | {
        "availability.shopify-us",
        "availability.amazon",
        "inventory.alerts",
        "inventory.dlq",
        "inventory.catalog",
    }
    assert {specs[name].partitions for name in CO_PARTITIONED} == {6}
    assert specs["inventory.catalog"].partitions == 1
    compacted = {name for name, spec in specs.items() if spec.compacted}
    assert compacted == {
        "inventory.positions",
        "availability.shopify-us",
        "availability.amazon",
        "inventory.catalog",
        *CHANGELOGS,
    }
    assert specs["inventory.events"].configs() == {"cleanup.policy": "delete", "retention.ms": "-1"}
    assert specs["inventory.positions"].configs() == {"cleanup.policy": "compact"}


def test_extra_configs_are_passed_through() -> None:
    spec = TopicSpec("t", 1, compacted=True, extra={"min.compaction.lag.ms": "1000"})
    assert spec.configs() == {"cleanup.policy": "compact", "min.compaction.lag.ms": "1000"}


def test_channel_id_that_cannot_name_a_topic_is_a_catalog_error() -> None:
    with pytest.raises(InvalidCatalog, match="shop us"):
        topic_specs(Settings(), ["shop us"])
