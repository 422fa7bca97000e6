"""Why a listing shows the figure it shows: SPEC §3's formulas with the numbers of the SKU states.

Pure and read-only: the states are not changed. The figures are computed by the same functions
the derive stage publishes with (streams.core.formulas), in the same way per listing kind, so for
the states and clock date the published record was derived from, the explanation's `available`,
`backorderable` and `restock_date` are the published ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from streams.core.catalog import Catalog, Channel
from streams.core.formulas import (
    channel_ats,
    listing_available,
    listing_backorder,
    network_ats,
    sku_backorder,
    sku_location_ats,
)
from streams.core.models import format_ts, utc
from streams.core.sku import DEDUPE_HORIZON
from streams.core.state import BUCKETS, SkuState
from streams.errors import InventoryError


class UnknownListing(InventoryError):
    """The channel has no listing of that channel_sku in the catalog."""


@dataclass(frozen=True, slots=True)
class HoldLine:
    reservation_id: str
    units: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CommitmentLine:
    order_line: str  # "order_id/line_id"
    units: int


@dataclass(frozen=True, slots=True)
class LocationLine:
    """One eligible location: location_ats = on_hand - reserved - committed - safety_stock."""

    location: str
    on_hand: int
    reserved: int
    committed: int
    safety_stock: int
    location_ats: int
    damaged: int  # not sellable: shown, never counted
    quarantine: int
    holds: tuple[HoldLine, ...]  # what `reserved` is made of
    commitments: tuple[CommitmentLine, ...]  # what `committed` is made of

    @property
    def counted(self) -> int:
        """What the location adds to network ATS: max(0, location_ats)."""
        return max(0, self.location_ats)


@dataclass(frozen=True, slots=True)
class InboundLine:
    po_id: str
    location: str
    eta: date | None
    incoming: int
    in_horizon: bool  # counted: units expected with an eta on or before the horizon date


@dataclass(frozen=True, slots=True)
class ComponentLine:
    """One component SKU of the listing with its channel figures."""

    sku: str
    quantity: int  # units of the SKU per listing unit
    locations: tuple[LocationLine, ...]
    network_ats: int
    channel_ats: int
    available: int  # floor(channel_ats / quantity)
    inbound: tuple[InboundLine, ...]
    incoming_in_horizon: int
    backorder_units: int  # the channel formula over incoming_in_horizon
    backorderable: int  # floor(backorder_units / quantity)
    earliest_eta: date | None  # of the POs counted
    restock_date: date | None  # earliest_eta, when backorderable


LAST_CHANGES = 10  # enough to answer "what moved it", short enough to read


@dataclass(frozen=True, slots=True)
class ChangeLine:
    """One event the SKU state still remembers, named by the record that kept it.

    The state keeps no event type, and for some records no id or time (an order line is kept by
    order and line, a hold by reservation id): those fields are None rather than guessed.
    """

    event_id: str | None
    type: str
    occurred_at: datetime | None
    effect: str
    sku: str
    location: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "occurred_at": format_ts(self.occurred_at) if self.occurred_at else None,
            "effect": self.effect,
            "sku": self.sku,
            "location": self.location,
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    channel: str
    channel_sku: str
    allocation_percent: int
    buffer_units: int
    backorder_horizon_days: int
    clock_date: date
    horizon_date: date | None  # None: the channel takes no backorders
    components: tuple[ComponentLine, ...]
    available: int
    backorderable: int
    restock_date: date | None
    changes: tuple[ChangeLine, ...] = ()  # newest first, at most LAST_CHANGES

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "channel_sku": self.channel_sku,
            "available": self.available,
            "backorderable": self.backorderable,
            "restock_date": _day(self.restock_date),
            "allocation_percent": self.allocation_percent,
            "buffer_units": self.buffer_units,
            "backorder_horizon_days": self.backorder_horizon_days,
            "clock_date": self.clock_date.isoformat(),
            "horizon_date": _day(self.horizon_date),
            "components": [_component_json(c) for c in self.components],
            "changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Explanation:
        """to_json's inverse: an explanation as the API answers it (`GET /explain/...`)."""
        return cls(
            channel=data["channel"],
            channel_sku=data["channel_sku"],
            allocation_percent=data["allocation_percent"],
            buffer_units=data["buffer_units"],
            backorder_horizon_days=data["backorder_horizon_days"],
            clock_date=date.fromisoformat(data["clock_date"]),
            horizon_date=_undate(data["horizon_date"]),
            components=tuple(_component_from_json(c) for c in data["components"]),
            available=data["available"],
            backorderable=data["backorderable"],
            restock_date=_undate(data["restock_date"]),
            changes=tuple(
                ChangeLine(
                    c["event_id"],
                    c["type"],
                    _parse_ts(c["occurred_at"]) if c["occurred_at"] else None,
                    c["effect"],
                    c["sku"],
                    c["location"],
                )
                for c in data["changes"]
            ),
        )

    def to_text(self) -> str:
        """The formulas with the numbers, for a person."""
        out = [
            f"{self.channel} / {self.channel_sku}: available {self.available}, "
            f"backorderable {self.backorderable}"
            + (f" (restock {self.restock_date.isoformat()})" if self.restock_date else ""),
            f"  channel: allocation {self.allocation_percent}%, buffer {self.buffer_units} units, "
            + (
                f"backorders up to {self.horizon_date.isoformat()} "
                f"(clock {self.clock_date.isoformat()} + {self.backorder_horizon_days} days)"
                if self.horizon_date is not None
                else "no backorders"
            ),
        ]
        for comp in self.components:
            out.append(f"  component {comp.sku} x {comp.quantity}")
            for loc in comp.locations:
                out.append(
                    f"    {loc.location}: location_ats = on_hand {loc.on_hand} - reserved "
                    f"{loc.reserved} - committed {loc.committed} - safety {loc.safety_stock} "
                    f"= {loc.location_ats}"
                    + (f" (damaged {loc.damaged}, not sellable)" if loc.damaged else "")
                    + (f" (quarantine {loc.quarantine}, not sellable)" if loc.quarantine else "")
                )
                for hold in loc.holds:
                    out.append(
                        f"      hold {hold.reservation_id}: {hold.units} until "
                        f"{format_ts(hold.expires_at)}"
                    )
                for line in loc.commitments:
                    out.append(f"      order line {line.order_line}: {line.units}")
            counted = " + ".join(str(loc.counted) for loc in comp.locations) or "0"
            out.append(f"    network_ats = {counted} = {comp.network_ats}  (max(0, each))")
            out.append(
                f"    channel_ats = max(0, floor({comp.network_ats} x {self.allocation_percent}"
                f" / 100) - {self.buffer_units}) = {comp.channel_ats}"
            )
            out.append(
                f"    available = floor({comp.channel_ats} / {comp.quantity}) = {comp.available}"
            )
            if self.horizon_date is not None:
                for po in comp.inbound:
                    eta = po.eta.isoformat() if po.eta else "no eta"
                    mark = "counted" if po.in_horizon else "beyond the horizon"
                    out.append(
                        f"    PO {po.po_id} at {po.location}: {po.incoming} due {eta} ({mark})"
                    )
                out.append(
                    f"    backorder = max(0, floor({comp.incoming_in_horizon} x "
                    f"{self.allocation_percent} / 100) - {self.buffer_units}) = "
                    f"{comp.backorder_units}; / {comp.quantity} = {comp.backorderable}"
                )
        if len(self.components) > 1:
            out.append(
                f"  available = min({', '.join(str(c.available) for c in self.components)})"
                f" = {self.available}"
            )
            if self.horizon_date is not None:
                out.append(
                    "  backorderable = min("
                    + ", ".join(str(c.backorderable) for c in self.components)
                    + f") = {self.backorderable}"
                )
        if self.changes:
            out.append("  last changes (newest first):")
            for change in self.changes:
                at = format_ts(change.occurred_at) if change.occurred_at else "time not kept"
                out.append(
                    f"    {at}  {change.event_id or '-'}  {change.type}  {change.sku}: "
                    f"{change.effect}"
                )
        return "\n".join(out) + "\n"


