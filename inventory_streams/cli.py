"""The `inventory-streams` CLI (SPEC §6): one subcommand per job, errors as one clear line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import InventoryError

if TYPE_CHECKING:
    from streams.core.catalog import Catalog
    from streams.core.explain import Explanation
    from streams.runtime.progress import StageProgress
    from streams.settings import Settings


def _simulate(args: argparse.Namespace) -> int:
    from streams.simulate import read_catalog, simulate

    if args.explain is not None:
        channel, colon, channel_sku = args.explain.partition(":")
        if not (colon and channel and channel_sku):
            raise InventoryError(f"--explain {args.explain!r} is not CHANNEL:CHANNEL_SKU")
        return _print_explanation(
            *_explain_file(args.catalog, args.events, channel, channel_sku), args.format
        )
    catalog = read_catalog(Path(args.catalog))
    try:
        with open(args.events, "rb") as handle:
            result = simulate(catalog, handle)
    except OSError as error:
        raise InventoryError(f"cannot read events {args.events}: {error.strerror}") from None
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _explain_file(
    catalog_file: str, events_file: str, channel: str, channel_sku: str
) -> tuple[Explanation, dict[str, object] | None]:
    """A listing's explanation after simulating a file, with the record simulate published."""
    from streams.core.explain import explain
    from streams.simulate import read_catalog, run

    catalog = read_catalog(Path(catalog_file))
    try:
        with open(events_file, "rb") as handle:
            engine, collector, _ = run(catalog, handle)
    except OSError as error:
        raise InventoryError(f"cannot read events {events_file}: {error.strerror}") from None
    clock = engine.stream_time.date()  # simulate's clock: stream time
    explanation = explain(catalog, engine.skus, channel, channel_sku, clock)
    record = collector.availabilities.get((channel, channel_sku))
    if record is None:
        return explanation, None
    from streams.codec import record_to_json

    return explanation, record_to_json(record)


def _explain(args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    published: dict[str, object] | None
    sources: dict[str, str] | None = None
    if args.events:
        if not args.catalog:
            raise InventoryError("--events needs --catalog: the file's catalog")
        explanation, published = _explain_file(
            args.catalog, args.events, args.channel, args.channel_sku
        )
    else:
        from streams.tools import ApiUnavailable, explain_from_api, explain_live

        settings = _settings(args)
        try:
            # live, backorders count from wall time
            today = date.fromisoformat(args.clock_date) if args.clock_date else None
        except ValueError:
            raise InventoryError(f"--clock-date {args.clock_date!r} is not a date") from None
        if today is None and not args.committed and not args.catalog:  # the API's catalog
            url = args.api or os.environ.get("API_URL") or f"http://127.0.0.1:{settings.api_port}"
            try:
                explanation, published, sources = explain_from_api(
                    settings, url, args.channel, args.channel_sku
                )
                return _print_explanation(explanation, published, args.format, sources)
            except ApiUnavailable as why:
                print(f"explain: {why}; from the committed SKU states instead", file=sys.stderr)
        bootstrap = _bootstrap(settings)
        live = _live_catalog(args, bootstrap)
        if live is None:
            raise InventoryError("no catalog on inventory.catalog yet: pass --catalog FILE")
        explanation, published = explain_live(
            live,
            args.channel,
            args.channel_sku,
            settings,
            bootstrap,
            today or datetime.now(UTC).date(),
        )
        sources = {c.sku: "changelog" for c in explanation.components}
    return _print_explanation(explanation, published, args.format, sources)


def _print_explanation(
    explanation: Explanation,
    published: dict[str, object] | None,
    form: str,
    sources: dict[str, str] | None = None,
) -> int:
    """What `explain` and `simulate --explain` print: one code path, so they cannot drift apart.
    Live, `sources` says where each SKU's state came from: `owner` (the memory of the worker that
    holds it) or `changelog` (as last committed)."""
    if form == "json":
        extra = {} if sources is None else {"state_source": sources}
        print(json.dumps({**explanation.to_json(), "published": published, **extra}, indent=2))
        return 0
    sys.stdout.write(explanation.to_text())
    if sources is not None:
        where = {"owner": "its owner's memory", "changelog": "the last commit"}
        print(
            "  state: "
            + ", ".join(f"{sku} from {where.get(src, src)}" for sku, src in sources.items())
        )
    if published is None:
        print("  published: nothing yet (a listing whose SKUs never moved is 0)")
    else:
        print(
            f"  published: available {published['available']}, backorderable "
            f"{published['backorderable']} (version {published['version']}, as of "
            f"{published['as_of']}, cause {published['cause_event_id']})"
        )
        if (published["available"], published["backorderable"]) != (
            explanation.available,
            explanation.backorderable,
        ):
            print("  the state has moved on since that record: a newer one is on its way")
    return 0


def _progress(args: argparse.Namespace) -> StageProgress:
    """Bars on stderr for a long command: on a terminal, or with --progress."""
    from streams.runtime.progress import StageProgress, wanted

    return StageProgress(wanted(args.progress))


def _add_progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    from streams.settings import get_settings

    settings = get_settings()
    if getattr(args, "data_dir", None):
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir)})
    if getattr(args, "broker", None):
        settings = settings.model_copy(update={"embedded_broker": args.broker})
    return settings


