"""Sink connectors: every channel gets the newest availability of each of its SKUs, within its
rate limit, never older than what it acknowledged, with offsets committed after acknowledgement.

Entry points:

- ``await run_sink(channel, settings, bootstrap, stop)`` delivers ``availability.<channel>`` until
  the ``asyncio.Event`` ``stop`` is set (one task per channel, in the caller's event loop).
- ``resync(channel, settings, bootstrap)`` (blocking; ``resync_async`` in a loop) pushes the full
  current availability of a channel, read from its compacted topic.
- ``make_sink(channel, metrics)`` builds the adapter for a channel's ``type``: ``shopify``,
  ``amazon``, anything else a signed webhook. Connector settings are extra fields on the catalog
  channel (see ShopifyConfig, AmazonConfig, WebhookConfig).
"""

from connectors.sinks.base import (
    BulkSink,
    ChannelUnavailable,
    InvalidSinkConfig,
    Outcome,
    Sink,
    SinkError,
)
from connectors.sinks.engine import SinkEngine
from connectors.sinks.metrics import SinkMetrics
from connectors.sinks.runner import (
    ResyncReport,
    make_sink,
    read_latest,
    resync,
    resync_async,
    run_sink,
)

__all__ = [
    "BulkSink",
    "ChannelUnavailable",
    "InvalidSinkConfig",
    "Outcome",
    "ResyncReport",
    "Sink",
    "SinkEngine",
    "SinkError",
    "SinkMetrics",
    "make_sink",
    "read_latest",
    "resync",
    "resync_async",
    "run_sink",
]
