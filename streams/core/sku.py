"""The rules for one SKU: `apply_sku(state, command, catalog) -> outcome`, pure and idempotent.

A command applied a second time changes nothing: every effect is recorded under the id that caused
it (see streams.core.state), for at least the 7-day horizon of business time. The state is mutated
in place for speed; callers that need a snapshot use `SkuState.to_dict()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.core.catalog import Catalog
from streams.core.formulas import channel_ats, sku_location_ats
from streams.core.models import (
    Alert,
    InboundScheduled,
    OrderLine,
    PickConfirmed,
    ReturnReceived,
    SingleSkuEvent,
    StockAdjusted,
    trusted,
)
from streams.core.state import (
    DEDUPE_HORIZON,
    ORPHAN_GRACE,
    Bucket,
    Commitment,
    Hold,
    Inbound,
    SkuState,
)

# ---- commands a SKU receives besides the single-SKU events themselves -------------------------


@dataclass(frozen=True, slots=True)
class CommitLines:
    """This SKU's lines of an order-created event."""

    event_id: str
    occurred_at: datetime
    sku: str
    order_id: str
    channel: str
    reservation_id: str | None
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True, slots=True)
class CancelLines:
    """This SKU's part of an order-cancelled event; quantity None cancels what is still open."""

    event_id: str
    occurred_at: datetime
    sku: str
    order_id: str
    lines: tuple[tuple[str, int | None], ...]


@dataclass(frozen=True, slots=True)
class HoldRequirement:
    line: int  # index of the request line this requirement comes from
    units: int  # units of this SKU
    per_unit: int  # units of this SKU per requested unit of the line
    location: str | None


@dataclass(frozen=True, slots=True)
class TryHold:
    event_id: str
    occurred_at: datetime
    sku: str
    reservation_id: str
    channel: str
    expires_at: datetime
    requirements: tuple[HoldRequirement, ...]


@dataclass(frozen=True, slots=True)
class ReleaseHold:
    event_id: str
    occurred_at: datetime
    sku: str
    reservation_id: str
    reason: str  # released | expired | rejected


@dataclass(frozen=True, slots=True)
class HoldResult:
    """A SKU's answer to TryHold: held in full, or the listing units each short line could get."""

    reservation_id: str
    sku: str
    ok: bool
    held: tuple[tuple[str, int], ...] = ()  # (location, units), in placement order
    short: tuple[tuple[int, int], ...] = ()  # (line index, achievable units of that line)
    requested: int = 0  # units of this SKU the request's lines add up to
    available: int = 0  # of those, how many this SKU could hold (when short)


SkuCommand = SingleSkuEvent | CommitLines | CancelLines | TryHold | ReleaseHold


@dataclass(slots=True)
class SkuOutcome:
    duplicate: bool = False  # the command had been applied before: its outputs may need re-sending
    touched: set[str] = field(default_factory=set)  # locations whose position changed
    alerts: list[Alert] = field(default_factory=list)
    hold: HoldResult | None = None
    # order lines this SKU forgot (picked or cancelled, unchanged for 7 days), as (order_id,
    # line_id): their order's record forgets them too (streams.core.orders.forget_lines)
    forgotten: tuple[tuple[str, str], ...] = ()


# ---- bucket ordering rules -------------------------------------------------------------------


def apply_delta(bucket: Bucket, at: datetime, delta: int, event_id: str) -> bool | None:
    """A delta inside the last count is already counted; one after it is kept for a later count.

    True when applied, False when inside the last count, None when applied before (a redelivery).
    """
    if event_id in bucket.log:
        return None
    if bucket.count_at is not None and at <= bucket.count_at:
        return False
    bucket.qty += delta
    bucket.log[event_id] = (at, delta)
    return True