def explain(
    catalog: Catalog,
    states: Mapping[str, SkuState],
    channel_id: str,
    channel_sku: str,
    clock_date: date,
) -> Explanation:
    """The availability of (channel, channel_sku) as its formula, from the component SKUs' states.

    `clock_date` is the date backorders are counted from: stream time in simulate and replays,
    wall time live. A SKU with no state has nothing anywhere.
    """
    listing = catalog.listing_by_key.get((channel_id, channel_sku))
    if listing is None:
        raise UnknownListing(f"channel {channel_id} has no listing {channel_sku!r}")
    channel = catalog.channel_by_id[channel_id]
    quantities: dict[str, int] = {}
    for comp in listing.components:
        quantities[comp.sku] = quantities.get(comp.sku, 0) + comp.quantity
    horizon = (
        clock_date + timedelta(days=channel.backorder_horizon_days)
        if channel.backorder_horizon_days > 0
        else None
    )
    lines = tuple(
        _component(
            catalog, channel, states.get(sku) or SkuState(sku), sku, qty, clock_date, horizon
        )
        for sku, qty in quantities.items()
    )
    if len(lines) == 1:
        # one SKU (identity or pack): derived where that SKU lives, over all its units per listing
        only = lines[0]
        available, backorderable = only.available, only.backorderable
        restock = only.restock_date
    else:
        # a bundle: the listing stage folds each component's channel values
        available = listing_available(listing, {c.sku: c.channel_ats for c in lines})
        backorderable, restock = listing_backorder(
            listing,
            {c.sku: (c.backorder_units, c.earliest_eta) for c in lines},
        )
    return Explanation(
        channel=channel_id,
        channel_sku=channel_sku,
        allocation_percent=channel.allocation_percent,
        buffer_units=channel.buffer_units,
        backorder_horizon_days=channel.backorder_horizon_days,
        clock_date=clock_date,
        horizon_date=horizon,
        components=lines,
        available=available,
        backorderable=backorderable,
        restock_date=restock,
        changes=last_changes(states, quantities, channel.locations),
    )


