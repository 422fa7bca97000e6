"""State at retailer scale (issue 18): one worker's memory, changelog and restart as positions grow,
one SKU's record as its open order lines grow, the changelog an event writes as a SKU's
locations grow, and how long a large catalog takes to publish and apply.

    .venv/bin/python bench/scale.py [--broker tansu|kafka] [--series positions,hot,wide,catalog]
                                    [--positions 50000,250000] [--mix 0.1]
                                    [--hot-step 10000] [--hot-max 40000]
                                    [--wide-skus 2000] [--wide-locations 5,200]
                                    [--wide-events 20000]
                                    [--catalog-listings 100000] [--catalog-format yaml|json]
                                    [--catalog-positions 50000]

Every series runs one `inventory-streams worker --clock stream` (memory tables, the only store the
worker has) on a fresh embedded broker of its own, one after the other. `--series` names those to
run; an empty `--positions`, `--hot-max 0`, an empty `--wide-locations` or an empty
`--catalog-listings` skips its series too.

1. Positions: per N, N / 5 SKUs with 5 locations each and one identity listing per SKU on `web`
   (a second channel, `amz`, with no listing, takes the mix's amz orders). The catalog is
   published, the worker started and, once it owns every partition, one count per position and
   then `--mix` x N events of bench/core.py's realistic mix are published. Load events/s: from the
   first publish to the first check (every 0.5 s) with the worker's group committed at the end of
   `inventory.events` and `inventory.commands`. RSS: VmRSS of the worker's /proc status then.
   Changelog: the records of every `skus` changelog partition read back (key + value bytes).
   Restart to serving: the worker SIGKILLed and started again on its data directory, one new
   +1,000 stock delta published at once; from the start to the arrival of the
   `availability.web` record whose cause_event_id names it. RSS is read again then.
2. Hot SKU: one SKU counted once, then `order-created` events of one unit each on it, none picked
   (a launch), published `--hot-step` at a time up to `--hot-max`. After each step (committed at
   the end as above): the size of the SKU's last record on its `skus` changelog partition, the
   step's events/s (publish start to committed), and the worker's CPU per event in the step. A
   worker that exits is the series' result: the record size then and its log's error line. A step
   whose committed offsets do not move for `--stall-seconds` ends the series as stalled.
3. Wide SKUs: per L in `--wide-locations`, `--wide-skus` SKUs with L locations each (listed as in
   1). The catalog is published, the worker started and, once it owns every partition, one count
   per position published; load events/s as in 1. Then `--wide-events` single-location stock
   deltas of -1, event i on SKU i x 7919 and location i x 104729 + i // SKUs (the shift moves a
   SKU's next event to its next location when L divides the SKU count), until committed. For
   that stream: events/s (publish start to committed), the worker's CPU per event, and changelog
   bytes per event: the key + value bytes of the `skus` and `sku_parts` changelog records between
   the topics' end offsets before the stream and their ends once it is committed. Several events
   on one SKU within a commit share its write, as they do live. RSS is read then.
4. Catalogs: per N in `--catalog-listings`, a catalog file of N identity listings in SPEC §4's
   YAML (`--catalog-format json`: the same catalog as JSON), one listing a line as an export
   would write it: N / 2 SKUs, each listed on `web` (its SKU as channel SKU, 5 locations) and on
   `amz` (an ASIN-like id, 2 locations, 60 %), safety stock at one location for every tenth SKU.
   Two runs of `inventory-streams catalog FILE`, the CLI as a user runs it (.venv/bin, with
   KAFKA_BOOTSTRAP_SERVERS), each from its spawn to its exit, with its CPU and peak RSS (its
   rusage): "first", onto an empty inventory.catalog with no worker; then, once a worker started
   under it and `--catalog-positions` counts (the first SKUs, 5 locations each) are committed,
   "update": the same catalog with amz's buffer_units 0 -> 1, which changes every held SKU's amz
   figure. Its phases, from the producer timestamps of the records it wrote: prepare (spawn to
   the first part: start-up, parse, validate, the previous version read and compared, the JSON
   encoded), send (first part to manifest), finish (manifest to exit: the announcement, the
   interpreter's exit). Adopted: from the update's spawn until the worker logs that it took the
   new version. Applied: until the last held SKU's amz record derived under it (cause_event_id
   `catalog:v2`) arrived: the worker serves under the new version. The worker's RSS is read
   after the counts and once applied; its CPU from the update's spawn to applied.

The goals are the issue's; those this bench does not measure are printed as such, with why.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from bench.core import cpu_seconds, generate, machine, rss_kib, stop, tail  # noqa: E402
from streams.codec import make_codec  # noqa: E402
from streams.core.catalog import Catalog, load_catalog  # noqa: E402
from streams.core.models import Event, OrderCreated, StockAdjusted  # noqa: E402
from streams.runtime.broker import EmbeddedBroker, EmbeddedKafka, embedded_broker  # noqa: E402
from streams.runtime.catalog_store import publish  # noqa: E402
from streams.runtime.offsets import true_end_offsets_many  # noqa: E402
from streams.runtime.producer import SourceProducer  # noqa: E402
from streams.runtime.topics import (  # noqa: E402
    CATALOG,
    COMMANDS,
    EVENTS,
    availability_topic,
    changelog_topic,
    ensure_topics,
    partition_for,
    topic_specs,
)
from streams.settings import Settings  # noqa: E402

LOCATIONS = 5
INPUTS = (EVENTS, COMMANDS)
HOT_SKU = "SKU-00000"
CHECK_EVERY = 0.5  # seconds between checks of the committed offsets
T0 = datetime(2026, 11, 1, tzinfo=UTC)  # bench/core.py's generated stream starts here

# the goals
RSS_GOAL_MB = 500.0
RESTART_GOAL_S = 30.0
GOAL_POSITIONS = 1_000_000
HOT_GOAL_LINES = 200_000
RECORD_GOAL_BYTES = 64 * 1024
WIDE_GOAL_LOCATIONS = 200
WIDE_BASE_LOCATIONS = 5  # the catalog the wide one's events/s is compared with
WIDE_GOAL_BYTES = 1024  # changelog per event
WIDE_GOAL_SLOWER = 0.20  # events/s at most this much below the base's
SERIES = ("positions", "hot", "wide", "catalog")
CATALOG_GOAL_LISTINGS = 1_000_000
CATALOG_GOAL_S = 30.0  # published and applied


# ---- what the series measured, and the verdicts (pure) -------------------------------------


@dataclass
class PositionsRun:
    positions: int
    events: int = 0
    load_rate: float | None = None  # events/s
    rss_mb: float | None = None
    changelog_records: int = 0
    changelog_bytes: int = 0
    restart_s: float | None = None
    rss_after_restart_mb: float | None = None
    failure: str | None = None  # why the run stopped early

    @property
    def bytes_per_position(self) -> float | None:
        return None if self.rss_mb is None else self.rss_mb * 1e6 / self.positions


@dataclass
class HotStep:
    orders: int  # orders published so far on the hot SKU
    record_bytes: int | None  # its largest record written in the step (its own or a part)
    rate: float | None  # events/s in this step
    cpu_us: float | None  # worker CPU per event in this step


@dataclass
class HotSeries:
    steps: list[HotStep]
    death: str | None = None  # "exited with 1 ..." or "stalled ..."
    error_line: str | None = None
    orders_at_death: int | None = None  # orders committed when it died, at least


@dataclass
class WideRun:
    locations: int
    skus: int
    load_rate: float | None = None  # events/s of the counts
    events: int = 0  # in the stream
    rate: float | None = None  # events/s of the stream
    cpu_us: float | None = None  # worker CPU per event of the stream
    changelog_records: int = 0  # `skus` + `sku_parts`, written during the stream
    changelog_bytes: int = 0
    rss_mb: float | None = None
    failure: str | None = None

    @property
    def positions(self) -> int:
        return self.skus * self.locations

    @property
    def bytes_per_event(self) -> float | None:
        return self.changelog_bytes / self.events if self.rate is not None else None

    @property
    def records_per_event(self) -> float | None:
        return self.changelog_records / self.events if self.rate is not None else None


@dataclass
class CatalogPublish:
    """One run of `inventory-streams catalog FILE`, as the shell that ran it sees it."""

    seconds: float  # spawn to exit
    cpu_s: float
    peak_rss_mb: float
    prepare_s: float | None = None  # spawn to the first part's timestamp
    send_s: float | None = None  # first part to manifest
    finish_s: float | None = None  # manifest to exit
    parts: int = 0
    error: str | None = None  # its stderr's last line when it failed


@dataclass
class CatalogRun:
    listings: int
    skus: int
    file_format: str
    file_mb: float
    held_skus: int  # SKUs with counts at every location in the worker
    first: CatalogPublish | None = None
    update: CatalogPublish | None = None
    worker_rss_mb: float | None = None  # after the counts, before the update
    adopted_s: float | None = None  # update's spawn -> the worker logs the new version
    applied_s: float | None = None  # update's spawn -> the last held SKU's record under it
    worker_cpu_s: float | None = None  # update's spawn -> applied
    worker_rss_after_mb: float | None = None
    failure: str | None = None

    @property
    def done_s(self) -> float | None:
        """Published and applied: the later of the CLI's exit and the last record."""
        if self.update is None or self.update.error or self.applied_s is None:
            return None
        return max(self.update.seconds, self.applied_s)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: columns as wide as their widest cell, numbers right-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w)
            for c, w in zip(cells, widths, strict=True)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


