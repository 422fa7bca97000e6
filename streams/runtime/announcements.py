"""What a worker announces to the SKU stage besides records: a newer catalog and a new clock date,
each on every partition of inventory.commands, so the re-derivation it causes runs inside a stage
batch, in its partition's order, and announcing twice re-derives nothing twice.

The first catalog check after a start announces the current version too, so SKUs whose outputs
were derived under an older catalog (a change published while no worker ran, or a worker that died
mid-way) are derived again. Each SKU record says which catalog it was derived under. Likewise the
date is announced once after a start and whenever the clock's date moves: a SKU whose PO eta enters
a channel's backorder horizon is offered with no event on the SKU.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from typing import Protocol

from streams.commands import catalog_changed, date_changed
from streams.core.catalog import Catalog
from streams.runtime.catalog_store import LatestCatalog, read_latest
from streams.runtime.clock import Worker
from streams.runtime.topics import COMMANDS

log = logging.getLogger(__name__)


class Sends(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int) -> None: ...


class Announcements:
    """The worker's catalog kept up with inventory.catalog, and the announcements to the stage of
    a new catalog (check_catalog) or date (check_date)."""

    def __init__(self, bootstrap: str, worker: Worker, outputs: Sends, partitions: int) -> None:
        self._bootstrap = bootstrap
        self._worker = worker
        self._outputs = outputs
        self._partitions = partitions
        self._latest = LatestCatalog(bootstrap)
        self._announced_day: date | None = None

    def ensure_catalog(self, version: int) -> None:
        """Catch up with a catalog at least this new (a stage saw work derived under it)."""
        if self._worker.catalog.version < version:
            self._adopt(read_latest(self._bootstrap))

    def _adopt(self, latest: Catalog | None) -> None:
        current = self._worker.catalog
        if latest is not None and latest.version > current.version:
            log.warning("catalog version %d replaces version %d", latest.version, current.version)
            self._worker.catalog = latest

    async def check_catalog(self) -> None:
        """Adopt a newly published catalog and have every partition's SKUs derived under it (the
        first check after a start announces the current version)."""
        latest = await asyncio.get_running_loop().run_in_executor(None, self._latest)
        if latest is None:  # nothing published since the last check
            return
        self._adopt(latest)
        self._announce(catalog_changed(self._worker.catalog.version))

    def check_date(self) -> None:
        """When the clock's date moves (and once after a start), every partition re-derives the
        SKUs that expect a PO."""
        today = self._worker.clock.today()
        if today == self._announced_day:
            return
        self._announced_day = today
        self._announce(date_changed(today))

    def _announce(self, announcement: bytes) -> None:
        for partition in range(self._partitions):
            self._outputs.send(COMMANDS, None, announcement, partition)
