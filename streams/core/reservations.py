"""Reservation coordination: a request becomes tentative holds on each SKU, then one decision.

All-or-nothing: a request is `held` only when every SKU held its part; otherwise the parts that were
held are released and the request is `rejected` with the shortfall per line. Idempotent by
reservation id: a request id seen before starts nothing new. A record seen again (redelivered
after a crash) gives the commands it gave the first time again, with the same event ids, so a SKU
that has them ignores them and one that lost them applies them.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams.core.catalog import Catalog
from streams.core.models import (
    SYSTEM_SOURCE,
    ReservationExpired,
    ReservationReleased,
    ReservationRequested,
)
from streams.core.sku import HoldRequirement, HoldResult, ReleaseHold, TryHold
from streams.core.state import from_us, to_us
from streams.errors import InvalidEvent

PENDING, HELD, REJECTED = "pending", "held", "rejected"
RELEASED, EXPIRED, CONFIRMED = "released", "expired", "confirmed"


@dataclass(slots=True)
class ReservationState:
    reservation_id: str
    channel: str
    status: str
    accepted_at: datetime
    expires_at: datetime
    lines: list[tuple[str, int]]  # (sku or channel_sku, quantity) as requested
    waiting: list[str]  # SKUs whose answer has not arrived
    held: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # sku -> (loc, units)
    short: dict[int, int] = field(default_factory=dict)  # line -> achievable units
    release_requested: str | None = None  # released/expired while still pending
    # sku -> (units requested, units it could hold), for the SKUs that could not hold their part
    short_skus: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.reservation_id,
            "ch": self.channel,
            "st": self.status,
            "at": to_us(self.accepted_at),
            "ex": to_us(self.expires_at),
        }
        # what is empty is left out: a finished reservation's tombstone is its id, status, times
        if self.lines:
            data["l"] = self.lines
        if self.waiting:
            data["w"] = self.waiting
        if self.held:
            data["h"] = self.held
        if self.short:
            data["s"] = {str(k): v for k, v in self.short.items()}
        if self.release_requested:
            data["r"] = self.release_requested
        if self.short_skus:
            data["ss"] = {k: list(v) for k, v in self.short_skus.items()}
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReservationState:
        return cls(
            d["id"],
            d["ch"],
            d["st"],
            from_us(d["at"]),
            from_us(d["ex"]),
            [(a, b) for a, b in d.get("l", ())],
            list(d.get("w", ())),
            {k: [(a, b) for a, b in v] for k, v in d.get("h", {}).items()},
            {int(k): v for k, v in d.get("s", {}).items()},
            d.get("r"),
            {k: (a, b) for k, (a, b) in d.get("ss", {}).items()},
        )

    def decision(self) -> dict[str, Any]:
        """What a caller is told about this reservation (the reservation API's answer). `held`
        and `placement` are what it holds or held (a release answers with what it gave back);
        nothing for a rejection, whose SKUs gave back their parts at once."""
        holding = {} if self.status == REJECTED else self.held
        return {
            "reservation_id": self.reservation_id,
            "channel": self.channel,
            "status": self.status,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z"),
            "held": [
                {"sku": sku, "location": loc, "quantity": units}
                for sku, parts in sorted(holding.items())
                for loc, units in parts
            ],
            "placement": {sku: dict(parts) for sku, parts in sorted(holding.items())},
            "shortfall": self.shortfall(),
            "shortfall_by_sku": [
                {
                    "sku": sku,
                    "requested": requested,
                    "available": available,
                    "shortfall": requested - available,
                }
                for sku, (requested, available) in sorted(self.short_skus.items())
            ],
        }

    def shortfall(self) -> list[dict[str, Any]]:
        out = []
        for index, (item, quantity) in enumerate(self.lines):
            if index in self.short:
                available = min(self.short[index], quantity)
                out.append(
                    {
                        "line": index,
                        "item": item,
                        "requested": quantity,
                        "available": available,
                        "shortfall": quantity - available,
                    }
                )
        return out


@dataclass(frozen=True, slots=True)
class ReservationDecided:
    """A request decided where its SKU lives, for the reservation record (expiry, release)."""

    state: ReservationState


def plan(event: ReservationRequested, catalog: Catalog) -> dict[str, tuple[HoldRequirement, ...]]:
    """Per-SKU requirements of a request, or InvalidEvent when it names what the catalog lacks."""
    channel = catalog.channel_by_id.get(event.channel)
    if channel is None:
        raise InvalidEvent(
            f"reservation-requested {event.event_id}: unknown channel {event.channel!r}"
        )
    per_sku: dict[str, list[HoldRequirement]] = defaultdict(list)
    for index, line in enumerate(event.lines):
        if line.location is not None and line.location not in channel.locations:
            raise InvalidEvent(
                f"reservation-requested {event.event_id}: line {index}: location {line.location!r} "
                f"is not eligible for channel {event.channel}"
            )
        if line.channel_sku is not None:
            listing = catalog.listing_by_key.get((event.channel, line.channel_sku))
            if listing is None:
                raise InvalidEvent(
                    f"reservation-requested {event.event_id}: line {index}: unknown channel_sku "
                    f"{line.channel_sku!r} on channel {event.channel}"
                )
            for comp in listing.components:
                per_sku[comp.sku].append(
                    HoldRequirement(
                        index, line.quantity * comp.quantity, comp.quantity, line.location
                    )
                )
        else:
            assert line.sku is not None
            per_sku[line.sku].append(HoldRequirement(index, line.quantity, 1, line.location))
    return {sku: tuple(reqs) for sku, reqs in per_sku.items()}


def start(
    event: ReservationRequested, catalog: Catalog, now: datetime | None = None
) -> tuple[ReservationState, list[TryHold]]:
    """The request's record and the holds to try; `now` is the clock it is decided at: a request
    whose expiry is not after it is `expired` at once and tries nothing."""
    requirements = plan(event, catalog)
    expires = event.occurred_at + timedelta(seconds=event.ttl)
    lines = [(line.sku or line.channel_sku or "", line.quantity) for line in event.lines]
    if now is not None and expires <= now:
        return (
            ReservationState(
                event.reservation_id, event.channel, EXPIRED, event.occurred_at, expires, lines, []
            ),
            [],
        )
    state = ReservationState(
        event.reservation_id,
        event.channel,
        PENDING,
        event.occurred_at,
        expires,
        lines,
        sorted(requirements),
    )
    commands = [
        TryHold(
            f"{event.reservation_id}/hold",
            event.occurred_at,
            sku,
            event.reservation_id,
            event.channel,
            expires,
            reqs,
        )
        for sku, reqs in sorted(requirements.items())
    ]
    return state, commands


def resume(state: ReservationState, event: ReservationRequested, catalog: Catalog) -> list[TryHold]:
    """A request seen again while its record is pending: the holds of the SKUs that have not
    answered, tried again. The record may have reached the changelog and the holds not the broker
    (a crash in between); a SKU that has them answers again without holding twice."""
    if state.status != PENDING:
        return []
    _, tries = start(event, catalog)
    return [hold for hold in tries if hold.sku in state.waiting]


def on_result(state: ReservationState, result: HoldResult) -> list[ReleaseHold]:
    """Record one SKU's answer; when the last arrives, decide, releasing partial holds if needed."""
    if result.sku not in state.waiting:
        if not result.ok or state.status == PENDING:
            return []  # a redelivered answer
        if result.sku not in state.held:
            # a hold sent before a crash for a request decided again after it closed (expired on
            # redelivery, or released before it): the record never counted it, so give it back
            reason = _late_hold_reason(state)
            return [
                ReleaseHold(
                    f"{state.reservation_id}/{reason}",
                    state.accepted_at,
                    result.sku,
                    state.reservation_id,
                    reason,
                )
            ]
        if state.status in (REJECTED, RELEASED, EXPIRED):
            # redelivered after the decision that gave this part back: give it back again (its
            # releases may have been lost with the worker that made it; the same event id)
            return _release_all(state, state.status, state.accepted_at, (result.sku,))
        return []  # held or confirmed: the part stays
    state.waiting.remove(result.sku)
    if result.ok:
        state.held[result.sku] = list(result.held)
    else:
        for line, achievable in result.short:
            state.short[line] = min(state.short.get(line, achievable), achievable)
        if result.requested:
            state.short_skus[result.sku] = (result.requested, result.available)
    if state.waiting or state.status != PENDING:
        return []
    if state.short:
        state.status = REJECTED
        return _release_all(state, REJECTED, state.accepted_at)
    state.status = HELD
    if state.release_requested:
        state.status = state.release_requested
        return _release_all(state, state.release_requested, state.accepted_at)
    return []


def on_release(
    state: ReservationState, event: ReservationReleased | ReservationExpired
) -> list[ReleaseHold]:
    status = RELEASED if isinstance(event, ReservationReleased) else EXPIRED
    if state.status == PENDING:
        state.release_requested = status
        return []
    if state.status in (REJECTED, RELEASED, EXPIRED):
        # closed already, and the status stands; its releases are sent again (the same event
        # ids, so a SKU that has them ignores them), in case they were lost with a crash
        return _release_all(state, state.status, event.occurred_at)
    if state.status != HELD:
        return []  # confirmed: an order has the units
    state.status = status
    return _release_all(state, status, event.occurred_at)


def closed_before_requested(event: ReservationReleased | ReservationExpired) -> ReservationState:
    """A release or expiry that overtook its request: remembered, so the request is never held."""
    status = RELEASED if isinstance(event, ReservationReleased) else EXPIRED
    return ReservationState(
        event.reservation_id, "", status, event.occurred_at, event.occurred_at, [], []
    )


def on_decided(
    known: ReservationState | None, decided: ReservationState
) -> tuple[ReservationState, list[ReleaseHold]]:
    """A single-SKU request decided where its SKU lives reaches the reservation record.

    Returns the record to keep and the holds to give back. The record is the decision unless one
    was already kept: a redelivery of the same decision to a record still held changes nothing,
    while a hold placed for a request the record has closed is released again, and the record's
    own status stands: a release that overtook it, an id reused after the SKU forgot it, or the
    same request held again by a SKU whose record came back from a crash without its hold and
    release (giving back a hold the SKU no longer has is a no-op there).
    """
    if known is None:
        return decided, []
    if decided.status != HELD:
        return known, []
    if known.accepted_at == decided.accepted_at and known.status not in (RELEASED, EXPIRED):
        return known, []
    reason = _late_hold_reason(known)
    return known, [
        ReleaseHold(
            f"{decided.reservation_id}/{reason}@{to_us(decided.accepted_at)}",
            decided.accepted_at,
            sku,
            decided.reservation_id,
            reason,
        )
        for sku in sorted(decided.held)
    ]


def on_confirmed(state: ReservationState, skus: Iterable[str]) -> list[ReleaseHold]:
    """An order took the hold: confirmed, once. The SKUs of the order confirm their own part where
    they live; what the hold has on SKUs the order leaves out is released at once."""
    if state.status not in (HELD, CONFIRMED):
        return []  # released, expired or rejected before the order came: nothing to confirm
    state.status = CONFIRMED  # once; a redelivered confirmation gives back the rest again
    taken = set(skus)
    return [
        ReleaseHold(
            f"{state.reservation_id}/{CONFIRMED}",
            state.accepted_at,
            sku,
            state.reservation_id,
            CONFIRMED,
        )
        for sku in sorted(state.held)
        if sku not in taken
    ]


def expiry_event(state: ReservationState) -> ReservationExpired:
    return ReservationExpired(
        event_id=f"{state.reservation_id}/expired",
        occurred_at=state.expires_at,
        source=SYSTEM_SOURCE,
        reservation_id=state.reservation_id,
    )


class Expiries:
    """A worker's held reservations by expiry, so that its expiry timer looks only at those due
    instead of decoding every reservation it keeps (a week of them, finished ones included).

    An entry is never taken out when its reservation changes: one that no longer matches the
    record (released, confirmed, expired, held again with another expiry) is dropped when it comes
    due. A due reservation is handed out once, then again every `retry` seconds of wall time while
    its record is still held: a `reservation-expired` lost on its way is sent again.
    """

    def __init__(self, retry: float = 30.0) -> None:
        self.retry = retry
        self.stale = True  # to be rebuilt from the table (at start, after a rebalance)
        self._heap: list[tuple[datetime, str]] = []
        self._queued: dict[str, datetime] = {}  # reservation id -> the expiry it is queued at
        self._sent: dict[str, float] = {}  # reservation id -> wall time handed out

    def __len__(self) -> int:
        return len(self._queued)

    def rebuild(self, held: Iterable[tuple[datetime, str]]) -> None:
        """Every held reservation of the table, as (expires_at, reservation id)."""
        self._queued = {rid: at for at, rid in held}
        self._heap = [(at, rid) for rid, at in self._queued.items()]
        heapq.heapify(self._heap)
        self._sent = {rid: at for rid, at in self._sent.items() if rid in self._queued}
        self.stale = False

    def keep(self, state: ReservationState) -> None:
        """A reservation's record as written: queued when it is held."""
        if state.status == HELD and self._queued.get(state.reservation_id) != state.expires_at:
            self._queued[state.reservation_id] = state.expires_at
            heapq.heappush(self._heap, (state.expires_at, state.reservation_id))

    def due(
        self,
        now: datetime,
        wall: float,
        lookup: Callable[[str], ReservationState | None],
    ) -> list[ReservationState]:
        """The held reservations whose expiry is before `now`, each once per `retry` seconds."""
        out: list[ReservationState] = []
        again: list[tuple[datetime, str]] = []
        while self._heap and self._heap[0][0] < now:
            at, rid = heapq.heappop(self._heap)
            if self._queued.get(rid) != at:
                continue  # queued again at another expiry: that entry stands for it
            state = lookup(rid)
            if state is None or state.status != HELD or state.expires_at != at:
                del self._queued[rid]
                self._sent.pop(rid, None)
                if state is not None and state.status == HELD:
                    self.keep(state)
                continue
            again.append((at, rid))
            sent = self._sent.get(rid)
            if sent is None or wall - sent >= self.retry:
                self._sent[rid] = wall
                out.append(state)
        for entry in again:
            heapq.heappush(self._heap, entry)
        return out


def _late_hold_reason(closed: ReservationState) -> str:
    """Why a hold placed after its record closed is given back: the record's own reason."""
    return closed.status if closed.status in (RELEASED, EXPIRED) else RELEASED


def _release_all(
    state: ReservationState, reason: str, at: datetime, skus: Iterable[str] | None = None
) -> list[ReleaseHold]:
    return [
        ReleaseHold(f"{state.reservation_id}/{reason}", at, sku, state.reservation_id, reason)
        for sku in sorted(state.held if skus is None else skus)
    ]
