"""An in-memory Kafka producer with confluent's produce/poll/flush contract; readers for its log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.codec import make_codec
from streams.core.models import DeadLetter
from streams.runtime.producer import SourceProducer
from streams.runtime.topics import DLQ, EVENTS

CODEC = make_codec()


@dataclass
class FakeMessage:
    _topic: str
    _key: bytes | None
    _value: bytes
    _headers: list[tuple[str, str | bytes | None]] | None = None
    _offset: int = -1  # set when the fake broker stores it: its place in the log

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, str | bytes | None]] | None:
        return self._headers


@dataclass
class FakeError:
    reason: str

    def str(self) -> str:
        return self.reason


@dataclass
class FakeKafka:
    """Buffers up to `capacity` records (then BufferError, like librdkafka); poll() delivers them.

    `fail` decides per message whether the broker refuses it (a delivery report with an error).
    """

    capacity: int = 1_000_000
    fail: Callable[[FakeMessage], bool] = lambda _msg: False
    log: list[FakeMessage] = field(default_factory=list)  # acknowledged, in order
    _queue: list[tuple[FakeMessage, Any]] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        on_delivery: Any = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity:
                raise BufferError("Local: Queue full")
            self._queue.append((FakeMessage(topic, key, value or b"", headers), on_delivery))
            self._lock.notify_all()

    def poll(self, timeout: float = 0.0) -> int:
        with self._lock:
            if not self._queue and timeout > 0:
                self._lock.wait(timeout)  # like librdkafka: block until a report or the timeout
            batch, self._queue = self._queue, []
        for msg, callback in batch:
            failed = self.fail(msg)
            if not failed:
                msg._offset = len(self.log)
                self.log.append(msg)
            if callback is not None:
                callback(FakeError("Broker: refused") if failed else None, msg)
        return len(batch)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0

    def __len__(self) -> int:
        return len(self._queue)

    # ---- reading back ----

    def count(self, topic: str) -> int:
        return sum(1 for m in self.log if m.topic() == topic)

    def events(self) -> list[Any]:
        return [CODEC.decode(m.value(), EVENTS) for m in self.log if m.topic() == EVENTS]

    def dead_letters(self) -> list[DeadLetter]:
        out = [CODEC.decode(m.value(), DLQ) for m in self.log if m.topic() == DLQ]
        assert all(isinstance(letter, DeadLetter) for letter in out)
        return out  # type: ignore[return-value]


def fake_producer(**kwargs: Any) -> tuple[SourceProducer, FakeKafka]:
    kafka = FakeKafka(**kwargs)
    return SourceProducer(client=kafka, codec=CODEC), kafka
