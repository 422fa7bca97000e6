"""Telling reservation decisions (DecisionTeller): only once the records behind them are on the
broker, in the order made, one round at a time; none when a record behind them was dropped."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams.core.reservations import HELD, ReservationState
from streams.runtime.telling import DecisionTeller

AT = datetime(2026, 11, 1, 8, tzinfo=UTC)


def held(reservation_id: str) -> ReservationState:
    return ReservationState(
        reservation_id, "web", HELD, AT, AT + timedelta(minutes=15), [("LAMP", 1)], []
    )


class Writes:
    """DeferredWrites.settle as the broker would answer it: each settle waits until `stored` is
    set, and fails when a record was dropped meanwhile (`drops` went up)."""

    def __init__(self) -> None:
        self.drops = 0
        self.stored = asyncio.Event()
        self.settled: list[int] = []  # the `drops` each settle was asked with
        self.in_flight = 0
        self.most_in_flight = 0
        self.error: Exception | None = None

    async def settle(self, drops: int) -> bool:
        self.settled.append(drops)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.stored.wait()
            if self.error is not None:
                raise self.error
            return self.drops == drops
        finally:
            self.in_flight -= 1


class Caller:
    """What the teller talks to: the decisions topic, the API of this process, the stage."""

    def __init__(self) -> None:
        self.writes = Writes()
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0
        self.local: list[list[str]] = []
        self.serving = True  # an API is served by this worker
        self.unflushed = False  # a batch of take_now waits for its flush
        self.flushes = 0
        self.stopped = 0
        self.teller = DecisionTeller(
            self.writes,
            publish=lambda key, value: self.published.append((key, orjson.loads(value))),
            poll=self.poll,
            local=lambda: self.tell_local if self.serving else None,
            unflushed=lambda: self.unflushed,
            flush=self.flush,
            stop=self.stop,
        )

    def poll(self) -> None:
        self.polls += 1

    def tell_local(self, decisions: list[dict[str, Any]]) -> None:
        self.local.append([d["reservation_id"] for d in decisions])

    def flush(self) -> None:
        self.flushes += 1
        self.unflushed = False
        self.teller.flushed()

    def stop(self) -> None:
        self.stopped += 1

    def told(self) -> list[str]:
        return [key for key, _ in self.published]

    def batch(self, *ids: str) -> None:
        """A stage batch that decided `ids`, flushed."""
        for reservation_id in ids:
            self.teller.decide(held(reservation_id))
        self.teller.flushed()


async def settled() -> None:
    for _ in range(10):  # the round's task, then what it started
        await asyncio.sleep(0)


async def test_decisions_are_told_once_their_records_are_on_the_broker_in_order() -> None:
    caller = Caller()
    caller.batch("r1", "r2")
    await settled()
    assert caller.told() == []  # the records that made them are not stored yet
    caller.writes.stored.set()
    await settled()
    assert caller.told() == ["r1", "r2"]
    assert caller.published[0][1] == held("r1").decision()  # the decision as it was made
    assert caller.local == [["r1", "r2"]]  # the waiting requests of this process too
    assert caller.polls == 1 and caller.stopped == 0


async def test_one_round_at_a_time_and_what_came_meanwhile_goes_with_the_next() -> None:
    caller = Caller()
    caller.batch("r1")
    await settled()
    caller.batch("r2")
    caller.batch("r3")
    await settled()
    assert caller.writes.settled == [0]  # the second round waits for the first
    caller.writes.stored.set()
    await settled()
    assert caller.told() == ["r1", "r2", "r3"]
    assert caller.local == [["r1"], ["r2", "r3"]]
    assert caller.writes.most_in_flight == 1


async def test_decisions_behind_a_dropped_record_are_not_told_and_a_warning_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caller = Caller()
    caller.writes.drops = 4
    caller.batch("r1", "r2")
    await settled()
    assert caller.writes.settled == [4]  # as of the first decision
    caller.writes.drops += 1  # a rebalance took a record behind them to another worker
    with caplog.at_level(logging.WARNING):
        caller.writes.stored.set()
        await settled()
    assert caller.told() == [] and caller.local == []
    assert "2 decisions not told" in caplog.text
    caller.batch("r3")  # later decisions are told again, as of the drops when made
    await settled()
    assert caller.told() == ["r3"] and caller.writes.settled == [4, 5]


async def test_a_batch_of_take_now_is_flushed_first_and_its_decisions_told() -> None:
    caller = Caller()
    caller.writes.stored.set()
    caller.unflushed = True
    caller.teller.decide(held("r1"))  # decided at the acknowledgement, not flushed
    assert caller.teller.due
    assert caller.teller.start_for_due()
    assert not caller.teller.start_for_due()  # a round is in flight: it takes these too
    await settled()
    assert caller.flushes == 1 and caller.told() == ["r1"]
    assert not caller.teller.due and not caller.teller.start_for_due()


async def test_without_an_api_here_decisions_go_to_the_topic_only() -> None:
    caller = Caller()
    caller.serving = False
    caller.writes.stored.set()
    caller.batch("r1")
    await settled()
    assert caller.told() == ["r1"] and caller.local == []


async def test_a_record_that_cannot_be_stored_stops_the_worker_with_nothing_told() -> None:
    caller = Caller()
    caller.writes.error = OSError("the changelog refused the record")
    caller.writes.stored.set()
    caller.batch("r1")
    await settled()
    assert caller.stopped == 1 and caller.told() == []


async def test_decisions_are_settled_as_of_the_first_of_them_still_untold() -> None:
    """A record dropped after the first decision of a round was made may be one behind it."""
    caller = Caller()
    caller.writes.stored.set()
    caller.batch("r1")
    caller.writes.drops += 1  # before the round took r1
    caller.batch("r2")
    await settled()
    assert caller.writes.settled == [0] and caller.told() == []
