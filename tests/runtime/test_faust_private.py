"""Canaries: each private attribute of faust-streaming or aiokafka that
streams.runtime.faust_private touches, checked on the installed versions, so an upgrade that moves
one fails here by name instead of somewhere in a running worker."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import faust
from aiokafka.consumer.consumer import AIOKafkaConsumer  # aiokafka's own, not tune_fetch_wait's
from aiokafka.consumer.fetcher import Fetcher
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.runtime.faust_private import disown, forget_acks


def test_aiokafka_consumer_builds_its_fetcher_as_fetcher_on_start() -> None:
    assert "self._fetcher = Fetcher(" in inspect.getsource(AIOKafkaConsumer.start)


def test_aiokafka_fetcher_fetched_records_takes_the_partitions_first() -> None:
    fetched_records = Fetcher.fetched_records
    assert inspect.iscoroutinefunction(fetched_records)
    assert list(inspect.signature(fetched_records).parameters)[:2] == ["self", "partitions"]


def test_faust_app_builds_its_producer_through_new_producer() -> None:
    app = faust.App("canary", broker="kafka://127.0.0.1:1")
    assert callable(app._new_producer)
    assert "self._new_producer()" in inspect.getsource(type(app).producer.fget)  # type: ignore[attr-defined]


def test_faust_stream_keeps_its_processors_and_a_passive_mode() -> None:
    app = faust.App("canary", broker="kafka://127.0.0.1:1")
    stream = app.stream([])

    def processor(value: object) -> object:
        return value

    stream.add_processor(processor)
    assert stream._processors[-1] is processor
    assert list(inspect.signature(stream._enable_passive).parameters)[:1] == ["channel"]


def test_faust_worker_stops_on_signals_through_on_sigterm_and_on_sigint() -> None:
    installed = inspect.getsource(faust.Worker._install_signal_handlers_unix)
    assert "self._on_sigterm" in installed and "self._on_sigint" in installed
    for name in ("_on_sigterm", "_on_sigint"):
        assert list(inspect.signature(getattr(faust.Worker, name)).parameters) == ["self"]


def _consumer_acking(topic: str) -> Any:
    """A Faust consumer (not started) that records acknowledgements of `topic`, as it does for
    the topics its agents read once assigned."""
    app = faust.App("canary", broker="kafka://127.0.0.1:1")
    app.topics._acking_topics.add(topic)
    return app.consumer


def _message(topic: str, partition: int, offset: int) -> ConsumerMessage:
    return ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"key", b"value", None)


def test_an_ack_after_a_revoke_is_committable_unless_the_record_was_disowned() -> None:
    consumer = _consumer_acking("inventory.events")
    tp = TP("inventory.events", 1)
    # a revoke forgets the partition's committed offset (as a fresh consumer has none): a record
    # handled after it and acknowledged becomes committable, whoever handles it from then on
    stale = _message("inventory.events", 1, 41)
    stale.ack(consumer)
    assert consumer._new_offset(tp) == 42
    consumer = _consumer_acking("inventory.events")
    disowned = _message("inventory.events", 1, 41)
    disown(disowned)
    disowned.ack(consumer)  # what take_batches does with every event of a handled batch
    assert consumer._new_offset(tp) is None
    assert not any(consumer._acked.values())


def test_forget_acks_drops_every_acknowledgement_not_committed() -> None:
    consumer = _consumer_acking("inventory.commands")
    for offset in (152, 153, 155):
        _message("inventory.commands", 2, offset).ack(consumer)
    assert forget_acks(consumer) == 3
    assert consumer._new_offset(TP("inventory.commands", 2)) is None
    # and a record acknowledged after it counts again, from its own offset
    _message("inventory.commands", 2, 160).ack(consumer)
    assert consumer._new_offset(TP("inventory.commands", 2)) == 161


class _RevokedUnderCommit:
    """What Faust's aiokafka consumer thread `_commit` touches: a rebalance took the partitions
    being committed away, and aiokafka refuses a commit of no offsets (ValueError({}))."""

    log = logging.getLogger("canary")

    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.committed: list[dict[Any, Any]] = []
        self.crashed: list[BaseException] = []
        self.tp_last_committed_at: dict[TP, float] = {}

    def assignment(self) -> set[TP]:
        return self.assigned

    def _ensure_consumer(self) -> _RevokedUnderCommit:
        return self

    async def commit(self, offsets: dict[Any, Any]) -> None:
        from aiokafka.util import commit_structure_validate

        commit_structure_validate(offsets)  # aiokafka's own check: {} is a ValueError
        self.committed.append(offsets)

    async def crash(self, reason: BaseException) -> None:
        self.crashed.append(reason)


async def test_a_commit_whose_partitions_a_rebalance_took_is_skipped_not_a_crash() -> None:
    """Seen on Kafka in CI (test_repeated_sigkills_of_either_worker_lose_and_double_nothing): a
    worker's commit ran just as a rebalance revoked its partitions; Faust filtered the offsets by
    the new assignment, handed aiokafka none, and crashed the worker on aiokafka's ValueError({}).
    There is nothing to commit: the commit is skipped, as Faust skips one that already
    rebalanced, and a commit of an assigned partition still goes through."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from streams.runtime.faust_private import skip_empty_commits

    skip_empty_commits()
    kept, revoked = TP("inventory.events", 2), TP("inventory.events", 0)
    thread = _RevokedUnderCommit({kept})
    assert await AIOKafkaConsumerThread._commit(thread, {revoked: 10}) is False  # type: ignore[arg-type]
    assert (thread.crashed, thread.committed) == ([], [])
    assert await AIOKafkaConsumerThread._commit(thread, {revoked: 10, kept: 7}) is True  # type: ignore[arg-type]
    assert thread.crashed == []
    assert [
        {(tp.topic, tp.partition): o.offset for tp, o in c.items()} for c in thread.committed
    ] == [{("inventory.events", 2): 7}]