def _bootstrap(settings: Settings, check: bool = True) -> str:
    from streams.runtime.running import resolve_bootstrap

    return resolve_bootstrap(settings, check)


def _worker(args: argparse.Namespace) -> int:
    from inventory_streams.worker import run_worker

    settings = _settings(args)
    run_worker(
        settings,
        _bootstrap(settings, check=False),  # a worker waits for its cluster itself
        clock=args.clock,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        api_port=args.api_port,
        api_host=args.api_host,
        api_url=args.api_url,
    )
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from streams.runtime.catalog_store import announce, publish
    from streams.runtime.topics import ensure_topics, topic_specs
    from streams.simulate import read_catalog

    settings = _settings(args)
    bootstrap = _bootstrap(settings)
    catalog = read_catalog(Path(args.file))
    ensure_topics(bootstrap, topic_specs(settings, [c.id for c in catalog.channels]))
    published = publish(bootstrap, catalog)
    announce(bootstrap, published.version, settings.topic_partitions)
    print(json.dumps({"catalog_version": published.version}))
    return 0


def _topics(args: argparse.Namespace) -> int:
    from streams.runtime.topics import ensure_topics, topic_specs
    from streams.simulate import read_catalog

    settings = _settings(args)
    catalog = read_catalog(Path(args.catalog)) if args.catalog else None
    channels = [c.id for c in catalog.channels] if catalog else []
    created = ensure_topics(_bootstrap(settings), topic_specs(settings, channels))
    print(json.dumps({"created": created}))
    return 0


def _publish(args: argparse.Namespace) -> int:
    from streams.tools import publish_file

    settings = _settings(args)
    counts = publish_file(Path(args.file), settings, _bootstrap(settings))
    print(json.dumps(counts))
    return 1 if counts["rejected"] else 0  # as import does: a script sees that lines were refused


def _tail(args: argparse.Namespace) -> int:
    from streams.tools import tail

    settings = _settings(args)
    tail(
        args.topic, settings, _bootstrap(settings), sys.stdout, follow=args.follow, limit=args.limit
    )
    return 0


def _resync(args: argparse.Namespace) -> int:
    from connectors.sinks import resync
    from streams.simulate import read_catalog

    settings = _settings(args)
    catalog = read_catalog(Path(args.catalog) if args.catalog else settings.catalog_file)
    channel = catalog.channel_by_id.get(args.channel)
    if channel is None:
        raise InventoryError(f"channel {args.channel!r} is not in the catalog")
    with _progress(args) as progress:
        report = resync(channel, settings, _bootstrap(settings), progress)
    print(json.dumps(dataclasses.asdict(report), default=str))
    return 0


def _connect(args: argparse.Namespace) -> int:
    import logging

    from connectors.host import run_connectors

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(args)
    bootstrap = _bootstrap(settings, check=False)  # connect waits for its cluster itself
    catalog = _live_catalog(args, bootstrap)
    if catalog is None:
        raise InventoryError("no catalog on inventory.catalog yet: pass --catalog FILE")
    run_connectors(
        settings,
        bootstrap,
        catalog,
        host=args.host,
        metrics_port=args.metrics_port,
        report_every=args.report_every,
        follow=not args.catalog,  # a file given is the catalog; else the topic's, as it changes
    )
    return 0