POSITIONS_HEADERS = (
    "positions", "events", "load ev/s", "RSS MB", "B/position", "changelog records",
    "changelog MB", "restart s", "RSS after restart MB", "failure",
)  # fmt: skip


def positions_table(runs: Sequence[PositionsRun]) -> str:
    return table(
        POSITIONS_HEADERS,
        [
            [
                f"{r.positions:,}",
                f"{r.events:,}",
                num(r.load_rate),
                num(r.rss_mb),
                num(r.bytes_per_position),
                f"{r.changelog_records:,}",
                num(r.changelog_bytes / 1e6, 1),
                num(r.restart_s, 1),
                num(r.rss_after_restart_mb),
                r.failure or "",
            ]
            for r in runs
        ],
    )


def hot_table(steps: Sequence[HotStep]) -> str:
    return table(
        ("orders", "record bytes", "events/s", "worker CPU us/event"),
        [[f"{s.orders:,}", num(s.record_bytes), num(s.rate), num(s.cpu_us)] for s in steps],
    )


WIDE_HEADERS = (
    "locations", "positions", "load ev/s", "stream ev/s", "worker CPU us/event",
    "changelog B/event", "changelog records/event", "RSS MB", "failure",
)  # fmt: skip


def wide_table(runs: Sequence[WideRun]) -> str:
    return table(
        WIDE_HEADERS,
        [
            [
                f"{r.locations:,}",
                f"{r.positions:,}",
                num(r.load_rate),
                num(r.rate),
                num(r.cpu_us),
                num(r.bytes_per_event),
                num(r.records_per_event, 2),
                num(r.rss_mb),
                r.failure or "",
            ]
            for r in runs
        ],
    )


def wide_verdicts(runs: Sequence[WideRun] | None) -> list[tuple[str, str, str]]:
    """(goal, met / not met / not measured, why) for the goal of 200 locations per SKU."""
    name = f"{WIDE_GOAL_LOCATIONS} locations per SKU"
    bytes_goal = f"{name}: changelog <= {WIDE_GOAL_BYTES:,} bytes per event"
    rate_goal = (
        f"{name}: events/s within {WIDE_GOAL_SLOWER * 100:.0f} % of {WIDE_BASE_LOCATIONS} locations"
    )
    if runs is None:
        return [(g, "not measured", "wide series not run") for g in (bytes_goal, rate_goal)]
    by_l = {r.locations: r for r in runs}
    wide, base = by_l.get(WIDE_GOAL_LOCATIONS), by_l.get(WIDE_BASE_LOCATIONS)
    out: list[tuple[str, str, str]] = []
    per_event = wide.bytes_per_event if wide is not None else None
    if wide is None or per_event is None:
        why = f"{WIDE_GOAL_LOCATIONS} not in --wide-locations" if wide is None else wide.failure
        out.append((bytes_goal, "not measured", why or "no stream"))
    else:
        out.append(
            (
                bytes_goal,
                "met" if per_event <= WIDE_GOAL_BYTES else "not met",
                f"{per_event:,.0f} bytes, {wide.records_per_event:.2f} records an event",
            )
        )
    if wide is None or wide.rate is None or base is None or base.rate is None:
        why = (
            f"--wide-locations needs {WIDE_BASE_LOCATIONS} and {WIDE_GOAL_LOCATIONS}"
            if wide is None or base is None
            else wide.failure or base.failure
        )
        out.append((rate_goal, "not measured", why or "no stream"))
    else:
        met = wide.rate >= (1 - WIDE_GOAL_SLOWER) * base.rate
        out.append(
            (
                rate_goal,
                "met" if met else "not met",
                f"{wide.rate:,.0f} against {base.rate:,.0f} events/s "
                f"({wide.rate / base.rate - 1:+.0%})",
            )
        )
    return out


