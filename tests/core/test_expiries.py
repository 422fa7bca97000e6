"""The expiry timer's queue: only held reservations, only when due, each once per retry period."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from streams.core.reservations import (
    EXPIRED,
    HELD,
    RELEASED,
    Expiries,
    ReservationState,
)
from tests.core.builders import T0


def held(rid: str, minutes: float) -> ReservationState:
    return ReservationState(rid, "web", HELD, T0, T0 + timedelta(minutes=minutes), [], [])


def at(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


class Table(dict[str, ReservationState]):
    """The reservation records, as the stage keeps them; every lookup is counted."""

    looked = 0

    def lookup(self, rid: str) -> ReservationState | None:
        self.looked += 1
        return self.get(rid)


def test_only_the_reservations_past_their_expiry_are_looked_at() -> None:
    table, queue = Table(), Expiries()
    for i in range(1_000):
        table[f"r{i}"] = held(f"r{i}", 10 + i)
        queue.keep(table[f"r{i}"])
    due = queue.due(T0 + at(12.5), 0.0, table.lookup)
    assert [s.reservation_id for s in due] == ["r0", "r1", "r2"]
    assert table.looked == 3  # not a thousand


def test_a_due_reservation_is_handed_out_again_only_after_the_retry_period() -> None:
    table, queue = Table(), Expiries(retry=30)
    table["r"] = held("r", 1)
    queue.keep(table["r"])
    now = T0 + at(5)
    assert [s.reservation_id for s in queue.due(now, 100.0, table.lookup)] == ["r"]
    assert queue.due(now, 110.0, table.lookup) == []  # sent 10 s ago: wait for it to come round
    assert [s.reservation_id for s in queue.due(now, 131.0, table.lookup)] == ["r"]  # lost?


def test_a_reservation_no_longer_held_is_dropped_when_it_comes_due() -> None:
    table, queue = Table(), Expiries()
    for rid, status in (("a", RELEASED), ("b", EXPIRED), ("c", HELD)):
        table[rid] = held(rid, 1)
        queue.keep(table[rid])
        table[rid] = replace(table[rid], status=status)
    assert [s.reservation_id for s in queue.due(T0 + at(5), 0.0, table.lookup)] == ["c"]
    assert len(queue) == 1


def test_a_reservation_held_again_with_a_later_expiry_waits_for_that_one() -> None:
    table, queue = Table(), Expiries()
    table["r"] = held("r", 1)
    queue.keep(table["r"])
    table["r"] = held("r", 60)
    queue.keep(table["r"])
    assert queue.due(T0 + at(5), 0.0, table.lookup) == []
    assert [s.reservation_id for s in queue.due(T0 + at(61), 0.0, table.lookup)] == ["r"]


def test_a_record_written_again_unchanged_is_queued_once() -> None:
    table, queue = Table(), Expiries()
    table["r"] = held("r", 1)
    for _ in range(5):
        queue.keep(table["r"])
    assert len(queue) == 1
    assert len(queue.due(T0 + at(5), 0.0, table.lookup)) == 1
    assert table.looked == 1


def test_a_rebuild_takes_the_tables_held_reservations_and_forgets_the_rest() -> None:
    table, queue = Table(), Expiries()
    queue.keep(held("gone", 1))  # a partition this worker no longer has
    assert queue.stale
    table["r"] = held("r", 2)
    queue.rebuild([(table["r"].expires_at, "r")])
    assert not queue.stale and len(queue) == 1
    assert [s.reservation_id for s in queue.due(T0 + at(5), 0.0, table.lookup)] == ["r"]