def _live_catalog(args: argparse.Namespace, bootstrap: str) -> Catalog | None:
    from streams.runtime.catalog_store import read_latest
    from streams.simulate import read_catalog

    return read_catalog(Path(args.catalog)) if args.catalog else read_latest(bootstrap)


def _reconcile(args: argparse.Namespace) -> int:
    from streams.reconcile import Thresholds, reconcile

    if args.threshold < 0 or args.threshold_percent < 0:
        raise InventoryError("thresholds cannot be negative")
    settings = _settings(args)
    bootstrap = _bootstrap(settings)
    with _progress(args) as progress:
        report = reconcile(
            Path(args.snapshot),
            bootstrap,
            settings=settings,
            thresholds=Thresholds(args.threshold, args.threshold_percent),
            correct=args.correct,
            catalog=_live_catalog(args, bootstrap) if args.catalog else None,
            progress=progress,
        )
    if args.format == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(report.to_text())
    return 1 if report.drift else 0


def _replay(args: argparse.Namespace) -> int:
    from datetime import datetime

    from streams.replay import Start, parse_offsets, rebuild, redrive

    start: Start | None = None
    if args.from_beginning:
        start = Start(beginning=True)
    elif args.from_offset is not None:
        start = Start(offsets=parse_offsets(args.from_offset))
    elif args.from_time is not None:
        try:
            at = datetime.fromisoformat(args.from_time)
        except ValueError:
            raise InventoryError(
                f"--from-time {args.from_time!r} is not an ISO timestamp"
            ) from None
        if at.tzinfo is None:
            raise InventoryError(f"--from-time {args.from_time!r} needs a timezone (add Z)")
        start = Start(time=at)
    settings = _settings(args)
    bootstrap = _bootstrap(settings)
    if args.dlq:
        catalog = _live_catalog(args, bootstrap)
        with _progress(args) as progress:
            report = redrive(
                settings, bootstrap, start, catalog, dry_run=args.dry_run, progress=progress
            )
        print(json.dumps({**report.to_json(), "dry_run": args.dry_run}, default=str))
        return 0
    if start is None:
        raise InventoryError(
            "choose where to rebuild from: --from-beginning, --from-offset or --from-time"
        )
    if not args.yes:
        raise InventoryError(
            "a rebuild deletes the internal and changelog topics and moves the workers' offsets "
            "on inventory.events; run again with --yes (see --help)"
        )
    with _progress(args) as progress:
        result = rebuild(settings, bootstrap, start, wait=args.wait, progress=progress)
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def _up(args: argparse.Namespace) -> int:
    from inventory_streams.up import run_up
    from streams.simulate import read_catalog

    settings = _settings(args)
    catalog = read_catalog(Path(args.catalog) if args.catalog else settings.catalog_file)
    status = run_up(settings, catalog, workers=args.workers, duration=args.duration, demo=args.demo)
    return 1 if status.failed else 0


RECONCILE_HELP = """\
Compare another system's counts with the live state, row by row:
  - a catalog location: their quantity against on_hand of the latest inventory.positions record
  - a channel id: their quantity (sku = channel_sku) against `available` on availability.<channel>
A difference is drift when it exceeds --threshold units AND --threshold-percent of their count
(both 0 by default: any difference). When our record is newer than their as_of, the row is
`stale` instead: movements after their count explain part of the gap, so it is neither alerted
nor corrected. Rows naming an unknown location/channel, an unlisted channel_sku, or a key we
have no record of are `unmatched`, with the reason.

Every drifting row publishes a `drift` alert to inventory.alerts. --correct also publishes, for
drifting location rows, a stock-adjusted `count` of their quantity as of their as_of (source =
the system column, event id derived from the row: re-running changes nothing; deltas after
as_of are kept on top, and a count older than our last count is ignored by the core). Channel
availability is derived and cannot be corrected by a count.

Exit status: 0 no drift, 1 drift found, 2 bad input (nothing is published then)."""

