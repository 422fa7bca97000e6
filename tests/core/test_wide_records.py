"""A SKU stocked at many locations (a chain's stores): each location a record of its own beside
the SKU's, so a write sends what changed, not every location."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest

from streams.core.derive import position
from streams.core.models import InboundScheduled, OrderLine, PickConfirmed, StockAdjusted
from streams.core.sku import (
    CommitLines,
    HoldRequirement,
    ReleaseHold,
    TryHold,
    apply_sku,
)
from streams.core.state import (
    ORPHAN_GRACE,
    PART_ENTRIES,
    WIDE_LOCATIONS,
    SkuState,
    SplitCache,
    join_parts,
    part_key,
    part_of,
)
from tests.core.builders import catalog

AT = datetime(2026, 11, 1, tzinfo=UTC)
SKU = "WIDE-1"
STORES = [f"store-{i:03d}" for i in range(200)]
CHAIN = catalog(
    locations=[{"id": loc} for loc in STORES],
    channels=[{"id": "web", "type": "webhook", "locations": STORES}],
    listings=[{"channel": "web", "channel_sku": "W", "components": [{"sku": SKU, "quantity": 1}]}],
)


def _stock(event_id: str, at: datetime, loc: str, mode: str, quantity: int) -> StockAdjusted:
    return StockAdjusted(
        event_id=event_id, occurred_at=at, source="pos", sku=SKU,
        location=loc, mode=mode, quantity=quantity,
    )  # fmt: skip


def _applied(state: SkuState, command: Any) -> None:
    """The SKU stage's work for one command: applied, then a position per location it touched
    (every location, for a redelivery: its outputs are sent again)."""
    out = apply_sku(state, command, CHAIN)
    for loc in list(state.locations) if out.duplicate else out.touched:
        position(state, loc, CHAIN, command.occurred_at, command.event_id)


def _written(cache: SplitCache, state: SkuState) -> dict[int | str, Any]:
    """One write: the SKU's record (under "record") and the records beside it that changed, as
    a reader of the changelogs decodes them."""
    record, changed = cache.split(state)
    written = {"record": record, **{part_of(part_key(b"W", n))[1]: cache.value(n) for n in changed}}
    return {name: orjson.loads(orjson.dumps(value)) for name, value in written.items()}


def _torn(
    rng: random.Random, written: dict[Any, Any], grown: bool, parts_first: bool
) -> dict[Any, Any]:
    """What a kill lets the broker store of one write: the SKU's record or not (its own
    changelog), and of the records beside it (one partition of another, stored in the order
    sent) a prefix; or, of a write that adds no parts, any of them (each is right on its own).
    The record of the write that splits the SKU (`parts_first`) goes out after all of them."""
    keep = rng.random() < 0.5
    parts = [name for name in written if isinstance(name, int)]  # sent first, highest first
    beside = parts + sorted(name for name in written if isinstance(name, str) and name != "record")
    if grown:
        stored = beside[: rng.randint(0, len(beside))]
    else:
        stored = [name for name in beside if rng.random() < 0.5]
    keep = keep and (len(stored) == len(beside) or not parts_first)
    kept = {"record": written["record"]} if keep else {}
    return kept | {name: written[name] for name in stored}


def _joined(stored: dict[Any, Any]) -> SkuState:
    return join_parts(stored["record"], stored.get)


def test_a_wide_skus_write_is_its_record_and_the_location_that_changed() -> None:
    """At 200 stores a whole record is ~27 KB, and the SKU's every event wrote it (the issue
    measured 8.9 KB of changelog and ~360 µs of worker CPU per event): a sale at one store now
    writes the SKU's record and that store's, under 1 KB together."""
    state = SkuState(SKU, time=AT)
    for i, loc in enumerate(STORES):
        _applied(state, _stock(f"count-{i}", AT, loc, "count", 20))
    cache = SplitCache()
    stored = _written(cache, state)
    assert len(stored) == 2 + len(STORES)  # the record, the index, every location
    whole = len(orjson.dumps(state.to_dict()))
    sizes = []
    at = AT
    for step in range(60):
        at += timedelta(minutes=3)
        loc = STORES[step * 7 % len(STORES)]
        _applied(state, _stock(f"sale-{step}", at, loc, "delta", -1))
        written = _written(cache, state)
        assert set(written) == {loc, "record"}, step
        sizes.append(len(orjson.dumps(written)))
        stored.update(written)
    assert whole > 20_000, whole
    assert max(sizes) <= 1024, sizes
    joined = _joined(stored)
    assert joined.to_dict() == state.to_dict()
    assert joined.location(STORES[7]).sellable.qty == 19


def _command(rng: random.Random, step: int, at: datetime, locs: list[str]) -> Any:
    """A random command of a SKU's life at `locs`: sales, counts, POs, holds, orders, picks."""
    loc = rng.choice(locs)
    roll = rng.random()
    if roll < 0.45:
        return _stock(f"d-{step}", at - timedelta(minutes=rng.randint(0, 120)), loc, "delta",
                      rng.choice([-2, -1, -1, 1, 4]))  # fmt: skip
    if roll < 0.5:
        return _stock(f"n-{step}", at - timedelta(minutes=rng.randint(0, 300)), loc, "count",
                      rng.randint(0, 60))  # fmt: skip
    if roll < 0.58:
        return InboundScheduled(
            event_id=f"s-{step}", occurred_at=at, source="erp", sku=SKU, location=loc,
            po_id=f"po-{rng.randrange(8)}", quantity=rng.randint(1, 30),
            eta=date(2026, 11, 20) + timedelta(days=rng.randint(0, 30)),
        )  # fmt: skip
    if roll < 0.72:
        return TryHold(
            f"t-{step}", at, SKU, f"cart-{step}", "web", at + timedelta(minutes=15),
            (HoldRequirement(0, rng.randint(1, 3), 1, rng.choice([None, loc])),),
        )  # fmt: skip
    if roll < 0.8:
        return ReleaseHold(f"r-{step}", at, SKU, f"cart-{rng.randrange(step + 1)}", "released")
    if roll < 0.92:
        return CommitLines(
            f"o-{step}", at, SKU, f"order-{step}", "web", None,
            (OrderLine(line_id="1", sku=SKU, quantity=rng.randint(1, 2),
                       location=rng.choice([None, loc])),),
        )  # fmt: skip
    return PickConfirmed(
        event_id=f"p-{step}", occurred_at=at, source="wms", sku=SKU, location=loc,
        quantity=1, order_id=f"order-{rng.randrange(step + 1)}", line_id="1",
    )  # fmt: skip


