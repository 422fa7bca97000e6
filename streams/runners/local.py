"""The whole domain in one process: the same pieces the stream agents run, wired by direct calls.

Deterministic: the same catalog and the same events in the same order give the same outputs.
Stream time is the largest `occurred_at` seen; a hold expires when stream time passes its expiry,
before the event that moved the time is applied, and the expiry is itself emitted as an event.
Stream time is also the clock of backorders: when its date moves, every SKU expecting a PO is
derived again, so a PO whose eta enters a channel's horizon is offered with no event on its SKU.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, cast

from streams.core.catalog import Catalog
from streams.core.derive import (
    ComponentUpdate,
    ListingState,
    expects_inbound,
)
from streams.core.models import (
    SINGLE_SKU_EVENTS,
    Alert,
    Availability,
    Event,
    OrderCancelled,
    OrderCreated,
    Position,
    ReservationExpired,
    ReservationReleased,
    ReservationRequested,
)
from streams.core.orders import Confirmation, OrderState
from streams.core.reservations import HELD, ReservationState, expiry_event
from streams.core.retention import LinesForgotten, horizon_start
from streams.core.sku import HoldResult, SkuCommand
from streams.core.state import EPOCH, SkuState, from_us, to_us
from streams.errors import InvalidEvent
from streams.stages.effects import Command, Effects, MemoryTable
from streams.stages.listings import handle_component
from streams.stages.orders import forget_finished, handle_forgotten, handle_order
from streams.stages.reservations import compact_finished, handle_reservation
from streams.stages.skus import derive, handle_sku


class Emitter(Protocol):
    """Where the engine's outputs go: a collector in `simulate`, counters in benchmarks."""

    def position(self, record: Position) -> None: ...
    def availability(self, record: Availability) -> None: ...
    def alert(self, record: Alert) -> None: ...
    def system_event(self, event: Event) -> None: ...
    def decision(self, state: ReservationState) -> None: ...


@dataclass
class Collector:
    """Keeps the latest record per key, every alert, every system event and reservation decision."""

    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    availabilities: dict[tuple[str, str], Availability] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    system_events: list[Event] = field(default_factory=list)
    decisions: list[ReservationState] = field(default_factory=list)

    def position(self, record: Position) -> None:
        self.positions[(record.sku, record.location)] = record

    def availability(self, record: Availability) -> None:
        self.availabilities[(record.channel, record.channel_sku)] = record

    def alert(self, record: Alert) -> None:
        self.alerts.append(record)

    def system_event(self, event: Event) -> None:
        self.system_events.append(event)

    def decision(self, state: ReservationState) -> None:
        self.decisions.append(state)


# events that are themselves commands of one SKU, as a set: looked up for every event
_SKU_EVENTS = frozenset(SINGLE_SKU_EVENTS)


