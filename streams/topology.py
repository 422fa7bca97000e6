"""The live topology: where every record goes, in one file.

    inventory.events ──► [sku stage] ── single-SKU event keyed where it lives: applied here
          │                  │ ├─ other single-SKU events ──► inventory.commands (by SKU)
          │                  │ ├─ order events ─────────────► inventory.commands (by order id)
          │                  │ └─ reservation events ───────► inventory.commands (by reservation)
          │                  ├─ positions ──► inventory.positions      alerts ──► inventory.alerts
          │                  ├─ availability of single-SKU listings ──► availability.<channel>
          │                  ├─ bundle component values ──► inventory.commands (by listing)
          │                  ├─ order lines done for 7 days ──► inventory.commands (by order id)
          │                  └─ hold answers ──► inventory.commands (by reservation id)
    inventory.commands ──► the same agent, by the kind of record:
          ├─ SKU commands and forwarded single-SKU events ──► [sku stage]  (table `skus`)
          ├─ order events ──► [order stage] (table `orders`) ──► per-SKU commands
          │      (a record goes with its last line; a date announcement sweeps finished records)
          ├─ reservation events and answers ──► [reservation stage] (table `reservations`)
          │      ├─ tentative holds / releases ──► inventory.commands (by SKU)
          │      └─ expiry timer ──► `reservation-expired` on inventory.events (so replay has it)
          └─ component values ──► [listing stage] (table `listings`) ──► availability.<channel>
    anything undecodable or against the contract ──► inventory.dlq
    a request the reservation API served by this worker has just stored on inventory.events
          ──► [sku stage] at once, when it is next in its partition's log (take_now); the
              decision goes to the waiting request in the process once its record is stored

The SKU, order, reservation and listing stages decide in streams.stages (pure code, one record
against its table), and so does where a record of inventory.events goes (streams.stages.routing);
this module feeds them and performs their effects (route_input, perform, SkuBatch).

The four stages share one internal topic, each command keyed by its stage's table key: a key lands
on the partition its table record lives on, so every table stays co-partitioned with it. One topic
rather than one per stage because every fetch names every partition a worker consumes, idle or
not, and the embedded broker's CPU grows with the partitions fetched (see tune_fetch_wait too).
A batch's commands for one partition travel as one record, an envelope (see CommandBatch).

Delivery is at-least-once: outputs are sent immediately, Faust flushes its producer before it
commits offsets, and every table record carries what makes its update idempotent
(streams.core.state). Tables use the key partitioner, so a record's changelog partition is the
partition of its key.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

import faust
from mode import CrashingSupervisor

from streams.client import faust_credentials, kafka_config
from streams.codec import Codec, make_codec
from streams.commands import (
    COMMITTED_FLAG,
    CatalogChanged,
    CommandCodec,
    DateChanged,
    ReservationDecided,
    is_envelope,
    unpack,
)
from streams.core.catalog import Catalog
from streams.core.derive import ComponentUpdate, ListingState
from streams.core.keys import position_key
from streams.core.models import (
    OrderCancelled,
    OrderCreated,
    Position,
    ReservationExpired,
    ReservationReleased,
    ReservationRequested,
)
from streams.core.orders import Confirmation, OrderState, commit_commands
from streams.core.reservations import (
    HELD,
    Expiries,
    ReservationState,
    expiry_event,
)
from streams.core.retention import (
    LinesForgotten,
    horizon_start,
)
from streams.core.sku import HoldResult
from streams.core.state import (
    SkuState,
    from_us,
)
from streams.errors import EncodingError, InvalidEvent
from streams.metrics import Metrics
from streams.runtime.announcements import Announcements
from streams.runtime.batches import take_batches
from streams.runtime.clock import Clock, catch_up
from streams.runtime.faust_private import (
    bulk_recovered,
    disown,
    forget_acks,
    recover_after_bulk_loads,
    rewind,
    skip_empty_commits,
    tune_fetch_wait,
    with_serializers,
)
from streams.runtime.offsets import LagProbe
from streams.runtime.outputs import Outputs
from streams.runtime.producer import dead_letter_record
from streams.runtime.records import (
    COMMITTED_HEADERS,
    CommandBatch,
    Inner,
    InSequence,
    has_header,
    is_committed,
    message_time,
)
from streams.runtime.replay_window import ReplayWindow
from streams.runtime.sku_batch import SkuBatch
from streams.runtime.sku_table import SkuTable
from streams.runtime.stage_tables import StageTable
from streams.runtime.tables import DeferredWrites, PositionCount
from streams.runtime.telling import DecisionTeller
from streams.runtime.topics import (
    ALERTS,
    CALLER_WAITING,
    COMMANDS,
    DLQ,
    EVENTS,
    POSITIONS,
    RESERVATION_DECISIONS,
    availability_topic,
    partition_for,
)
from streams.settings import Settings
from streams.stages import listings as listing_stage
from streams.stages import orders as order_stage
from streams.stages import reservations as reservation_stage
from streams.stages import routing
from streams.stages import skus as skus_stage
from streams.stages.effects import DeadLetter, Effects
from streams.stages.reservations import ReservationInput
from streams.stages.routing import Forward, LocalRequest

log = logging.getLogger(__name__)

EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: the worker stopped on a failed stage batch

# what inventory.commands carries for the order and reservation stages (the rest: the SKU stage)
ORDER_KINDS = (OrderCreated, OrderCancelled)
RESERVATION_KINDS = (
    ReservationRequested,
    ReservationReleased,
    ReservationExpired,
    HoldResult,
    Confirmation,
    ReservationDecided,
)
BATCH_MAX = 1000
MONITOR_SECONDS = 5.0  # how often the held-state gauges and the consumer lag are brought up to date


def batches(
    stream: faust.StreamT, within: float, urgent: Callable[[Any], bool]
) -> AsyncIterator[Sequence[Any]]:
    """The agent's stream as batches: what arrived in each `within` seconds, at most BATCH_MAX,
    and a batch ends at once on an event that is `urgent`."""
    return take_batches(stream, BATCH_MAX, within, urgent)


@dataclass
class Runtime:
    """What the stages share inside one worker process."""

    catalog: Catalog
    codec: Codec
    commands: CommandCodec
    metrics: Metrics
    clock: Clock
    partitions: int
    # the reservation API served by this worker (inventory_streams.worker), if any: it is handed
    # every decision made here as it is told (DecisionTeller), not read back from the topic
    local_decisions: Callable[[list[dict[str, Any]]], None] | None = None
    # set by the topology: handle an acknowledged inventory.events record now (see take_now)
    take_now: Callable[[int, int, bytes, bytes, Any], bool] = lambda *_record: False
    owner_of: Callable[[bytes], str | None] = lambda _key: None  # set by the topology
    # set by the topology: a SKU's state in memory when this worker holds it (see live_sku)
    live_sku: Callable[[str], SkuState | None] = lambda _sku: None


def create_app(
    settings: Settings,
    bootstrap: str,
    catalog: Catalog,
    metrics: Metrics,
    clock_mode: str = "wall",
    url: str | None = None,
) -> faust.App:
    """The worker's Faust app; `url` is where this worker serves the reservation API, shared with
    the group on every rebalance so that each worker knows every partition's owner (owner_of)."""
    tune_fetch_wait(settings.consumer_fetch_max_wait_ms)
    skip_empty_commits()
    recover_after_bulk_loads()
    codec = make_codec(settings)
    rt = Runtime(
        catalog, codec, CommandCodec(codec), metrics, Clock(clock_mode), settings.topic_partitions
    )
    n = settings.topic_partitions

    where: dict[str, Any] = {"canonical_url": url} if url else {}
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=n,
        topic_replication_factor=settings.topic_replication,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.consumer_session_timeout_ms / 1000,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=settings.commit_interval_seconds,
        producer_acks=-1,
        producer_linger=0.002,
        stream_wait_empty=False,
        web_enabled=False,
        table_standby_replicas=0,
        **where,
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=n,
            internal=False,
        )

    # ---- topics ----
    events = raw_topic(EVENTS)
    decisions = raw_topic(RESERVATION_DECISIONS)
    positions = raw_topic(POSITIONS)
    alerts = raw_topic(ALERTS)
    dlq = raw_topic(DLQ)

    # ---- tables (changelog-backed, recovered on restart) ----
    def table(name: str, serializer: str) -> faust.Table[bytes, Any]:
        # app.Table builds a faust.Table; the serializers are its attributes, not TableT's
        t = cast(
            "faust.Table[bytes, Any]",
            app.Table(name, default=None, partitions=n, key_type=bytes, use_partitioner=True),
        )
        with_serializers(t, "raw", serializer)  # what recovery decodes the changelog with
        bulk_recovered(t, kafka_config(bootstrap, settings=settings))
        return t

    skus = table("skus", "sku-state")  # one-record SKUs recovered cold (ColdSku)
    sku_parts = table("sku_parts", "table-json")  # a hot SKU's record in parts (split_record)
    orders = table("orders", "table-json")
    reservations = table("reservations", "table-json")
    listings = table("listings", "table-json")

    outputs = Outputs(bootstrap, settings.producer_linger_ms)
    outputs.install(app)
    owned: set[int] = set()  # this worker's partitions of the stages and their tables
    writes = DeferredWrites(
        outputs,
        n,
        owns=owned.__contains__,
        parts_topic=sku_parts.changelog_topic.get_topic_name(),
        warm_skus=settings.warm_skus or None,
    )
    # a SKU's record is decoded (its parts joined) when the stage first needs it (SkuTable)
    sku_table = SkuTable(skus, sku_parts, writes, n, rt.clock)
    to_stages = CommandBatch(outputs, n)
    outputs.before_flush.append(writes.write)
    outputs.after_flush.append(writes.mark)

    # ---- shared helpers ----
    positions_out = rt.metrics.records_out.labels("position")  # bound once: labels() is a lookup
    availability_out = rt.metrics.records_out.labels("availability")

    def send(topic: faust.TopicT, key: str | bytes | None, value: bytes) -> None:
        k = key.encode() if isinstance(key, str) else key
        outputs.send(topic.get_topic_name(), k, value)

    def to_stage(
        key: str | bytes, value: bytes, flags: int = 0, origin: float | None = None
    ) -> None:
        """To a stage, through inventory.commands, at the end of this batch (CommandBatch);
        `origin`: the input behind it, if not the record being handled."""
        k = key.encode() if isinstance(key, str) else key
        to_stages.add(k, value, flags, sku_batch.input_time if origin is None else origin)

    def dead_letter(message: Any, reason: str, source: str = "unknown") -> None:
        record = dead_letter_record(
            message.value or b"",
            source,
            reason,
            key=message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        send(dlq, message.key, rt.codec.encode(record, DLQ))
        rt.metrics.dead_letter(reason)

    def emit_availability(record: Any, caused_at: float | None) -> None:
        # the topic exists: `up` and `inventory-streams catalog` create every channel's topic
        name = availability_topic(record.channel)
        outputs.send(name, record.channel_sku.encode(), rt.codec.encode(record, name))
        availability_out.inc()
        if caused_at is not None:  # None: derived again for a catalog or a date, not an input
            rt.metrics.availability_sent(record.channel, caused_at)

    # ---- catalog changes and new dates, announced to every partition (Announcements) ----
    announcements = Announcements(bootstrap, rt, outputs, n)

    @app.timer(interval=settings.catalog_check_seconds)
    async def watch_catalog() -> None:
        """Adopt a newly published catalog and have every partition's SKUs derived under it."""
        await announcements.check_catalog()

    @app.timer(interval=1.0)
    async def watch_date() -> None:
        """When the clock's date moves (and once after a start), every partition re-derives the
        SKUs that expect a PO. Through inventory.commands, so it runs inside a stage batch."""
        announcements.check_date()

    # ---- what the worker holds, and how far behind it is (off the stages' path) ----
    rt.metrics.channels(c.id for c in catalog.channels)
    lag = LagProbe(bootstrap, settings.app_id)

    held = PositionCount()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def count_held_again(app: faust.App, **kwargs: Any) -> None:
        # counted at the next tick: the tables are recovered and the revoked records gone by then
        held.stale = True
        expiries.stale = True  # the held reservations, likewise
        catch_up(rt.clock, skus.data.values())

    @app.timer(interval=MONITOR_SECONDS)
    async def monitor() -> None:
        if held.stale:
            held.recount(list(skus.data.items()))
        rt.metrics.positions_held.set(held.total)
        rt.metrics.listings_held.set(len(listings.data))
        mine = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
        mine = [(t, p) for t, p in mine if t in (EVENTS, COMMANDS)]
        try:
            behind = await asyncio.get_running_loop().run_in_executor(None, lag.behind, mine)
        except Exception as error:  # an exception in a timer would stop the worker: not for this
            log.warning("consumer lag not read this time: %s", error)
            return
        for topic in (EVENTS, COMMANDS):
            rt.metrics.consumer_lag.labels(settings.app_id, topic).set(behind.get(topic, 0))

    # ---- sku stage ----
    # a batch that raised is left unacknowledged (take_batches); the stage must not go on past it
    # with later events acknowledged and its own missing, so the worker stops and a restart
    # redelivers from the committed offsets (every command is idempotent)
    @app.agent(
        app.topic(
            EVENTS,
            COMMANDS,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        ),
        supervisor_strategy=CrashingSupervisor,
    )
    async def sku_stage(stream: faust.StreamT) -> None:
        async for batch in batches(stream, settings.stage_batch_ms / 1000, caller_waits):
            messages = [event.message for event in batch]
            await window.read(messages)
            try:
                handle_records(in_sequence.take(owned_only(messages)))
            except Exception:
                stop_at_once()
                raise
            for (topic, partition), offset in in_sequence.rewinds():
                await rewind(app.consumer, topic, partition, offset)

    def owned_only(messages: list[Any]) -> list[Any]:
        """The batch's records of partitions this worker owns. A batch taken before a rebalance
        can reach the stage after the revoke: its records of partitions no longer owned are
        disowned (not handled, no offset committed here), left to their owner, which handles
        them from the committed offsets, this worker too when they come back to it."""
        if all(message.partition in owned for message in messages):
            return messages
        mine = []
        for message in messages:
            if message.partition in owned:
                mine.append(message)
            else:
                disown(message)
        log.warning(
            "%d records of partitions revoked while they waited were left to their owner",
            len(messages) - len(mine),
        )
        return mine

    in_sequence = InSequence(disown)

    def stop_at_once() -> None:
        """A batch raised half-way: its changes are in the tables' memory and in the pending
        changelog writes, some of its outputs sent and others not. Faust's orderly stop would
        commit on the way out and write those changes to the changelogs with the commands they
        owe never sent, so the process ends here, as a SIGKILL would: the changelogs hold the state
        as of the committed offsets, and a restart redelivers the batch."""
        log.exception("a stage batch failed: stopping now, its events stay unacknowledged")
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_BATCH_FAILED)

    def caller_waits(event: Any) -> bool:
        """A request the reservation API waits on, and has not had decided already (take_now)."""
        message = event.message
        if message.topic != EVENTS or not has_header(message, CALLER_WAITING):
            return False
        return message.offset not in taken_early.get(message.partition, ())

    # the offset of the last inventory.events record handled, per partition of this worker, and
    # the records handled before the stage fetched them (take_now), to be skipped when it does
    handled_up_to: dict[int, int] = {}
    taken_early: dict[int, set[int]] = {}

    # values a dead worker may have sent from uncommitted state are sent again (ReplayWindow)
    window = ReplayWindow(bootstrap)

    def send_position(record: Position) -> None:
        key = position_key(record.sku, record.location)
        send(positions, key, rt.codec.encode(record, POSITIONS))
        positions_out.inc()

    def sku_written(key: bytes, state: SkuState) -> None:
        writes.put(skus, key, state)
        held.put(key, len(state.locations))

    # SKU states changed since the last flush (the batch's, and take_now's), derived at the flush
    sku_batch = SkuBatch(
        sku_table,
        rt,
        perform=lambda out: perform(None, out),
        raised=rt.metrics.raised,
        resend=window.resend_sku,
        position=send_position,
        availability=emit_availability,
        # a re-derivation has no input behind it: 0, the send time
        to_stage=lambda key, update, origin: to_stage(key, rt.commands.encode(update), 0, origin),
        written=sku_written,
    )
    pending = sku_batch.pending
    writes.busy = pending.__contains__  # a state changed there is not kept cold until flushed
    flush_timer: list[asyncio.TimerHandle | None] = [None]

    def handle_records(messages: Sequence[Any], flush: bool = True) -> None:
        """One batch: every record in order, then the batch's outputs together. No awaits: a
        batch is atomic on the event loop (take_now relies on it). Without `flush`, the outputs
        wait for the next batch (or STAGE_BATCH_MS), or for the decisions' round (see
        DecisionTeller)."""
        rt.clock.busy()
        started = time.perf_counter()
        for message in messages:
            sku_batch.input_time = message_time(message)
            window.enter(message.topic, message.partition, message.offset)
            if message.topic == EVENTS:
                early = taken_early.get(message.partition)
                if early and message.offset in early:
                    early.discard(message.offset)
                    continue
                handled_up_to[message.partition] = message.offset
                command = route_input(message)
                if command is not None:
                    apply_here(command, message)
            elif is_envelope(message.value):
                try:
                    for key, value, flags in unpack(message.value):
                        headers = COMMITTED_HEADERS if flags & COMMITTED_FLAG else None
                        inner = Inner(
                            COMMANDS,
                            message.partition,
                            message.offset,
                            key,
                            value,
                            headers,
                            message_time(message),
                        )
                        handle_command(inner)
                except EncodingError as error:  # corrupt: the items before the cut are done
                    dead_letter(message, f"{error}; the items before it were handled")
            else:
                handle_command(message)
        if not flush:
            if not teller.start_for_due() and flush_timer[0] is None:
                flush_timer[0] = asyncio.get_running_loop().call_later(
                    settings.stage_batch_ms / 1000, flush_pending
                )
            return
        sku_batch.flush()
        to_stages.send()
        teller.flushed()
        outputs.poll()
        rt.metrics.batch_seconds.labels("sku").observe(time.perf_counter() - started)

    # a decision is told once the table records that made it are on the broker (DecisionTeller)
    teller = DecisionTeller(
        writes,
        publish=lambda reservation_id, decision: send(decisions, reservation_id, decision),
        poll=outputs.poll,
        local=lambda: rt.local_decisions,
        unflushed=lambda: bool(pending),
        flush=lambda: handle_records([]),
        stop=stop_at_once,
    )

    def flush_pending() -> None:
        flush_timer[0] = None
        if pending or teller.due or to_stages.pending:
            handle_records([])

    def take_now(partition: int, offset: int, key: bytes, value: bytes, headers: Any) -> bool:
        """Handle a record of inventory.events the broker has just acknowledged, before the stage
        fetches it, when every record before it on its partition is handled here: that is its
        place in the log, so the outcome is the one the fetch would have given (a replay agrees).
        False when it is not (another worker's partition, a rebalance, records in between): the
        stage handles it when it arrives.

        The record's outputs (positions, availability, the reservation's record) go with the
        next batch, or with the next round of decisions (DecisionTeller), which waits for the SKU's
        record on the broker, then tells the waiting request and publishes the decision; so a
        burst of requests for one SKU costs one position and availability update per round and
        fewer requests to the broker. Its offset is committed only after that batch."""
        if app.rebalancing or handled_up_to.get(partition) != offset - 1:
            taken_fetched.inc()
            return False
        handle_records(
            [Inner(EVENTS, partition, offset, key, value, headers, time.time())], flush=False
        )
        taken_early.setdefault(partition, set()).add(offset)
        taken_now.inc()
        return True

    taken_now, taken_fetched = (rt.metrics.taken_now.labels(h) for h in ("now", "fetched"))

    rt.take_now = take_now

    def owner_of(key: bytes) -> str | None:
        """The API URL of the worker whose partition of inventory.events `key` lands on, as of
        the last rebalance; None when unknown."""
        partition = partition_for(key, n)
        distribution = getattr(app.assignor, "external_topic_distribution", {})
        for member_url, topics in distribution.items():
            if partition in topics.get(EVENTS, ()):
                return str(member_url)
        return None

    rt.owner_of = owner_of

    def live_sku(sku: str) -> SkuState | None:
        """The SKU's state in this worker's memory, as the stage would apply its next event to it
        (changes not yet flushed or committed included), for the API's explain: read only, the
        tables are left as they are. An empty state for a SKU of its own it has no record of;
        None when another worker owns the SKU's partition or the tables are being recovered."""
        key = sku.encode()
        if app.rebalancing or partition_for(key, n) not in owned:
            return None
        entry = pending.get(key)  # changed by take_now since the last flush
        if entry:
            return entry[0]
        return sku_table.peek(sku, rt.catalog.version)

    rt.live_sku = live_sku

    def handle_command(message: Any) -> None:
        """A record of inventory.commands, to the stage its kind belongs to."""
        try:
            command = rt.commands.decode(message.value)
        except (EncodingError, InvalidEvent) as error:
            dead_letter(message, str(error))
            return
        if isinstance(command, ORDER_KINDS):
            handle_order(message, command)
        elif isinstance(command, LinesForgotten):
            order_stage.handle_forgotten(order_table, command)
        elif isinstance(command, RESERVATION_KINDS):
            handle_reservation(message, command)
        elif isinstance(command, ComponentUpdate):
            handle_listing(message, command)
        elif isinstance(command, CatalogChanged):
            announcements.ensure_catalog(command.version)
            sku_table.rederive_partition(message.partition, pending, rt.catalog.version)
        elif isinstance(command, DateChanged):
            sku_table.rederive_inbound(message.partition, pending, command.day)
            sweep_finished(command.day)
        else:
            apply_here(command, message)

    def apply_here(command: Any, message: Any) -> None:
        """A command or event for a SKU of this partition."""
        if isinstance(command, LocalRequest):
            hold_here(command)
        elif isinstance(command, OrderCreated):
            commit_here(command, message)
        else:
            sku_batch.apply(command)

    def decode_event(value: bytes) -> object:
        """A record's value as the codec reads it; routing.admit checks that it is an event."""
        return rt.codec.decode(value, EVENTS)

    def route_input(message: Any) -> Any:
        """A record of inventory.events, routed (streams.stages.routing): dead-lettered, kept to
        be applied here (its SKU lives here), or forwarded to its stage."""
        rt.metrics.events_in.inc()
        ev = routing.admit(message.value, decode_event, rt.catalog, EVENTS)
        if isinstance(ev, DeadLetter):
            dead_letter(message, ev.reason, ev.source)
            return None
        rt.clock.observe(ev.occurred_at)
        partition = message.partition
        where = routing.route(
            ev,
            message.value,
            rt.catalog,
            rt.clock.decision_time,
            lambda key: partition_for(key, n) == partition,
        )
        if isinstance(where, Forward):
            to_stage(where.key, where.value)
            return None
        return where

    def commit_here(order: OrderCreated, message: Any) -> None:
        """An order whose SKUs all live here: its lines are committed now, in one hop, and the
        order stage gets the event marked as committed, for its record (the lines a later
        cancel finds, cancels that came first, the confirmation of its reservation)."""
        for command in commit_commands(order):
            sku_batch.apply(command)
        to_stage(order.order_id, message.value, COMMITTED_FLAG)

    def hold_here(request: LocalRequest) -> None:
        """Decide a single-SKU request in one hop: hold, tell the record, publish the decision; a
        request the SKU knows goes to the reservation stage (skus_stage.knows_request)."""
        hold = request.hold
        if skus_stage.knows_request(sku_batch.state(hold.sku), hold.reservation_id):
            to_stage(hold.reservation_id, request.original)
            return
        outcome = sku_batch.apply(hold, answer=False)  # a refusal is kept: a retry gets it too
        out = sku_batch.out
        skus_stage.decided_here(request.state, outcome, out)
        perform(None, out)
        rt.metrics.reservations.labels(request.state.status).inc()
        out.clear()

    # ---- the order, reservation and listing stages (streams.stages), over their tables ----
    expiries = Expiries(retry=30.0)  # a sent expiry not back within 30 s is sent again
    order_table = StageTable(orders, OrderState.from_dict, writes)
    reservation_table = StageTable(
        reservations, ReservationState.from_dict, writes, written=expiries.keep
    )
    listing_table = StageTable(listings, ListingState.from_dict, writes)

    def perform(message: Any, out: Effects) -> None:
        """A stage's effects: alerts now, commands to the stages (this batch's envelope),
        decisions after the batch's commands (DecisionTeller.decide), dead letters now."""
        for alert in out.alerts:
            send(alerts, alert.sku, rt.codec.encode(alert, ALERTS))
        for key, command in out.commands:
            to_stage(key, rt.commands.encode(command))
        for state in out.decisions:
            teller.decide(state)
        for dead in out.dead_letters:
            dead_letter(message, dead.reason, dead.source)

    def handle_order(message: Any, ev: OrderCreated | OrderCancelled) -> None:
        out = Effects()
        order_stage.handle_order(order_table, ev, out, committed=is_committed(message))
        if out.new_order is not None:
            rt.metrics.order_created(out.new_order.channel, len(out.new_order.lines))
        perform(message, out)
        rt.metrics.raised(out.alerts)

    swept_day: list[date | None] = [None]

    def sweep_finished(day: date) -> None:
        """Once a day per worker (at the first date announcement of that day): the order and
        reservation records finished past the horizon are forgotten (streams.core.retention)."""
        if swept_day[0] == day:
            return
        swept_day[0] = day
        since = horizon_start(day)
        order_stage.forget_finished(order_table, list(orders.data.keys()), since)
        reservation_stage.compact_finished(reservation_table, list(reservations.data.keys()), since)

    def handle_reservation(message: Any, item: ReservationInput) -> None:
        out = Effects()
        reservation_stage.handle_reservation(
            reservation_table, item, rt.catalog, rt.clock.decision_time, out
        )
        perform(message, out)
        if out.decided is not None:
            rt.metrics.reservations.labels(out.decided).inc()

    def held_in_table() -> Iterable[tuple[datetime, str]]:
        """(expires_at, id) of every held reservation of the table, recovered ones undecoded."""
        for value in list(reservations.data.values()):
            if isinstance(value, dict):
                if value["st"] == HELD:
                    yield from_us(value["ex"]), value["id"]
            elif value.status == HELD:
                yield value.expires_at, value.reservation_id

    @app.timer(interval=0.5)
    async def expire_holds() -> None:
        """Publish `reservation-expired` for held reservations past their TTL on this worker:
        those due in the expiry queue, which is rebuilt from the table after a rebalance."""
        now = rt.clock.now()
        if now is None:
            return
        if expiries.stale:
            expiries.rebuild(held_in_table())
        for state in expiries.due(now, time.monotonic(), reservation_table.get):
            key = state.reservation_id.encode()
            send(events, key, rt.codec.encode(expiry_event(state), EVENTS))

    # bundles and kits whose components live on several partitions
    def handle_listing(message: Any, update: ComponentUpdate) -> None:
        announcements.ensure_catalog(update.catalog_version)
        key = message.key
        force = window.forces_listing(key)
        out = Effects()
        listing_stage.handle_component(
            listing_table, key, update, rt.catalog, out, time.time_ns() // 1000, force
        )
        for record in out.availability:
            if force:
                window.listing_resent(key)
            emit_availability(record, message_time(message))

    # mode types receivers as (sender, *args, signal, **kwargs); Faust sends `assigned` by keyword
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == EVENTS)
        log.warning("assigned partitions of %s: %s", EVENTS, mine)
        if writes.dropped:  # changed during the rebalance: handled again by their owner
            log.warning("%d table records of partitions not owned were not written", writes.dropped)
            writes.dropped = 0
        forgotten = forget_acks(app.consumer)
        if forgotten:  # handled after the revoke: handled again from the committed offsets
            log.warning(
                "%d acknowledgements from before the rebalance were not committed", forgotten
            )
        owned.clear()
        owned.update(mine)
        writes.forget_sent()
        forget_positions()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        # sent after the revoke's flush: what the stages changed since is written before the
        # partitions leave `owned` (see write_all_then), and on the broker, its Tansu markers
        # after it, before the group can hand the partitions to another worker
        gone = {tp.partition for tp in revoked if tp.topic == EVENTS}
        await writes.write_all_then(lambda: owned.difference_update(gone))
        await outputs.flush()
        if writes.mark():
            await outputs.flush()
        forget_positions()

    def forget_positions() -> None:
        """After a rebalance the stage resumes from committed offsets: take_now waits for it, and
        each partition's replay window is read again at its first record."""
        handled_up_to.clear()
        taken_early.clear()
        in_sequence.forget()  # the stages resume from the committed offsets
        window.forget()

    app.inventory_runtime = rt  # type: ignore[attr-defined]
    return app