def apply_count(bucket: Bucket, at: datetime, event_id: str, quantity: int) -> bool:
    """A count states the quantity as of `at`; deltas that occurred after `at` stay on top of it."""
    if bucket.count_at is not None and (at, event_id) <= (bucket.count_at, bucket.count_id):
        return False
    kept = {k: entry for k, entry in bucket.log.items() if entry[0] > at}
    bucket.qty = quantity + sum(d for _, d in kept.values())
    bucket.base = quantity  # what the pruning forgot before the count is inside it
    bucket.log = kept
    bucket.count_at = at
    bucket.count_id = event_id
    return True


# ---- the entry point -------------------------------------------------------------------------


def apply_sku(state: SkuState, cmd: SkuCommand, catalog: Catalog) -> SkuOutcome:
    """Apply one command to one SKU's state; a command applied before changes nothing."""
    at = cmd.occurred_at
    forgotten: list[tuple[str, str]] | None = None
    if at > state.time:
        state.time = at
        if at.toordinal() * 24 + at.hour != state.pruned_day:  # _hour(at), inlined
            forgotten = _prune(state)
    out = SkuOutcome()
    _HANDLERS[type(cmd)](state, cmd, catalog, out)
    if forgotten:
        # a line the command committed again (an order redelivered past the horizon) is not gone
        commitments = state.commitments
        out.forgotten = tuple(
            (order_id, line_id)
            for order_id, line_id in forgotten
            if f"{order_id}/{line_id}" not in commitments
        )
    return out


def _stock_adjusted(state: SkuState, e: StockAdjusted, catalog: Catalog, out: SkuOutcome) -> None:
    loc = state.location(e.location)
    bucket = loc.bucket(e.bucket)
    if e.mode == "count":
        if e.occurred_at < state.time - DEDUPE_HORIZON:
            out.alerts.append(
                make_alert(
                    "stale-count",
                    e.event_id,
                    state.sku,
                    e.location,
                    f"count of {e.bucket} at {e.location} is older than the "
                    f"{DEDUPE_HORIZON.days}-day ordering horizon and was not applied",
                    e.occurred_at,
                    quantity=e.quantity,
                )
            )
            return
        changed: bool | None = apply_count(bucket, e.occurred_at, e.event_id, e.quantity)
        if not changed and e.event_id == bucket.count_id:
            out.duplicate = True
    else:
        changed = apply_delta(bucket, e.occurred_at, e.quantity, e.event_id)
        out.duplicate = changed is None
    if e.po_id and e.bucket == "sellable" and e.mode == "delta" and e.quantity > 0:
        inbound = loc.inbound.get(e.po_id)
        if inbound is None:
            inbound = loc.inbound[e.po_id] = Inbound()
        if e.event_id in inbound.receipts:
            out.duplicate = (
                True  # a redelivery, even of a receipt inside a count (incoming fell all the same)
            )
        else:
            inbound.receipts[e.event_id] = e.quantity
            _touch_po(inbound, e.occurred_at)
            changed = True
    if changed:
        out.touched.add(e.location)
        _check_on_hand(state, e.location, e.event_id, e.occurred_at, out)


def _pick(state: SkuState, e: PickConfirmed, catalog: Catalog, out: SkuOutcome) -> None:
    loc = state.location(e.location)
    applied = apply_delta(loc.sellable, e.occurred_at, -e.quantity, e.event_id)
    out.duplicate = applied is None
    if applied:
        out.touched.add(e.location)
        _check_on_hand(state, e.location, e.event_id, e.occurred_at, out)
    if e.order_id and e.line_id:
        # picked before its order arrived: a placeholder the order will find
        line = _line(state, f"{e.order_id}/{e.line_id}", e.order_id)
        if e.event_id in line.picks:
            out.duplicate = (
                True  # a redelivery, even of a pick inside a count (it released all the same)
            )
        else:
            before = line.open_at()
            line.picks[e.event_id] = (e.location, e.quantity)
            line.touched_at = e.occurred_at
            _moved_commitment(state, line, before, out)


