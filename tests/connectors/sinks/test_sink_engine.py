"""The engine's promises, seen from the channel: latest value only, never older, nothing lost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from connectors.sinks.base import ChannelUnavailable, Outcome
from connectors.sinks.engine import OffsetTracker, SinkEngine
from connectors.sinks.limits import Backoff
from connectors.sinks.metrics import SinkMetrics
from streams.core.models import Availability
from tests.connectors.sinks.sink_fakes import FakeSink, availability, now

# Every test runs on looptime's fake loop clock: a sleep takes no real time, and running code
# takes no loop time, so the timings asserted below hold exactly, however slow or busy the machine.
pytestmark = pytest.mark.looptime

NO_WAIT = Backoff(base=0.0, cap=0.0)


def engine_for(sink: FakeSink, **kwargs: object) -> SinkEngine:
    return SinkEngine(sink, backoff=NO_WAIT, clock=now, **kwargs)  # type: ignore[arg-type]


async def test_a_burst_on_one_sku_costs_one_call() -> None:
    sink = FakeSink()
    engine = engine_for(sink)
    for offset, version in enumerate(range(1, 1001)):
        engine.offer(availability("TEE", version), partition=0, offset=offset)
    await engine.run_until_idle()
    assert len(sink.calls) == 1
    assert sink.history == {"TEE": [1000]}
    assert engine.committable() == {0: 1000}


async def keep_changing(engine: SinkEngine, sku: str, versions: range, every: float) -> float:
    """Offer `versions` of `sku` one every `every` seconds; the time of the last offer."""
    for version in versions:
        engine.offer(availability(sku, version))
        await asyncio.sleep(every)
    return now() - every


async def test_a_hot_sku_is_sent_once_per_window_while_it_changes_and_a_quiet_one_at_once() -> None:
    sink = FakeSink(max_batch=1, linger=0.4)  # the input counts as quiet after 0.1 s
    engine = engine_for(sink)
    engine.offer(availability("HOT", 1))
    await engine.run_until_idle()
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    changing = asyncio.create_task(keep_changing(engine, "HOT", range(2, 32), 0.02))
    engine.offer(availability("QUIET", 1))
    await asyncio.sleep(0.1)
    assert sink.history == {"HOT": [1], "QUIET": [1]}  # QUIET went at once, HOT waits
    last_offer = await changing
    await asyncio.sleep(0.3)
    stop.set()
    await draining
    hot = [
        (t, [r.version for r in call])
        for t, call in zip(sink.call_times, sink.calls, strict=True)
        if call[0].channel_sku == "HOT"
    ]
    versions = [v for _, (v,) in hot]
    assert versions[0] == 1 and versions[-1] == 31 and versions == sorted(set(versions))
    assert len(versions) == 3  # the first, one at the window's end, the last once it stopped
    assert hot[1][0] - hot[0][0] == pytest.approx(0.4, abs=0.01)  # the window, exactly
    # once the changes stop, the last value waits for quiet input, not for its window to end
    assert hot[2][0] - last_offer == pytest.approx(0.1, abs=0.01)


async def test_after_a_partial_call_the_next_round_waits_for_the_window_while_busy() -> None:
    sink = FakeSink(max_batch=3, linger=0.4)
    engine = engine_for(sink)
    engine.offer(availability("A", 1))
    await engine.run_until_idle()  # alone: at once
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    changing = asyncio.create_task(keep_changing(engine, "A", range(2, 32), 0.02))
    await asyncio.sleep(0.05)
    for sku in ("B", "C", "D", "E"):  # a full batch and more, and records keep coming
        engine.offer(availability(sku, 1))
    await asyncio.sleep(0.2)
    assert len(sink.calls) == 1  # the next round is at the window's end: rounds stay aligned
    await changing
    await asyncio.sleep(0.3)
    stop.set()
    await draining
    assert sink.call_times[1] - sink.call_times[0] == pytest.approx(0.4, abs=0.01)
    assert "B" in [r.channel_sku for r in sink.calls[1]]
    assert sink.history["A"][-1] == 31
    assert all(sink.history[sku] == [1] for sku in "BCDE")
    assert len(sink.calls) <= 5


async def test_when_records_stop_a_batch_that_is_not_full_goes_at_once() -> None:
    sink = FakeSink(max_batch=3, linger=0.4)
    engine = engine_for(sink)
    engine.offer(availability("A", 1))
    await engine.run_until_idle()  # alone: at once
    for sku in ("B", "C", "D", "E"):
        engine.offer(availability(sku, 1))
    offered = now()
    await engine.run_until_idle()
    assert [len(call) for call in sink.calls] == [1, 3, 1]
    # the next round after quiet input (0.1 s), not after the window (0.4 s)
    assert sink.call_times[1] - offered == pytest.approx(0.1, abs=0.01)
    assert sink.call_times[2] - offered == pytest.approx(0.1, abs=0.01)


async def test_a_pause_before_the_consumer_caught_up_is_not_the_end_of_a_burst() -> None:
    sink = FakeSink(max_batch=3, linger=0.4)  # quiet after 0.1 s
    engine = engine_for(sink)
    engine.caught_up()  # a consumer that reached the end of the log before the records came
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    engine.offer(availability("A", 1))  # alone: at once
    await asyncio.sleep(0.02)
    engine.offer(availability("B", 1))  # a partial batch in the same window: waits
    await asyncio.sleep(0.2)  # no record for 0.2 s, but the consumer never said it caught up
    assert len(sink.calls) == 1
    engine.caught_up()
    await asyncio.sleep(0.05)
    stop.set()
    await draining
    assert [[r.channel_sku for r in call] for call in sink.calls] == [["A"], ["B"]]
    # the moment the consumer caught up (0.22 s; quiet since B at 0.02), not the window's end (0.4)
    assert sink.call_times[1] - sink.call_times[0] == pytest.approx(0.22, abs=0.01)


async def test_after_the_end_of_input_nothing_waits_for_a_window() -> None:
    sink = PacedBulkSink()  # a bulk path that would wait 10 s for the updates to settle
    engine = engine_for(sink)
    for i in range(8):  # a resync: the whole topic at once, then nothing more
        engine.offer(availability(f"K{i}", 1))
    engine.end_of_input()
    started = now()
    await engine.run_until_idle()
    ((at, skus),) = sink.bulks
    assert at - started == pytest.approx(0, abs=0.01) and len(skus) == 8


class SlowBulkSink(FakeSink):
    """A fake with a bulk path (like a feed) that finishes only when the test says so."""

    bulk_threshold = 5
    max_bulk = 100

    def __init__(self) -> None:
        super().__init__(max_batch=1)
        self.release = asyncio.Event()
        self.bulks: list[list[int]] = []

    async def bulk_ready(self) -> bool:
        return not self.bulks

    async def flush_bulk(self, records: Sequence[Availability]) -> list[Outcome]:
        self.bulks.append([r.version for r in records])
        await self.release.wait()
        for record in records:
            self.state[record.channel_sku] = record
            self.history.setdefault(record.channel_sku, []).append(record.version)
        return [Outcome.ack(r.channel_sku) for r in records]


async def test_a_key_in_a_pending_bulk_is_not_sent_again_until_the_bulk_resolves() -> None:
    sink = SlowBulkSink()
    engine = engine_for(sink)
    for i in range(6):
        engine.offer(availability(f"K{i}", 1))
    draining = asyncio.create_task(engine.run_until_idle())
    await asyncio.sleep(0.05)
    assert len(sink.bulks) == 1 and sink.calls == []
    engine.offer(availability("K0", 2))  # newer, while K0 v1 is inside the pending bulk
    engine.offer(availability("OTHER", 1))
    await asyncio.sleep(0.05)
    assert [[r.channel_sku for r in call] for call in sink.calls] == [["OTHER"]]
    sink.release.set()
    await draining
    assert sink.history["K0"] == [1, 2]
    assert sink.state["K0"].version == 2


class PacedBulkSink(FakeSink):
    """One call per 50 ms, and a bulk path that waits for the updates to settle."""

    bulk_threshold = 5
    max_bulk = 100
    bulk_hold = 10.0

    def __init__(self) -> None:
        super().__init__(max_batch=1, linger=0.4)
        self.bulks: list[tuple[float, list[str]]] = []

    async def ready(self) -> None:
        await asyncio.sleep(0.05)

    async def bulk_ready(self) -> bool:
        return True

    async def flush_bulk(self, records: Sequence[Availability]) -> list[Outcome]:
        self.bulks.append((now(), [r.channel_sku for r in records]))
        for record in records:
            self.state[record.channel_sku] = record
            self.history.setdefault(record.channel_sku, []).append(record.version)
        return [Outcome.ack(r.channel_sku) for r in records]


async def test_a_bulk_job_waits_for_the_updates_to_stop_then_takes_the_backlog() -> None:
    sink = PacedBulkSink()
    engine = engine_for(sink)
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    for i in range(20):
        engine.offer(availability(f"K{i}", 1))
    last_offer = await keep_changing(engine, "K0", range(2, 17), 0.02)
    assert sink.bulks == []  # records kept coming: calls drain the oldest keys meanwhile
    await asyncio.sleep(0.3)
    stop.set()
    await draining
    ((at, skus),) = sink.bulks
    # once the input went quiet (0.1 s), at the end of the paced call (0.05 s) then under way
    assert 0.1 <= at - last_offer <= 0.1 + 0.05
    assert len(skus) >= 10 and "K0" in skus
    assert {sku: r.version for sku, r in sink.state.items()} == {
        f"K{i}": (16 if i == 0 else 1) for i in range(20)
    }


# ---- settling: values still changing wait, sell-outs do not ----


async def changing_while_read(
    engine: SinkEngine, skus: Sequence[str], versions: range, every: float, available: int = 9
) -> list[float]:
    """Offer `versions` of each of `skus` every `every` seconds, the consumer keeping up (it says
    it caught up after each poll, as the runner does); the times of the offers."""
    times = []
    for version in versions:
        for sku in skus:
            engine.offer(availability(sku, version, available=available + version))
        engine.caught_up()
        times.append(now())
        await asyncio.sleep(every)
    return times


async def channel_shows(engine: SinkEngine, quantities: dict[str, int]) -> None:
    """Deliver version 1 of each SKU with its quantity: what the channel shows to begin with."""
    for sku, quantity in quantities.items():
        engine.offer(availability(sku, 1, available=quantity))
    engine.end_of_input()
    await engine.run_until_idle()


async def test_a_sku_changing_every_100_ms_is_held_until_it_settles() -> None:
    # records keep coming as far as the engine knows (quiet input would release everything)
    sink = FakeSink(max_batch=1, linger=0.2, settle=0.3, max_hold=5.0, quiet=5.0)
    engine = engine_for(sink)
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    offers = await changing_while_read(engine, ["HOT"], range(1, 11), 0.1)
    assert sink.calls == []  # it changed all the time: no call spent on it
    await asyncio.sleep(0.45)
    stop.set()
    await draining
    assert sink.history == {"HOT": [10]}
    # once it stopped changing: after the settle time, not before, without waiting for quiet input
    assert sink.call_times[0] - offers[-1] == pytest.approx(0.3, abs=0.01)


async def test_a_sku_that_never_settles_still_goes_once_per_max_hold() -> None:
    sink = FakeSink(max_batch=1, linger=0.2, settle=0.3, max_hold=0.65, quiet=5.0)
    engine = engine_for(sink)
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    offers = await changing_while_read(engine, ["HOT"], range(1, 18), 0.1)  # never quiet 0.3 s
    await asyncio.sleep(0.45)
    stop.set()
    await draining
    # held for the cap from the first value the channel lacks (v1 at 0.0, v8 at 0.7), not longer;
    # the last value once it settled (0.3 s after v17 at 1.6), before its cap (2.05) ran out
    assert sink.history == {"HOT": [7, 14, 17]}
    waited = [at - offers[0] for at in sink.call_times]
    assert waited == pytest.approx([0.65, 1.35, 1.6 + 0.3], abs=0.01)


async def test_a_sell_out_goes_at_once_while_other_skus_settle() -> None:
    sink = FakeSink(max_batch=1, linger=1.0, settle=0.5, max_hold=5.0, quiet=5.0)
    engine = engine_for(sink)
    await channel_shows(engine, {"LAST-ONES": 3})
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    busy = asyncio.create_task(changing_while_read(engine, ["A", "B", "C"], range(1, 21), 0.05))
    await asyncio.sleep(0.3)
    engine.offer(availability("LAST-ONES", 2, available=0))  # sold out, inside its 1 s window
    engine.caught_up()
    sold_out = now()
    await asyncio.sleep(0.1)
    assert sink.history == {"LAST-ONES": [1, 2]}  # A, B and C keep changing: held
    assert sink.call_times[-1] - sold_out == pytest.approx(0, abs=0.01)
    await busy
    await asyncio.sleep(0.7)
    stop.set()
    await draining
    assert sink.history == {"LAST-ONES": [1, 2], "A": [20], "B": [20], "C": [20]}


async def test_a_sku_back_from_zero_does_not_wait_to_settle() -> None:
    sink = FakeSink(max_batch=1, linger=0.2, settle=1.0, max_hold=5.0, quiet=5.0)
    engine = engine_for(sink)
    await channel_shows(engine, {"BACK": 0})
    await asyncio.sleep(0.2)  # the coalescing window is over
    draining = asyncio.create_task(engine.run(stop := asyncio.Event()))
    engine.offer(availability("BACK", 2, available=4))
    engine.offer(availability("OTHER", 1, available=4))
    engine.caught_up()
    await asyncio.sleep(0.1)
    stop.set()
    await draining
    assert sink.history == {"BACK": [1, 2]}  # OTHER is new and settles; BACK sells again


async def test_sell_outs_go_before_skus_that_waited_longer() -> None:
    sink = FakeSink(max_batch=1, settle=0.5)
    engine = engine_for(sink)
    await channel_shows(engine, {"GONE": 4, "ZERO": 0})
    sink.calls.clear()
    start = now() - 1.0
    waiting = [("A", 5), ("B", 6), ("ZERO", 0), ("C", 7), ("GONE", 0), ("NEW", 0)]
    for i, (sku, available) in enumerate(waiting):  # in the order they started waiting
        engine.offer(availability(sku, 2, available=available), received_at=start + i / 100)
    engine.end_of_input()
    await engine.run_until_idle()
    # sell-outs first, oldest first (NEW: the channel may show stock we never saw), then the rest;
    # ZERO is 0 on the channel already: no sell-out, it keeps its place
    assert [call[0].channel_sku for call in sink.calls] == ["GONE", "NEW", "A", "B", "ZERO", "C"]


async def test_batches_carry_many_skus_up_to_the_channel_limit() -> None:
    sink = FakeSink(max_batch=10)
    engine = engine_for(sink)
    for i in range(25):
        engine.offer(availability(f"SKU-{i}", 1), partition=0, offset=i)
    await engine.run_until_idle()
    assert [len(call) for call in sink.calls] == [10, 10, 5]
    assert engine.committable() == {0: 25}


async def test_duplicates_and_older_versions_never_reach_the_channel() -> None:
    sink = FakeSink()
    engine = engine_for(sink)
    engine.offer(availability("MUG", 5), partition=0, offset=0)
    await engine.run_until_idle()
    for offset, version in enumerate([5, 3, 4, 5], start=1):  # replayed and reordered
        engine.offer(availability("MUG", version), partition=0, offset=offset)
    await engine.run_until_idle()
    assert sink.history == {"MUG": [5]}
    assert engine.committable() == {0: 5}


async def test_an_older_version_arriving_after_a_newer_pending_one_is_dropped() -> None:
    sink = FakeSink()
    engine = engine_for(sink)
    engine.offer(availability("MUG", 7), partition=0, offset=0)
    engine.offer(availability("MUG", 6), partition=0, offset=1)
    await engine.run_until_idle()
    assert sink.history == {"MUG": [7]}


async def test_an_outage_ends_with_the_latest_values_and_no_stale_overwrite() -> None:
    sink = FakeSink(max_batch=2)
    sink.failures = [ChannelUnavailable("HTTP 503"), ChannelUnavailable("HTTP 429", 0.0)] * 3
    engine = engine_for(sink)
    offset = 0
    for version in range(1, 6):
        for sku in ("A", "B", "C"):
            engine.offer(availability(sku, version), partition=0, offset=offset)
            offset += 1
        await engine.step()  # the channel fails while updates keep arriving
    await engine.run_until_idle()
    assert {sku: r.version for sku, r in sink.state.items()} == {"A": 5, "B": 5, "C": 5}
    for versions in sink.history.values():
        assert versions == sorted(set(versions))  # strictly increasing: nothing stale, no repeat
    assert engine.committable() == {0: 15}


async def test_offsets_wait_for_the_acknowledgement() -> None:
    sink = FakeSink(max_batch=1)
    sink.failures = [ChannelUnavailable("HTTP 500")]
    engine = engine_for(sink)
    engine.offer(availability("A", 1), partition=3, offset=10)
    engine.offer(availability("B", 1), partition=3, offset=11)
    await engine.step()  # A fails: nothing may be committed
    assert engine.committable() == {}
    await engine.step()  # A again (a failed record keeps its place at the front), acknowledged
    assert [[r.channel_sku for r in call] for call in sink.calls] == [["A"], ["A"]]
    assert engine.committable() == {3: 11}
    engine.offsets.mark_committed({3: 11})
    await engine.run_until_idle()
    assert engine.committable() == {3: 12}


async def test_a_rejected_record_goes_to_the_dead_letter_hook_and_is_committed() -> None:
    sink = FakeSink()
    sink.verdict = lambda r: (
        Outcome.reject(r.channel_sku, "SKU not listed") if r.channel_sku == "X" else None
    )
    letters: list[tuple[str, bytes | None, int | None, str]] = []

    async def dead_letter(
        record: Availability, raw: bytes | None, _p: int | None, offset: int | None, reason: str
    ) -> None:
        letters.append((record.channel_sku, raw, offset, reason))

    engine = engine_for(sink, dead_letter=dead_letter)
    engine.offer(availability("X", 1), partition=0, offset=0, raw=b"original")
    engine.offer(availability("Y", 1), partition=0, offset=1)
    await engine.run_until_idle()
    assert len(letters) == 1
    sku, raw, offset, reason = letters[0]
    assert (sku, raw, offset) == ("X", b"original", 0)
    assert "SKU not listed" in reason and "pos" in reason
    assert engine.committable() == {0: 2}


async def test_item_retries_are_bounded() -> None:
    sink = FakeSink()
    sink.verdict = lambda r: Outcome.retry(r.channel_sku, "quantity changed underneath")
    letters: list[str] = []

    async def dead_letter(record: Availability, *_: object) -> None:
        letters.append(record.channel_sku)

    engine = engine_for(sink, dead_letter=dead_letter)  # type: ignore[arg-type]
    engine.offer(availability("A", 1), partition=0, offset=0)
    await engine.run_until_idle()
    assert letters == ["A"]
    assert 2 <= len(sink.calls) <= 10


async def test_retry_after_is_honoured() -> None:
    sink = FakeSink()
    sink.failures = [ChannelUnavailable("HTTP 429", retry_after=0.3)]
    engine = SinkEngine(sink, backoff=Backoff(rng=lambda: 0.0), clock=now)
    engine.offer(availability("A", 1))
    started = now()
    await engine.run_until_idle()
    assert len(sink.calls) == 2 and sink.state["A"].version == 1
    assert now() - started == pytest.approx(0.3, abs=0.01)


async def test_metrics_count_calls_per_channel_without_sku_labels() -> None:
    registry = CollectorRegistry()
    metrics = SinkMetrics.for_registry(registry)
    assert SinkMetrics.for_registry(registry) is metrics
    sink = FakeSink()
    engine = engine_for(sink, metrics=metrics)
    for version in range(1, 4):
        engine.offer(availability("A", version))
    await engine.run_until_idle()
    pos = {"channel": "pos"}
    assert registry.get_sample_value("inventory_sink_records_received_total", pos) == 3
    assert registry.get_sample_value("inventory_sink_records_coalesced_total", pos) == 2
    assert registry.get_sample_value("inventory_sink_records_acked_total", pos) == 1
    labels = {
        tuple(sorted(sample.labels)) for family in registry.collect() for sample in family.samples
    }
    assert all("channel_sku" not in names and "sku" not in names for names in labels)


def test_offset_tracker_commits_below_the_first_open_offset() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.track(1, offset)
    tracker.done(1, 1)
    tracker.done(1, 2)
    assert tracker.committable() == {}
    tracker.done(1, 0)
    assert tracker.committable() == {1: 3}
    tracker.mark_committed({1: 3})
    assert tracker.committable() == {}
    tracker.done(1, 4)
    tracker.done(1, 3)
    assert tracker.committable() == {1: 5}


changes = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C", "D"]), st.integers(1, 30)), min_size=1, max_size=80
)


def stock(sku: str, version: int) -> int:
    """A quantity per (sku, version) that sells out and comes back often."""
    return (0, 1, 5)[(version + ord(sku)) % 3]


PACINGS: dict[str, dict[str, Any]] = {
    "batches": {"max_batch": 2},
    "settling": {"max_batch": 1, "linger": 0.02, "settle": 0.01, "max_hold": 0.03},
}


@pytest.mark.looptime(False)  # hypothesis runs each example on a loop of its own
@pytest.mark.parametrize("pacing", PACINGS.values(), ids=PACINGS.keys())
@settings(max_examples=60, deadline=None)
@given(changes=changes, failures=st.lists(st.booleans(), max_size=20), seed=st.integers(0, 99))
async def test_whatever_the_order_and_failures_the_channel_ends_at_the_newest_version(
    pacing: dict[str, Any], changes: list[tuple[str, int]], failures: list[bool], seed: int
) -> None:
    sink = FakeSink(**pacing)
    sink.failures = [ChannelUnavailable("HTTP 503") for failed in failures if failed]
    engine = engine_for(sink)
    rng = random.Random(seed)
    for offset, (sku, version) in enumerate(changes):
        engine.offer(availability(sku, version, stock(sku, version)), partition=0, offset=offset)
        if rng.random() < 0.3:
            await engine.step()
    await engine.run_until_idle()
    newest: dict[str, int] = {}
    for sku, version in changes:
        newest[sku] = max(newest.get(sku, 0), version)
    assert {sku: r.version for sku, r in sink.state.items()} == newest
    assert all(r.available == stock(sku, r.version) for sku, r in sink.state.items())
    for versions in sink.history.values():
        assert versions == sorted(set(versions))
    assert engine.committable() == {0: len(changes)}


async def test_staleness_is_the_age_of_the_oldest_value_the_channel_has_not_acknowledged() -> None:
    registry = CollectorRegistry()
    sink = FakeSink()
    sink.failures = [ChannelUnavailable("HTTP 503", retry_after=30.0)]
    engine = SinkEngine(
        sink,
        backoff=Backoff(rng=lambda: 0.0),
        clock=now,
        metrics=SinkMetrics.for_registry(registry),
    )
    pos = {"channel": "pos"}
    stale = "inventory_sink_staleness_seconds"
    assert registry.get_sample_value(stale, pos) == 0  # nothing waits: up to date
    engine.offer(availability("A", 1))
    running = asyncio.create_task(engine.run_until_idle())
    await asyncio.sleep(10)
    engine.offer(availability("B", 1))  # younger: the oldest one sets the age
    await asyncio.sleep(5)
    assert registry.get_sample_value(stale, pos) == pytest.approx(15, abs=0.01)
    await running
    assert sink.state["A"].version == 1 and sink.state["B"].version == 1
    assert registry.get_sample_value(stale, pos) == 0


async def test_ack_latency_runs_from_a_value_waiting_to_its_acknowledgement() -> None:
    registry = CollectorRegistry()
    sink = FakeSink()
    sink.failures = [ChannelUnavailable("HTTP 503", retry_after=2.0)]
    engine = SinkEngine(
        sink,
        backoff=Backoff(rng=lambda: 0.0),
        clock=now,
        metrics=SinkMetrics.for_registry(registry),
    )
    engine.offer(availability("A", 1))  # refused once: acknowledged 2 s after it came
    await engine.run_until_idle()
    engine.offer(availability("B", 1))  # taken at once
    await engine.run_until_idle()
    pos = {"channel": "pos"}
    name = "inventory_sink_ack_latency_seconds"
    assert registry.get_sample_value(f"{name}_count", pos) == 2
    assert registry.get_sample_value(f"{name}_sum", pos) == pytest.approx(2.0, abs=0.01)
    assert registry.get_sample_value(f"{name}_bucket", {**pos, "le": "0.005"}) == 1
    assert registry.get_sample_value(f"{name}_bucket", {**pos, "le": "1.0"}) == 1
    assert registry.get_sample_value(f"{name}_bucket", {**pos, "le": "2.5"}) == 2
