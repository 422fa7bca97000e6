"""Throughput of the pure domain core on a generated stream (no broker, one core).

    .venv/bin/python bench/core.py [--events 1000000] [--skus 10000] [--locations 5] [--batch 1000]

Prints events/s for `Engine.process_batch` (apply + derive once per touched SKU per batch, as the
stream agents do) and for apply alone, with the machine it ran on and whether the core ran
compiled (bin/bootstrap builds it with mypyc; see streams/core/native.py). Then the floor: the
same stream with no rule at all, only what any core pays for it (see `floor`), which says how
many of the goal's 5 µs per event are left for the rules.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streams.core import native
from streams.core.catalog import load_catalog
from streams.core.models import (
    Availability,
    Event,
    InboundScheduled,
    OrderCancelled,
    OrderCreated,
    PickConfirmed,
    Position,
    ReservationReleased,
    ReservationRequested,
    ReturnReceived,
    StockAdjusted,
    trusted,
)
from streams.runners.local import Engine


class Outputs:
    """Counts what the engine emits (the stream agents would produce these records)."""

    def __init__(self) -> None:
        self.counts = {"positions": 0, "availability": 0, "alerts": 0, "system": 0, "decisions": 0}

    def position(self, record: object) -> None:
        self.counts["positions"] += 1

    def availability(self, record: object) -> None:
        self.counts["availability"] += 1

    def alert(self, record: object) -> None:
        self.counts["alerts"] += 1

    def system_event(self, event: object) -> None:
        self.counts["system"] += 1

    def decision(self, state: object) -> None:
        self.counts["decisions"] += 1


def make_catalog(skus: int, locations: int):  # type: ignore[no-untyped-def]
    locs = [f"loc-{i}" for i in range(locations)]
    listings = []
    for i in range(skus):
        sku = f"SKU-{i:05d}"
        listings.append(
            {"channel": "web", "channel_sku": sku, "components": [{"sku": sku, "quantity": 1}]}
        )
        listings.append(
            {"channel": "amz", "channel_sku": sku, "components": [{"sku": sku, "quantity": 1}]}
        )
        if i % 10 == 0:  # a 6-pack for one SKU in ten
            listings.append(
                {
                    "channel": "web",
                    "channel_sku": f"{sku}-6PK",
                    "components": [{"sku": sku, "quantity": 6}],
                }
            )
        if i % 50 == 0 and i + 1 < skus:  # a bundle for one SKU in fifty
            listings.append(
                {
                    "channel": "web",
                    "channel_sku": f"KIT-{i}",
                    "components": [
                        {"sku": sku, "quantity": 1},
                        {"sku": f"SKU-{i + 1:05d}", "quantity": 2},
                    ],
                }
            )
    return load_catalog(
        {
            "locations": [{"id": loc} for loc in locs],
            "channels": [
                {
                    "id": "web",
                    "type": "shopify",
                    "locations": locs,
                    "allocation_percent": 100,
                    "buffer_units": 2,
                },
                {
                    "id": "amz",
                    "type": "amazon",
                    "locations": locs[:2],
                    "allocation_percent": 60,
                    "buffer_units": 0,
                    "backorder_horizon_days": 14,
                },
            ],
            "safety_stock": [
                {"sku": f"SKU-{i:05d}", "location": locs[0], "units": 2} for i in range(0, skus, 7)
            ],
            "listings": listings,
        }
    )


def generate(n: int, skus: int, locations: int, seed: int = 7) -> list[Event]:
    """A realistic mix: receipts and counts, orders with picks and cancels, returns, holds."""
    rnd = random.Random(seed)
    locs = [f"loc-{i}" for i in range(locations)]
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    events: list[Event] = []
    open_lines: list[tuple[str, str, str, int]] = []
    open_holds: list[str] = []
    open_pos: list[tuple[str, str, str]] = []
    # every SKU starts with a count at every location
    for i in range(skus):
        for loc in locs:
            events.append(
                StockAdjusted(
                    event_id=f"init-{i}-{loc}",
                    occurred_at=t0,
                    source="wms",
                    sku=f"SKU-{i:05d}",
                    location=loc,
                    mode="count",
                    quantity=rnd.randint(20, 200),
                )
            )
    seq = 0
    while len(events) < n:
        seq += 1
        at = t0 + timedelta(seconds=seq * 0.5)
        # a third of the traffic goes to the top 1 % of SKUs (best sellers), the rest is spread out
        hot = max(1, skus // 100)
        sku = f"SKU-{rnd.randrange(hot) if rnd.random() < 0.33 else rnd.randrange(skus):05d}"
        loc = rnd.choice(locs)
        eid = f"e{seq}"
        roll = rnd.random()
        if roll < 0.22:
            lines = [{"line_id": "1", "sku": sku, "quantity": rnd.randint(1, 3)}]
            if rnd.random() < 0.3:
                lines.append(
                    {"line_id": "2", "sku": f"SKU-{rnd.randrange(skus):05d}", "quantity": 1}
                )
            events.append(
                OrderCreated(
                    event_id=eid,
                    occurred_at=at,
                    source="shop",
                    order_id=f"o{seq}",
                    channel=rnd.choice(["web", "amz"]),
                    lines=lines,
                )
            )
            open_lines.append((f"o{seq}", "1", sku, lines[0]["quantity"]))
        elif roll < 0.42 and open_lines:
            order_id, line_id, psku, qty = open_lines.pop(rnd.randrange(len(open_lines)))
            events.append(
                PickConfirmed(
                    event_id=eid,
                    occurred_at=at,
                    source="wms",
                    order_id=order_id,
                    line_id=line_id,
                    sku=psku,
                    location=loc,
                    quantity=qty,
                )
            )
        elif roll < 0.46 and open_lines:
            order_id, *_ = open_lines.pop(rnd.randrange(len(open_lines)))
            events.append(
                OrderCancelled(event_id=eid, occurred_at=at, source="shop", order_id=order_id)
            )
        elif roll < 0.68:
            events.append(
                StockAdjusted(
                    event_id=eid,
                    occurred_at=at,
                    source="wms",
                    sku=sku,
                    location=loc,
                    mode="delta",
                    quantity=rnd.choice([-2, -1, 1, 5, 12]),
                    reason="manual",
                )
            )
        elif roll < 0.72:
            events.append(
                StockAdjusted(
                    event_id=eid,
                    occurred_at=at - timedelta(minutes=5),
                    source="wms",
                    sku=sku,
                    location=loc,
                    mode="count",
                    quantity=rnd.randint(0, 200),
                    reason="cycle-count",
                )
            )
        elif roll < 0.77:
            events.append(
                ReturnReceived(
                    event_id=eid,
                    occurred_at=at,
                    source="pos",
                    sku=sku,
                    location=loc,
                    quantity=1,
                    disposition=rnd.choice(["resellable", "damaged"]),
                )
            )
        elif roll < 0.785:
            events.append(
                InboundScheduled(
                    event_id=eid,
                    occurred_at=at,
                    source="erp",
                    po_id=f"PO{seq}",
                    sku=sku,
                    location=loc,
                    quantity=rnd.randint(10, 100),
                    eta=(at + timedelta(days=rnd.randint(1, 20))).date(),
                )
            )
            open_pos.append((f"PO{seq}", sku, loc))
        elif roll < 0.80 and open_pos:  # a receipt against an open PO
            po, psku, ploc = open_pos.pop(rnd.randrange(len(open_pos)))
            events.append(
                StockAdjusted(
                    event_id=eid,
                    occurred_at=at,
                    source="wms",
                    sku=psku,
                    location=ploc,
                    mode="delta",
                    quantity=rnd.randint(10, 100),
                    reason="receipt",
                    po_id=po,
                )
            )
        elif roll < 0.93:
            events.append(
                ReservationRequested(
                    event_id=eid,
                    occurred_at=at,
                    source="shop",
                    reservation_id=f"r{seq}",
                    channel="web",
                    ttl_seconds=600,
                    lines=[{"sku": sku, "quantity": rnd.randint(1, 2)}],
                )
            )
            open_holds.append(f"r{seq}")
        elif open_holds:
            rid = open_holds.pop(rnd.randrange(len(open_holds)))
            events.append(
                ReservationReleased(event_id=eid, occurred_at=at, source="shop", reservation_id=rid)
            )
    return events[:n]


def machine() -> str:
    """CPU, cores and load: a figure means little without the machine and what else ran."""
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    one, five, fifteen = os.getloadavg()
    return (
        f"{platform.python_implementation()} {platform.python_version()}, {cpu}, "
        f"{os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f}, "
        f"{platform.system()} {platform.machine()}"
    )


def cpu_seconds(pid: int | None, missing: float = 0.0) -> float:
    """User + system CPU time of a live process, from /proc (`missing` when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return missing


def rss_kib(pid: int) -> int | None:
    """Resident memory of a live process (VmRSS from /proc), KiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def stop(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child and wait 15 s for it, then SIGKILL it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def percentile(values: list[float], q: float) -> float:
    """The `q`th percentile (0-100) of `values`, nearest rank below; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a process's log, for an error message."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def rates(n: int, started: float, cpu: float) -> str:
    """Events/s by wall clock, and by this process's CPU time (steadier on a shared machine)."""
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    return f"{n / wall:,.0f} events/s ({wall:.2f} s; {n / used:,.0f} events/s of CPU time)"


def floor(events: list[Event], positions: int, availability: int) -> None:
    """Events/s of a core with no rule: a lower bound on what the real one can cost.

    Each event is looked at (its type, id and time) and moves the stream time, and the stream's
    share of the records the real core emitted for it is built and handed to an emitter: as the
    pydantic records of today's core API (`trusted`, as the core builds them), and as plain tuples
    (what a core with another API could emit). No state, no dedupe, no formula.
    """
    n = len(events)
    # records per event, spread evenly: the same totals the real run emitted
    plan = [
        (
            (i + 1) * positions // n - i * positions // n,
            (i + 1) * availability // n - i * availability // n,
        )
        for i in range(n)
    ]
    for label, as_models in (("records as today's models", True), ("records as tuples", False)):
        out = Outputs()
        emit_position, emit_availability = out.position, out.availability
        stream_time = datetime(1970, 1, 1, tzinfo=UTC)
        started, cpu = time.perf_counter(), time.process_time()
        for event, (n_pos, n_av) in zip(events, plan, strict=True):
            kind, event_id, at = type(event), event.event_id, event.occurred_at
            if at > stream_time:
                stream_time = at
            for _ in range(n_pos):
                if as_models:
                    emit_position(
                        trusted(
                            Position,
                            sku=kind.__name__,
                            location="loc-0",
                            on_hand=1,
                            reserved=0,
                            committed=0,
                            damaged=0,
                            quarantine=0,
                            incoming=0,
                            safety_stock=0,
                            location_ats=1,
                            version=1,
                            as_of=at,
                            cause_event_id=event_id,
                        )
                    )
                else:
                    emit_position((kind.__name__, "loc-0", 1, 0, 0, 0, 0, 0, 0, 1, 1, at, event_id))
            for _ in range(n_av):
                if as_models:
                    emit_availability(
                        trusted(
                            Availability,
                            channel="web",
                            channel_sku=kind.__name__,
                            available=1,
                            backorderable=0,
                            restock_date=None,
                            version=1,
                            as_of=at,
                            cause_event_id=event_id,
                        )
                    )
                else:
                    emit_availability(("web", kind.__name__, 1, 0, None, 1, at, event_id))
        wall = time.perf_counter() - started
        print(
            f"floor, no rule ({label}): {rates(n, started, cpu)}, {wall / n * 1e6:.2f} µs per "
            f"event of the goal's {1e6 / GOAL:.0f}"
        )


GOAL = 200_000  # events/s on one core (the foundation issue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--locations", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()

    print(f"machine: {machine()}")
    compiled = native.compiled_modules()
    build = f"mypyc-compiled {', '.join(compiled)}" if compiled else "pure Python (not built)"
    print(f"core build: {build}")
    started = time.perf_counter()
    catalog = make_catalog(args.skus, args.locations)
    events = generate(args.events, args.skus, args.locations)
    print(
        f"generated {len(events):,} events over {args.skus:,} SKUs x {args.locations} locations "
        f"in {time.perf_counter() - started:.1f} s"
    )

    gc.collect()
    gc.freeze()  # the generated events are long-lived: keep the collector off them
    # state objects live as long as the worker: collect the young generation rarely (as workers do)
    gc.set_threshold(100_000, 50, 1000)
    out = Outputs()
    engine = Engine(catalog, out)
    batch = args.batch
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), batch):
        engine.process_batch(events[i : i + batch])
    print(
        f"core (apply + derive per {batch}-event batch): {rates(len(events), started, cpu)}; "
        "outputs: " + ", ".join(f"{k} {v:,}" for k, v in out.counts.items())
    )

    out2 = Outputs()
    engine = Engine(catalog, out2)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(events), batch):
        engine.apply_batch(events[i : i + batch])
        engine.discard_derivations()
    print(f"core (apply only): {rates(len(events), started, cpu)}")

    floor(events, out.counts["positions"], out.counts["availability"])


if __name__ == "__main__":
    main()