def _return(state: SkuState, e: ReturnReceived, catalog: Catalog, out: SkuOutcome) -> None:
    bucket = "sellable" if e.disposition == "resellable" else e.disposition
    applied = apply_delta(
        state.location(e.location).bucket(bucket), e.occurred_at, e.quantity, e.event_id
    )
    out.duplicate = applied is None
    if applied:
        out.touched.add(e.location)


def _inbound(state: SkuState, e: InboundScheduled, catalog: Catalog, out: SkuOutcome) -> None:
    loc = state.location(e.location)
    inbound = loc.inbound.get(e.po_id)
    if inbound is None:
        inbound = loc.inbound[e.po_id] = Inbound()
    if e.event_id in inbound.schedules:
        out.duplicate = True
        return
    inbound.schedules[e.event_id] = e.quantity
    _touch_po(inbound, e.occurred_at)
    # the latest schedule sets the eta; of one instant, the greater event id, in any arrival order
    if inbound.at is None or (e.occurred_at, e.event_id) > (inbound.at, inbound.eta_id):
        inbound.eta, inbound.at, inbound.eta_id = e.eta, e.occurred_at, e.event_id
    out.touched.add(e.location)


def _commit(state: SkuState, c: CommitLines, catalog: Catalog, out: SkuOutcome) -> None:
    """An order's lines on this SKU become commitments. Confirming its reservation's hold (once):
    the held units are committed where they were held, line by line in order; a line's explicit
    location, or else sourcing, applies only to units beyond the hold; what the order does not
    take of the hold is released."""
    hold = state.holds.pop(c.reservation_id, None) if c.reservation_id else None
    left: dict[str, int] = {}
    if hold is not None:  # the hold becomes the commitment: released here, committed below
        state.closed[c.reservation_id or ""] = hold.expires_at
        state.note_id(c.reservation_id or "")
        for loc_id, units in hold.units.items():
            state.location(loc_id).reserved -= units
            out.touched.add(loc_id)
        left = dict(hold.units)
    for line in c.lines:
        key = f"{c.order_id}/{line.line_id}"
        existing = state.commitments.get(key)
        if existing is not None and existing.parts:
            out.duplicate = True
            continue  # idempotent by order line, whatever the event id
        existing = _line(state, key, c.order_id)  # or a placeholder from an early pick or cancel
        existing.touched_at = c.occurred_at
        need = line.quantity
        held: dict[str, int] = {}
        for loc_id, units in left.items():
            take = units if units < need else need
            if take > 0:
                held[loc_id] = take
                left[loc_id] = units - take
                need -= take
        if held:
            before = existing.open_at()
            existing.parts = held
            _moved_commitment(state, existing, before, out)
        if need > 0:  # sourced after the held part is committed: it sees that part
            loc_id = line.location or source_location(state, c.channel, catalog)
            before = existing.open_at()
            existing.parts[loc_id] = existing.parts.get(loc_id, 0) + need
            _moved_commitment(state, existing, before, out)
        for loc_id in existing.parts:
            ats = sku_location_ats(state, loc_id, state.location(loc_id), catalog)
            if ats < 0:
                out.alerts.append(
                    make_alert(
                        "oversell",
                        c.event_id,
                        state.sku,
                        loc_id,
                        f"order {c.order_id} line {line.line_id} ({line.quantity} units) leaves "
                        f"{loc_id} oversold by {-ats}",
                        c.occurred_at,
                        channel=c.channel,
                        quantity=-ats,
                        ids=[c.event_id, c.order_id, line.line_id],
                    )
                )


def _cancel(state: SkuState, c: CancelLines, catalog: Catalog, out: SkuOutcome) -> None:
    for line_id, quantity in c.lines:
        # the cancel may come first (after a crash, its order's commit comes again later): a
        # placeholder keeps it, whole or partial, so that the commitment finds it
        line = _line(state, f"{c.order_id}/{line_id}", c.order_id)
        if c.event_id in line.cancels:
            out.duplicate = True
            continue
        before = line.open_at()
        line.cancels[c.event_id] = quantity if quantity is not None else -1
        line.touched_at = c.occurred_at
        _moved_commitment(state, line, before, out)


