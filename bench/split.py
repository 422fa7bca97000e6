"""A hot SKU's changelog write: what SplitCache costs per write as its open business grows.

    .venv/bin/python bench/split.py [--writes 200] [--sizes 2000,20000,100000]

No broker: the compiled core alone (the same SplitCache the workers run before each commit and
each round of reservation decisions). Three SKUs, each at every size in `--sizes`:

- a flash sale: that many holds and as many closed reservation ids; each write follows one hold
  placed and one released;
- a launch: that many open order lines; each write follows one new order and one pick;
- a best seller: that many sales in its delta log since the last count; each write follows one
  sale.

Per write: the time of `SplitCache.split` (finding and encoding what changed, not sending it),
and the parts it reports changed; then, for scale, one whole `split_record` of the same SKU.
Each change goes through the SKU stage (`apply_sku`), which notes what it changed, as live.

Then a chain's SKU at each count of locations in `--locations`, each counted once; each write
follows one sale at one of them, with its position derived (as the worker does before it writes):
the time of `SplitCache.split` and the bytes it gives to send (the SKU's record and the records
beside it that changed, JSON as the changelogs get them).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.core import machine  # noqa: E402
from streams.core import NATIVE  # noqa: E402
from streams.core.catalog import Catalog, load_catalog  # noqa: E402
from streams.core.derive import position  # noqa: E402
from streams.core.models import OrderLine, PickConfirmed, StockAdjusted  # noqa: E402
from streams.core.sku import (  # noqa: E402
    CommitLines,
    HoldRequirement,
    ReleaseHold,
    TryHold,
    apply_sku,
)
from streams.core.state import SkuState, SplitCache, split_record  # noqa: E402

AT = datetime(2026, 11, 1, tzinfo=UTC)
SKU = "HOT"
CATALOG = {
    "locations": [{"id": "wh"}],
    "channels": [{"id": "web", "type": "webhook", "locations": ["wh"]}],
    "listings": [
        {"channel": "web", "channel_sku": SKU, "components": [{"sku": SKU, "quantity": 1}]}
    ],
}


def stock(state: SkuState, catalog: Catalog, units: int) -> None:
    count = StockAdjusted(
        event_id="count", occurred_at=AT, source="wms", sku=SKU, location="wh", mode="count",
        quantity=units,
    )  # fmt: skip
    apply_sku(state, count, catalog)


def hold(i: int, at: datetime) -> TryHold:
    expires = at + timedelta(minutes=15)
    return TryHold(f"t{i}", at, SKU, f"cart-{i}", "web", expires, (HoldRequirement(0, 1, 1, None),))


def flash_sale(size: int, catalog: Catalog) -> tuple[SkuState, Callable[[int], None]]:
    state = SkuState(SKU)
    stock(state, catalog, 10 * size)
    at = AT + timedelta(seconds=1)
    for i in range(2 * size):
        apply_sku(state, hold(i, at), catalog)
    for i in range(size):
        apply_sku(state, ReleaseHold(f"r{i}", at, SKU, f"cart-{i}", "released"), catalog)

    def change(step: int) -> None:
        apply_sku(state, hold(2 * size + step, at), catalog)
        apply_sku(state, ReleaseHold(f"r-{step}", at, SKU, f"cart-{size + step}", "x"), catalog)

    return state, change


def order(i: int, at: datetime) -> CommitLines:
    line = OrderLine(line_id="1", sku=SKU, quantity=1)
    return CommitLines(f"o{i}", at, SKU, f"order-{i}", "web", None, (line,))


def launch(size: int, catalog: Catalog) -> tuple[SkuState, Callable[[int], None]]:
    state = SkuState(SKU)
    stock(state, catalog, 10 * size)
    at = AT + timedelta(seconds=1)
    for i in range(size):
        apply_sku(state, order(i, at), catalog)

    def change(step: int) -> None:
        apply_sku(state, order(size + step, at), catalog)
        pick = PickConfirmed(
            event_id=f"p{step}", occurred_at=at, source="wms", sku=SKU, location="wh",
            quantity=1, order_id=f"order-{step}", line_id="1",
        )  # fmt: skip
        apply_sku(state, pick, catalog)

    return state, change


def sale(i: int) -> StockAdjusted:
    at = AT + timedelta(seconds=1 + i // 100)  # under a day for 5,000,000 sales
    return StockAdjusted(
        event_id=f"pos-{i}", occurred_at=at, source="pos", sku=SKU, location="wh", mode="delta",
        quantity=-1,
    )  # fmt: skip


def best_seller(size: int, catalog: Catalog) -> tuple[SkuState, Callable[[int], None]]:
    state = SkuState(SKU)
    stock(state, catalog, 10 * size)
    for i in range(size):
        apply_sku(state, sale(i), catalog)

    def change(step: int) -> None:
        apply_sku(state, sale(size + step), catalog)

    return state, change


def chain(locations: int) -> tuple[SkuState, Catalog, list[str]]:
    """A SKU stocked at `locations` stores, each counted once."""
    stores = [f"store-{i:04d}" for i in range(locations)]
    catalog = load_catalog(
        {
            "locations": [{"id": loc} for loc in stores],
            "channels": [{"id": "web", "type": "webhook", "locations": stores}],
            "listings": [
                {"channel": "web", "channel_sku": SKU, "components": [{"sku": SKU, "quantity": 1}]}
            ],
        }
    )
    state = SkuState(SKU)
    for i, loc in enumerate(stores):
        count = StockAdjusted(
            event_id=f"count-{i}", occurred_at=AT, source="wms", sku=SKU, location=loc,
            mode="count", quantity=1_000,
        )  # fmt: skip
        apply_sku(state, count, catalog)
    return state, catalog, stores


def wide(locations: int, writes: int) -> tuple[float, float, float]:
    """A chain's SKU: ms of SplitCache.split a write, bytes it gives to send, records changed."""
    state, catalog, stores = chain(locations)
    cache = SplitCache()
    cache.split(state)  # the first write: every record
    elapsed = 0.0
    sent = changed = 0
    for step in range(writes):
        at = AT + timedelta(seconds=1 + step)
        loc = stores[step * 7919 % len(stores)]
        sold = StockAdjusted(
            event_id=f"sale-{step}", occurred_at=at, source="pos", sku=SKU, location=loc,
            mode="delta", quantity=-1,
        )  # fmt: skip
        for touched in apply_sku(state, sold, catalog).touched:
            position(state, touched, catalog, at, sold.event_id)
        started = time.perf_counter()
        record, names = cache.split(state)
        elapsed += time.perf_counter() - started
        sent += len(orjson.dumps(record)) + sum(len(orjson.dumps(cache.value(n))) for n in names)
        changed += len(names)
    return elapsed / writes * 1e3, sent / writes, changed / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--sizes", default="2000,20000,100000")
    parser.add_argument("--locations", default="5,16,17,50,200,1000")
    args = parser.parse_args()
    catalog = load_catalog(CATALOG)
    print(f"machine: {machine()}")
    print(f"core: {'compiled (mypyc)' if NATIVE else 'pure Python (build-core not run)'}")
    cases = (
        ("flash sale: holds and as many closed ids", flash_sale),
        ("launch: open order lines", launch),
        ("best seller: sales in the delta log", best_seller),
    )
    for name, make in cases:
        print(name)
        for size in (int(s) for s in args.sizes.split(",")):
            state, change = make(size, catalog)
            cache = SplitCache()
            cache.split(state)  # the first write: every part
            elapsed = 0.0
            parts = 0
            for step in range(args.writes):
                change(step)
                started = time.perf_counter()
                parts += len(cache.split(state)[1])
                elapsed += time.perf_counter() - started
            started = time.perf_counter()
            split_record(state)
            once = time.perf_counter() - started
            print(
                f"  {size:>9,}: {elapsed / args.writes * 1e3:7.3f} ms a write, "
                f"{parts / args.writes:4.1f} of {len(cache.parts)} parts changed; "
                f"a whole split {once * 1e3:8.1f} ms"
            )

    print("a chain: a SKU at that many locations; each write follows one sale at one of them")
    for locations in (int(s) for s in args.locations.split(",")):
        ms, sent, changed = wide(locations, args.writes)
        print(
            f"  {locations:>9,}: {ms:7.3f} ms a write, {sent:8,.0f} bytes to send, "
            f"{changed:4.1f} records beside the SKU's changed"
        )


if __name__ == "__main__":
    main()