def _stock_of(state: SkuState, decided: set[str]) -> dict[str, Any]:
    """What a kill may not change: per location its buckets and POs; the open order lines with
    their units; the holds but those of `decided`, the requests the kill redelivers.

    Those are decided again, and a kill may have stored a location's record newer than the
    record that holds the SKU's holds, so a request is decided against the later events of its
    round too: it may be held where it was refused, or placed elsewhere (as with a hot SKU's
    parts; no decision is told before all its records are stored). Where a line without a
    location was sourced may differ for the same reason. Not compared either: a line the daily
    pruning forgot, none of its units open (an older part may keep it until the next day's
    pruning), and an orphan hold (an hour past its expiry: the hourly pruning drops it, and a
    request redelivered that late is not held again)."""
    return {
        "locations": {
            loc_id: (
                [(b.qty, b.count_at, b.count_id) for b in (loc.sellable, loc.damaged)],
                {po: (i.quantity, i.eta) for po, i in loc.inbound.items()},
            )
            for loc_id, loc in sorted(state.locations.items())
            if loc.sellable.qty or loc.damaged.qty or loc.inbound
        },
        "holds": {
            rid: sum(hold.units.values())
            for rid, hold in state.holds.items()
            if rid not in decided and hold.expires_at >= state.time - ORPHAN_GRACE
        },
        "lines": {k: line.open for k, line in state.commitments.items() if line.open},
    }


