"""What every source shares: its errors, stable event ids, and the tally of every input.

Guarantee: an event id is a pure function of the source's own identifiers, so the same business fact
sent twice (a replayed webhook, a file imported again) carries the same `event_id` and the stream
core applies it once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

from streams.errors import InventoryError

MAX_REASONS = 20  # a report keeps the first reasons as examples; the DLQ keeps all of them


class SourceError(InventoryError):
    """A source connector cannot do its job as configured."""


class InvalidSourceConfig(SourceError):
    """A sources file, mapping file or webhook secret is missing or wrong."""


def event_id(source: str, *parts: object) -> str:
    """`source:part:part...`, the source's own identifiers in order, readable in a DLQ or a log."""
    return ":".join([source, *(str(part) for part in parts)])


def content_id(*values: str) -> str:
    """A short, stable digest of a record's content, for exports that carry no id of their own."""
    digest = hashlib.blake2b("\x1f".join(values).encode("utf-8"), digest_size=10)
    return digest.hexdigest()


@dataclass
class Tally:
    """Every input a source received ends in exactly one bucket: `received == accounted`."""

    received: int = 0
    produced: int = 0  # inputs that became one or more events on inventory.events
    dead_lettered: int = 0  # inputs written to inventory.dlq with their reason
    duplicates: int = 0  # inputs seen before (same webhook id, same document line): no-op
    ignored: int = 0  # valid inputs with nothing to map (e.g. a refund without restock)
    events: int = 0  # events produced (one input can yield several, e.g. a refund)
    reasons: list[str] = field(default_factory=list)  # first MAX_REASONS dead-letter reasons

    @property
    def accounted(self) -> int:
        return self.produced + self.dead_lettered + self.duplicates + self.ignored

    def note(self, reason: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def add(self, other: Tally) -> None:
        for f in fields(self):
            if f.name == "reasons":
                for reason in other.reasons:
                    self.note(reason)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
