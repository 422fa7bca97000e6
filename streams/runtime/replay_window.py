"""The replay window: after an assignment, the values of each SKU and listing a redelivered record
touches go out once more whatever its table record says, so a channel never keeps a value a dead
worker sent from a state that was never committed.

Per input partition (inventory.events, inventory.commands), the window is its end offset when this
worker was assigned it. A worker that died between a batch and its commit sent that batch's
outputs, but the changelog holds the records as they were before it: the redelivered events are
new to them, and a final value equal to what a record says it published would not go out, leaving
the channel on the dead worker's intermediate one. So the first time a record below the window's
end touches a SKU or a listing, its values are sent again whatever the record says; from then on
they follow this worker's own outputs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException

from streams.runtime.offsets import true_end_offsets_many

log = logging.getLogger(__name__)


class ReplayWindow:
    """The window of each input partition of this worker, from its first record after a
    rebalance (read) to its last (enter), and what was sent again inside it."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._ends: dict[tuple[str, int], int] = {}
        self._read: set[tuple[str, int]] = set()  # partitions whose window is known
        self._rebalances = 0
        self.replaying = False  # the record being handled lies in the window
        self._resent_skus: set[bytes] = set()  # re-sent since the window opened
        self._resent_listings: set[bytes] = set()

    async def read(self, messages: Sequence[Any]) -> None:
        """The replay window of each partition in `messages` not seen since the last rebalance:
        its end offset now, read before its first record is handled (so at or after the end at
        assignment: a window too long costs a value sent once more, never a stale one)."""
        while new := {(m.topic, m.partition) for m in messages} - self._read:
            wanted: dict[str, list[int]] = {}
            for topic, partition in new:
                wanted.setdefault(topic, []).append(partition)
            rebalance = self._rebalances
            try:
                # read in place, blocking the loop for the few ms it takes once per rebalance:
                # awaited, a rebalance could take the batch's partitions away before it is
                # handled, and its records would be handled by a worker that no longer owns them
                ends = true_end_offsets_many(self._bootstrap, wanted, 2.0)
            except KafkaException as error:  # broker out of reach: wait, as the fetcher does
                log.warning("replay window: cannot read end offsets (%s); retrying", error)
                await asyncio.sleep(1.0)
                continue
            if self._rebalances == rebalance:  # else read again: the ends may predate it
                self._read.update(new)
                self._ends.update({tp: end for tp, end in ends.items() if end > 0})

    def enter(self, topic: str, partition: int, offset: int) -> bool:
        """The record about to be handled: whether it lies in its partition's window (kept in
        `replaying` until the next)."""
        self.replaying = bool(self._ends) and self._in_replay(topic, partition, offset)
        return self.replaying

    def _in_replay(self, topic: str, partition: int, offset: int) -> bool:
        end = self._ends.get((topic, partition))
        if end is None:
            return False
        if offset >= end - 1:  # the window's last record (or past it): it closes
            del self._ends[(topic, partition)]
            if not self._ends:
                self._resent_skus.clear()
                self._resent_listings.clear()
        return offset < end

    def resend_sku(self, key: bytes) -> bool:
        """Whether the SKU the record touches has its values sent again: the first time in the
        window, counted as re-sent from now on."""
        if self.replaying and key not in self._resent_skus:
            self._resent_skus.add(key)
            return True
        return False

    def forces_listing(self, key: bytes) -> bool:
        """Whether the listing the record touches has its availability sent again (the first
        time in the window: see listing_resent)."""
        return self.replaying and key not in self._resent_listings

    def listing_resent(self, key: bytes) -> None:
        self._resent_listings.add(key)

    def forget(self) -> None:
        """After a rebalance: each partition's window is read again at its first record."""
        self._rebalances += 1
        self._read.clear()
        self._ends.clear()
        self._resent_skus.clear()
        self._resent_listings.clear()