def test_faust_table_builds_its_changelog_topic_through_new_changelog_topic() -> None:
    """with_serializers builds the topic again: `app.Table` has built it with the defaults."""
    from streams.runtime.faust_private import with_serializers

    app = faust.App("canary", broker="kafka://127.0.0.1:1")
    table = app.Table("t", default=None, key_type=bytes)
    assert table.changelog_topic.value_serializer == "json"  # built at registration
    assert "self._new_changelog_topic()" in inspect.getsource(type(table).changelog_topic.fget)  # type: ignore[attr-defined]
    with_serializers(table, "raw", "table-json")
    assert table.changelog_topic.value_serializer == "table-json"
    assert table.changelog_topic.get_topic_name() == "canary-t-changelog"


def test_faust_recovery_builds_its_offsets_after_the_rebalance_and_its_highwaters() -> None:
    """bulk_recovered's store starts its load in the tables' rebalance; recover_after_bulk_loads
    waits for it in `Recovery._build_offsets`: Faust must build the store from `Table._data`,
    rebalance the tables, and build the active offsets in the recovery task, after their
    highwaters (`active_highwaters`), from the destination it is given."""
    from faust.tables.recovery import Recovery

    from streams.runtime.changelog_store import ChangelogLoadedStore
    from streams.runtime.faust_private import bulk_recovered

    app = faust.App("canary", broker="kafka://127.0.0.1:1")
    table = app.Table("t", default=None, key_type=bytes)
    bulk_recovered(table, {"bootstrap.servers": "127.0.0.1:1"})
    assert isinstance(table.data, ChangelogLoadedStore)
    assert list(inspect.signature(Recovery._build_offsets).parameters) == [
        "self",
        "consumer",
        "tps",
        "destination",
        "title",
    ]
    restart = inspect.getsource(Recovery._restart_recovery.fun)  # a mode ServiceTask
    highwaters = restart.index("consumer, assigned_active_tps, active_highwaters")
    assert highwaters < restart.index("consumer, assigned_active_tps, active_offsets")
    assert "self.active_highwaters" in inspect.getsource(Recovery.__init__)