CATALOG_HEADERS = (
    "listings", "run", "CLI s", "prepare s", "send s", "finish s", "CLI CPU s", "CLI peak RSS MB",
    "parts", "adopted s", "applied s", "worker CPU s", "worker RSS MB", "failure",
)  # fmt: skip


def catalog_table(runs: Sequence[CatalogRun]) -> str:
    rows = []
    for r in runs:
        for name, cli in (("first", r.first), ("update", r.update)):
            update = name == "update"
            rows.append(
                [
                    f"{r.listings:,}",
                    name,
                    num(cli.seconds, 1) if cli else "-",
                    num(cli.prepare_s, 1) if cli else "-",
                    num(cli.send_s, 1) if cli else "-",
                    num(cli.finish_s, 1) if cli else "-",
                    num(cli.cpu_s, 1) if cli else "-",
                    num(cli.peak_rss_mb) if cli else "-",
                    f"{cli.parts:,}" if cli else "-",
                    num(r.adopted_s, 1) if update else "-",
                    num(r.applied_s, 1) if update else "-",
                    num(r.worker_cpu_s, 1) if update else "-",
                    num(r.worker_rss_after_mb if update else r.worker_rss_mb),
                    (cli.error if cli and cli.error else r.failure if update else None) or "",
                ]
            )
    return table(CATALOG_HEADERS, rows)


def catalog_verdicts(runs: Sequence[CatalogRun] | None) -> list[tuple[str, str, str]]:
    """(goal, met / not met / not measured, why) for the goal of a 1,000,000-listing catalog."""
    goal = (
        f"catalog of {CATALOG_GOAL_LISTINGS:,} listings published and applied in "
        f"<= {CATALOG_GOAL_S:.0f} s at the 1 MB limit"
    )
    if not runs:
        return [(goal, "not measured", "catalog series not run")]
    big = {r.listings: r for r in runs}.get(CATALOG_GOAL_LISTINGS)
    if big is None:
        largest = max(runs, key=lambda r: r.listings)
        return [
            (
                goal,
                "not measured",
                f"{CATALOG_GOAL_LISTINGS:,} not in --catalog-listings; largest measured: "
                f"{largest.listings:,} listings, published and applied in "
                f"{num(largest.done_s, 1)} s",
            )
        ]
    done = big.done_s
    if done is None:
        why = (big.update.error if big.update else None) or big.failure or "not applied"
        return [(goal, "not met", why)]
    assert big.update is not None  # done_s needs it
    return [
        (
            goal,
            "met" if done <= CATALOG_GOAL_S else "not met",
            f"{done:,.1f} s: published in {big.update.seconds:,.1f} s "
            f"({big.update.parts:,} parts), applied {big.applied_s:,.1f} s after the publish "
            f"started; {big.file_format} file of {big.file_mb:,.0f} MB",
        )
    ]


def goal_verdicts(
    runs: Sequence[PositionsRun], hot: HotSeries | None, hot_max: int
) -> list[tuple[str, str, str]]:
    """(goal, met / not met / not measured, why) for each goal of issue 18."""
    out: list[tuple[str, str, str]] = []
    by_n = {r.positions: r for r in runs}
    big, small = by_n.get(GOAL_POSITIONS), min(runs, key=lambda r: r.positions, default=None)
    # the load goal compares the million against a smaller catalog (50,000), never against itself
    base = by_n.get(50_000) or min(
        (r for r in runs if r.positions < GOAL_POSITIONS), key=lambda r: r.positions, default=None
    )
    largest = max(runs, key=lambda r: r.positions, default=None)
    trend = (
        f"largest measured: {largest.positions:,} positions, RSS {num(largest.rss_mb)} MB, "
        f"restart {num(largest.restart_s, 1)} s"
        if largest is not None and largest.positions != GOAL_POSITIONS
        else ""
    )
    not_run = (
        f"{GOAL_POSITIONS:,} not in --positions; {trend}" if runs else "positions series not run"
    )
    if big is None or big.rss_mb is None:
        why = not_run if big is None else big.failure or "no RSS read"
        out.append((f"1M positions: RSS <= {RSS_GOAL_MB:.0f} MB", "not measured", why))
    else:
        met = big.rss_mb <= RSS_GOAL_MB
        out.append(
            (
                f"1M positions: RSS <= {RSS_GOAL_MB:.0f} MB",
                "met" if met else "not met",
                f"{big.rss_mb:,.0f} MB after load",
            )
        )
    if big is None or big.restart_s is None:
        why = not_run if big is None else big.failure or "no restart"
        out.append((f"1M positions: restart <= {RESTART_GOAL_S:.0f} s", "not measured", why))
    else:
        met = big.restart_s <= RESTART_GOAL_S
        out.append(
            (
                f"1M positions: restart <= {RESTART_GOAL_S:.0f} s",
                "met" if met else "not met",
                f"{big.restart_s:,.1f} s (memory tables: no local state to keep, the whole "
                "changelog is read back, in bulk)",
            )
        )
    if big is None or big.load_rate is None or base is None or base.load_rate is None:
        why = not_run if big is None else "no smaller catalog in --positions to compare with"
        out.append(("1M positions: load no slower than 50k", "not measured", why))
    else:
        met = big.load_rate >= base.load_rate
        out.append(
            (
                "1M positions: load no slower than 50k",
                "met" if met else "not met",
                f"{big.load_rate:,.0f} against {base.load_rate:,.0f} events/s at "
                f"{base.positions:,}",
            )
        )

    name = f"hot SKU, {HOT_GOAL_LINES:,} open lines"
    if hot is None:
        out.append((f"{name}: no crash", "not measured", "hot series not run"))
        out.append((f"{name}: records < 64 KB", "not measured", "hot series not run"))
        out.append((f"{name}: events/s >= normal mix", "not measured", "hot series not run"))
        return out
    reached = max((s.orders for s in hot.steps), default=0)
    if hot.death is not None:
        out.append((f"{name}: no crash", "not met", f"{hot.death}: {hot.error_line or '-'}"))
    elif reached >= HOT_GOAL_LINES:
        out.append((f"{name}: no crash", "met", f"{reached:,} orders"))
    else:
        out.append(
            (
                f"{name}: no crash",
                "not measured",
                f"--hot-max {hot_max:,}: no crash up to {reached:,} orders",
            )
        )
    sizes = [s.record_bytes for s in hot.steps if s.record_bytes is not None]
    over = [
        s for s in hot.steps if s.record_bytes is not None and s.record_bytes >= RECORD_GOAL_BYTES
    ]
    if over:
        out.append(
            (
                f"{name}: records < 64 KB",
                "not met",
                f"{over[0].record_bytes:,} bytes after {over[0].orders:,} orders",
            )
        )
    elif reached >= HOT_GOAL_LINES and hot.death is None:
        out.append((f"{name}: records < 64 KB", "met", f"largest {max(sizes, default=0):,} bytes"))
    else:
        out.append(
            (
                f"{name}: records < 64 KB",
                "not measured",
                f"under 64 KB up to {reached:,} orders only",
            )
        )
    normal = small.load_rate if small is not None else None
    rates = [s.rate for s in hot.steps if s.rate is not None]
    if normal is None or not rates:
        out.append(
            (f"{name}: events/s >= normal mix", "not measured", "no normal rate or no hot step")
        )
    elif min(rates) < normal:
        out.append(
            (
                f"{name}: events/s >= normal mix",
                "not met",
                f"{min(rates):,.0f} events/s in the slowest step against {normal:,.0f} at "
                f"{small.positions:,} positions",  # type: ignore[union-attr]
            )
        )
    elif reached >= HOT_GOAL_LINES and hot.death is None:
        out.append((f"{name}: events/s >= normal mix", "met", f"slowest {min(rates):,.0f}"))
    else:
        out.append(
            (
                f"{name}: events/s >= normal mix",
                "not measured",
                f"at or above {normal:,.0f} up to {reached:,} orders only",
            )
        )
    return out


