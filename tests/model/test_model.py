"""Model-based test: the SPEC model (tests/model/spec_model.py) against `simulate`.

Every generated stream is valid input, so a difference in positions, availability or
reservation statuses is a rule one side gets wrong; hypothesis shrinks it and the message
prints the stream as JSONL, the catalog as YAML and each differing field.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from streams.core.catalog import load_catalog
from streams.simulate import POSITION_FIELDS as POSITION_RECORD
from streams.simulate import simulate
from tests.model.spec_model import SpecModel

SKUS = ("TEE", "MUG")
LOCATIONS = ("wh-east", "store-12", "wh-west")
CHANNELS = ("shop", "amz")
BASE = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
# the figures of a position record (simulate's output contract), without its key
POSITION_FIELDS = tuple(f for f in POSITION_RECORD if f not in ("sku", "location"))


@st.composite
def catalogs(draw: st.DrawFn) -> dict[str, Any]:
    locations = list(LOCATIONS[: draw(st.integers(2, 3))])
    channels = []
    listings = []
    for cid in CHANNELS[: draw(st.integers(1, 2))]:
        order = draw(st.permutations(locations))
        # mostly two or more eligible locations, so that holds have something to split over
        size = draw(st.sampled_from([len(order), len(order), 2, 1]))
        channels.append(
            {
                "id": cid,
                "type": "webhook",
                "locations": list(order[:size]),
                "allocation_percent": draw(st.sampled_from([100, 80, 50])),
                "buffer_units": draw(st.integers(0, 2)),
                "backorder_horizon_days": draw(st.sampled_from([0, 3])),
            }
        )
        for sku in SKUS:
            listings.append(
                {"channel": cid, "channel_sku": sku, "components": [{"sku": sku, "quantity": 1}]}
            )
        per_pack = draw(st.sampled_from([2, 6]))
        listings.append(
            {
                "channel": cid,
                "channel_sku": f"TEE-{per_pack}PK",
                "components": [{"sku": "TEE", "quantity": per_pack}],
            }
        )
        listings.append(
            {
                "channel": cid,
                "channel_sku": "SET",
                "components": [{"sku": "MUG", "quantity": 1}, {"sku": "TEE", "quantity": 2}],
            }
        )
    safety = draw(
        st.lists(
            st.tuples(st.sampled_from(SKUS), st.sampled_from(locations), st.integers(1, 2)),
            max_size=2,
            unique_by=lambda t: (t[0], t[1]),
        )
    )
    return {
        "locations": [{"id": loc} for loc in locations],
        "channels": channels,
        "safety_stock": [{"sku": s, "location": loc, "units": u} for s, loc, u in safety],
        "listings": listings,
    }


KINDS = (
    ["stock"] * 4
    + ["count"] * 2
    + ["other-bucket", "return"]
    + ["order"] * 2
    + ["confirm"] * 2
    + ["cancel", "pick", "inbound", "receipt"]
    + ["request"] * 4
    + ["release", "duplicate"]
)


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A catalog and a valid stream of 5-40 events that refer to each other's ids."""
    catalog = draw(catalogs())
    locations = [loc["id"] for loc in catalog["locations"]]
    channels = {ch["id"]: ch for ch in catalog["channels"]}
    listings = {(li["channel"], li["channel_sku"]): li["components"] for li in catalog["listings"]}
    events: list[dict[str, Any]] = []
    used_times: list[datetime] = [BASE]
    clock = BASE
    orders: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []  # {"id", "channel", "totals": {sku: units}}
    line: dict[str, Any]
    pos: dict[str, tuple[str, str, date]] = {}

    def moment() -> datetime:
        nonlocal clock
        step = draw(
            st.sampled_from(["same"] * 3 + ["minute"] * 3 + ["ten"] * 2 + ["hour", "day", "past"])
        )
        if step == "past":
            return draw(st.sampled_from(used_times))  # an older or an equal instant, late
        clock += {
            "same": timedelta(0),
            "minute": timedelta(minutes=1),
            "ten": timedelta(minutes=10),
            "hour": timedelta(minutes=40),
            "day": timedelta(days=1),
        }[step]
        used_times.append(clock)
        return clock

    def line_location(channel: str) -> str | None:
        eligible = channels[channel]["locations"]
        return draw(st.one_of(st.none(), st.none(), st.sampled_from(eligible)))

    # the kinds first, as a list: the shrinker deletes whole events from it
    # most streams open with a receipt of stock, so that requests have something to hold
    opening = draw(st.lists(st.just("opening"), min_size=1, max_size=5))
    kinds = opening + draw(st.lists(st.sampled_from(KINDS), min_size=12, max_size=45))
    for n, kind in enumerate(kinds):
        if kind == "duplicate" and events:
            events.append(dict(draw(st.sampled_from(events))))
            continue
        at = moment()
        event_id = f"e{n:03d}"
        base = {"event_id": event_id, "occurred_at": ts(at), "source": "test"}
        sku = draw(st.sampled_from(SKUS))
        location = draw(st.sampled_from(locations))
        if kind == "opening":
            event = {"type": "stock-adjusted", "sku": sku, "location": location, "mode": "delta"}
            event |= {"quantity": draw(st.integers(2, 14)), "reason": "receipt"}
        elif kind == "stock":
            quantity = draw(st.sampled_from([-3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8]))
            event = {"type": "stock-adjusted", "sku": sku, "location": location, "mode": "delta"}
            event |= {"quantity": quantity}
        elif kind in ("count", "other-bucket"):
            bucket = (
                "sellable" if kind == "count" else draw(st.sampled_from(["damaged", "quarantine"]))
            )
            mode = "count" if kind == "count" else draw(st.sampled_from(["count", "delta"]))
            quantity = draw(st.integers(0, 8)) if mode == "count" else draw(st.integers(1, 4))
            event = {"type": "stock-adjusted", "sku": sku, "location": location, "mode": mode}
            event |= {"quantity": quantity, "bucket": bucket}
            if mode == "count" and draw(st.integers(0, 5)) == 0:
                # an id smaller in byte order than every other: a same-instant count that
                # arrives later but loses
                base["event_id"] = f"a{n:03d}"
        elif kind == "return":
            event = {"type": "return-received", "sku": sku, "location": location}
            event |= {"quantity": draw(st.integers(1, 3))}
            event["disposition"] = draw(st.sampled_from(["resellable", "damaged", "quarantine"]))
        elif kind == "order" or (kind == "confirm" and not requests):
            channel = draw(st.sampled_from(sorted(channels)))
            lines = [
                {
                    "line_id": str(i),
                    "sku": draw(st.sampled_from(SKUS)),
                    "quantity": draw(st.integers(1, 3)),
                    "location": line_location(channel),
                }
                for i in range(1, draw(st.integers(1, 3)) + 1)
            ]
            event = {"type": "order-created", "order_id": f"o{len(orders) + 1}"}
            event |= {"channel": channel, "lines": lines}
            orders.append(event)
        elif kind == "confirm":
            request = draw(st.sampled_from(requests))
            lines = []
            for sku, total in sorted(request["totals"].items()):
                take = draw(st.sampled_from(["all", "all", "less", "more", "leave-out"]))
                if take == "leave-out" or (take == "less" and total == 1):
                    continue
                units = {"all": total, "less": total - 1, "more": total + 1}[take]
                lines.append(
                    {
                        "line_id": str(len(lines) + 1),
                        "sku": sku,
                        "quantity": units,
                        "location": line_location(request["channel"]),
                    }
                )
            if not lines:
                sku = draw(st.sampled_from(SKUS))
                lines.append({"line_id": "1", "sku": sku, "quantity": 1, "location": None})
            event = {"type": "order-created", "order_id": f"o{len(orders) + 1}"}
            event |= {"channel": request["channel"], "reservation_id": request["id"]}
            event["lines"] = lines
            orders.append(event)
        elif kind == "cancel" and orders:
            order = draw(st.sampled_from(orders))
            event = {"type": "order-cancelled", "order_id": order["order_id"]}
            if draw(st.booleans()):
                # each line named once: SPEC is silent on a cancel naming one line twice
                picked = draw(
                    st.lists(
                        st.sampled_from(order["lines"]),
                        min_size=1,
                        max_size=2,
                        unique_by=lambda li: li["line_id"],
                    )
                )
                event["lines"] = [
                    {"line_id": li["line_id"], "quantity": draw(st.integers(1, li["quantity"]))}
                    for li in picked
                ]
                if draw(st.integers(0, 3)) == 0:
                    event["lines"].append({"line_id": "9", "quantity": 1})  # not on the order
        elif kind == "pick" and orders:
            order = draw(st.sampled_from(orders))
            line = draw(st.sampled_from(order["lines"]))
            where = line["location"] or draw(
                st.sampled_from(channels[order["channel"]]["locations"])
            )
            event = {"type": "pick-confirmed", "order_id": order["order_id"]}
            event |= {"line_id": line["line_id"], "sku": line["sku"], "location": where}
            event["quantity"] = draw(st.integers(1, line["quantity"]))
        elif kind == "inbound" or (kind == "receipt" and not pos):
            po_id = draw(st.sampled_from([f"PO-{len(pos) + 1}", *sorted(pos)]))
            # one SKU, location and eta per PO: SPEC keys nothing else of a PO
            eta = date(2026, 11, 1) + timedelta(days=draw(st.integers(0, 6)))
            sku, location, eta = pos.setdefault(po_id, (sku, location, eta))
            event = {"type": "inbound-scheduled", "po_id": po_id, "sku": sku}
            event |= {"location": location, "quantity": draw(st.integers(1, 6))}
            event["eta"] = eta.isoformat()
        elif kind == "receipt":
            po_id = draw(st.sampled_from(sorted(pos)))
            sku, location, _ = pos[po_id]
            event = {"type": "stock-adjusted", "sku": sku, "location": location, "mode": "delta"}
            event |= {"quantity": draw(st.integers(1, 4)), "reason": "receipt", "po_id": po_id}
        elif kind == "release" and requests:
            event = {"type": "reservation-released"}
            event["reservation_id"] = draw(st.sampled_from(requests))["id"]
        else:  # request, and the kinds above that had nothing to refer to yet
            channel = draw(st.sampled_from(sorted(channels)))
            listed = sorted(cs for ch, cs in listings if ch == channel)
            lines = []
            totals: dict[str, int] = {}
            for _ in range(draw(st.integers(1, 3))):
                quantity = draw(st.sampled_from([1, 1, 2, 3]))
                if draw(st.booleans()):
                    line = {"sku": draw(st.sampled_from(SKUS)), "quantity": quantity}
                    totals[line["sku"]] = totals.get(line["sku"], 0) + quantity
                else:
                    channel_sku = draw(st.sampled_from(listed))
                    line = {"channel_sku": channel_sku, "quantity": quantity}
                    for c in listings[(channel, channel_sku)]:
                        totals[c["sku"]] = totals.get(c["sku"], 0) + c["quantity"] * quantity
                line["location"] = line_location(channel)
                lines.append(line)
            reuse = requests and draw(st.integers(0, 6)) == 0
            rid = draw(st.sampled_from(requests))["id"] if reuse else f"r{len(requests) + 1}"
            event = {"type": "reservation-requested", "reservation_id": rid, "channel": channel}
            event["ttl_seconds"] = draw(st.sampled_from([None, None, 60, 600, 3600, 14400]))
            event["lines"] = lines
            if not reuse:
                requests.append({"id": rid, "channel": channel, "totals": totals})
        events.append(base | event)
    return catalog, events


