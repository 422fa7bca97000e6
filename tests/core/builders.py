"""Compact builders for events in tests: times are minutes after a fixed start."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.core.catalog import Catalog, load_catalog
from streams.core.models import Event, parse_event
from streams.runners.local import Collector, Engine

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
_ids = itertools.count()


def ts(minute: float) -> str:
    return (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")


def ev(kind: str, minute: float = 0, event_id: str | None = None, **fields: Any) -> Event:
    return parse_event(
        {
            "event_id": event_id or f"t{next(_ids)}",
            "type": kind,
            "occurred_at": ts(minute),
            "source": "test",
            **fields,
        }
    )


def delta(sku: str, loc: str, qty: int, minute: float = 0, **kw: Any) -> Event:
    return ev("stock-adjusted", minute, sku=sku, location=loc, mode="delta", quantity=qty, **kw)


def count(sku: str, loc: str, qty: int, minute: float = 0, **kw: Any) -> Event:
    return ev("stock-adjusted", minute, sku=sku, location=loc, mode="count", quantity=qty, **kw)


def catalog(**overrides: Any) -> Catalog:
    data: dict[str, Any] = {
        "locations": [{"id": "wh"}, {"id": "store"}],
        "channels": [
            {
                "id": "web",
                "type": "webhook",
                "locations": ["wh", "store"],
                "allocation_percent": 100,
                "buffer_units": 0,
            },
            {
                "id": "amz",
                "type": "amazon",
                "locations": ["wh"],
                "allocation_percent": 50,
                "buffer_units": 1,
                "backorder_horizon_days": 10,
            },
        ],
        "safety_stock": [],
        "listings": [
            {"channel": "web", "channel_sku": "A", "components": [{"sku": "A", "quantity": 1}]},
            {"channel": "web", "channel_sku": "A-6PK", "components": [{"sku": "A", "quantity": 6}]},
            {
                "channel": "web",
                "channel_sku": "KIT",
                "components": [{"sku": "A", "quantity": 2}, {"sku": "B", "quantity": 1}],
            },
            {"channel": "web", "channel_sku": "B", "components": [{"sku": "B", "quantity": 1}]},
            {"channel": "amz", "channel_sku": "amz-A", "components": [{"sku": "A", "quantity": 1}]},
        ],
    }
    data.update(overrides)
    return load_catalog(data)


def run(*events: Event, cat: Catalog | None = None) -> tuple[Engine, Collector]:
    """The core's engine after `events` in order, and what it published."""
    out = Collector()
    engine = Engine(cat or catalog(), out)
    for event in events:
        engine.process(event)
    return engine, out