OTHER_GOALS = (
    ("rebuild of 1,000,000 events in <= 40 s, equal to live", "no batch rebuild exists yet"),
    ("RocksDB tables beside memory tables", "the worker has memory tables only"),
)


# ---- the broker, seen from outside the worker -----------------------------------------------


def settle_check(
    bootstrap: str, group: str, partitions: int
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(end offsets, committed offsets) of the stages' inputs."""
    ends = true_end_offsets_many(bootstrap, {t: list(range(partitions)) for t in INPUTS})
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        listed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        consumer.close()
    return ends, {(c.topic, c.partition): max(c.offset, 0) for c in listed}


class WorkerDied(Exception):
    pass


class Stalled(Exception):
    pass


def wait_committed(
    bootstrap: str,
    group: str,
    partitions: int,
    worker: subprocess.Popen[bytes],
    stall_seconds: float,
) -> float:
    """Until the group has committed both inputs at their ends twice in a row: the perf_counter
    of the first of the two checks. Raises when the worker exits or nothing moves for
    `stall_seconds`."""
    last_moved, last_seen, first_done = time.perf_counter(), -1, None
    while True:
        if worker.poll() is not None:
            raise WorkerDied(f"worker exited with {worker.returncode}")
        now = time.perf_counter()
        ends, done = settle_check(bootstrap, group, partitions)
        total = sum(done.values())
        if total != last_seen:
            last_moved, last_seen = now, total
        elif now - last_moved > stall_seconds:
            raise Stalled(f"committed offsets unmoved for {stall_seconds:g} s")
        if all(done.get(k, 0) >= e for k, e in ends.items()):
            if first_done is not None:
                return first_done
            first_done = now
        else:
            first_done = None
        time.sleep(CHECK_EVERY)


def committed_events(bootstrap: str, group: str, partitions: int) -> int:
    return sum(
        v for (t, _), v in settle_check(bootstrap, group, partitions)[1].items() if t == EVENTS
    )


def read_changelog(
    bootstrap: str,
    topic: str,
    starts: dict[int, int],
    key: bytes | None = None,
    sizes: list[int] | None = None,
) -> tuple[int, int, int | None, dict[int, int]]:
    """Read `topic`'s partitions from `starts` to their ends: (records with a value, key + value
    bytes, the size of the last value under `key`, the ends read to); every value's size goes to
    `sizes`."""
    ends = true_end_offsets_many(bootstrap, {topic: list(starts)})
    todo = {p: ends[(topic, p)] for p in starts if ends[(topic, p)] > starts[p]}
    records = size = 0
    last: int | None = None
    if todo:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-scale-read",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 100,
                "log_level": 0,
            }
        )
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in todo])
        try:
            deadline = time.monotonic() + 600
            while todo and time.monotonic() < deadline:
                for message in consumer.consume(10_000, timeout=0.5):
                    partition, offset = message.partition(), message.offset()
                    if message.error() or partition is None or offset is None:
                        continue
                    value, k = message.value(), message.key()
                    if value is not None:
                        records += 1
                        size += len(value) + len(k or b"")
                        if sizes is not None:
                            sizes.append(len(value))
                        if key is not None and k == key:
                            last = len(value)
                    if partition in todo and offset + 1 >= todo[partition]:
                        del todo[partition]
        finally:
            consumer.close()
    return records, size, last, {p: ends[(topic, p)] for p in starts}


class Caused:
    """Counts the records of an availability topic whose cause_event_id is `cause`, read from
    `starts` (partition -> offset) on."""

    def __init__(
        self, bootstrap: str, settings: Settings, topic: str, starts: dict[int, int], cause: str
    ) -> None:
        self.topic, self.cause, self.count = topic, cause, 0
        self.codec = make_codec(settings)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-scale-serving",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
                "log_level": 0,
            }
        )
        self.consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])

    def poll(self, timeout: float = 0.1) -> int:
        """The records counted so far, after what arrived within `timeout`."""
        for message in self.consumer.consume(1000, timeout=timeout):
            value = message.value()
            if message.error() or value is None:
                continue
            record: Any = self.codec.decode(value, self.topic)
            self.count += record.cause_event_id == self.cause
        return self.count

    def close(self) -> None:
        self.consumer.close()


def wait_available(
    bootstrap: str, settings: Settings, sku: str, start: int, cause: str, timeout: float
) -> float | None:
    """The perf_counter at which availability.web's record caused by `cause` arrived here."""
    partition = partition_for(sku.encode(), settings.topic_partitions)
    caused = Caused(bootstrap, settings, availability_topic("web"), {partition: start}, cause)
    try:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if caused.poll():
                return time.perf_counter()
        return None
    finally:
        caused.close()


