"""The catalog and date announcements (Announcements): a newer catalog is adopted, and every
partition is told of the catalog once after a start and on each change, and of each new date."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from streams.commands import catalog_changed, date_changed
from streams.core.catalog import Catalog
from streams.runtime import announcements
from streams.runtime.announcements import Announcements
from streams.runtime.clock import Clock
from streams.runtime.topics import COMMANDS


@dataclass
class Worker:
    catalog: Catalog
    clock: Clock = field(default_factory=lambda: Clock("stream"))


class Outputs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None:
        self.sent.append((topic, key, value, partition))


class Published:
    """inventory.catalog as LatestCatalog and read_latest see it."""

    def __init__(self) -> None:
        self.news: list[Catalog | None] = []  # what each LatestCatalog look returns
        self.latest: Catalog | None = None
        self.reads = 0

    def follower(self, bootstrap: str) -> Any:
        return lambda: self.news.pop(0)

    def read_latest(self, bootstrap: str) -> Catalog | None:
        self.reads += 1
        return self.latest


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    topic = Published()
    monkeypatch.setattr(announcements, "LatestCatalog", topic.follower)
    monkeypatch.setattr(announcements, "read_latest", topic.read_latest)
    return topic


def told(outputs: Outputs, announcement: bytes) -> bool:
    """Every partition (3) was told `announcement`, each once, and nothing else."""
    return sorted(outputs.sent, key=lambda s: s[3]) == [
        (COMMANDS, None, announcement, p) for p in range(3)
    ]


async def test_the_first_check_announces_the_current_catalog_and_a_newer_one_is_adopted(
    published: Published, caplog: pytest.LogCaptureFixture
) -> None:
    worker, outputs = Worker(Catalog(version=2)), Outputs()
    watch = Announcements("127.0.0.1:9", worker, outputs, 3)
    published.news = [Catalog(version=2), None, Catalog(version=3), Catalog(version=1)]
    await watch.check_catalog()  # after a start: SKUs derived under an older one catch up
    assert told(outputs, catalog_changed(2))
    outputs.sent.clear()
    await watch.check_catalog()  # nothing published since
    assert outputs.sent == []
    with caplog.at_level(logging.WARNING):
        await watch.check_catalog()
    assert worker.catalog.version == 3 and told(outputs, catalog_changed(3))
    assert "catalog version 3 replaces version 2" in caplog.text
    outputs.sent.clear()
    await watch.check_catalog()  # never back to an older one
    assert worker.catalog.version == 3 and told(outputs, catalog_changed(3))


def test_a_stage_that_sees_a_newer_catalog_catches_up_and_only_then_reads_it(
    published: Published,
) -> None:
    worker, outputs = Worker(Catalog(version=2)), Outputs()
    watch = Announcements("127.0.0.1:9", worker, outputs, 3)
    published.latest = Catalog(version=4)
    watch.ensure_catalog(2)
    assert published.reads == 0 and worker.catalog.version == 2  # known: not read
    watch.ensure_catalog(3)
    assert published.reads == 1 and worker.catalog.version == 4
    assert outputs.sent == []  # the stage that saw it rederives: no announcement


def test_each_new_date_is_announced_once_and_the_first_after_a_start(
    published: Published,
) -> None:
    worker, outputs = Worker(Catalog()), Outputs()
    worker.clock.observe(datetime(2026, 11, 1, 9, tzinfo=UTC))
    watch = Announcements("127.0.0.1:9", worker, outputs, 3)
    watch.check_date()
    assert told(outputs, date_changed(date(2026, 11, 1)))
    outputs.sent.clear()
    worker.clock.observe(datetime(2026, 11, 1, 23, tzinfo=UTC))
    watch.check_date()
    assert outputs.sent == []
    worker.clock.observe(datetime(2026, 11, 2, 0, 1, tzinfo=UTC))
    watch.check_date()
    assert told(outputs, date_changed(date(2026, 11, 2)))
