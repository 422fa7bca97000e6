"""The `inventory-streams` CLI (SPEC §6): one subcommand per job, errors as one clear line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from streams.errors import InventoryError

if TYPE_CHECKING:
    from streams.settings import Settings


def _simulate(args: argparse.Namespace) -> int:
    from streams.simulate import read_catalog, simulate

    catalog = read_catalog(Path(args.catalog))
    try:
        with open(args.events, "rb") as handle:
            result = simulate(catalog, handle)
    except OSError as error:
        raise InventoryError(f"cannot read events {args.events}: {error.strerror}") from None
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _settings(args: argparse.Namespace) -> Settings:
    from streams.settings import get_settings

    settings = get_settings()
    if getattr(args, "data_dir", None):
        settings = settings.model_copy(update={"data_dir": Path(args.data_dir)})
    return settings


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap_servers:
        raise InventoryError("KAFKA_BOOTSTRAP_SERVERS is not set (or run `inventory-streams up`)")
    return str(settings.kafka_bootstrap_servers)


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run_worker

    settings = _settings(args)
    run_worker(settings, _bootstrap(settings), clock=args.clock, metrics_port=args.metrics_port)
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
    return 0


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
    report = resync(channel, settings, _bootstrap(settings))
    print(json.dumps(dataclasses.asdict(report), default=str))
    return 0


def _up(args: argparse.Namespace) -> int:
    from streams.runtime.supervisor import run_up
    from streams.simulate import read_catalog

    settings = _settings(args)
    catalog = read_catalog(Path(args.catalog) if args.catalog else settings.catalog_file)
    run_up(settings, catalog, workers=args.workers, duration=args.duration, demo=args.demo)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inventory-streams",
        description="Event-driven available-to-sell inventory on Kafka.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="run the domain core over a JSONL file, no broker")
    sim.add_argument("--catalog", required=True, help="catalog YAML (SPEC §4)")
    sim.add_argument("--events", required=True, help="events, one JSON object per line")
    sim.set_defaults(run=_simulate)

    up = sub.add_parser("up", help="run the whole system in the foreground with a status view")
    up.add_argument("--catalog", help="catalog YAML (default: deploy/catalog.yaml)")
    up.add_argument("--workers", type=int, default=1, help="stream worker processes")
    up.add_argument("--duration", type=float, help="stop after this many seconds")
    up.add_argument("--data-dir", help="where workers keep logs and local state")
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

    rs = sub.add_parser("resync", help="push a channel's full current availability to it")
    rs.add_argument("channel")
    rs.add_argument("--catalog", help="catalog YAML with the channel's connector settings")
    rs.set_defaults(run=_resync)

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
    wk.add_argument("--metrics-port", type=int, default=0)
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


if __name__ == "__main__":
    sys.exit(main())