def record_at(bootstrap: str, topic: str, offset: int, timeout: float = 30.0) -> Any:
    """The record at `offset` of partition 0 of `topic`."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-scale-read",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, 0, offset)])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error() and message.offset() == offset:
                return message
        raise RuntimeError(f"{topic} offset {offset} not read within {timeout:g} s")
    finally:
        consumer.close()


# ---- processes ------------------------------------------------------------------------------


def start_worker(bootstrap: str, workdir: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "inventory_streams.cli", "worker", "--clock", "stream",
         "--data-dir", str(workdir / "worker")],
        cwd=REPO,
        env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_assigned(worker: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    """Until the worker's log says it owns partitions of inventory.events."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf"assigned partitions of {re.escape(EVENTS)}: \[[^\]]+\]")
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise WorkerDied(f"worker exited with {worker.returncode} on start:\n{tail(log)}")
        if pattern.search(log.read_text(errors="replace")):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker not assigned within {timeout:g} s:\n{tail(log)}")


def rss_mb(pid: int) -> float | None:
    kib = rss_kib(pid)
    return None if kib is None else kib * 1024 / 1e6


def error_line(log: Path) -> str | None:
    """The line that says why the worker died: MSG_SIZE_TOO_LARGE first, else the last error."""
    lines = log.read_text(errors="replace").splitlines()
    for needle in ("MSG_SIZE_TOO_LARGE", "Error", "error"):
        found = [line for line in lines if needle in line]
        if found:
            return (found[0] if needle == "MSG_SIZE_TOO_LARGE" else found[-1]).strip()[:300]
    return None


def scale_catalog(skus: int, locations: int = LOCATIONS) -> Catalog:
    """`locations` locations, one identity listing per SKU on `web`; `amz` (the mix's other
    orders) lists nothing."""
    locs = [f"loc-{i}" for i in range(locations)]
    return load_catalog(
        {
            "locations": [{"id": loc} for loc in locs],
            "channels": [
                {"id": "web", "type": "shopify", "locations": locs, "allocation_percent": 100},
                {"id": "amz", "type": "amazon", "locations": locs[:2], "allocation_percent": 60},
            ],
            "listings": [
                {
                    "channel": "web",
                    "channel_sku": f"SKU-{i:05d}",
                    "components": [{"sku": f"SKU-{i:05d}", "quantity": 1}],
                }
                for i in range(skus)
            ],
        }
    )


