"""`explain` on every scenario of tests/scenarios: the figure it explains is the published one, and
its steps add up, recomputed here from the scenario's positions and catalog (not the core's
formula functions)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from inventory_streams.cli import main
from streams.core.catalog import Catalog, Channel
from streams.core.explain import Explanation, UnknownListing, explain
from streams.simulate import read_catalog, run

SCENARIOS = sorted(p for p in (Path(__file__).parent / "scenarios").iterdir() if p.is_dir())


def explained(scenario: Path) -> tuple[Catalog, dict[str, Any], list[Explanation]]:
    catalog = read_catalog(scenario / "catalog.yaml")
    with open(scenario / "events.jsonl", "rb") as handle:
        engine, _, _ = run(catalog, handle)
    clock = engine.stream_time.date()
    out = [
        explain(catalog, engine.skus, li.channel, li.channel_sku, clock) for li in catalog.listings
    ]
    return catalog, json.loads((scenario / "expected.json").read_text()), out


def channel_formula(units: int, channel: Channel) -> int:
    return max(0, units * channel.allocation_percent // 100 - channel.buffer_units)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_explain_gives_the_published_figures(scenario: Path) -> None:
    _, expected, explanations = explained(scenario)
    published = {(a["channel"], a["channel_sku"]): a for a in expected["availability"]}
    for e in explanations:
        # a listing whose SKUs never moved has no record yet: it is 0 on the channel
        record = published.get((e.channel, e.channel_sku), {"available": 0, "backorderable": 0})
        assert (e.available, e.backorderable) == (
            record["available"],
            record["backorderable"],
        ), e.to_text()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_the_figures_of_an_explanation_add_up(scenario: Path) -> None:
    catalog, expected, explanations = explained(scenario)
    for e in explanations:
        assert_adds_up(catalog, expected["positions"], e)


def assert_adds_up(
    catalog: Catalog, position_records: list[dict[str, Any]], e: Explanation
) -> None:
    """Every figure of `e` recomputed from the positions (as `simulate` prints them, or as the
    live topic holds them) and the catalog, by SPEC §3's formulas written out again here."""
    positions = {(p["sku"], p["location"]): p for p in position_records}
    safety = {(s.sku, s.location): s.units for s in catalog.safety_stock}
    channel = catalog.channel_by_id[e.channel]
    listing = catalog.listing_by_key[(e.channel, e.channel_sku)]
    wanted: dict[str, int] = {}
    for c in listing.components:
        wanted[c.sku] = wanted.get(c.sku, 0) + c.quantity
    assert [(c.sku, c.quantity) for c in e.components] == list(wanted.items())
    horizon = (
        e.clock_date + timedelta(days=channel.backorder_horizon_days)
        if channel.backorder_horizon_days
        else None
    )
    assert e.horizon_date == horizon
    for comp in e.components:
        shown = [loc.location for loc in comp.locations]
        assert shown == [loc for loc in channel.locations if (comp.sku, loc) in positions], (
            "every eligible location with a position, in the channel's order"
        )
        for loc in comp.locations:
            pos = positions[(comp.sku, loc.location)]
            for field in ("on_hand", "reserved", "committed", "damaged", "quarantine"):
                assert getattr(loc, field) == pos[field], (comp.sku, loc.location, field)
            assert loc.safety_stock == safety.get((comp.sku, loc.location), 0)
            assert loc.location_ats == pos["location_ats"]
            assert loc.location_ats == (
                loc.on_hand - loc.reserved - loc.committed - loc.safety_stock
            )
            assert sum(h.units for h in loc.holds) == loc.reserved
            assert sum(c.units for c in loc.commitments) == loc.committed
            assert (
                sum(p.incoming for p in comp.inbound if p.location == loc.location)
                == (pos["incoming"])
            )
        network = sum(max(0, loc.location_ats) for loc in comp.locations)
        assert comp.network_ats == network
        assert comp.channel_ats == channel_formula(network, channel)
        assert comp.available == comp.channel_ats // comp.quantity
        for po in comp.inbound:
            assert po.in_horizon == (
                horizon is not None and po.eta is not None and po.eta <= horizon
            )
        due = sum(po.incoming for po in comp.inbound if po.in_horizon)
        assert comp.incoming_in_horizon == due
        assert comp.backorder_units == (channel_formula(due, channel) if due else 0)
        assert comp.backorderable == comp.backorder_units // comp.quantity
        etas = [po.eta for po in comp.inbound if po.in_horizon and po.eta is not None]
        assert comp.restock_date == (min(etas) if comp.backorderable else None)
    by_sku = {c.sku: c for c in e.components}
    assert e.available == min(
        by_sku[c.sku].channel_ats // (c.quantity if len(by_sku) > 1 else by_sku[c.sku].quantity)
        for c in listing.components
    )
    if e.backorderable:
        assert e.restock_date == max(c.restock_date or date.min for c in e.components if c.inbound)


