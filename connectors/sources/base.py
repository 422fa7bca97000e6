"""What every source shares: its errors, stable event ids, and the tally of every input.

Guarantee: an event id is a pure function of the source's own identifiers, so the same business fact
sent twice (a replayed webhook, a file imported again) carries the same `event_id` and the stream
core applies it once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields

from streams.core.models import Event, parse_event
from streams.errors import InvalidEvent, InventoryError

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


def parse_json_event(raw: bytes) -> Event:
    """One SPEC event from JSON bytes, or InvalidEvent; never another exception for bad input."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidEvent(f"malformed JSON: {error}") from None
    except RecursionError:
        raise InvalidEvent("malformed JSON: nested too deeply") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind is not None and not isinstance(kind, str):
        # parse_event looks the type up in a dict: a list or object there must not escape as
        # a TypeError
        raise InvalidEvent(f"type: must be a string, got {type(kind).__name__}")
    return parse_event(data)


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
