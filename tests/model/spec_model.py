"""A deliberately small model of SPEC §2-§3, written from the SPEC text alone, never the core.

It is slow and plain on purpose: every quantity is recomputed from what was recorded, so
each rule reads as one sentence of SPEC. `run(catalog, events)` takes the catalog as the
plain mapping of SPEC §4 and the events as the JSON dicts of SPEC §2, processed in the
given order, and answers with the `positions`, `availability` and `reservations` of
`inventory-streams simulate` (SPEC §6). It does no input validation: the stream is
assumed valid.

Where SPEC is silent the simplest reading is taken, each marked "SPEC is silent" below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

DEFAULT_TTL_SECONDS = 900
BUCKETS = ("sellable", "damaged", "quarantine")
RETURN_BUCKET = {"resellable": "sellable", "damaged": "damaged", "quarantine": "quarantine"}


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Bucket:
    """A bucket as SPEC's ordering rules define it: the winning count plus the deltas after it."""

    # (occurred_at, event_id, quantity) of the winning count: latest instant, then greatest id
    count: tuple[datetime, str, int] | None = None
    # every delta ever applied, with its business time; which of them count is decided on read
    deltas: list[tuple[datetime, int]] = field(default_factory=list)

    def quantity(self) -> int:
        if self.count is None:
            return sum(q for _, q in self.deltas)
        at, _, counted = self.count
        # a delta at or before the count's instant is inside the count
        return counted + sum(q for t, q in self.deltas if t > at)

    def apply_count(self, at: datetime, event_id: str, quantity: int) -> None:
        # a count older than the winning one is ignored; same instant: greater event_id wins
        if self.count is None or (at, event_id) > (self.count[0], self.count[1]):
            self.count = (at, event_id, quantity)


@dataclass
class Reservation:
    status: str  # held, rejected, expired, released, confirmed
    channel: str
    expires_at: datetime
    # sku -> [[location, units]] in placement order
    held: dict[str, list[list[Any]]] = field(default_factory=dict)