def test_the_scenarios_explain_every_kind_of_listing() -> None:
    """The runs above cover packs, bundles and backorders with POs (else they prove little)."""
    kinds = set()
    for scenario in SCENARIOS:
        _, _, explanations = explained(scenario)
        for e in explanations:
            if len(e.components) > 1:
                kinds.add("bundle")
            if any(c.quantity > 1 for c in e.components):
                kinds.add("pack")
            if e.backorderable:
                kinds.add("backorder")
            if any(po.in_horizon for c in e.components for po in c.inbound):
                kinds.add("po-in-horizon")
            if any(not po.in_horizon for c in e.components for po in c.inbound):
                kinds.add("po-beyond")
            if any(loc.holds for c in e.components for loc in c.locations):
                kinds.add("holds")
    assert kinds >= {"bundle", "pack", "backorder", "po-in-horizon", "holds"}


def test_an_unknown_listing_is_an_error_naming_it() -> None:
    catalog = read_catalog(SCENARIOS[0] / "catalog.yaml")
    with pytest.raises(UnknownListing, match="NOPE"):
        explain(catalog, {}, catalog.channels[0].id, "NOPE", date(2026, 1, 1))


def test_the_text_shows_each_step_with_its_numbers() -> None:
    _, _, explanations = explained(Path(__file__).parent / "scenarios" / "bundles-and-backorders")
    text = next(e for e in explanations if e.backorderable).to_text()
    assert "location_ats = on_hand" in text
    assert "network_ats =" in text
    assert "channel_ats = max(0, floor(" in text
    assert "PO " in text and "backorder = " in text


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_the_offline_command_prints_the_explanation_and_the_published_record(
    scenario: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, expected, explanations = explained(scenario)
    files = [
        "--catalog",
        str(scenario / "catalog.yaml"),
        "--events",
        str(scenario / "events.jsonl"),
    ]
    published = {(a["channel"], a["channel_sku"]): a for a in expected["availability"]}
    for e in explanations:
        code, out, err = cli(capsys, e.channel, e.channel_sku, *files, "--format", "json")
        assert code == 0, err
        body = json.loads(out)
        assert body == {**e.to_json(), "published": body["published"]}
        record = published.get((e.channel, e.channel_sku))
        if record is None:
            assert body["published"] is None
        else:
            assert {k: body["published"][k] for k in record} == record
        code, out, _ = cli(capsys, e.channel, e.channel_sku, *files)
        assert code == 0
        assert out.startswith(e.to_text())
        assert ("published: available" in out) == (record is not None)


def test_the_command_refuses_an_unknown_listing_or_events_without_a_catalog(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenario = SCENARIOS[0]
    files = [
        "--catalog",
        str(scenario / "catalog.yaml"),
        "--events",
        str(scenario / "events.jsonl"),
    ]
    channel = read_catalog(scenario / "catalog.yaml").channels[0].id
    code, _, err = cli(capsys, channel, "NOPE", *files)
    assert code == 2 and "has no listing 'NOPE'" in err
    code, _, err = cli(capsys, channel, "NOPE", "--events", str(scenario / "events.jsonl"))
    assert code == 2 and "--events needs --catalog" in err


SMALL_CATALOG = """
locations: [{id: wh-east}, {id: store-12}, {id: wh-west}]
channels:
  - {id: web, type: webhook, locations: [wh-east, store-12], allocation_percent: 100,
     buffer_units: 0, backorder_horizon_days: 30}
listings:
  - {channel: web, channel_sku: TEE, components: [{sku: TEE, quantity: 1}]}
"""

SMALL_EVENTS = [
    ("c1", "08:00", "stock-adjusted", {"location": "wh-east", "mode": "count", "quantity": 40}),
    ("s1", "08:00", "stock-adjusted", {"location": "store-12", "mode": "count", "quantity": 10}),
    # inside the 08:00 count: already counted, so it changed nothing
    ("d0", "07:00", "stock-adjusted", {"location": "wh-east", "mode": "delta", "quantity": 3}),
    ("d1", "08:30", "stock-adjusted", {"location": "wh-east", "mode": "delta", "quantity": 5}),
    (
        "o1",
        "09:00",
        "order-created",
        {
            "order_id": "o-1",
            "channel": "web",
            "lines": [{"line_id": "2", "sku": "TEE", "quantity": 3, "location": "store-12"}],
        },
    ),
    (
        "p1",
        "10:00",
        "pick-confirmed",
        {"order_id": "o-1", "line_id": "2", "location": "store-12", "quantity": 2},
    ),
    (
        "r1",
        "11:00",
        "reservation-requested",
        {
            "reservation_id": "r-9",
            "channel": "web",
            "ttl_seconds": 14400,  # still held at the stream's end (14:00)
            "lines": [{"sku": "TEE", "quantity": 2, "location": "wh-east"}],
        },
    ),
    (
        "i1",
        "12:00",
        "inbound-scheduled",
        {"po_id": "PO-9", "location": "wh-east", "quantity": 30, "eta": "2026-11-20"},
    ),
    (
        "rc1",
        "13:00",
        "stock-adjusted",
        {"location": "wh-east", "mode": "delta", "quantity": 10, "po_id": "PO-9"},
    ),
    # not an eligible location of the channel: not behind its figure
    ("w1", "14:00", "stock-adjusted", {"location": "wh-west", "mode": "delta", "quantity": 7}),
]


def small_stream(tmp_path: Path, extra: tuple[dict[str, Any], ...] = ()) -> tuple[Path, Path]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(SMALL_CATALOG)
    events = tmp_path / "events.jsonl"
    lines = []
    for event_id, at, kind, fields in SMALL_EVENTS:
        event = {
            "event_id": event_id,
            "type": kind,
            "occurred_at": f"2026-11-01T{at}:00Z",
            "source": "test",
            **fields,
        }
        if kind in ("stock-adjusted", "pick-confirmed", "inbound-scheduled"):
            event["sku"] = "TEE"
        lines.append(json.dumps(event))
    lines.extend(json.dumps(e) for e in extra)
    events.write_text("\n".join(lines) + "\n")
    return catalog, events


def explain_file(catalog_file: Path, events_file: Path) -> Explanation:
    catalog = read_catalog(catalog_file)
    with open(events_file, "rb") as handle:
        engine, _, _ = run(catalog, handle)
    return explain(catalog, engine.skus, "web", "TEE", engine.stream_time.date())


def test_the_last_changes_are_the_events_kept_behind_the_figure_newest_first(
    tmp_path: Path,
) -> None:
    e = explain_file(*small_stream(tmp_path))
    # by hand: wh-east 40 + 5 + 10 = 55 on hand, 2 held; store-12 10 - 2 = 8, 3 - 2 = 1 committed
    assert [
        (loc.location, loc.on_hand, loc.reserved, loc.committed)
        for loc in e.components[0].locations
    ] == [("wh-east", 55, 2, 0), ("store-12", 8, 0, 1)]
    assert e.available == 53 + 7
    assert [(c.event_id, c.type, c.effect) for c in e.changes] == [
        ("rc1", "stock-adjusted", "PO-9 receipt +10 on hand at wh-east"),
        ("i1", "inbound-scheduled", "PO-9 +30 incoming (eta 2026-11-20) at wh-east"),
        ("p1", "pick-confirmed", "pick of order o-1 line 2 takes 2 on hand at store-12"),
        ("d1", "stock-adjusted", "+5 on hand at wh-east"),
        ("s1", "stock-adjusted", "count 10 at store-12"),  # same instant: greater id first
        ("c1", "stock-adjusted", "count 40 at wh-east"),
        # the state keeps no time for a hold, nor for an order line once a pick touched it
        (
            None,
            "reservation-requested",
            "hold r-9 reserves 2 at wh-east until 2026-11-01T15:00:00Z",
        ),
        (None, "order-created", "order o-1 line 2 commits 3 at store-12"),
    ]
    assert [c.occurred_at.hour if c.occurred_at else None for c in e.changes] == [
        13,
        12,
        10,
        8,
        8,
        8,
        None,
        None,
    ]
    text = e.to_text()
    assert "  last changes (newest first):\n" in text
    assert (
        "2026-11-01T13:00:00Z  rc1  stock-adjusted  TEE: PO-9 receipt +10 on hand at wh-east"
        in text
    )
    assert "time not kept  -  order-created  TEE: order o-1 line 2 commits 3 at store-12" in text


def test_the_last_changes_are_bounded_to_the_newest_ten(tmp_path: Path) -> None:
    extra = tuple(
        {
            "event_id": f"x{i:02}",
            "type": "stock-adjusted",
            "occurred_at": f"2026-11-02T{i:02}:00:00Z",
            "source": "test",
            "sku": "TEE",
            "location": "store-12",
            "mode": "delta",
            "quantity": -1,
        }
        for i in range(12)
    )
    e = explain_file(*small_stream(tmp_path, extra))
    assert [c.event_id for c in e.changes] == [f"x{i:02}" for i in range(11, 1, -1)]


def test_the_json_lists_each_change_with_its_id_type_time_effect_and_place(
    tmp_path: Path,
) -> None:
    body = explain_file(*small_stream(tmp_path)).to_json()
    assert body["changes"][0] == {
        "event_id": "rc1",
        "type": "stock-adjusted",
        "occurred_at": "2026-11-01T13:00:00Z",
        "effect": "PO-9 receipt +10 on hand at wh-east",
        "sku": "TEE",
        "location": "wh-east",
    }
    assert body["changes"][-1]["occurred_at"] is None
    assert all(
        set(c) == {"event_id", "type", "occurred_at", "effect", "sku", "location"}
        for c in body["changes"]
    )


def simulate_explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["simulate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("form", ["text", "json"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_simulate_explain_prints_what_explain_prints(
    scenario: Path, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On every scenario: explain's output is checked against the formula above, so this
    carries that check to `simulate --explain`."""
    files = [
        "--catalog",
        str(scenario / "catalog.yaml"),
        "--events",
        str(scenario / "events.jsonl"),
    ]
    _, _, explanations = explained(scenario)
    for e in explanations:
        code, explained_out, err = cli(capsys, e.channel, e.channel_sku, *files, "--format", form)
        assert code == 0, err
        code, simulated_out, err = simulate_explain(
            capsys, *files, "--explain", f"{e.channel}:{e.channel_sku}", "--format", form
        )
        assert code == 0, err
        assert simulated_out == explained_out
        if form == "json":
            assert json.loads(simulated_out)["changes"] == e.to_json()["changes"]
        else:  # a listing whose SKUs never moved has no change to show
            assert ("last changes" in simulated_out) == bool(e.changes)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("shopify-us", "--explain 'shopify-us' is not CHANNEL:CHANNEL_SKU"),
        (":TEE-RED-M", "is not CHANNEL:CHANNEL_SKU"),
        ("shopify-us:NOPE", "has no listing 'NOPE'"),
    ],
)
def test_simulate_explain_refuses_a_bad_value_in_one_line(
    value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = Path(__file__).parent / "scenarios" / "basic"
    code, out, err = simulate_explain(
        capsys,
        "--catalog",
        str(scenario / "catalog.yaml"),
        "--events",
        str(scenario / "events.jsonl"),
        "--explain",
        value,
    )
    assert code == 2
    assert out == ""
    assert message in err and err.count("\n") == 1


def test_a_count_older_than_the_ordering_horizon_shows_no_figure(tmp_path: Path) -> None:
    later = {
        "event_id": "late",
        "type": "stock-adjusted",
        "occurred_at": "2026-11-09T09:00:00Z",
        "source": "test",
        "sku": "TEE",
        "location": "store-12",
        "mode": "delta",
        "quantity": 1,
    }
    e = explain_file(*small_stream(tmp_path, (later,)))
    # eight days on, pruning forgot the deltas after the counts: 40 and 10 are no longer derivable
    counts = {c.event_id: c.effect for c in e.changes if c.effect.startswith("count")}
    assert counts == {"c1": "count at wh-east", "s1": "count at store-12"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_an_explanation_read_back_from_its_json_is_the_same(scenario: Path) -> None:
    """The live `explain` asks the API, which answers with to_json: read back, it must print the
    same text and JSON as the explanation itself."""
    _, _, explanations = explained(scenario)
    for e in explanations:
        back = Explanation.from_json(json.loads(json.dumps(e.to_json())))
        assert back == e
        assert back.to_text() == e.to_text()
