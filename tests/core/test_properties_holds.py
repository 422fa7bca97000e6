"""Hold, ordering and backorder invariants of SPEC §3 on generated streams (hypothesis).

The streams mix multi-line carts with repeated SKUs, packs (one component of 3) and bundles (two
components, one of 2), three locations, channels at 80 % and 50 % with buffers, safety stock,
orders that confirm holds, releases and expiries. The oracle quantities (location_ats,
channel_ats) are worked out here from SPEC's formulas over the engine's raw quantities, not with
the core's own formula functions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from hypothesis import event as note
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.catalog import Catalog, load_catalog
from streams.core.models import Event, ReservationRequested
from streams.runners.local import Collector, Engine
from tests.core.builders import count, delta, ev

LOCATIONS = ["wh", "store", "dc"]
SKUS = ["A", "B", "C"]
CHANNELS: dict[str, dict[str, Any]] = {
    "web": {"locations": ["wh", "store", "dc"], "allocation_percent": 80, "buffer_units": 1},
    "amz": {
        "locations": ["dc", "wh"],
        "allocation_percent": 50,
        "buffer_units": 2,
        "backorder_horizon_days": 3,
    },
    "pos": {"locations": ["store"], "allocation_percent": 100, "buffer_units": 0},
}
SAFETY = {("A", "wh"): 2, ("B", "store"): 1}
LISTINGS: dict[str, list[tuple[str, int]]] = {
    "A": [("A", 1)],
    "B": [("B", 1)],
    "C": [("C", 1)],
    "A-3PK": [("A", 3)],
    "KIT": [("A", 2), ("B", 1)],
    "DUO": [("B", 1), ("C", 2)],
}
CATALOG: Catalog = load_catalog(
    {
        "locations": [{"id": loc} for loc in LOCATIONS],
        "channels": [
            {"id": cid, "type": "webhook", "backorder_horizon_days": 0, **ch}
            for cid, ch in CHANNELS.items()
        ],
        "safety_stock": [
            {"sku": sku, "location": loc, "units": units} for (sku, loc), units in SAFETY.items()
        ],
        "listings": [
            {
                "channel": cid,
                "channel_sku": cs,
                "components": [{"sku": s, "quantity": q} for s, q in comps],
            }
            for cid in CHANNELS
            for cs, comps in LISTINGS.items()
        ],
    }
)

# ---- SPEC §3 formulas, over the engine's raw quantities -------------------------------------


def location_ats(engine: Engine, sku: str, loc: str) -> int:
    state = engine.skus.get(sku)
    stock = state.locations.get(loc) if state else None
    if stock is None:
        return -SAFETY.get((sku, loc), 0)
    return stock.sellable.qty - stock.reserved - stock.committed - SAFETY.get((sku, loc), 0)


def channel_ats(engine: Engine, channel: str, sku: str) -> int:
    ch = CHANNELS[channel]
    network = sum(max(0, location_ats(engine, sku, loc)) for loc in ch["locations"])
    return max(0, network * ch["allocation_percent"] // 100 - ch["buffer_units"])


def request_totals(
    event: ReservationRequested,
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """A request's units per SKU (listings resolved to components x quantity), and per (SKU,
    explicit location)."""
    totals: dict[str, int] = defaultdict(int)
    pinned: dict[tuple[str, str], int] = defaultdict(int)
    for line in event.lines:
        parts = [(line.sku, 1)] if line.sku else LISTINGS[line.channel_sku or ""]
        for sku, per in parts:
            totals[sku] += per * line.quantity
            if line.location:
                pinned[(sku, line.location)] += per * line.quantity
    return dict(totals), dict(pinned)


# ---- streams ---------------------------------------------------------------------------------

KINDS = (
    ["receipt"] * 3
    + ["adjust"] * 2
    + ["count", "pick", "return", "inbound", "po-receipt", "order", "cancel"]
    + ["confirm"] * 2
    + ["request"] * 4
    + ["release", "tick"]
)


@st.composite
def request_lines(draw: st.DrawFn, channel: str) -> list[dict[str, Any]]:
    """A cart of 1-4 lines: SKUs and listings, often the same SKU twice, sometimes pinned."""
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        line: dict[str, Any] = {"quantity": draw(st.sampled_from([1, 1, 2, 3]))}
        if draw(st.booleans()):
            line["sku"] = draw(st.sampled_from(SKUS))
        else:
            line["channel_sku"] = draw(st.sampled_from(sorted(LISTINGS)))
        if draw(st.integers(0, 4)) == 0:
            line["location"] = draw(st.sampled_from(CHANNELS[channel]["locations"]))
        lines.append(line)
    return lines


@st.composite
def streams(draw: st.DrawFn, min_size: int = 8, max_size: int = 40) -> list[Event]:
    """A valid stream whose orders, picks, cancels and releases refer to earlier ids."""
    events: list[Event] = []
    minute = 0.0
    requests: list[tuple[str, str, dict[str, int]]] = []  # (id, channel, units per SKU)
    orders: list[tuple[str, list[dict[str, Any]]]] = []
    pos: dict[str, tuple[str, str]] = {}
    opening = ["receipt"] * draw(st.integers(2, 7))
    kinds = opening + draw(st.lists(st.sampled_from(KINDS), min_size=min_size, max_size=max_size))
    for n, kind in enumerate(kinds):
        minute += draw(st.sampled_from([0, 0, 1, 1, 5, 20]))
        at = minute - draw(st.sampled_from([0, 0, 0, 0, 3]))  # now and then a late arrival
        eid = f"e{n:03d}"
        sku, loc = draw(st.sampled_from(SKUS)), draw(st.sampled_from(LOCATIONS))
        if kind == "receipt":
            e = delta(
                sku,
                loc,
                draw(st.integers(2, 9)),
                at,
                event_id=eid,
                reason="receipt",
            )
        elif kind == "adjust":
            e = delta(
                sku,
                loc,
                draw(st.sampled_from([-3, -2, -1, 1, 2, 4])),
                at,
                event_id=eid,
            )
        elif kind == "count":
            e = count(
                sku,
                loc,
                draw(st.integers(0, 15)),
                at,
                event_id=eid,
            )
        elif kind == "return":
            e = ev(
                "return-received",
                at,
                eid,
                sku=sku,
                location=loc,
                quantity=draw(st.integers(1, 3)),
                disposition=draw(st.sampled_from(["resellable", "damaged"])),
            )
        elif kind == "inbound" or (kind == "po-receipt" and not pos):
            po = draw(st.sampled_from([f"PO{len(pos)}", *sorted(pos)]))
            sku, loc = pos.setdefault(po, (sku, loc))
            e = ev(
                "inbound-scheduled",
                at,
                eid,
                po_id=po,
                sku=sku,
                location=loc,
                quantity=draw(st.integers(1, 8)),
                eta="2026-11-03",
            )
        elif kind == "po-receipt":
            po = draw(st.sampled_from(sorted(pos)))
            sku, loc = pos[po]
            e = delta(
                sku,
                loc,
                draw(st.integers(1, 5)),
                at,
                event_id=eid,
                reason="receipt",
                po_id=po,
            )
        elif kind == "confirm" and requests:
            rid, channel, totals = draw(st.sampled_from(requests))
            lines: list[dict[str, Any]] = []
            for s, units in sorted(totals.items()):
                take = draw(st.sampled_from(["all", "all", "less", "more", "leave-out"]))
                if take == "leave-out" or (take == "less" and units == 1):
                    continue
                qty = {"all": units, "less": units - 1, "more": units + 1}[take]
                lines.append({"line_id": str(len(lines)), "sku": s, "quantity": qty})
            lines = lines or [{"line_id": "0", "sku": sku, "quantity": 1}]
            oid = f"o{n}"
            e = ev(
                "order-created",
                at,
                eid,
                order_id=oid,
                channel=channel,
                reservation_id=rid,
                lines=lines,
            )
            orders.append((oid, lines))
        elif kind in ("order", "confirm"):
            channel = draw(st.sampled_from(sorted(CHANNELS)))
            lines = [
                {
                    "line_id": str(i),
                    "sku": draw(st.sampled_from(SKUS)),
                    "quantity": draw(st.integers(1, 3)),
                }
                for i in range(draw(st.integers(1, 2)))
            ]
            oid = f"o{n}"
            e = ev("order-created", at, eid, order_id=oid, channel=channel, lines=lines)
            orders.append((oid, lines))
        elif kind == "cancel" and orders:
            oid, lines = draw(st.sampled_from(orders))
            line = draw(st.sampled_from(lines))
            cancel = [{"line_id": line["line_id"], "quantity": 1}] if draw(st.booleans()) else None
            e = ev("order-cancelled", at, eid, order_id=oid, lines=cancel)
        elif kind == "pick" and orders:
            oid, lines = draw(st.sampled_from(orders))
            line = draw(st.sampled_from(lines))
            e = ev(
                "pick-confirmed",
                at,
                eid,
                order_id=oid,
                line_id=line["line_id"],
                sku=line["sku"],
                location=loc,
                quantity=line["quantity"],
            )
        elif kind == "release" and requests:
            rid = draw(st.sampled_from(requests))[0]
            e = ev("reservation-released", at, eid, reservation_id=rid)
        elif kind == "tick":  # only moves the clock: expiries are due
            minute += draw(st.sampled_from([5, 15, 60]))
            e = delta("Z", "wh", 1, minute, event_id=eid)
        else:  # request, and the kinds that had nothing to refer to yet
            channel = draw(st.sampled_from(sorted(CHANNELS)))
            reuse = requests and draw(st.integers(0, 7)) == 0
            rid = draw(st.sampled_from(requests))[0] if reuse else f"r{n}"
            e = ev(
                "reservation-requested",
                at,
                eid,
                reservation_id=rid,
                channel=channel,
                ttl_seconds=draw(st.sampled_from([120, 600, 1800])),
                lines=draw(request_lines(channel)),
            )
            if not reuse:
                assert isinstance(e, ReservationRequested)
                requests.append((rid, channel, request_totals(e)[0]))
        events.append(e)
    return events


def held_units(engine: Engine) -> dict[tuple[str, str], int]:
    """Units of the open holds (reservations whose status is held) per (SKU, location)."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for res in engine.reservations.values():
        if res.status == "held":
            for sku, parts in res.held.items():
                for loc, units in parts:
                    out[(sku, loc)] += units
    return out