class SpecModel:
    def __init__(self, catalog: dict[str, Any]) -> None:
        self.locations = [loc["id"] for loc in catalog["locations"]]
        self.channels = {ch["id"]: ch for ch in catalog["channels"]}
        self.safety = {
            (s["sku"], s["location"]): s["units"] for s in catalog.get("safety_stock") or []
        }
        self.listings = {
            (li["channel"], li["channel_sku"]): [
                (c["sku"], c["quantity"]) for c in li["components"]
            ]
            for li in catalog.get("listings") or []
        }
        self.seen_event_ids: set[str] = set()
        self.clock: datetime | None = None
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        # (sku, location, po_id) -> [scheduled, received, eta]
        self.pos: dict[tuple[str, str, str], list[Any]] = {}
        # (order_id, line_id) -> {"sku": sku, "at": {location: units still committed}}
        self.order_lines: dict[tuple[str, str], dict[str, Any]] = {}
        self.reservations: dict[str, Reservation] = {}
        self.touched: set[tuple[str, str]] = set()
        self.answers: list[str] = []  # every request's status when it was decided
        self.placements: list[list[list[Any]]] = []  # every hold's placement of one SKU

    # ---- quantities (SPEC §3 table and formulas) ----

    def bucket(self, sku: str, location: str, name: str) -> Bucket:
        self.touched.add((sku, location))
        return self.buckets.setdefault((sku, location, name), Bucket())

    def on_hand(self, sku: str, location: str) -> int:
        b = self.buckets.get((sku, location, "sellable"))
        return b.quantity() if b else 0

    def reserved(self, sku: str, location: str) -> int:
        return sum(
            units
            for r in self.reservations.values()
            if r.status == "held"
            for loc, units in r.held.get(sku, [])
            if loc == location
        )

    def committed(self, sku: str, location: str) -> int:
        return sum(
            line["at"].get(location, 0) for line in self.order_lines.values() if line["sku"] == sku
        )

    def incoming(self, sku: str, location: str, eta_until: date | None = None) -> int:
        # per PO: max(0, Σ scheduled - Σ received), whatever the arrival order
        total = 0
        for (s, loc, _), (scheduled, received, eta) in self.pos.items():
            if s != sku or loc != location:
                continue
            if eta_until is not None and (eta is None or eta > eta_until):
                continue
            total += max(0, scheduled - received)
        return total

    def location_ats(self, sku: str, location: str) -> int:
        return (
            self.on_hand(sku, location)
            - self.reserved(sku, location)
            - self.committed(sku, location)
            - self.safety.get((sku, location), 0)
        )

    def _allocated(self, channel: str, network: int) -> int:
        ch = self.channels[channel]
        return max(0, network * ch["allocation_percent"] // 100 - ch.get("buffer_units", 0))

    def channel_ats(self, channel: str, sku: str) -> int:
        network = sum(
            max(0, self.location_ats(sku, loc)) for loc in self.channels[channel]["locations"]
        )
        return self._allocated(channel, network)

    def channel_incoming(self, channel: str, sku: str) -> int:
        ch = self.channels[channel]
        horizon = ch.get("backorder_horizon_days", 0)
        if horizon <= 0 or self.clock is None:
            return 0
        until = self.clock.date() + timedelta(days=horizon)
        network = sum(self.incoming(sku, loc, until) for loc in ch["locations"])
        return self._allocated(channel, network)

    def sourcing_order(self, channel: str, sku: str) -> list[str]:
        # highest location_ats first; ties to the location listed first (sorted() is stable)
        eligible = self.channels[channel]["locations"]
        return sorted(eligible, key=lambda loc: -self.location_ats(sku, loc))

    # ---- the event loop ----

    def process(self, event: dict[str, Any]) -> None:
        if event["event_id"] in self.seen_event_ids:
            return  # SPEC keeps ids 7 days of event time; the streams here are shorter
        self.seen_event_ids.add(event["event_id"])
        at = parse_time(event["occurred_at"])
        if self.clock is None or at > self.clock:
            self.clock = at
            self._expire_holds()
        getattr(self, "_" + event["type"].replace("-", "_"))(event, at)

    def _expire_holds(self) -> None:
        assert self.clock is not None
        for r in self.reservations.values():
            if r.status == "held" and r.expires_at < self.clock:
                r.status = "expired"

    def _stock_adjusted(self, e: dict[str, Any], at: datetime) -> None:
        b = self.bucket(e["sku"], e["location"], e.get("bucket") or "sellable")
        if e["mode"] == "count":
            b.apply_count(at, e["event_id"], e["quantity"])
        else:
            b.deltas.append((at, e["quantity"]))
        if e.get("po_id"):
            # SPEC is silent on a receipt inside a count: the count rule speaks of the bucket
            # only, so the receipt still counts against its PO
            po = self.pos.setdefault((e["sku"], e["location"], e["po_id"]), [0, 0, None])
            po[1] += e["quantity"]

    def _return_received(self, e: dict[str, Any], at: datetime) -> None:
        b = self.bucket(e["sku"], e["location"], RETURN_BUCKET[e["disposition"]])
        b.deltas.append((at, e["quantity"]))

    def _inbound_scheduled(self, e: dict[str, Any], at: datetime) -> None:
        self.touched.add((e["sku"], e["location"]))
        po = self.pos.setdefault((e["sku"], e["location"], e["po_id"]), [0, 0, None])
        po[0] += e["quantity"]
        # SPEC is silent on a PO scheduled again with another eta: the latest one stands
        po[2] = date.fromisoformat(e["eta"])

    def _commit(self, order_id: str, line_id: str, sku: str, location: str, units: int) -> None:
        self.touched.add((sku, location))
        line = self.order_lines.setdefault((order_id, line_id), {"sku": sku, "at": {}})
        line["at"][location] = line["at"].get(location, 0) + units

    def _order_created(self, e: dict[str, Any], at: datetime) -> None:
        rid = e.get("reservation_id")
        hold = self.reservations.get(rid) if rid else None
        # SPEC is silent on an order naming a reservation that is not held (unknown, rejected,
        # expired, released, confirmed): the sale happened, so it is an order like any other
        if hold is not None and hold.status != "held":
            hold = None
        # what is left of the hold, per SKU, in placement order; consumed in place so that
        # units already committed are no longer also reserved when later lines are sourced
        left = hold.held if hold is not None else {}
        for line in e["lines"]:
            sku, units = line["sku"], line["quantity"]
            # units the hold has become commitments where they were held, in placement order
            # (SPEC is silent on which of a split hold's locations a line takes first)
            for place in left.get(sku, []):
                take = min(units, place[1])
                if take:
                    self._commit(e["order_id"], line["line_id"], sku, place[0], take)
                    place[1] -= take
                    units -= take
            if units == 0:
                continue
            # units beyond the hold: the line's location, else sourcing (oversell still recorded)
            location = line.get("location") or self.sourcing_order(e["channel"], sku)[0]
            self._commit(e["order_id"], line["line_id"], sku, location, units)
        if hold is not None:
            # exactly once; whatever the order did not take is released with the hold
            hold.status = "confirmed"
            hold.held = {}

    def _order_cancelled(self, e: dict[str, Any], at: datetime) -> None:
        order_id = e["order_id"]
        if e.get("lines") is None:
            for (oid, _), whole in self.order_lines.items():
                if oid == order_id:
                    whole["at"] = {}
            return
        for c in e["lines"]:
            line = self.order_lines.get((order_id, c["line_id"]))
            if line is None:
                continue  # an unknown line only raises an alert; the known ones are cancelled
            # SPEC is silent on which location of a split line a partial cancel releases: the
            # core's choice, the units placed last first
            self._release_line(line, c["quantity"])

    @staticmethod
    def _release_line(line: dict[str, Any], units: int) -> None:
        for loc in reversed(list(line["at"])):
            take = min(units, line["at"][loc])
            line["at"][loc] -= take
            units -= take

    def _pick_confirmed(self, e: dict[str, Any], at: datetime) -> None:
        sku, location = e["sku"], e["location"]
        self.bucket(sku, location, "sellable").deltas.append((at, -e["quantity"]))
        if e.get("order_id") and e.get("line_id"):
            line = self.order_lines.get((e["order_id"], e["line_id"]))
            if line is not None and line["sku"] == sku:
                # SPEC: a pick of an order line releases that line's commitment, never more.
                # SPEC is silent on a pick at another location than the line was committed at:
                # the core's choice, the pick's own location first, the rest as a cancel would
                here = line["at"].get(location, 0)
                take = min(here, e["quantity"])
                if location in line["at"]:
                    line["at"][location] -= take
                self._release_line(line, e["quantity"] - take)

    def _resolve(
        self, channel: str, lines: list[dict[str, Any]]
    ) -> list[tuple[str, int, str | None]]:
        resolved = []
        for line in lines:
            location = line.get("location")
            if line.get("sku"):
                resolved.append((line["sku"], line["quantity"], location))
            else:
                for sku, per in self.listings[(channel, line["channel_sku"])]:
                    resolved.append((sku, per * line["quantity"], location))
        return resolved

    def _reservation_requested(self, e: dict[str, Any], at: datetime) -> None:
        rid = e["reservation_id"]
        if rid in self.reservations:
            return  # the same reservation_id gets the first answer and holds nothing more
        ttl = e.get("ttl_seconds")
        expires_at = at + timedelta(seconds=DEFAULT_TTL_SECONDS if ttl is None else ttl)
        r = Reservation(status="rejected", channel=e["channel"], expires_at=expires_at)
        self.reservations[rid] = r
        assert self.clock is not None
        if expires_at <= self.clock:
            r.status = "expired"
            return
        channel = e["channel"]
        totals: dict[str, int] = {}
        # explicit-location units per (sku, location): SPEC's "that much" per line is summed
        # per location so that two lines cannot each count the same units (zero oversell)
        explicit: dict[tuple[str, str], int] = {}
        for sku, units, location in self._resolve(channel, e["lines"]):
            self.touched.update((sku, loc) for loc in self.channels[channel]["locations"])
            totals[sku] = totals.get(sku, 0) + units
            if location:
                explicit[(sku, location)] = explicit.get((sku, location), 0) + units
        # checked once, before anything of the request is held
        fits = all(total <= self.channel_ats(channel, sku) for sku, total in totals.items())
        fits = fits and all(
            units <= max(0, self.location_ats(sku, location))
            for (sku, location), units in explicit.items()
        )
        if not fits:
            self.answers.append("rejected")
            return
        plan: dict[str, list[list[Any]]] = {}
        for sku, total in totals.items():
            places: list[list[Any]] = []
            # SPEC is silent on mixing explicit and free lines: explicit units first, at their
            # location; the rest in sourcing order computed after them
            for (s, location), units in explicit.items():
                if s == sku:
                    places.append([location, units])
            remaining = total - sum(u for _, u in places)
            taken = {loc: u for loc, u in places}
            eligible: list[str] = self.channels[channel]["locations"]
            order = sorted(
                eligible, key=lambda loc: -(self.location_ats(sku, loc) - taken.get(loc, 0))
            )
            for loc in order:
                if remaining == 0:
                    break
                give = min(remaining, max(0, self.location_ats(sku, loc) - taken.get(loc, 0)))
                if give:
                    places.append([loc, give])
                    remaining -= give
            assert remaining == 0, "channel_ats <= network_ats, so the hold always fits"
            plan[sku] = places
            self.placements.append(places)
        r.status = "held"
        r.held = plan
        self.answers.append("held")

    def _reservation_released(self, e: dict[str, Any], at: datetime) -> None:
        r = self.reservations.get(e["reservation_id"])
        if r is not None and r.status == "held":
            r.status = "released"
            r.held = {}

    def _reservation_expired(self, e: dict[str, Any], at: datetime) -> None:
        r = self.reservations.get(e["reservation_id"])
        if r is not None and r.status == "held":
            r.status = "expired"
            r.held = {}

    def labels(self) -> set[str]:
        """What this stream exercised, for the test's statistics."""
        out = {f"reservation {r.status}" for r in self.reservations.values()}
        out |= {f"request answered {status}" for status in self.answers}
        out |= {f"hold split over {len(p)}" for p in self.placements if len(p) > 1}
        if any(p["backorderable"] for p in self.report()["availability"]):
            out.add("backorderable > 0")
        if any(self.location_ats(s, loc) < 0 for s, loc in self.touched):
            out.add("a location oversold")
        return out

    # ---- the answer, shaped as `inventory-streams simulate` ----

    def position(self, sku: str, location: str) -> dict[str, Any]:
        def bucket(name: str) -> int:
            b = self.buckets.get((sku, location, name))
            return b.quantity() if b else 0

        return {
            "sku": sku,
            "location": location,
            "on_hand": bucket("sellable"),
            "reserved": self.reserved(sku, location),
            "committed": self.committed(sku, location),
            "damaged": bucket("damaged"),
            "quarantine": bucket("quarantine"),
            "incoming": self.incoming(sku, location),
            "location_ats": self.location_ats(sku, location),
        }

    def availability(self, channel: str, channel_sku: str) -> dict[str, Any]:
        components = self.listings[(channel, channel_sku)]
        return {
            "channel": channel,
            "channel_sku": channel_sku,
            "available": min(self.channel_ats(channel, s) // q for s, q in components),
            "backorderable": min(self.channel_incoming(channel, s) // q for s, q in components),
        }

    def report(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "positions": [self.position(s, loc) for s, loc in sorted(self.touched)],
            "availability": [self.availability(ch, cs) for ch, cs in sorted(self.listings)],
            "reservations": [
                {"reservation_id": rid, "status": r.status}
                for rid, r in sorted(self.reservations.items())
            ],
        }


def run(catalog: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    model = SpecModel(catalog)
    for event in events:
        model.process(event)
    return model.report()