def last_changes(
    states: Mapping[str, SkuState], skus: Iterable[str], locations: Iterable[str]
) -> tuple[ChangeLine, ...]:
    """The newest LAST_CHANGES events kept by the states of `skus` at `locations`.

    Newest first by business time, ties by event id; events whose time the state does not keep
    come after the dated ones.
    """
    wanted = set(locations)
    found = [
        change
        for sku in skus
        if (state := states.get(sku)) is not None
        for change in _kept_changes(state)
        if change.location in wanted
    ]
    dated = sorted(
        (c for c in found if c.occurred_at is not None),
        key=lambda c: (c.occurred_at, c.event_id or ""),
        reverse=True,
    )
    undated = sorted((c for c in found if c.occurred_at is None), key=lambda c: c.effect)
    return tuple((dated + undated)[:LAST_CHANGES])


def _kept_changes(state: SkuState) -> Iterator[ChangeLine]:
    """Every event one SKU state still remembers, named by the record that kept it."""
    sku = state.sku
    picks = {
        pick_id: key
        for key, commitment in state.commitments.items()
        for pick_id in commitment.picks
    }
    for loc_id, loc in state.locations.items():
        receipts = {
            event_id: po_id
            for po_id, inbound in loc.inbound.items()
            for event_id in inbound.receipts
        }
        for name in BUCKETS:
            bucket = loc.bucket(name)
            what = "on hand" if name == "sellable" else name
            for event_id, (at, delta) in bucket.log.items():
                if event_id in picks:
                    order_id, _, line_id = picks[event_id].partition("/")
                    effect = f"pick of order {order_id} line {line_id} takes {-delta} {what}"
                    yield ChangeLine(
                        event_id, "pick-confirmed", at, f"{effect} at {loc_id}", sku, loc_id
                    )
                elif event_id in receipts:
                    effect = f"{receipts[event_id]} receipt {delta:+d} {what} at {loc_id}"
                    yield ChangeLine(event_id, "stock-adjusted", at, effect, sku, loc_id)
                else:
                    effect = f"{delta:+d} {what} at {loc_id}"
                    yield ChangeLine(event_id, "stock-adjusted", at, effect, sku, loc_id)
            if bucket.count_at is not None:
                label = "" if name == "sellable" else f" {name}"
                if bucket.count_at >= state.time - DEDUPE_HORIZON:
                    # the log still holds exactly the deltas applied on top of the count
                    counted = bucket.qty - sum(delta for _, delta in bucket.log.values())
                    effect = f"count {counted}{label} at {loc_id}"
                else:  # pruning may have forgotten deltas after it: its figure is not known
                    effect = f"count{label} at {loc_id}"
                yield ChangeLine(
                    bucket.count_id, "stock-adjusted", bucket.count_at, effect, sku, loc_id
                )
        for po_id, inbound in loc.inbound.items():
            eta = f" (eta {inbound.eta.isoformat()})" if inbound.eta else ""
            for event_id, units in inbound.schedules.items():
                # only the schedule that set the eta keeps its time
                scheduled_at = inbound.at if event_id == inbound.eta_id else None
                effect = f"{po_id} +{units} incoming{eta} at {loc_id}"
                yield ChangeLine(event_id, "inbound-scheduled", scheduled_at, effect, sku, loc_id)
    for key, commitment in state.commitments.items():
        order_id, _, line_id = key.partition("/")
        # the order-created time is kept only until a pick or cancel touches the line
        created_at = None if commitment.picks or commitment.cancels else commitment.touched_at
        for loc_id, units in commitment.parts.items():
            effect = f"order {order_id} line {line_id} commits {units} at {loc_id}"
            yield ChangeLine(None, "order-created", created_at, effect, sku, loc_id)
        for event_id, units in commitment.cancels.items():
            what = "what is open" if units == -1 else str(units)
            effect = f"cancel of order {order_id} line {line_id} releases {what}"
            # cancels release the part placed last first
            for loc_id in list(commitment.parts)[-1:]:
                yield ChangeLine(event_id, "order-cancelled", None, effect, sku, loc_id)
    for rid, hold in state.holds.items():
        for loc_id, units in hold.units.items():
            effect = f"hold {rid} reserves {units} at {loc_id} until {format_ts(hold.expires_at)}"
            yield ChangeLine(None, "reservation-requested", None, effect, sku, loc_id)


