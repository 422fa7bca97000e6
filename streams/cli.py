"""The `inventory-streams` command line (SPEC §6): one subcommand per job, errors as one clear line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from streams.errors import InventoryError


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
