"""Every use of a private attribute of faust-streaming or aiokafka, in one place.

pyproject.toml pins both to the minor versions these were written against; a canary test per
attribute (tests/runtime/test_faust_private.py) fails by name when an upgrade moves one.

- `aiokafka.AIOKafkaConsumer._fetcher` and its `fetched_records` (tune_fetch_wait);
- `faust.App._new_producer` (wrap_producer_flush);
- `faust.Stream._enable_passive` and `faust.Stream._processors` (start_passive, remove_processor);
- `faust.Worker._on_sigterm` and `_on_sigint`, mode's signal handlers (BoundedStopWorker);
- `faust.Consumer._acked`, `_acked_index` and `_gap`, its acknowledgements not committed yet
  (forget_acks);
- `AIOKafkaConsumerThread._commit` and `assignment` of faust's aiokafka driver
  (skip_empty_commits);
- `faust.Table._new_changelog_topic` (with_serializers);
- `faust.Table._data`, the store the table would build on first use (bulk_recovered);
- `faust.tables.recovery.Recovery._build_offsets` and `active_highwaters`
  (recover_after_bulk_loads).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust

from streams.runtime.changelog_store import ChangelogLoadedStore

log = logging.getLogger(__name__)

# under `up`'s 10 s before its SIGKILL; an orderly stop with the broker up takes about a second
STOP_GRACE_SECONDS = 8.0
EXIT_STOP_OVERDUE = 75  # EX_TEMPFAIL: stopped before Faust's stop finished; restart resumes


def with_serializers(table: Any, key_serializer: str, value_serializer: str) -> None:
    """Give `table` these codecs, for its changelog too: the codecs recovery reads it with.

    `app.Table` registers the table, which builds its changelog topic from the serializers it has
    then (Faust's `json` for a table without a value type). Setting the table's serializers after
    that leaves the topic, and so every record a restart recovers, on the defaults: the SKU
    records came back as decoded JSON instead of kept cold (ColdSku), 571 MB after a restart at
    250,000 positions against 420 MB before it. The topic is built again with the codecs."""
    table.key_serializer, table.value_serializer = key_serializer, value_serializer
    table.changelog_topic = table._new_changelog_topic()


def bulk_recovered(table: Any, config: Mapping[str, Any]) -> None:
    """Give `table` a memory store that loads its changelog in bulk on assignment
    (ChangelogLoadedStore), built as Faust builds the memory store it would use otherwise. Call
    it after with_serializers: the store decodes with the table's codecs."""
    assert table._data is None, "the table's store is built already"
    store = ChangelogLoadedStore(
        "memory://",
        table.app,
        table,
        table_name=table.name,
        key_type=table.key_type,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        value_type=table.value_type,
        loop=table.loop,
        options=table.options,
    )
    store.config = config
    table._data = store


def recover_after_bulk_loads() -> None:
    """Faust's recovery, which starts after a rebalance's callback, waits for the bulk loads of
    the tables' ChangelogLoadedStores and starts each partition they loaded where its load
    ended, no further than the highwater it has read (Faust refuses an offset past it)."""
    from faust.tables.recovery import Recovery

    original = Recovery._build_offsets
    if getattr(original, "waits_for_bulk_loads", False):
        return

    async def _build_offsets(
        self: Any, consumer: Any, tps: set[Any], destination: Any, title: str
    ) -> None:
        for table in self.tables.values():
            if isinstance(table.data, ChangelogLoadedStore):
                for tp, offset in (await table.data.loaded()).items():
                    if tp in tps:
                        destination[tp] = min(offset, self.active_highwaters.get(tp, offset))
        await original(self, consumer, tps, destination, title)

    _build_offsets.waits_for_bulk_loads = True  # type: ignore[attr-defined]
    Recovery._build_offsets = _build_offsets  # type: ignore[method-assign]


def tune_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Faust's consumers, tuned: our fetch wait, and Faust's pauses made real.

    Faust passes a fixed 1.5 s fetch wait to aiokafka; ours is short, as the embedded broker
    answers an empty fetch only when the wait is over.

    Faust pauses a partition (a table's changelog once it is recovered, a stream while its buffer
    is full or while tables recover) only by no longer asking aiokafka for its records; aiokafka
    keeps fetching it. For the changelogs, that cost twice: each fetch named sixteen more
    partitions than the stages consume, and every changelog record a commit writes came back to
    this worker, where it sat unconsumed in aiokafka's buffer, and aiokafka sends no next fetch to
    a broker while a partition's records wait there, until a 100 ms back-off runs out: a 100 ms
    stall of every input after every commit. So before each fetch, the partitions Faust does not
    ask for are paused in aiokafka too, and resumed when Faust asks for them again.
    """
    import aiokafka

    if getattr(aiokafka.AIOKafkaConsumer, "_inventory_tuned", False):
        return
    base = aiokafka.AIOKafkaConsumer

    class Consumer(base):  # type: ignore[misc, valid-type]
        _inventory_tuned = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = fetch_max_wait_ms
            super().__init__(*args, **kwargs)

        async def start(self) -> None:
            await super().start()
            fetcher = self._fetcher
            fetched_records = fetcher.fetched_records

            async def fetched_wanted(partitions: Any, *args: Any, **kwargs: Any) -> Any:
                self._pause_all_but(partitions)
                return await fetched_records(partitions, *args, **kwargs)

            fetcher.fetched_records = fetched_wanted

        def _pause_all_but(self, wanted: Any) -> None:
            # Faust's TPs are named tuples equal to aiokafka's, but aiokafka takes only its own
            wanted = set(wanted)
            paused = self.paused()
            unwanted = self.assignment() - wanted - paused
            if unwanted:
                self.pause(*unwanted)
            again = [tp for tp in paused if tp in wanted]
            if again:
                self.resume(*again)

    aiokafka.AIOKafkaConsumer = Consumer


def skip_empty_commits() -> None:
    """Faust's commit, skipped when none of its offsets is of a partition still assigned.

    Faust's aiokafka consumer thread keeps only the offsets of partitions assigned when the
    commit runs; when a rebalance has just taken all of them, it hands aiokafka no offsets,
    aiokafka refuses that (`ValueError({})`) and Faust crashes the worker (seen on Kafka, a peer
    SIGKILLed and restarted during a commit). Nothing is left to commit there: the new owner
    resumes from the last committed offsets, as after Faust's own "already rebalanced" skip.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as thread

    if getattr(thread, "_inventory_skips_empty", False):
        return
    commit = thread._commit

    async def _commit(self: Any, offsets: Any) -> bool:
        assigned = self.assignment()
        if not any(tp in assigned for tp in offsets):
            log.info("commit skipped: a rebalance took its partitions %s", sorted(offsets))
            return False
        result: bool = await commit(self, offsets)  # filters by the same assignment, no await
        return result

    setattr(thread, "_commit", _commit)  # noqa: B010 (a method replaced on the class)
    setattr(thread, "_inventory_skips_empty", True)  # noqa: B010


def wrap_producer_flush(app: Any, flush: Callable[[Callable[[], Awaitable[None]]], Any]) -> None:
    """Run `flush(faust_flush)` wherever Faust flushes its producer before a commit.

    Faust has no hook for it; the producer it builds is wrapped as it is built.
    """
    new_producer = app._new_producer

    def _new_producer() -> Any:
        producer = new_producer()
        faust_flush = producer.flush

        async def flushing() -> None:
            await flush(faust_flush)

        producer.flush = flushing
        return producer

    app._new_producer = _new_producer


def disown(message: Any) -> None:
    """A record this worker will not handle, as its partition was revoked while it waited: marked
    done without telling the consumer, so no offset of it is ever committed here and a rebalance
    does not wait for it.

    Faust's consumer forgets a partition's acknowledgements and committed offset when it is
    revoked, and then records any acknowledgement as committable: a record handled after the
    revoke (by a batch already taken) was committed as soon as the partition came back to this
    worker, while its table writes had been left to the partition's owner, and the recovery had
    replaced the state it changed: its event was lost.
    """
    message.acked = True


async def rewind(consumer: Any, topic: str, partition: int, offset: int) -> None:
    """Fetch a partition again from `offset`: Faust's seek moves aiokafka's position and Faust's
    own read offset, below which it drops a record as read already."""
    from faust.types import TP

    await consumer.seek(TP(topic, partition), offset)


def forget_acks(consumer: Any) -> int:
    """Drop every acknowledgement the consumer has not committed; how many offsets they were.

    Called at an assignment: the revoke before it committed what was handled until then, so what
    is left was handled after (or its commit was refused): its events are handled again from the
    committed offsets, by whichever worker now owns them, where a late commit of it would skip
    records that worker has not handled.
    """
    dropped = sum(len(offsets) for offsets in consumer._acked.values())
    consumer._acked.clear()
    consumer._acked_index.clear()
    consumer._gap.clear()
    return dropped


def start_passive(stream: faust.Stream[Any], channel: Any) -> None:
    """Have the stream's processors run for every record as Faust's own take_events does."""
    stream._enable_passive(channel)


def remove_processor(stream: faust.Stream[Any], processor: Callable[..., Any]) -> None:
    stream._processors.remove(processor)


class BoundedStopWorker(faust.Worker):
    """A faust.Worker that ends within `stop_grace` seconds of SIGTERM or SIGINT, whatever its
    broker does: Faust's orderly stop commits offsets and flushes its producers, and with the
    broker gone it waits on them for ever. Past the grace the process ends as a SIGKILL would
    end it (the changelogs as of the last commit, which a restart resumes from), saying why."""

    stop_grace: float = STOP_GRACE_SECONDS
    _overdue: threading.Timer | None = None

    def __init__(self, app: faust.App, *args: Any, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        # a crash stops the app too, and that stop has hung (a worker whose API port was taken
        # crashed 0.2 s after its assignment and was still there 4 minutes later, so `up` never
        # saw it exit): it ends as a SIGKILL would, with exit code 1, past the same grace
        crash = app.crash

        async def crash_then_exit(reason: BaseException) -> None:
            if self._overdue is None:
                self._overdue = threading.Timer(self.stop_grace, _crash_overdue, (reason,))
                self._overdue.daemon = True
                self._overdue.start()
            await crash(reason)

        app.crash = crash_then_exit  # type: ignore[method-assign]

    def _on_sigterm(self) -> None:
        self._exit_when_overdue(signal.SIGTERM)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._exit_when_overdue(signal.SIGINT)
        super()._on_sigint()

    def _exit_when_overdue(self, received: signal.Signals) -> None:
        if self._overdue is None:  # the first signal starts the clock; another does not reset it
            self._overdue = threading.Timer(self.stop_grace, _stop_overdue, (received, self))
            self._overdue.daemon = True
            self._overdue.start()


def _crash_overdue(reason: BaseException) -> None:
    log.error(
        "still stopping %g s after a crash (%r): exiting now, with the offsets committed so far",
        STOP_GRACE_SECONDS,
        reason,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)


def _stop_overdue(received: signal.Signals, worker: BoundedStopWorker) -> None:
    log.error(
        "still stopping %g s after %s (is the broker out of reach?): exiting now, with the "
        "offsets committed so far; a restart resumes from them",
        worker.stop_grace,
        received.name,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_STOP_OVERDUE)