def _component(
    catalog: Catalog,
    channel: Channel,
    state: SkuState,
    sku: str,
    quantity: int,
    clock_date: date,
    horizon: date | None,
) -> ComponentLine:
    locations: list[LocationLine] = []
    inbound: list[InboundLine] = []
    for loc in channel.locations:
        loc_state = state.locations.get(loc)
        if loc_state is None:
            continue
        holds = tuple(
            HoldLine(rid, hold.units[loc], hold.expires_at)
            for rid, hold in sorted(state.holds.items())
            if hold.units.get(loc, 0) > 0
        )
        commitments = tuple(
            CommitmentLine(key, units)
            for key, commitment in sorted(state.commitments.items())
            if (units := commitment.open_at().get(loc, 0)) > 0
        )
        locations.append(
            LocationLine(
                location=loc,
                on_hand=loc_state.on_hand,
                reserved=loc_state.reserved,
                committed=loc_state.committed,
                safety_stock=catalog.safety.get((sku, loc), 0),
                location_ats=sku_location_ats(state, loc, loc_state, catalog),
                damaged=loc_state.damaged.qty,
                quarantine=loc_state.quarantine.qty,
                holds=holds,
                commitments=commitments,
            )
        )
        for po_id, expected in sorted(loc_state.inbound.items()):
            if expected.quantity > 0:
                counted = (
                    horizon is not None and expected.eta is not None and expected.eta <= horizon
                )
                inbound.append(InboundLine(po_id, loc, expected.eta, expected.quantity, counted))
    network = network_ats(loc.location_ats for loc in locations)
    chan_ats = channel_ats(network, channel.allocation_percent, channel.buffer_units)
    bo_units, bo_eta = sku_backorder(state, channel, clock_date)
    backorderable = bo_units // quantity
    return ComponentLine(
        sku=sku,
        quantity=quantity,
        locations=tuple(locations),
        network_ats=network,
        channel_ats=chan_ats,
        available=chan_ats // quantity,
        inbound=tuple(inbound),
        incoming_in_horizon=sum(po.incoming for po in inbound if po.in_horizon),
        backorder_units=bo_units,
        backorderable=backorderable,
        earliest_eta=bo_eta,
        restock_date=bo_eta if backorderable > 0 else None,
    )


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_ts(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))  # format_ts's inverse