def normalise(report: dict[str, Any], catalog: dict[str, Any]) -> dict[str, Any]:
    """Every (SKU, location) and listing, absent ones at their untouched value (all zero)."""
    safety = {(s["sku"], s["location"]): s["units"] for s in catalog["safety_stock"]}
    positions = {(p["sku"], p["location"]): p for p in report["positions"]}
    out: dict[str, Any] = {}
    for sku in SKUS:
        for loc in catalog["locations"]:
            key = (sku, loc["id"])
            empty = dict.fromkeys(POSITION_FIELDS, 0) | {"location_ats": -safety.get(key, 0)}
            p = positions.get(key, empty)
            out[f"position {sku}@{loc['id']}"] = {f: p[f] for f in POSITION_FIELDS}
    records = {(a["channel"], a["channel_sku"]): a for a in report["availability"]}
    for li in catalog["listings"]:
        key = (li["channel"], li["channel_sku"])
        a = records.get(key, {"available": 0, "backorderable": 0})
        out[f"availability {key[0]}/{key[1]}"] = {
            "available": a["available"],
            "backorderable": a["backorderable"],
        }
    for r in report["reservations"]:
        out[f"reservation {r['reservation_id']}"] = r["status"]
    return out


def differences(model: dict[str, Any], core: dict[str, Any]) -> list[str]:
    diffs = []
    for key in sorted(set(model) | set(core)):
        m, c = model.get(key), core.get(key)
        if m == c:
            continue
        if isinstance(m, dict) and isinstance(c, dict):
            fields = ", ".join(f"{f} model {m[f]} core {c[f]}" for f in m if m[f] != c[f])
            diffs.append(f"{key}: {fields}")
        else:
            diffs.append(f"{key}: model {m} core {c}")
    return diffs


def jsonl(events: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e, separators=(",", ":")) for e in events)


def compare(catalog: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    core = simulate(load_catalog(catalog), [json.dumps(e) for e in events])
    model = SpecModel(catalog)
    for event in events:
        model.process(event)
    note_event(f"{len(events) // 10 * 10}+ events")
    for label in model.labels():
        note_event(label)  # hypothesis statistics: what the generated streams exercised
    diffs = differences(normalise(model.report(), catalog), normalise(core, catalog))
    diffs += [f"core rejected line {r['line']}: {r['reason']}" for r in core["rejected"]]
    return diffs


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenarios())
def test_core_agrees_with_the_spec_model(scenario: tuple[dict[str, Any], list[dict[str, Any]]]):
    catalog, events = scenario
    diffs = compare(catalog, events)
    assert not diffs, (
        "model and core disagree\n--- catalog.yaml\n"
        + yaml.safe_dump(catalog, sort_keys=False)
        + "--- events.jsonl\n"
        + jsonl(events)
        + "\n--- differences\n"
        + "\n".join(diffs)
    )