REPLAY_HELP = """\
Rebuild (without --dlq): stop-the-world. Stop every worker and `up` first: the command refuses
while the consumer group is detectably active (on Tansu a stopped worker's group stays active
until its session expires: it waits up to --wait seconds). With --yes it then deletes and
recreates the internal topics and the table changelogs, and points the workers' group at the
chosen start on inventory.events. The next `up` or `worker` rebuilds every table and re-emits
positions, availability and alerts (alerts again, with the same ids). Run workers with
`--clock stream` while they catch up, so old holds do not all expire by wall time.
  --from-beginning  the only faithful rebuild (from the oldest record the log retains).
  --from-offset / --from-time  state before that point is LOST: tables start empty and only
      later events are applied (e.g. right after a full count of every SKU). Keys that no
      later event touches keep their old records on the compacted output topics.
  --from-time scans record timestamps (when records were written to the log, not occurred_at):
      Tansu's offsets-for-times is imprecise. Prefer --from-offset when you know the offsets.
Availability versions stay strictly increasing per key: the topology takes a wall-clock floor
(microseconds since the epoch) for every version, so rebuilt records are sent above every
version sent before (as long as this machine's clock has not gone back).

Re-drive (--dlq): reads inventory.dlq from this command's committed position (group
<app>-dlq-redrive; a --from option overrides it), re-validates each record's original bytes as
`publish` does (and against the latest catalog), re-publishes those that now pass to
inventory.events, reports the others with their reason, and commits the position: a second
re-drive sends nothing again. Re-sent events already applied change nothing (idempotent ids)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inventory-streams",
        description="Event-driven available-to-sell inventory on Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run the domain core over a JSONL file, no broker")
    sim.add_argument("--catalog", required=True, help="catalog YAML (SPEC §4)")
    sim.add_argument("--events", required=True, help="events, one JSON object per line")
    sim.add_argument(
        "--explain",
        metavar="CHANNEL:CHANNEL_SKU",
        help="print that listing's explanation after the file instead (as `explain` does)",
    )
    sim.add_argument("--format", choices=["text", "json"], default="text", help="with --explain")
    sim.set_defaults(run=_simulate)

    ex = sub.add_parser(
        "explain",
        help="why a listing shows its availability: the formula with the numbers",
        description="Live (default): asks the reservation API (--api), which answers from the "
        "memory of the worker that owns each SKU, with the channel's token from CHANNEL_TOKENS; "
        "if it cannot (no token, not reachable) or with --committed, --catalog or --clock-date, "
        "from the SKU states "
        "the workers last committed and the catalog on inventory.catalog (or --catalog), "
        "backorders counted from today's date (or --clock-date). "
        "With --catalog and --events: from simulate's state after the file, at stream time.",
    )
    ex.add_argument("channel")
    ex.add_argument("channel_sku")
    ex.add_argument(
        "--catalog", help="catalog YAML (live default: the latest on inventory.catalog)"
    )
    ex.add_argument("--events", help="explain after simulating this JSONL file (no broker)")
    ex.add_argument(
        "--clock-date", help="live: count backorders from this date (default: today, UTC)"
    )
    ex.add_argument(
        "--api",
        metavar="URL",
        help="live: the reservation API to ask (default: API_URL, else http://127.0.0.1:API_PORT)",
    )
    ex.add_argument(
        "--committed",
        action="store_true",
        help="live: read the SKU states the workers last committed, without asking the API",
    )
    ex.add_argument("--format", choices=["text", "json"], default="text")
    ex.set_defaults(run=_explain)

    up = sub.add_parser("up", help="run the whole system in the foreground with a status view")
    up.add_argument("--catalog", help="catalog YAML (default: deploy/catalog.yaml)")
    up.add_argument("--workers", type=int, default=1, help="stream worker processes")
    up.add_argument("--duration", type=float, help="stop after this many seconds")
    up.add_argument("--data-dir", help="where workers keep logs and local state")
    up.add_argument(
        "--broker",
        choices=["auto", "kafka", "tansu"],
        help="embedded broker without KAFKA_BOOTSTRAP_SERVERS (default: EMBEDDED_BROKER, auto)",
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="also run channel emulators and drive a flash sale against them",
    )
    up.set_defaults(run=_up)

    pub = sub.add_parser("publish", help="validate a JSONL file and produce it to inventory.events")
    pub.add_argument("file")
    pub.set_defaults(run=_publish)

    tl = sub.add_parser("tail", help="print a topic's records as JSON lines")
    tl.add_argument("topic")
    tl.add_argument("--follow", "-f", action="store_true", help="keep waiting for new records")
    tl.add_argument("--limit", type=int, help="stop after this many records")
    tl.set_defaults(run=_tail)

    rc = sub.add_parser(
        "reconcile",
        help="audit another system's counts against the live state (drift report)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=RECONCILE_HELP,
    )
    rc.add_argument("snapshot", help="CSV: system,sku,location_or_channel,quantity,as_of")
    rc.add_argument("--threshold", type=int, default=0, help="units of difference tolerated")
    rc.add_argument(
        "--threshold-percent",
        type=float,
        default=0.0,
        help="difference tolerated, in percent of their count",
    )
    rc.add_argument(
        "--correct",
        action="store_true",
        help="publish their count as a stock-adjusted count for every drifting location row",
    )
    rc.add_argument("--format", choices=["text", "json"], default="text")
    rc.add_argument("--catalog", help="catalog YAML (default: the latest on inventory.catalog)")
    _add_progress_flag(rc)
    rc.set_defaults(run=_reconcile)

    rp = sub.add_parser(
        "replay",
        help="rebuild state and derived topics from the event log, or re-drive dead letters",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=REPLAY_HELP,
    )
    where = rp.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", action="store_true", help="the whole retained log")
    where.add_argument(
        "--from-offset",
        metavar="N|P:N,...",
        help="one offset for every partition, or per partition",
    )
    where.add_argument(
        "--from-time", metavar="ISO", help="first record written at or after this time"
    )
    rp.add_argument("--dlq", action="store_true", help="re-drive dead letters instead of a rebuild")
    rp.add_argument("--dry-run", action="store_true", help="--dlq: report, send nothing")
    rp.add_argument("--yes", action="store_true", help="confirm a (destructive) rebuild")
    rp.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for stopped workers' sessions to expire (default 30)",
    )
    rp.add_argument("--catalog", help="--dlq: catalog YAML to validate against (default: latest)")
    _add_progress_flag(rp)
    rp.set_defaults(run=_replay)

    rs = sub.add_parser("resync", help="push a channel's full current availability to it")
    rs.add_argument("channel")
    rs.add_argument("--catalog", help="catalog YAML with the channel's connector settings")
    _add_progress_flag(rs)
    rs.set_defaults(run=_resync)

    cn = sub.add_parser(
        "connect",
        help="run the sink connectors and the webhook receiver (what `up` runs beside the workers)",
    )
    cn.add_argument(
        "--catalog",
        help="catalog YAML with the channels' connector settings, fixed (default: the latest one "
        "on inventory.catalog, followed: channels added, changed or removed there get their "
        "sinks started, restarted or stopped)",
    )
    cn.add_argument("--host", default="0.0.0.0", help="the address the webhook receiver uses")
    cn.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here")
    cn.add_argument(
        "--report-every", type=float, default=30.0, help="seconds between status log lines"
    )
    cn.set_defaults(run=_connect)

    cat = sub.add_parser("catalog", help="publish a catalog YAML to inventory.catalog")
    cat.add_argument("file")
    cat.set_defaults(run=_catalog)

    tp = sub.add_parser("topics", help="create every topic (idempotent)")
    tp.add_argument("--catalog", help="catalog YAML whose channels get availability topics")
    tp.set_defaults(run=_topics)

    from connectors.sources.cli import add_import_parser

    add_import_parser(sub)

    wk = sub.add_parser("worker", help="run one stream worker (what `up` starts)")
    wk.add_argument(
        "--clock",
        choices=["wall", "stream"],
        default="wall",
        help="hold expiry by wall time, or by the largest occurred_at seen (replay)",
    )
    wk.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here")
    wk.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the address the metrics listen on (0.0.0.0 where a scraper on another host reads "
        "them, as in a container)",
    )
    wk.add_argument(
        "--api-port",
        type=int,
        default=0,
        help="also serve the reservation API on this port (needs CHANNEL_TOKENS); "
        "requests for SKUs this worker owns are answered without a second broker hop",
    )
    wk.add_argument("--api-host", default="0.0.0.0", help="the address the API listens on")
    wk.add_argument(
        "--api-url",
        help="where the other workers reach this worker's API (they pass it requests for the "
        "SKUs it owns); default http://127.0.0.1:PORT, or the --api-host",
    )
    wk.add_argument("--data-dir")
    wk.set_defaults(run=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except InventoryError as error:
        print(f"inventory-streams {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `tail ... | head`: the reader has what it wanted; Python would complain at exit otherwise
        with contextlib.suppress(OSError, ValueError):  # a stdout with no descriptor: nothing to do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