def _try_hold(state: SkuState, h: TryHold, catalog: Catalog, out: SkuOutcome) -> None:
    """Hold this SKU's part of a request, all of it or nothing, checked once before anything of it
    is held: the lines' units added up must fit the channel's channel_ats, and a line's explicit
    location needs its units in max(0, location_ats) there. Explicit locations give their units
    first; the rest comes from the eligible locations in sourcing order (highest location_ats,
    ties to the first listed), each giving at most max(0, location_ats), so no hold drives a
    location negative and one no single location covers is split.

    An id is decided once: one held is answered with its hold, one released or confirmed as held
    with nothing left to place, and one refused as refused, whatever the stock is now (a request
    redelivered after a crash can reach the SKU again when the reservation stage lost its record
    of the first answer)."""
    rid = h.reservation_id
    existing = state.holds.get(rid)
    if existing is not None or rid in state.closed:
        out.duplicate = True
        held = tuple(existing.units.items()) if existing else ()
        out.hold = HoldResult(rid, state.sku, True, held)
        return
    if rid in state.refused or h.expires_at < state.time - ORPHAN_GRACE:
        # refused before, or so late only a redelivery can arrive: placing it would leave an
        # orphan hold
        out.duplicate = True
        nothing = tuple((r.line, 0) for r in h.requirements)
        out.hold = HoldResult(rid, state.sku, False, short=nothing)
        return
    channel = catalog.channel_by_id.get(h.channel)
    eligible = channel.locations if channel else []
    free = {loc: max(0, _ats(state, loc, catalog)) for loc in eligible}
    chan = (
        channel_ats(sum(free.values()), channel.allocation_percent, channel.buffer_units)
        if channel
        else 0
    )
    total = 0
    floating = 0  # units of lines without a location
    pinned: dict[str, int] = {}  # explicit location -> units
    for req in h.requirements:
        total += req.units
        if req.location is None:
            floating += req.units
        else:
            pinned[req.location] = pinned.get(req.location, 0) + req.units
    fits = {loc: min(units, free.get(loc, 0)) for loc, units in pinned.items()}
    if total > chan or any(fits[loc] < units for loc, units in pinned.items()):
        # each line in request order gets what the lines before it left: the lines short of it
        short: list[tuple[int, int]] = []
        left, left_at = chan, dict(free)
        for req in h.requirements:
            cap = left if req.location is None else min(left, left_at.get(req.location, 0))
            got = min(req.units, cap)
            left -= got
            if req.location is not None:
                left_at[req.location] = left_at.get(req.location, 0) - got
            if got < req.units:
                short.append((req.line, got // req.per_unit))
        holdable = min(chan, sum(fits.values()) + floating)
        state.refused[rid] = h.expires_at
        state.note_id(rid)
        out.hold = HoldResult(rid, state.sku, False, (), tuple(short), total, holdable)
        return
    units: dict[str, int] = {}
    for loc, n in pinned.items():
        units[loc] = n
        free[loc] -= n
    if floating:
        for loc in sourcing_order(eligible, free):
            take = min(free[loc], floating)
            if take > 0:
                units[loc] = units.get(loc, 0) + take
                floating -= take
                if not floating:
                    break
    state.holds[h.reservation_id] = Hold(h.channel, units, h.expires_at)
    state.note_id(h.reservation_id)
    for loc_id, n in units.items():
        state.location(loc_id).reserved += n
        out.touched.add(loc_id)
    out.hold = HoldResult(h.reservation_id, state.sku, True, tuple(units.items()), (), total)


def _release(state: SkuState, r: ReleaseHold, catalog: Catalog, out: SkuOutcome) -> None:
    hold = state.holds.pop(r.reservation_id, None)
    if hold is None:
        out.duplicate = r.reservation_id in state.closed or r.reservation_id in state.refused
        return  # already released, expired, confirmed or refused: never release twice
    state.closed[r.reservation_id] = hold.expires_at
    state.note_id(r.reservation_id)
    for loc_id, units in hold.units.items():
        state.location(loc_id).reserved -= units
        out.touched.add(loc_id)


# Any: each handler takes its own command type, and apply_sku dispatches on type(cmd)
_HANDLERS: dict[type, Callable[[SkuState, Any, Catalog, SkuOutcome], None]] = {
    StockAdjusted: _stock_adjusted,
    PickConfirmed: _pick,
    ReturnReceived: _return,
    InboundScheduled: _inbound,
    CommitLines: _commit,
    CancelLines: _cancel,
    TryHold: _try_hold,
    ReleaseHold: _release,
}


# ---- helpers ---------------------------------------------------------------------------------


def source_location(state: SkuState, channel_id: str, catalog: Catalog) -> str:
    """The eligible location with the highest location ATS; ties go to the one listed first."""
    channel = catalog.channel_by_id.get(channel_id)
    eligible = channel.locations if channel else [loc.id for loc in catalog.locations]
    ats = {loc: _ats(state, loc, catalog) for loc in eligible}
    return next(iter(sourcing_order(eligible, ats)), "")


def sourcing_order(eligible: list[str], ats: dict[str, int]) -> list[str]:
    """SPEC's sourcing order: highest location ATS first; ties go to the one listed first."""
    return sorted(eligible, key=lambda loc: -ats[loc])  # sorted is stable: ties keep list order


def _ats(state: SkuState, loc: str, catalog: Catalog) -> int:
    """Location ATS without creating a record for a location the SKU has never been at."""
    loc_state = state.locations.get(loc)
    if loc_state is None:
        return -catalog.safety.get((state.sku, loc), 0)
    return sku_location_ats(state, loc, loc_state, catalog)


def _line(state: SkuState, key: str, order_id: str) -> Commitment:
    """The order line `key` ("order_id/line_id"), a placeholder made if absent, noted as changed
    for the next write of the SKU's record (SplitCache encodes a hot SKU's changed lines only)."""
    state.lines_changed.add(key)
    line = state.commitments.get(key)
    if line is None:
        line = state.commitments[key] = Commitment(order_len=len(order_id))
    return line


def _moved_commitment(
    state: SkuState, line: Commitment, before: dict[str, int], out: SkuOutcome
) -> None:
    """Carry the change of a line's open units, per location, into the locations' `committed`."""
    for loc_id, units in line.open_at().items():
        change = units - before.get(loc_id, 0)
        if change:
            state.location(loc_id).committed += change
            out.touched.add(loc_id)


def _check_on_hand(
    state: SkuState, loc_id: str, event_id: str, at: datetime, out: SkuOutcome
) -> None:
    on_hand = state.locations[loc_id].sellable.qty
    if on_hand < 0:
        out.alerts.append(
            make_alert(
                "negative-on-hand",
                event_id,
                state.sku,
                loc_id,
                f"on hand at {loc_id} is {on_hand}",
                at,
                quantity=on_hand,
            )
        )


def make_alert(
    kind: str,
    event_id: str,
    sku: str,
    location: str | None,
    message: str,
    at: datetime,
    *,
    channel: str | None = None,
    quantity: int | None = None,
    ids: list[str] | None = None,
) -> Alert:
    return trusted(
        Alert,
        alert_id=f"{kind}:{event_id}:{sku}:{location or ''}",
        type=kind,
        sku=sku,
        location=location,
        channel=channel,
        quantity=quantity,
        ids=ids or [event_id],
        message=f"{sku}: {message}",
        occurred_at=at,
    )


def _touch_po(inbound: Inbound, at: datetime) -> None:
    """The latest business time of the PO's schedules and receipts, whatever their arrival order."""
    if inbound.touched_at is None or at > inbound.touched_at:
        inbound.touched_at = at


def _hour(at: datetime) -> int:
    return at.toordinal() * 24 + at.hour


def _prune(state: SkuState) -> list[tuple[str, str]] | None:
    """Hourly: release orphan holds. Daily: forget what is older than the horizon.

    Both run on this SKU's business time, so they are deterministic; the daily part scans the
    order lines, POs and delta logs, which for a hot SKU is too much to do every hour. What stays
    is open business: open order lines, POs with units still to come, holds, and the last 7 days.
    Returns the order lines forgotten, as (order_id, line_id), for their orders' records.
    """
    previous, state.pruned_day = state.pruned_day, _hour(state.time)
    # An orphan hold (its reservation's release was lost with a crashed worker, or a redelivered
    # request re-placed it after its id was forgotten) never outlives its expiry by more than the
    # grace period; closed and refused ids are kept as long, so a redelivery inside it is still
    # recognised.
    grace = state.orphans_before = state.time - ORPHAN_GRACE
    if state.holds:
        for rid in [rid for rid, hold in state.holds.items() if hold.expires_at < grace]:
            hold = state.holds.pop(rid)
            state.note_id(rid)
            for loc_id, units in hold.units.items():
                state.location(loc_id).reserved -= units
    if state.closed and min(state.closed.values()) < grace:
        state.closed = _kept_ids(state, state.closed, grace)
    if state.refused and min(state.refused.values()) < grace:
        state.refused = _kept_ids(state, state.refused, grace)
    if previous // 24 == state.pruned_day // 24:
        return None
    cutoff = state.time - DEDUPE_HORIZON
    for loc_id, loc in state.locations.items():
        changed = False
        for bucket in (loc.sellable, loc.damaged, loc.quarantine):
            if bucket.log:
                recent = {k: e for k, e in bucket.log.items() if e[0] >= cutoff}
                if len(recent) != len(bucket.log):  # else the same log, grown in place only
                    bucket.log = recent
                    changed = True
        if loc.inbound:
            _prune_inbound(loc.inbound, cutoff, state.time)
            changed = True
        if changed and state.wide:  # changed without a lookup: noted for its record
            state.locations_changed.add(loc_id)
    forgotten: list[tuple[str, str]] = []
    kept: dict[str, Commitment] = {}
    for key, line in state.commitments.items():
        if line.touched_at is None or line.touched_at >= cutoff or line.open > 0:
            kept[key] = line
        elif line.parts:  # an order line (not a pick or cancel whose order never came)
            split = line.order_len or key.find("/")
            forgotten.append((key[:split], key[split + 1 :]))
    if len(kept) != len(state.commitments):
        state.commitments = kept
        if state.lines_changed:  # bounded by the lines kept (simulate never splits)
            state.lines_changed.intersection_update(kept)
    return forgotten


def _kept_ids(state: SkuState, ids: dict[str, datetime], grace: datetime) -> dict[str, datetime]:
    """The closed or refused ids whose expiry is not before `grace`; the others noted as gone."""
    kept: dict[str, datetime] = {}
    for rid, expires_at in ids.items():
        if expires_at >= grace:
            kept[rid] = expires_at
        else:
            state.note_id(rid)
    return kept


def _prune_inbound(inbound: dict[str, Inbound], cutoff: datetime, now: datetime) -> None:
    """A PO with no units left to come (received in full, or receipts alone) and no schedule or
    receipt for 7 days is done: a late schedule or receipt of it is past the horizon."""
    for po_id in list(inbound):
        po = inbound[po_id]
        if po.quantity > 0:
            continue
        if po.touched_at is None:  # written before POs were pruned: the horizon starts now
            po.touched_at = now
        elif po.touched_at < cutoff:
            del inbound[po_id]
