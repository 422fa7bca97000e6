"""What every feed of the API shares: a background thread reading topics with a consumer of its own.

The consumer joins no group (assign() only) and commits nothing, so any number of API processes
read the same topics side by side; a feed that stops says why in `error`, for /health.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Message

from streams.client import kafka_config


def groupless_consumer(bootstrap: str, fetch_wait_ms: int) -> Consumer:
    """A consumer that joins no group (assign() only) and commits nothing."""
    return Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"reservation-api-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # Tansu answers a fetch that finds nothing only after this wait, so it bounds the
            # latency a quiet moment adds; each empty fetch costs the broker CPU, though
            "fetch.wait.max.ms": fetch_wait_ms,
            "log_level": 0,
        }
    )


def arrived(consumer: Consumer, timeout: float) -> list[Message]:
    """What has arrived, waiting for the first record only (consume(n, t) waits for n or t)."""
    first = consumer.poll(timeout)
    return [] if first is None else [first, *consumer.consume(500, 0)]


class FeedThread:
    """A background reader thread: launched once, stopped by setting its halt flag."""

    def __init__(self) -> None:
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def _launch(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
