"""Source connectors: webhooks, batch files and POS uploads become SPEC §2 events on
inventory.events, with nothing lost: every input ends as an acknowledged event, a dead letter on
inventory.dlq (original bytes, source, reason), or a counted duplicate/ignored input. Event ids are
built from the source's own identifiers, so a replay or a re-import changes nothing downstream.

Entry points:

- ``SourceProducer(bootstrap)``: the idempotent (acks=all), bounded producer every source uses.
- ``make_app(settings, producer, sources=..., catalog=...)`` -> aiohttp Application with
  ``POST /webhooks/{source}``; ``await start_webhook_receiver(settings, producer, ...)`` serves it
  on ``settings.webhook_port`` inside a running loop (``up``); ``run_webhook_receiver(settings)``
  in the foreground. Sources come from ``load_sources(sources.yaml, settings, catalog)`` or
  ``default_sources(settings, catalog)``; secrets always from ``settings.webhook_secrets``.
- ``import_csv(path, mapping_path, producer, progress=True, ledger=None) -> ImportReport`` and
  ``import_pos(path, mapping_path, producer, ...)``; ``add_import_parser(subparsers)`` adds
  ``inventory-streams import csv|pos FILE... --mapping M.yaml``.
- ``SourceMetrics.for_registry(registry)``: counters labelled by source.
"""

from connectors.sources.base import InvalidSourceConfig, SourceError, Tally
from connectors.sources.batch import ImportReport, import_csv
from connectors.sources.cli import add_import_parser
from connectors.sources.ledger import ImportLedger
from connectors.sources.mapping import SourceMapping, load_mapping
from connectors.sources.metrics import SourceMetrics
from connectors.sources.pos import import_pos
from connectors.sources.webhook import (
    DeliveryLog,
    WebhookSource,
    default_sources,
    load_sources,
    make_app,
    run_webhook_receiver,
    start_webhook_receiver,
)
from streams.errors import Backpressure, DeliveryFailed
from streams.runtime.producer import DeliveryCounts, SourceProducer

__all__ = [
    "Backpressure",
    "DeliveryCounts",
    "DeliveryFailed",
    "DeliveryLog",
    "ImportLedger",
    "ImportReport",
    "InvalidSourceConfig",
    "SourceError",
    "SourceMapping",
    "SourceMetrics",
    "SourceProducer",
    "Tally",
    "WebhookSource",
    "add_import_parser",
    "default_sources",
    "import_csv",
    "import_pos",
    "load_mapping",
    "load_sources",
    "make_app",
    "run_webhook_receiver",
    "start_webhook_receiver",
]