class System:
    """One fresh embedded broker with topics and catalog (None: the series publishes its own),
    and at most one worker on it."""

    def __init__(self, broker: str, catalog: Catalog | None, name: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-scale-{name}-"))
        self.settings = Settings(kafka_bootstrap_servers=None, data_dir=self.workdir)
        self.broker: EmbeddedBroker | EmbeddedKafka = embedded_broker(
            Settings(embedded_broker=broker)
        )
        self.catalog = catalog
        self.log = self.workdir / "worker.log"
        self.worker: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> System:
        self.broker.start()
        self.bootstrap = self.broker.bootstrap_servers
        channels = [c.id for c in self.catalog.channels] if self.catalog is not None else []
        ensure_topics(self.bootstrap, topic_specs(self.settings, channels))
        if self.catalog is not None:
            publish(self.bootstrap, self.catalog)
        return self

    def __exit__(self, *exc: object) -> None:
        stop(self.worker)
        self.broker.stop()

    @property
    def n(self) -> int:
        return self.settings.topic_partitions

    def start(self) -> subprocess.Popen[bytes]:
        self.worker = start_worker(self.bootstrap, self.workdir, self.log)
        return self.worker

    def kill(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait()

    def send(self, events: Sequence[Event]) -> None:
        producer = SourceProducer(self.bootstrap, settings=self.settings)
        for event in events:
            producer.send_event(event)
        counts = producer.close(timeout=300)
        if counts.events_acked != len(events):
            raise RuntimeError(f"only {counts.events_acked} of {len(events)} events acknowledged")

    def committed(self, stall_seconds: float) -> float:
        assert self.worker is not None
        return wait_committed(
            self.bootstrap, self.settings.app_id, self.n, self.worker, stall_seconds
        )


# ---- 1. positions ---------------------------------------------------------------------------


def positions_run(
    positions: int, broker: str, mix: float, stall_seconds: float, say: Callable[[str], None]
) -> PositionsRun:
    run = PositionsRun(positions)
    skus = positions // LOCATIONS
    started = time.perf_counter()
    events = generate(positions + int(positions * mix), skus, LOCATIONS, seed=18)
    run.events = len(events)
    say(
        f"  {positions:,} positions: {skus:,} SKUs, {len(events):,} events generated in "
        f"{time.perf_counter() - started:.1f} s"
    )
    with System(broker, scale_catalog(skus), f"{positions}") as system:
        topic = changelog_topic(system.settings.app_id, "skus")
        worker = system.start()
        try:
            wait_assigned(worker, system.log)
            started = time.perf_counter()
            system.send(events)
            say(f"  published in {time.perf_counter() - started:.1f} s")
            done = system.committed(stall_seconds)
            run.load_rate = len(events) / (done - started)
            run.rss_mb = rss_mb(worker.pid)
            say(
                f"  load {run.load_rate:,.0f} events/s ({done - started:.1f} s), "
                f"RSS {num(run.rss_mb)} MB"
            )
            run.changelog_records, run.changelog_bytes, _, _ = read_changelog(
                system.bootstrap, topic, dict.fromkeys(range(system.n), 0)
            )
            sku = "SKU-00001"
            partition = partition_for(sku.encode(), system.n)
            avail = availability_topic("web")
            start = true_end_offsets_many(system.bootstrap, {avail: [partition]})[
                (avail, partition)
            ]
            system.kill()
            spawned = time.perf_counter()
            worker = system.start()
            cause = f"scale-restart-{positions}"
            system.send(
                [
                    StockAdjusted(
                        event_id=cause,
                        occurred_at=max(e.occurred_at for e in events) + timedelta(seconds=1),
                        source="bench",
                        sku=sku,
                        location="loc-0",
                        mode="delta",
                        quantity=1000,
                        reason="manual",
                    )
                ]
            )
            arrived = wait_available(system.bootstrap, system.settings, sku, start, cause, 900)
            if arrived is None:
                run.failure = "the new event's availability did not arrive within 900 s"
                if worker.poll() is not None:
                    run.failure = (
                        f"worker exited with {worker.returncode}: {error_line(system.log)}"
                    )
            else:
                run.restart_s = arrived - spawned
                run.rss_after_restart_mb = rss_mb(worker.pid)
                say(
                    f"  restart to serving {run.restart_s:.1f} s, RSS then "
                    f"{num(run.rss_after_restart_mb)} MB"
                )
        except (WorkerDied, Stalled) as error:
            run.failure = f"{error}: {error_line(system.log)}"
            say(f"  FAILED: {run.failure}")
    return run


# ---- 2. the hot SKU -------------------------------------------------------------------------


def hot_orders(first: int, count: int) -> list[Event]:
    return [
        OrderCreated(
            event_id=f"hot-{i}",
            occurred_at=T0 + timedelta(milliseconds=i),
            source="bench",
            order_id=f"hot-{i}",
            channel="web",
            lines=[{"line_id": "1", "sku": HOT_SKU, "quantity": 1}],
        )
        for i in range(first, first + count)
    ]


def hot_series(
    broker: str, step: int, most: int, stall_seconds: float, say: Callable[[str], None]
) -> HotSeries:
    series = HotSeries(steps=[])
    with System(broker, scale_catalog(100), "hot") as system:
        topic = changelog_topic(system.settings.app_id, "skus")
        parts_topic = changelog_topic(system.settings.app_id, "sku_parts")
        key = HOT_SKU.encode()
        partition = partition_for(key, system.n)
        read_from = {partition: 0}
        parts_from = {partition: 0}  # a hot SKU's record in parts, in its partition
        worker = system.start()
        last_size: int | None = None
        count = StockAdjusted(
            event_id="hot-count",
            occurred_at=T0 - timedelta(seconds=1),
            source="bench",
            sku=HOT_SKU,
            location="loc-0",
            mode="count",
            quantity=1_000_000,
        )
        try:
            wait_assigned(worker, system.log)
            system.send([count])
            system.committed(stall_seconds)
            orders = 0
            while orders < most:
                batch = hot_orders(orders, min(step, most - orders))
                cpu = cpu_seconds(worker.pid)
                started = time.perf_counter()
                system.send(batch)
                done = system.committed(stall_seconds)
                orders += len(batch)
                used = cpu_seconds(worker.pid) - cpu
                _, _, size, read_from = read_changelog(system.bootstrap, topic, read_from, key)
                parts: list[int] = []
                _, _, _, parts_from = read_changelog(
                    system.bootstrap, parts_topic, parts_from, sizes=parts
                )
                # the largest record of the SKU written in the step: its own or a part
                size = max([*parts, *([size] if size is not None else [])], default=None)
                last_size = size if size is not None else last_size
                series.steps.append(
                    HotStep(
                        orders, last_size, len(batch) / (done - started), used / len(batch) * 1e6
                    )
                )
                say(
                    f"  {orders:,} orders: record {num(last_size)} bytes, "
                    f"{series.steps[-1].rate:,.0f} events/s"
                )
        except (WorkerDied, Stalled) as error:
            time.sleep(1.0)  # what the worker wrote before it died
            _, _, size, _ = read_changelog(system.bootstrap, topic, read_from, key)
            last_size = size if size is not None else last_size
            series.death = str(error)
            series.error_line = error_line(system.log)
            series.orders_at_death = (
                committed_events(system.bootstrap, system.settings.app_id, system.n) - 1
            )
            series.steps.append(HotStep(series.orders_at_death, last_size, None, None))
            say(f"  worker dead: {series.death}: {series.error_line}")
    return series


# ---- 3. wide SKUs --------------------------------------------------------------------------


def position_counts(skus: int, locations: int) -> list[StockAdjusted]:
    """One count of 100 per position of SKUs 0 .. skus - 1."""
    return [
        StockAdjusted(
            event_id=f"wide-count-{i}-{loc}",
            occurred_at=T0,
            source="bench",
            sku=f"SKU-{i:05d}",
            location=f"loc-{loc}",
            mode="count",
            quantity=100,
        )
        for i in range(skus)
        for loc in range(locations)
    ]


def wide_stream(skus: int, locations: int, count: int) -> list[StockAdjusted]:
    """Single-location sales spread over SKUs and locations; i // skus moves a SKU's next sale to
    its next location where `locations` divides `skus` (without it, each SKU would sell at one
    location only)."""
    return [
        StockAdjusted(
            event_id=f"wide-{i}",
            occurred_at=T0 + timedelta(seconds=1, milliseconds=i),
            source="bench",
            sku=f"SKU-{i * 7919 % skus:05d}",
            location=f"loc-{(i * 104729 + i // skus) % locations}",
            mode="delta",
            quantity=-1,
            reason="sale",
        )
        for i in range(count)
    ]


def wide_run(
    skus: int,
    locations: int,
    events: int,
    broker: str,
    stall_seconds: float,
    say: Callable[[str], None],
) -> WideRun:
    run = WideRun(locations, skus)
    counts, stream = position_counts(skus, locations), wide_stream(skus, locations, events)
    say(f"  {locations} locations: {skus:,} SKUs, {len(counts):,} positions")
    with System(broker, scale_catalog(skus, locations), f"wide{locations}") as system:
        topics = [changelog_topic(system.settings.app_id, t) for t in ("skus", "sku_parts")]
        worker = system.start()
        try:
            wait_assigned(worker, system.log)
            started = time.perf_counter()
            system.send(counts)
            done = system.committed(stall_seconds)
            run.load_rate = len(counts) / (done - started)
            say(f"  counts: {run.load_rate:,.0f} events/s ({done - started:.1f} s)")
            ends = true_end_offsets_many(
                system.bootstrap, {t: list(range(system.n)) for t in topics}
            )
            cpu = cpu_seconds(worker.pid)
            started = time.perf_counter()
            system.send(stream)
            done = system.committed(stall_seconds)
            used = cpu_seconds(worker.pid) - cpu
            run.events = len(stream)
            run.rate = len(stream) / (done - started)
            run.cpu_us = used / len(stream) * 1e6
            run.rss_mb = rss_mb(worker.pid)
            for topic in topics:
                starts = {p: ends[(topic, p)] for p in range(system.n)}
                records, size, _, _ = read_changelog(system.bootstrap, topic, starts)
                run.changelog_records += records
                run.changelog_bytes += size
            say(
                f"  stream: {run.rate:,.0f} events/s, {run.cpu_us:,.0f} us CPU and "
                f"{num(run.bytes_per_event)} changelog bytes per event"
            )
        except (WorkerDied, Stalled) as error:
            run.failure = f"{error}: {error_line(system.log)}"
            say(f"  FAILED: {run.failure}")
    return run


# ---- 4. catalogs ---------------------------------------------------------------------------

APPLY_TIMEOUT_S = 900.0  # for a CLI run, and from an update's spawn to applied
CATALOG_CLI = Path(sys.executable).with_name("inventory-streams")  # what bin/inventory-streams runs


def flow(value: Any) -> str:
    """`value` in YAML's flow style, every string a plain scalar (as every one here can be)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return str(value)


def write_catalog(path: Path, listings: int, file_format: str, amz_buffer: int = 0) -> int:
    """A catalog file of `listings` identity listings, as 4. in the docstring describes, one item a
    line; returns its SKUs."""
    skus = (listings + 1) // 2
    locs = [f"loc-{i}" for i in range(LOCATIONS)]

    def listing(j: int) -> dict[str, Any]:
        sku = f"SKU-{j // 2:05d}"
        channel_sku = sku if j % 2 == 0 else f"B0{j // 2:08d}"
        return {
            "channel": "web" if j % 2 == 0 else "amz",
            "channel_sku": channel_sku,
            "components": [{"sku": sku, "quantity": 1}],
        }

    sections: list[tuple[str, Any]] = [
        ("locations", [{"id": loc} for loc in locs]),
        (
            "channels",
            [
                {"id": "web", "type": "shopify", "locations": locs, "allocation_percent": 100},
                {
                    "id": "amz",
                    "type": "amazon",
                    "locations": locs[:2],
                    "allocation_percent": 60,
                    "buffer_units": amz_buffer,
                },
            ],
        ),
        (
            "safety_stock",
            ({"sku": f"SKU-{i:05d}", "location": "loc-0", "units": 2} for i in range(0, skus, 10)),
        ),
        ("listings", (listing(j) for j in range(listings))),
    ]
    with path.open("w", encoding="utf-8") as out:
        if file_format == "yaml":
            for name, items in sections:
                out.write(f"{name}:\n")
                out.writelines(f"  - {flow(item)}\n" for item in items)
        else:  # the same items as JSON, one a line
            out.write("{")
            for n, (name, items) in enumerate(sections):
                out.write(f'{"," if n else ""}\n"{name}": [')
                out.writelines(
                    f"{',' if k else ''}\n{json.dumps(item)}" for k, item in enumerate(items)
                )
                out.write("\n]")
            out.write("\n}\n")
    return skus


class CatalogCli:
    """`inventory-streams catalog FILE` in a process of its own, waited for in a thread with wait4
    (its own CPU and peak RSS)."""

    def __init__(self, system: System, path: Path) -> None:
        self.bootstrap = system.bootstrap
        self.start = true_end_offsets_many(self.bootstrap, {CATALOG: [0]})[(CATALOG, 0)]
        self.log = system.workdir / f"{path.name}.log"
        self.ended: float | None = None
        self.ended_wall = 0.0
        self.code: int | None = None
        self.usage: Any = None
        self.spawned_wall, self.spawned = time.time(), time.perf_counter()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(CATALOG_CLI), "catalog", str(path)],
                cwd=system.workdir,
                env={**os.environ, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.waiter = threading.Thread(target=self._wait, daemon=True)
        self.waiter.start()

    def _wait(self) -> None:
        _, status, self.usage = os.wait4(self.process.pid, 0)
        self.ended, self.ended_wall = time.perf_counter(), time.time()
        self.code = self.process.returncode = os.waitstatus_to_exitcode(status)

    def failed(self) -> bool:
        return self.code not in (None, 0)

    def result(self) -> CatalogPublish:
        """Once it has exited (killed after APPLY_TIMEOUT_S): its figures and phases."""
        self.waiter.join(max(0.0, self.spawned + APPLY_TIMEOUT_S - time.perf_counter()))
        if self.ended is None:
            self.process.kill()
            self.waiter.join()
        assert self.ended is not None and self.usage is not None
        run = CatalogPublish(
            seconds=self.ended - self.spawned,
            cpu_s=self.usage.ru_utime + self.usage.ru_stime,
            peak_rss_mb=self.usage.ru_maxrss * 1024 / 1e6,
        )
        lines = self.log.read_text(errors="replace").strip().splitlines()
        if self.code != 0:
            run.error = f"exit {self.code}: {lines[-1][:300] if lines else '(no output)'}"
            return run
        end = true_end_offsets_many(self.bootstrap, {CATALOG: [0]})[(CATALOG, 0)]
        first, manifest = (record_at(self.bootstrap, CATALOG, o) for o in (self.start, end - 1))
        first_at, manifest_at = first.timestamp()[1] / 1000, manifest.timestamp()[1] / 1000
        run.prepare_s = first_at - self.spawned_wall
        run.send_s = manifest_at - first_at
        run.finish_s = self.ended_wall - manifest_at
        run.parts = len(json.loads(manifest.value())["parts"])
        return run


def catalog_run(
    listings: int,
    file_format: str,
    positions: int,
    broker: str,
    stall_seconds: float,
    say: Callable[[str], None],
) -> CatalogRun:
    with System(broker, None, f"catalog{listings}") as system:
        first_file = system.workdir / f"catalog.{file_format}"
        update_file = system.workdir / f"catalog-update.{file_format}"
        started = time.perf_counter()
        skus = write_catalog(first_file, listings, file_format)
        write_catalog(update_file, listings, file_format, amz_buffer=1)
        run = CatalogRun(
            listings,
            skus,
            file_format,
            first_file.stat().st_size / 1e6,
            held_skus=min(positions // LOCATIONS, skus),
        )
        say(
            f"  {listings:,} listings: {skus:,} SKUs, {run.file_mb:,.0f} MB of {file_format}, "
            f"written in {time.perf_counter() - started:.1f} s"
        )
        run.first = CatalogCli(system, first_file).result()
        say(
            f"  first: {run.first.seconds:.1f} s, peak RSS {run.first.peak_rss_mb:,.0f} MB"
            f"{', FAILED ' + run.first.error if run.first.error else ''}"
        )
        if run.first.error:
            return run
        spawned = time.perf_counter()
        worker = system.start()
        try:
            wait_assigned(worker, system.log, timeout=APPLY_TIMEOUT_S)
            say(f"  worker assigned {time.perf_counter() - spawned:.1f} s after its start")
            system.send(position_counts(run.held_skus, LOCATIONS))
            system.committed(stall_seconds)
            run.worker_rss_mb = rss_mb(worker.pid)
            amz = availability_topic("amz")
            ends = true_end_offsets_many(system.bootstrap, {amz: list(range(system.n))})
            # the held SKUs with an amz listing, each derived again with this cause
            expected = min(run.held_skus, listings // 2)
            caused = Caused(
                system.bootstrap,
                system.settings,
                amz,
                {p: ends[(amz, p)] for p in range(system.n)},
                "catalog:v2",
            )
            adopted = re.compile(r"catalog version 2 replaces version 1")
            cpu = cpu_seconds(worker.pid)
            cli = CatalogCli(system, update_file)
            try:
                while time.perf_counter() < cli.spawned + APPLY_TIMEOUT_S and not cli.failed():
                    if run.adopted_s is None and adopted.search(
                        system.log.read_text(errors="replace")
                    ):
                        run.adopted_s = time.perf_counter() - cli.spawned
                    if caused.poll() >= expected:
                        run.applied_s = time.perf_counter() - cli.spawned
                        break
                    if worker.poll() is not None:
                        raise WorkerDied(f"worker exited with {worker.returncode}")
                else:
                    run.failure = (
                        f"{caused.count:,} of {expected:,} held SKUs derived under the update"
                    )
            finally:
                caused.close()
                used = cpu_seconds(worker.pid, missing=-1.0)  # -1: the worker is gone
                run.worker_cpu_s = used - cpu if used >= 0 else None
                run.update = cli.result()
            run.worker_rss_after_mb = rss_mb(worker.pid)
            say(
                f"  update: {run.update.seconds:.1f} s, adopted {num(run.adopted_s, 1)} s, applied "
                f"{num(run.applied_s, 1)} s, worker RSS {num(run.worker_rss_after_mb)} MB"
                f"{', FAILED ' + run.update.error if run.update.error else ''}"
            )
        except (WorkerDied, Stalled) as error:
            run.failure = f"{error}: {error_line(system.log)}"
            say(f"  FAILED: {run.failure}")
    return run


# ---- the run --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument(
        "--series",
        default=",".join(SERIES),
        help="comma-separated: positions, hot, wide, catalog",
    )
    parser.add_argument(
        "--positions",
        default="50000,250000",
        help="comma-separated position counts (5 locations per SKU); 1000000 is the goal's",
    )
    parser.add_argument("--mix", type=float, default=0.1, help="realistic-mix events per position")
    parser.add_argument("--hot-step", type=int, default=10_000)
    parser.add_argument(
        "--hot-max", type=int, default=40_000, help="the goal's is 200000; 0 skips the series"
    )
    parser.add_argument("--wide-skus", type=int, default=2_000)
    parser.add_argument(
        "--wide-locations",
        default="5,200",
        help="comma-separated locations per SKU; the goal compares 200 with 5",
    )
    parser.add_argument("--wide-events", type=int, default=20_000, help="stock deltas streamed")
    parser.add_argument(
        "--catalog-listings",
        default="100000",
        help="comma-separated listings per catalog; 1000000 is the goal's",
    )
    parser.add_argument(
        "--catalog-format",
        choices=("yaml", "json"),
        default="yaml",
        help="the catalog file's format (SPEC §4's YAML, or the same catalog as JSON)",
    )
    parser.add_argument(
        "--catalog-positions",
        type=int,
        default=50_000,
        help="positions counted in the worker before the update (5 locations per SKU)",
    )
    parser.add_argument("--stall-seconds", type=float, default=180.0)
    args = parser.parse_args()
    series = {s.strip() for s in args.series.split(",") if s.strip()}
    if series - set(SERIES):
        parser.error(f"unknown series: {', '.join(sorted(series - set(SERIES)))}")
    sizes = (
        [int(p) for p in args.positions.split(",") if p.strip()] if "positions" in series else []
    )
    hot_max = args.hot_max if "hot" in series else 0
    widths = (
        [int(n) for n in args.wide_locations.split(",") if n.strip()] if "wide" in series else []
    )
    catalogs = (
        [int(n) for n in args.catalog_listings.split(",") if n.strip()]
        if "catalog" in series
        else []
    )

    def say(text: str) -> None:
        print(text, flush=True)

    say(f"machine: {machine()}")
    say(f"broker: embedded {args.broker}; memory tables; 1 worker")
    gc.collect()
    runs: list[PositionsRun] = []
    if sizes:
        say(f"1. positions ({LOCATIONS} locations per SKU)")
    for positions in sizes:
        runs.append(positions_run(positions, args.broker, args.mix, args.stall_seconds, say))
        gc.collect()
    hot = None
    if hot_max > 0:
        say(f"2. hot SKU ({HOT_SKU}, order-created of 1 unit, no picks)")
        hot = hot_series(args.broker, args.hot_step, hot_max, args.stall_seconds, say)
    wide: list[WideRun] | None = None
    if widths:
        say(f"3. wide SKUs ({args.wide_skus:,} SKUs, {args.wide_events:,} stock deltas)")
        wide = []
        for locations in widths:
            gc.collect()
            wide.append(
                wide_run(
                    args.wide_skus,
                    locations,
                    args.wide_events,
                    args.broker,
                    args.stall_seconds,
                    say,
                )
            )

    catalog_runs: list[CatalogRun] | None = None
    if catalogs:
        say(
            f"4. catalogs ({args.catalog_format}, {LOCATIONS} locations, web and amz; the worker "
            f"holds {args.catalog_positions:,} positions)"
        )
        catalog_runs = []
        for listings in catalogs:
            gc.collect()
            catalog_runs.append(
                catalog_run(
                    listings,
                    args.catalog_format,
                    args.catalog_positions,
                    args.broker,
                    args.stall_seconds,
                    say,
                )
            )

    if runs:
        say("")
        say(
            f"positions (counts + {args.mix:g} x N events of the realistic mix; restart: SIGKILL, "
            "start, first new event's availability)"
        )
        say(positions_table(runs))
    if hot is not None:
        say("")
        say(f"hot SKU (step {args.hot_step:,}, up to {args.hot_max:,} orders)")
        say(hot_table(hot.steps))
        if hot.death:
            say(
                f"worker died after about {hot.orders_at_death:,} orders committed ({hot.death}); "
                f"last record written {num(hot.steps[-1].record_bytes)} bytes (the next one was "
                f"refused); log: {hot.error_line}"
            )
    if wide:
        say("")
        say(
            f"wide SKUs ({args.wide_skus:,} SKUs; load: one count per position; stream: "
            f"{args.wide_events:,} single-location deltas; changelog: skus + sku_parts)"
        )
        say(wide_table(wide))
    if catalog_runs:
        say("")
        say(
            "catalogs (`inventory-streams catalog FILE`; first: onto an empty topic, no worker; "
            "update: amz's buffer changed, the worker running; seconds from the CLI's spawn; "
            "worker RSS: after its counts, and once applied)"
        )
        say(catalog_table(catalog_runs))
    say("")
    say("goals (issue 18)")
    verdicts = [
        *goal_verdicts(runs, hot, hot_max),
        *wide_verdicts(wide),
        *catalog_verdicts(catalog_runs),
    ]
    for goal, verdict, why in verdicts:
        say(f"  {goal}: {verdict.upper()} ({why})")
    for goal, why in OTHER_GOALS:
        say(f"  {goal}: NOT MEASURED ({why})")


if __name__ == "__main__":
    main()