def _undate(value: str | None) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def _component_from_json(data: Mapping[str, Any]) -> ComponentLine:
    inbound = tuple(
        InboundLine(
            po["po_id"], po["location"], _undate(po["eta"]), po["incoming"], po["in_horizon"]
        )
        for po in data["inbound"]
    )
    etas = [po.eta for po in inbound if po.in_horizon and po.eta is not None]
    return ComponentLine(
        sku=data["sku"],
        quantity=data["quantity"],
        locations=tuple(
            LocationLine(
                loc["location"],
                loc["on_hand"],
                loc["reserved"],
                loc["committed"],
                loc["safety_stock"],
                loc["location_ats"],
                loc["damaged"],
                loc["quarantine"],
                tuple(
                    HoldLine(h["reservation_id"], h["units"], _parse_ts(h["expires_at"]))
                    for h in loc["holds"]
                ),
                tuple(CommitmentLine(c["order_line"], c["units"]) for c in loc["commitments"]),
            )
            for loc in data["locations"]
        ),
        network_ats=data["network_ats"],
        channel_ats=data["channel_ats"],
        available=data["available"],
        inbound=inbound,
        incoming_in_horizon=data["incoming_in_horizon"],
        backorder_units=data["backorder_units"],
        backorderable=data["backorderable"],
        earliest_eta=min(etas) if etas else None,  # of the POs counted (not in the JSON)
        restock_date=_undate(data["restock_date"]),
    )


def _component_json(comp: ComponentLine) -> dict[str, Any]:
    return {
        "sku": comp.sku,
        "quantity": comp.quantity,
        "network_ats": comp.network_ats,
        "channel_ats": comp.channel_ats,
        "available": comp.available,
        "incoming_in_horizon": comp.incoming_in_horizon,
        "backorder_units": comp.backorder_units,
        "backorderable": comp.backorderable,
        "restock_date": _day(comp.restock_date),
        "locations": [
            {
                "location": loc.location,
                "on_hand": loc.on_hand,
                "reserved": loc.reserved,
                "committed": loc.committed,
                "safety_stock": loc.safety_stock,
                "location_ats": loc.location_ats,
                "counted": loc.counted,
                "damaged": loc.damaged,
                "quarantine": loc.quarantine,
                "holds": [
                    {
                        "reservation_id": h.reservation_id,
                        "units": h.units,
                        "expires_at": format_ts(h.expires_at),
                    }
                    for h in loc.holds
                ],
                "commitments": [
                    {"order_line": c.order_line, "units": c.units} for c in loc.commitments
                ],
            }
            for loc in comp.locations
        ],
        "inbound": [
            {
                "po_id": po.po_id,
                "location": po.location,
                "eta": _day(po.eta),
                "incoming": po.incoming,
                "in_horizon": po.in_horizon,
            }
            for po in comp.inbound
        ],
    }
