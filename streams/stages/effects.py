"""What a stage asks its runner to do, collected in the order the stage decided it.

A stage reads and writes its own table through `Table` (the runner's storage: a Faust table
whose writes reach the changelog at the next commit, or a dict) and leaves everything else in an
`Effects`: commands to other stages by key, alerts, decisions, positions, listing records, dead
letters.
Within each kind the order is the stage's; a runner keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from streams.core.derive import ComponentUpdate
from streams.core.models import Alert, Availability, OrderCreated, Position
from streams.core.orders import Confirmation
from streams.core.reservations import ReservationDecided, ReservationState
from streams.core.retention import LinesForgotten
from streams.core.sku import HoldResult, SkuCommand

K = TypeVar("K", contravariant=True)
KT = TypeVar("KT")
V = TypeVar("V")

# what a stage sends another: a SKU's command, an order's confirmation or a SKU's answer to its
# reservation (or a request the SKU decided), the lines a SKU forgot to their order, a SKU's
# component values to its bundles' and kits' listings
Command = (
    SkuCommand | Confirmation | HoldResult | ReservationDecided | LinesForgotten | ComponentUpdate
)


class Table(Protocol[K, V]):
    """A stage's table as the stage sees it: the record of one key, read and written."""

    def get(self, key: K) -> V | None: ...
    def put(self, key: K, value: V) -> None: ...
    def delete(self, key: K) -> None: ...


class MemoryTable(dict[KT, V]):
    """A table in memory (a local runner, tests): a dict with the stages' put and delete."""

    def put(self, key: KT, value: V) -> None:
        self[key] = value

    def delete(self, key: KT) -> None:
        self.pop(key, None)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the stage cannot handle: why, in words a person understands, and who sent it."""

    reason: str
    source: str = "unknown"


@dataclass(slots=True)
class Effects:
    """One record's effects. `decisions` are reservation records as decided, to be told to the
    caller in this order (each after the commands made with it); the last two fields are for
    the runner's counts."""

    commands: list[tuple[str, Command]] = field(default_factory=list)  # (stage key, command)
    alerts: list[Alert] = field(default_factory=list)
    decisions: list[ReservationState] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    availability: list[Availability] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    new_order: OrderCreated | None = None  # an order seen for the first time: its lines count
    decided: str | None = None  # the status a pending reservation was decided with, now

    def clear(self) -> None:
        """Forget what was performed: the object is used again for the next record."""
        self.commands.clear()
        self.alerts.clear()
        self.decisions.clear()
        self.positions.clear()
        self.availability.clear()
        self.dead_letters.clear()
        self.new_order = None
        self.decided = None