@pytest.mark.parametrize("seed", [200, 7])
def test_a_wide_sku_is_joined_back_after_every_write_and_after_torn_ones(seed: int) -> None:
    """Through 1,500 rounds of a SKU's life that grows past WIDE_LOCATIONS locations and then past
    PART_ENTRIES entries: after every write, the SKU joined from what its changelogs hold is the
    SKU (so each location the stage changes is written; removing the note in SkuState.location
    or in the daily pruning fails here). And a kill can store any of a write's records and not
    the others, the write that makes the SKU wide among them: after the round's events are
    redelivered to the SKU joined from what was stored, its stock is what it was."""
    rng = random.Random(seed)
    state = SkuState(SKU, time=AT)
    cache = SplitCache()
    stored: dict[Any, Any] = {}
    at = AT
    kills = became_wide = grew = serial = 0
    commands: list[Any] = []  # since the last write stored whole: what a kill redelivers
    for round_ in range(1_500):
        locs = STORES[: 4 + round_ // 25]  # a new store every 25 rounds: wide at round 325
        for _ in range(rng.randint(1, 5)):
            at += timedelta(minutes=rng.choice([1, 5, 30, 240]))
            serial += 1
            command = _command(rng, serial, at, locs)
            if commands and rng.random() < 0.05:
                command = rng.choice(commands)  # a redelivery inside the round
            _applied(state, command)
            commands.append(command)
        was_wide, bits = state.wide, state.part_bits
        written = _written(cache, state)
        became_wide += state.wide and not was_wide
        grew += state.part_bits != bits
        if round_ and rng.random() < 0.2:  # a kill
            kills += 1
            decided = {c.reservation_id for c in commands if isinstance(c, TryHold)}
            before = _stock_of(state, decided)
            grown = state.part_bits != bits
            torn = {**stored, **_torn(rng, written, grown, cache.parts_first)}
            state = _joined(torn)  # the worker started again
            cache = SplitCache.seeded(state, torn.get)
            for command in commands:  # redelivered
                _applied(state, command)
            assert _stock_of(state, decided) == before, f"round {round_}"
            stored = torn
        else:
            stored.update(written)
            commands = []
            assert _joined(stored).to_dict() == state.to_dict(), f"round {round_}"
    assert grew >= 1
    assert state.wide and len(state.locations) > WIDE_LOCATIONS
    assert state.part_bits > 0, state.part_bits  # past PART_ENTRIES: parts and locations both
    assert became_wide >= 1
    assert kills > 250, kills
    assert len(state.commitments) + len(state.holds) < 50 * PART_ENTRIES


def test_the_write_that_makes_a_sku_wide_keeps_its_locations_if_the_index_is_lost() -> None:
    """The write that makes a SKU wide replaces its whole record: stored without the index of
    its location records (a kill between them), the SKU would have no locations left, and the
    events behind them are not redelivered. That write keeps them in the record too."""
    state = SkuState(SKU, time=AT)
    for i, loc in enumerate(STORES[: WIDE_LOCATIONS + 1]):
        _applied(state, _stock(f"count-{i}", AT, loc, "count", 10 + i))
    written = _written(SplitCache(), state)
    assert state.wide and "" in written
    joined = _joined({"record": written["record"]})  # neither the index nor a location stored
    assert joined.to_dict() == state.to_dict()
    joined = _joined({"record": written["record"], STORES[3]: written[STORES[3]]})
    assert joined.location(STORES[3]).sellable.qty == 13
    # after it, the record holds no location: a write is what changed
    cache = SplitCache()
    _written(cache, state)
    _applied(state, _stock("sale", AT + timedelta(minutes=1), STORES[2], "delta", -1))
    assert _written(cache, state)["record"]["l"] == {}


def test_the_api_view_keeps_no_location_record_and_reads_them_when_asked() -> None:
    """Every worker serving the API reads the whole `sku_parts` changelog. A chain whose every SKU
    is at 200 stores has 200 location records a SKU: kept as they came, 100,000 SKUs would hold
    ~3 GB in every such worker. The view keeps the parts of hot SKUs only, and reads a wide
    SKU's location records from its partition when the SKU is explained (a fallback: a worker
    asks the SKU's owner first)."""
    from streams.api import StateView

    state = SkuState(SKU, time=AT)
    for i, loc in enumerate(STORES[:40]):
        _applied(state, _stock(f"count-{i}", AT, loc, "count", 10 + i))
    cache = SplitCache()
    record, names = cache.split(state)
    key = SKU.encode()
    stored = {part_key(key, name): orjson.dumps(cache.value(name)) for name in names}
    scans: list[tuple[int, bytes]] = []

    def scan(partition: int, prefix: bytes) -> dict[bytes, bytes]:
        scans.append((partition, prefix))
        return {k: v for k, v in stored.items() if k.startswith(prefix)}

    view = StateView(lambda partition, offset: orjson.dumps(record), scan)
    view.offer(SKU, 3, 12)
    kept = []
    for name, value in stored.items():
        view.offer_part(name, value)
        kept.append(view.kept_parts())
    assert kept[-1] == 0, kept  # none of the 41 records kept
    joined = view.get(SKU)
    assert joined is not None and joined.to_dict() == state.to_dict()
    assert scans == [(3, key + b"\x00@")]