class Engine:
    """The local runner: the SKU, order, reservation and listing stages (streams.stages), their
    commands routed by direct calls in the order made, each event to quiescence."""

    def __init__(self, catalog: Catalog, emitter: Emitter) -> None:
        self.catalog = catalog
        self.emit = emitter
        self.skus: dict[str, SkuState] = {}
        self.orders: MemoryTable[str, OrderState] = MemoryTable()
        self.reservations: MemoryTable[str, ReservationState] = MemoryTable()
        self.listings: MemoryTable[tuple[str, str], ListingState] = MemoryTable()
        self.stream_time: datetime = EPOCH
        self._expiries: list[tuple[datetime, str]] = []
        self._dirty: dict[
            str, tuple[set[str], datetime, str]
        ] = {}  # sku -> locations, as_of, cause
        self._resend: set[str] = set()  # SKUs that saw a redelivery: their outputs are sent again
        # a stage's effects, taken by _route before the next stage runs: one object, reused
        self._out = Effects()
        self._sku_out = Effects()  # the SKU stage's, performed as soon as it has run
        self._queue: deque[Command] = deque()  # commands made, not yet applied
        self._decided: list[ReservationState] = []  # decisions made, emitted at quiescence
        self._now = lambda: self.stream_time  # the clock a request is decided at

    # ---- input ----

    def process(self, event: Event) -> None:
        self.process_batch((event,))

    def process_batch(self, events: Iterable[Event]) -> None:
        """Apply events in order, then derive outputs once per touched SKU (coalescing)."""
        self.apply_batch(events)
        self.flush()

    def apply_batch(self, events: Iterable[Event]) -> None:
        """Apply events in order; what they touched is derived by the next flush()."""
        for event in events:
            if event.occurred_at > self.stream_time:
                self._advance(event.occurred_at)
            self._apply(event)

    def set_catalog(self, catalog: Catalog) -> None:
        """A catalog change: every position and listing is derived again; changes are emitted."""
        self.catalog = catalog
        for sku, state in self.skus.items():
            self._dirty[sku] = (set(state.locations), state.time, f"catalog-v{catalog.version}")
        self.flush()

    # ---- snapshots: the same encoding the stream agents' tables use ----

    def snapshot(self) -> dict[str, Any]:
        self.flush()
        return {
            "skus": {k: v.to_dict() for k, v in self.skus.items()},
            "orders": {k: v.to_dict() for k, v in self.orders.items()},
            "reservations": {k: v.to_dict() for k, v in self.reservations.items()},
            "listings": {f"{c}/{s}": v.to_dict() for (c, s), v in self.listings.items()},
            "time": to_us(self.stream_time),
        }

    @classmethod
    def restore(cls, catalog: Catalog, emitter: Emitter, data: dict[str, Any]) -> Engine:
        engine = cls(catalog, emitter)
        engine.skus = {k: SkuState.from_dict(v) for k, v in data["skus"].items()}
        engine.orders = MemoryTable({k: OrderState.from_dict(v) for k, v in data["orders"].items()})
        engine.reservations = MemoryTable(
            {k: ReservationState.from_dict(v) for k, v in data["reservations"].items()}
        )
        for key, value in data["listings"].items():
            channel, _, channel_sku = key.partition("/")
            engine.listings.put((channel, channel_sku), ListingState.from_dict(value))
        engine.stream_time = from_us(data["time"])
        engine._expiries = [
            (r.expires_at, r.reservation_id)
            for r in engine.reservations.values()
            if r.status == HELD
        ]
        heapq.heapify(engine._expiries)
        return engine

    # ---- internals ----

    def _advance(self, at: datetime) -> None:
        if at <= self.stream_time:
            return
        if at.date() != self.stream_time.date():
            self._new_day(at)
        self.stream_time = at
        while self._expiries and self._expiries[0][0] < at:
            _, rid = heapq.heappop(self._expiries)
            state = self.reservations.get(rid)
            if state is not None and state.status == HELD:
                expired = expiry_event(state)
                self.emit.system_event(expired)
                self._apply(expired)

    def _new_day(self, at: datetime) -> None:
        """The clock's date moves: SKUs expecting a PO are derived again at the next flush, and
        the order and reservation records finished past the horizon are forgotten."""
        cause = f"clock:{at.date().isoformat()}"
        for sku, state in self.skus.items():
            if sku not in self._dirty and expects_inbound(state):
                self._dirty[sku] = (set(), at, cause)
        since = horizon_start(at.date())
        forget_finished(self.orders, list(self.orders), since)
        compact_finished(self.reservations, list(self.reservations), since)

    def _apply(self, event: Event) -> None:
        kind = type(event)
        if kind in _SKU_EVENTS:  # the common case first: single-SKU events go straight to the SKU
            self._sku(cast(SkuCommand, event))
        elif isinstance(event, OrderCreated | OrderCancelled):
            handle_order(self.orders, event, self._out)
            self._route()
        elif isinstance(event, ReservationRequested | ReservationReleased | ReservationExpired):
            handle_reservation(self.reservations, event, self.catalog, self._now, self._out)
            self._route()
        else:
            self._sku(event)

    def _route(self) -> None:
        """Perform the effects of the stage that just ran, then of everything they cause, until
        none is left: commands in the order made, each SKU's answer and each order's confirmation
        to the reservation stage. A decision is emitted once, when everything it caused is
        applied; the Faust runner tells it again on later records for the reservation (a
        redelivered record's decision may have been lost with a crash), which one process has no
        need of."""
        out = self._out
        queue = self._queue
        while True:  # each list looked at before it is walked or cleared: most are empty
            if out.alerts:
                for alert in out.alerts:
                    self.emit.alert(alert)
                out.alerts.clear()
            if out.dead_letters:  # a request the catalog cannot serve: nothing of it was kept
                reason = out.dead_letters[0].reason
                out.dead_letters.clear()
                raise InvalidEvent(reason)
            if out.decisions:
                if out.decided is not None:
                    self._decided.append(out.decisions[-1])
                    out.decided = None
                out.decisions.clear()
            if out.commands:
                for _, command in out.commands:
                    queue.append(command)
                out.commands.clear()
            out.new_order = None
            if not queue:
                break
            command = queue.popleft()
            if type(command) is Confirmation:
                handle_reservation(self.reservations, command, self.catalog, self._now, out)
                continue
            result = self._sku(cast(SkuCommand, command))
            if result is not None:
                handle_reservation(self.reservations, result, self.catalog, self._now, out)
        for res in self._decided:
            self.emit.decision(res)
            if res.status == HELD:
                heapq.heappush(self._expiries, (res.expires_at, res.reservation_id))
        self._decided.clear()

    def _sku(self, command: SkuCommand) -> HoldResult | None:
        """A command to the SKU stage; its answer to a hold, for the caller to hand on at once."""
        sku = command.sku
        state = self.skus.get(sku)
        if state is None:
            state = self.skus[sku] = SkuState(sku, catalog_version=self.catalog.version)
        out = self._sku_out
        outcome = handle_sku(state, command, self.catalog, out)
        hold = None
        if out.commands:  # forgotten lines to their orders' records, and a hold's answer
            for _, made in out.commands:
                if type(made) is HoldResult:
                    hold = made
                else:
                    handle_forgotten(self.orders, cast(LinesForgotten, made))
            out.commands.clear()
        if out.alerts:
            for alert in out.alerts:
                self.emit.alert(alert)
            out.alerts.clear()
        touched = outcome.touched
        if outcome.duplicate:
            self._resend.add(sku)
        if touched:
            dirty = self._dirty.get(sku)
            if dirty is not None:
                dirty[0].update(touched)
                touched = dirty[0]
            self._dirty[sku] = (touched, command.occurred_at, command.event_id)
        return hold

    def discard_derivations(self) -> None:
        """Forget what was touched since the last flush (benchmarks of apply alone)."""
        self._dirty.clear()
        self._resend.clear()

    def flush(self) -> None:
        """Derive and emit the records of everything touched since the last flush."""
        catalog = self.catalog
        skus = self.skus
        resend = self._resend
        emit_position = self.emit.position
        emit_availability = self.emit.availability
        today = self.stream_time.date()
        out = self._sku_out
        for sku, (locations, as_of, cause) in self._dirty.items():
            derive(skus[sku], locations, as_of, cause, catalog, out, today, sku in resend)
            for record in out.positions:
                emit_position(record)
            out.positions.clear()
            if out.availability:
                for listing in out.availability:
                    emit_availability(listing)
                out.availability.clear()
            if out.commands:  # component values, to the listing stage
                for _, update in out.commands:
                    self._component(cast(ComponentUpdate, update))
                out.commands.clear()
        self._dirty.clear()
        resend.clear()

    def _component(self, update: ComponentUpdate) -> None:
        out = self._out
        handle_component(
            self.listings, (update.channel, update.channel_sku), update, self.catalog, out
        )
        for record in out.availability:
            self.emit.availability(record)
        out.availability.clear()