def reserved_units(engine: Engine) -> dict[tuple[str, str], int]:
    return {
        (sku, loc): stock.reserved
        for sku, state in engine.skus.items()
        for loc, stock in state.locations.items()
        if stock.reserved
    }


# ---- (a) zero oversell and (b) every request that fits is held ----------------------------


def probe(engine: Engine, event: ReservationRequested, sku: str, units: int) -> str:
    """The answer a request of `units` of `sku`, in two lines, would get in the engine's place."""
    clone = Engine.restore(CATALOG, Collector(), json.loads(json.dumps(engine.snapshot())))
    lines = [{"sku": sku, "quantity": units // 2}, {"sku": sku, "quantity": units - units // 2}]
    request = ev(
        "reservation-requested",
        0,
        "probe",
        reservation_id="probe",
        channel=event.channel,
        lines=[line for line in lines if line["quantity"]],
    )
    clone.process(request.model_copy(update={"occurred_at": event.occurred_at}))
    return clone.reservations["probe"].status


def decide_each_request(events: list[Event], probes: bool = False) -> list[dict[str, Any]]:
    """Run the stream; for every new request, what was free the instant it was decided, and with
    `probes` the answers to requests of exactly each SKU's channel_ats and of one unit more."""
    engine = Engine(CATALOG, Collector())
    decided = []
    for event in events:
        fresh = isinstance(event, ReservationRequested) and (
            event.reservation_id not in engine.reservations
        )
        if isinstance(event, ReservationRequested) and fresh:
            engine._advance(event.occurred_at)  # expiries due by now free their units first
            totals, pinned = request_totals(event)
            channel = CHANNELS[event.channel]
            before: dict[str, Any] = {
                "chan": {sku: channel_ats(engine, event.channel, sku) for sku in totals},
                "loc": {
                    (sku, loc): location_ats(engine, sku, loc)
                    for sku in totals
                    for loc in channel["locations"]
                },
                "reserved": reserved_units(engine),
                "late": event.occurred_at + timedelta(seconds=event.ttl) <= engine.stream_time,
                "probes": {},
            }
            if probes and not before["late"]:
                for sku, chan in before["chan"].items():
                    if chan:
                        before["probes"][(sku, chan)] = probe(engine, event, sku, chan)
                    before["probes"][(sku, chan + 1)] = probe(engine, event, sku, chan + 1)
        engine.process(event)
        if isinstance(event, ReservationRequested) and fresh:
            res = engine.reservations[event.reservation_id]
            after = {key: location_ats(engine, *key) for key in before["loc"]}
            decided.append(
                {
                    "event": event,
                    "status": res.status,
                    "held": {sku: list(parts) for sku, parts in res.held.items()},
                    "totals": totals,
                    "pinned": pinned,
                    **before,
                    "after": after,
                    "reserved_after": reserved_units(engine),
                }
            )
    return decided


@settings(max_examples=300, deadline=None)
@given(streams())
def test_a_hold_never_takes_more_than_channel_ats_nor_drives_a_location_negative(
    events: list[Event],
) -> None:
    for d in decide_each_request(events):
        note(f"request {d['status']}")
        if d["status"] != "held":
            continue
        if len(d["totals"]) > 1:
            note("multi-SKU hold")
        held_at: dict[tuple[str, str], int] = defaultdict(int)
        for sku, parts in d["held"].items():
            taken = sum(units for _, units in parts)
            assert taken == d["totals"][sku], ("held in full", d["event"], sku, parts)
            assert taken <= d["chan"][sku], ("more than channel_ats", d["event"], sku, d["chan"])
            for loc, units in parts:
                held_at[(sku, loc)] += units
            if len(parts) > 1:
                note("hold split over locations")
        assert set(d["held"]) == set(d["totals"]), d["event"]
        for key, units in held_at.items():
            assert units <= max(0, d["loc"][key]), ("more than the location had", d["event"], key)
            assert d["after"][key] >= 0, ("location driven negative", d["event"], key)
        for key, units in d["pinned"].items():
            assert held_at.get(key, 0) >= units, ("explicit location not honoured", d["event"])


@settings(max_examples=300, deadline=None)
@given(streams())
def test_every_request_that_fits_channel_ats_is_held_and_no_other(events: list[Event]) -> None:
    for d in decide_each_request(events, probes=True):
        for (sku, units), status in d["probes"].items():  # at the boundary: channel_ats exactly
            fits = units <= d["chan"][sku]
            assert status == ("held" if fits else "rejected"), (d["event"], sku, units, d["chan"])
        fits = all(units <= d["chan"][sku] for sku, units in d["totals"].items()) and all(
            units <= max(0, d["loc"][key]) for key, units in d["pinned"].items()
        )
        note("request fits" if fits else "request does not fit")
        if d["late"]:
            assert d["status"] == "expired", d["event"]
        elif fits:
            assert d["status"] == "held", ("fits but not held", d["event"], d["chan"])
        else:
            assert d["status"] == "rejected", ("does not fit but held", d["event"], d["chan"])
        if d["status"] != "held":  # all or nothing: a request not held holds nothing
            assert d["reserved_after"] == d["reserved"], d["event"]


# ---- (c) deltas commute, counts of one instant are ordered by event id -----------------------


@st.composite
def stock_streams(draw: st.DrawFn) -> list[Event]:
    """Deltas, picks, returns, receipts against POs and counts, many counts sharing instants."""
    events: list[Event] = []
    instants = [0, 10, 10, 20, 30]
    for n in range(draw(st.integers(1, 30))):
        sku, loc = draw(st.sampled_from(["A", "B"])), draw(st.sampled_from(["wh", "dc"]))
        at = draw(st.sampled_from(instants)) + draw(st.sampled_from([0, 0, 0, 1]))
        eid = draw(st.sampled_from(["e", "f", "g"])) + f"{n:03d}"  # counts' tie order varies
        kind = draw(st.sampled_from(["delta", "delta", "count", "count", "pick", "return", "po"]))
        if kind == "delta":
            e = delta(
                sku,
                loc,
                draw(st.sampled_from([-4, -1, 2, 5, 9])),
                at,
                event_id=eid,
                bucket=draw(st.sampled_from(["sellable", "sellable", "damaged"])),
            )
        elif kind == "count":
            e = count(
                sku,
                loc,
                draw(st.integers(0, 12)),
                at,
                event_id=eid,
                bucket=draw(st.sampled_from(["sellable", "sellable", "damaged"])),
            )
        elif kind == "pick":
            e = ev(
                "pick-confirmed", at, eid, sku=sku, location=loc, quantity=draw(st.integers(1, 3))
            )
        elif kind == "return":
            e = ev(
                "return-received",
                at,
                eid,
                sku=sku,
                location=loc,
                quantity=draw(st.integers(1, 3)),
                disposition="resellable",
            )
        elif draw(st.booleans()):
            e = ev(
                "inbound-scheduled",
                at,
                eid,
                po_id=f"PO-{sku}-{loc}",
                sku=sku,
                location=loc,
                quantity=draw(st.integers(1, 6)),
                eta="2026-11-02",
            )
        else:
            e = delta(
                sku,
                loc,
                draw(st.integers(1, 4)),
                at,
                event_id=eid,
                reason="receipt",
                po_id=f"PO-{sku}-{loc}",
            )
        events.append(e)
    return events


def seen(events: list[Event]) -> dict[str, Any]:
    """What a user sees at the end: the last position and availability record of every key."""
    out = Collector()
    engine = Engine(CATALOG, out)
    for event in events:
        engine.process(event)
    return {
        "positions": {
            key: (
                p.on_hand,
                p.damaged,
                p.quarantine,
                p.reserved,
                p.committed,
                p.incoming,
                p.location_ats,
            )
            for key, p in out.positions.items()
        },
        "availability": {
            key: (a.available, a.backorderable, a.restock_date)
            for key, a in out.availabilities.items()
        },
    }


@settings(max_examples=300, deadline=None)
@given(stock_streams(), st.randoms(use_true_random=False))
def test_any_arrival_order_of_deltas_and_counts_gives_the_same_positions_and_availability(
    events: list[Event], rnd: Any
) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    counts = [
        (e.sku, e.location, e.bucket, e.occurred_at)
        for e in events
        if e.type == "stock-adjusted" and e.mode == "count"
    ]
    if len(counts) > len(set(counts)):
        note("counts of one instant")
    assert seen(shuffled) == seen(events)


# ---- (d) backorderable: stock, POs and the clock, whatever the arrival order -----------------


@st.composite
def po_streams(draw: st.DrawFn) -> tuple[list[Event], list[Event]]:
    """POs of several etas, receipts against them, over five days, mixed into a full stream."""
    business = draw(streams(min_size=4, max_size=20))
    pos_events: list[Event] = []
    for n in range(draw(st.integers(1, 12))):
        sku = draw(st.sampled_from(SKUS))
        loc = draw(st.sampled_from(["dc", "wh", "store"]))
        po = f"PO{draw(st.integers(0, 3))}-{sku}-{loc}"
        at = draw(st.integers(0, 5 * 24 * 60))
        eta = (datetime(2026, 11, 1) + timedelta(days=draw(st.integers(0, 8)))).date()
        if draw(st.integers(0, 2)):
            e = ev(
                "inbound-scheduled",
                at,
                f"p{n:03d}",
                po_id=po,
                sku=sku,
                location=loc,
                quantity=draw(st.integers(1, 9)),
                eta=eta.isoformat(),
            )
        else:
            e = delta(
                sku,
                loc,
                draw(st.integers(1, 4)),
                at,
                event_id=f"p{n:03d}",
                reason="receipt",
                po_id=po,
            )
        pos_events.append(e)
    return business, pos_events


def backorders(events: list[Event]) -> dict[tuple[str, str], Any]:
    out = Collector()
    engine = Engine(CATALOG, out)
    for event in events:
        engine.process(event)
    return {
        key: (a.backorderable, a.restock_date)
        for key, a in out.availabilities.items()
        if a.backorderable or a.restock_date
    }


@settings(max_examples=200, deadline=None)
@given(po_streams(), st.randoms(use_true_random=False))
def test_backorderable_depends_on_stock_pos_and_the_clock_not_on_arrival_order(
    generated: tuple[list[Event], list[Event]], rnd: Any
) -> None:
    business, pos_events = generated
    mixed = business + pos_events
    clock = max(e.occurred_at for e in mixed)
    shuffled = list(mixed)
    rnd.shuffle(shuffled)
    # the POs and their receipts alone, in another order, and one event that sets the same clock
    tick = delta("Z", "wh", 1, 0, event_id="tick")
    alone = [e for e in mixed if e.type == "inbound-scheduled" or getattr(e, "po_id", None)]
    alone.append(tick.model_copy(update={"occurred_at": clock}))
    rnd.shuffle(alone)
    expected = backorders(mixed)
    note("backorderable > 0" if expected else "nothing backorderable")
    assert backorders(shuffled) == expected
    assert backorders(alone) == expected


# ---- (e) reserved is the sum of the open holds after every confirm, expiry and release ------


@settings(max_examples=300, deadline=None)
@given(streams(min_size=12, max_size=50))
def test_reserved_is_the_sum_of_the_open_holds_after_every_confirm_expiry_and_release(
    events: list[Event],
) -> None:
    out = Collector()
    engine = Engine(CATALOG, out)
    for event in events:
        statuses = {rid: r.status for rid, r in engine.reservations.items()}
        engine.process(event)
        closed = {
            r.status
            for rid, r in engine.reservations.items()
            if statuses.get(rid) == "held" and r.status != "held"
        }
        for status in closed:
            note(f"a hold {status}")
        expected = {k: v for k, v in held_units(engine).items() if v}
        assert reserved_units(engine) == expected, (event, closed)
        for key, published in out.positions.items():  # and the published position says so
            assert published.reserved == expected.get(key, 0), (event, key)
