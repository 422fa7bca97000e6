"""The replay window (ReplayWindow): which records lie in it, what is sent again inside it, and
when its end offsets are read again."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.runtime import replay_window
from streams.runtime.replay_window import ReplayWindow

EVENTS, COMMANDS = "inventory.events", "inventory.commands"


class Record:
    def __init__(self, topic: str, partition: int, offset: int = 0) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class Ends:
    """true_end_offsets_many as the broker would answer it, and what was asked."""

    def __init__(self, ends: dict[tuple[str, int], int]) -> None:
        self.ends = ends
        self.asked: list[dict[str, list[int]]] = []
        self.before: list[Any] = []  # run before an answer, one per read

    def __call__(
        self, bootstrap: str, wanted: dict[str, list[int]], timeout: float
    ) -> dict[tuple[str, int], int]:
        self.asked.append({topic: sorted(ps) for topic, ps in wanted.items()})
        if self.before:
            self.before.pop(0)()
        return {(topic, p): self.ends[(topic, p)] for topic, ps in wanted.items() for p in ps}


@pytest.fixture
def read(monkeypatch: pytest.MonkeyPatch) -> Ends:
    ends = Ends({})
    monkeypatch.setattr(replay_window, "true_end_offsets_many", ends)
    return ends


async def opened(read: Ends, ends: dict[tuple[str, int], int]) -> ReplayWindow:
    read.ends = ends
    window = ReplayWindow("127.0.0.1:9")
    await window.read([Record(topic, p) for topic, p in ends])
    return window


async def test_a_record_below_the_end_at_assignment_is_in_replay_and_its_sku_sent_again(
    read: Ends,
) -> None:
    window = await opened(read, {(EVENTS, 0): 10, (EVENTS, 1): 0})
    assert window.enter(EVENTS, 0, 3)
    assert window.resend_sku(b"A")  # the first time in the window
    assert not window.resend_sku(b"A")  # from then on it follows this worker's outputs
    assert window.resend_sku(b"B")
    assert not window.enter(EVENTS, 1, 0)  # an empty partition has no window
    assert not window.resend_sku(b"C")  # nor does anything outside one
    assert not window.forces_listing(b"L")


async def test_the_window_closes_at_its_last_record_and_forgets_what_was_resent(
    read: Ends,
) -> None:
    # an empty partition has no window: it keeps none open
    window = await opened(read, {(EVENTS, 0): 5, (COMMANDS, 0): 3, (EVENTS, 1): 0})
    window.enter(EVENTS, 0, 1)
    assert window.resend_sku(b"A")
    window.enter(COMMANDS, 0, 1)
    assert window.forces_listing(b"L")
    window.listing_resent(b"L")
    assert not window.forces_listing(b"L")
    assert window.enter(COMMANDS, 0, 2)  # its last record: still in it, and it closes
    assert not window.enter(COMMANDS, 0, 3)
    window.enter(EVENTS, 0, 2)
    assert not window.resend_sku(b"A")  # events' window still open: A was sent again in it
    assert window.enter(EVENTS, 0, 4)  # the last window closes
    assert not window.enter(EVENTS, 0, 2)  # closed for good, even for an offset before its end
    assert not window.resend_sku(b"D")
    # and what was sent again in it is not held any more (a window can span a million SKUs)
    assert not window._resent_skus and not window._resent_listings


async def test_a_listing_is_forced_until_one_of_its_values_went_out(read: Ends) -> None:
    window = await opened(read, {(COMMANDS, 0): 10})
    window.enter(COMMANDS, 0, 0)
    assert window.forces_listing(b"L")
    assert window.forces_listing(b"L")  # no value sent for it yet: forced again
    window.listing_resent(b"L")
    assert not window.forces_listing(b"L")


async def test_the_ends_are_read_once_per_partition_until_a_rebalance(read: Ends) -> None:
    window = await opened(read, {(EVENTS, 0): 10, (COMMANDS, 1): 4})
    await window.read([Record(EVENTS, 0, 1), Record(COMMANDS, 1, 1)])
    assert read.asked == [{EVENTS: [0], COMMANDS: [1]}]  # known: not read again
    window.forget()
    assert not window.enter(EVENTS, 0, 1)  # a rebalance forgets the windows
    await window.read([Record(EVENTS, 0, 1)])
    assert read.asked[1:] == [{EVENTS: [0]}]
    assert window.enter(EVENTS, 0, 1)


async def test_a_rebalance_during_the_read_has_the_ends_read_again(read: Ends) -> None:
    read.ends = {(EVENTS, 0): 10}
    window = ReplayWindow("127.0.0.1:9")
    read.before.append(window.forget)  # the ends read first may predate the rebalance
    await window.read([Record(EVENTS, 0)])
    assert read.asked == [{EVENTS: [0]}, {EVENTS: [0]}]
    assert window.enter(EVENTS, 0, 0)


async def test_an_unreachable_broker_is_asked_again_after_a_second(
    read: Ends, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failures = [KafkaException(KafkaError(KafkaError._TRANSPORT))]
    read.ends = {(EVENTS, 0): 10}

    def flaky(*args: Any) -> dict[tuple[str, int], int]:
        if failures:
            raise failures.pop()
        return read(*args)

    monkeypatch.setattr(replay_window, "true_end_offsets_many", flaky)
    window = ReplayWindow("127.0.0.1:9")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(window.read([Record(EVENTS, 0)]), 5.0)
    assert time.monotonic() - started >= 1.0  # waits, as the fetcher does
    assert read.asked == [{EVENTS: [0]}]
    assert "replay window: cannot read end offsets" in caplog.text
    assert window.enter(EVENTS, 0, 9)
