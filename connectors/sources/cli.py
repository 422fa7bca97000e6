"""`inventory-streams import csv|pos FILE... --mapping M.yaml`: batch files into inventory.events.

Exit status: 0 when every record was produced (or the file was imported before), 1 when the import
completed but some records were dead-lettered (listed on stdout), 2 on an error (the CLI's own).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from connectors.sources.batch import ImportReport, import_csv
from connectors.sources.ledger import ImportLedger
from connectors.sources.mapping import load_mapping
from connectors.sources.pos import import_pos
from streams.runtime.producer import SourceProducer
from streams.runtime.running import cluster_dir, resolve_bootstrap
from streams.runtime.topics import DLQ, EVENTS, ensure_topics, topic_specs
from streams.settings import Settings, get_settings


def add_import_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add `import` (with `csv` and `pos`) to the CLI's subparsers; each sets `run`."""
    parser = subparsers.add_parser(
        "import",
        help="import batch files (ERP/WMS CSV exports, POS uploads) into inventory.events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="import_kind", required=True)
    for name, help_text in (
        ("csv", "CSV exports: adjustments, cycle counts, receipts, inbound schedules"),
        ("pos", "POS offline uploads (JSON Lines of transactions)"),
    ):
        sub = kinds.add_parser(name, help=help_text)
        sub.add_argument("files", nargs="+", type=Path, help="files to import, in order")
        sub.add_argument("--mapping", required=True, type=Path, help="the source's mapping YAML")
        sub.add_argument(
            "--force", action="store_true", help="import files the ledger says were imported"
        )
        sub.add_argument(
            "--no-ledger", action="store_true", help="neither consult nor update the ledger"
        )
        sub.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        sub.add_argument("--json", action="store_true", help="one JSON report per file")
        sub.set_defaults(run=run_import)
    return parser


def run_import(
    args: argparse.Namespace,
    settings: Settings | None = None,
    *,
    events_topic: str = EVENTS,
    dlq_topic: str = DLQ,
) -> int:
    """Import `args.files` in order; the status of the module docstring."""
    settings = settings or get_settings()
    bootstrap = resolve_bootstrap(settings)
    mapping = load_mapping(args.mapping)
    specs = {spec.name: spec for spec in topic_specs(settings, [])}
    ensure_topics(
        bootstrap,
        [
            dataclasses.replace(specs[EVENTS], name=events_topic),
            dataclasses.replace(specs[DLQ], name=dlq_topic),
        ],
    )
    # the ledger of what this cluster was given: a fresh broker gets every file again
    ledger = (
        None
        if args.no_ledger
        else ImportLedger(cluster_dir(settings, bootstrap) / "imports" / "ledger.json")
    )
    importer = import_pos if args.import_kind == "pos" else import_csv
    producer = SourceProducer(
        bootstrap, settings=settings, events_topic=events_topic, dlq_topic=dlq_topic
    )
    status = 0
    try:
        for path in args.files:
            report = importer(
                path,
                mapping,
                producer,
                progress=not args.no_progress and sys.stderr.isatty(),
                ledger=ledger,
                force=args.force,
            )
            _print(report, as_json=args.json)
            if report.tally.dead_lettered:
                status = 1
    finally:
        producer.close()
    return status


def _print(report: ImportReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json()))
        return
    print(report.summary())
    for reason in report.tally.reasons:
        print(f"  dead-lettered: {reason}")
    more = report.tally.dead_lettered - len(report.tally.reasons)
    if more > 0:
        print(f"  ... and {more:,} more on {DLQ} (`inventory-streams tail {DLQ}`)")
