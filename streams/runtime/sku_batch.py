"""The SKU stage's changes between two flushes: each SKU's state as its commands left it, held in
memory and derived once at the flush (positions, availability, component values), then written.

A SKU a batch changes many times costs one derivation and one table write per flush; what the
commands themselves cause (alerts, answers, forgotten lines) goes out at once (`perform`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from streams.core.models import Alert, Availability, Position
from streams.core.sku import SkuOutcome
from streams.core.state import SkuState
from streams.runtime.clock import Worker
from streams.stages import skus as skus_stage
from streams.stages.effects import Command, Effects

# per SKU changed: its state, the locations to derive, the time and id of the command that last
# changed it (the records' as_of and cause), and whether every value is sent again
Entry = tuple[SkuState, set[str], datetime, str, bool]


class Loads(Protocol):
    """A SKU's record from its table (SkuTable.load)."""

    def load(self, key: bytes) -> SkuState | None: ...


class SkuBatch:
    """The SKU states changed since the last flush (`pending`, shared by the stage's batches and
    take_now's), and per SKU the Kafka timestamp of the first input that touched it."""

    def __init__(
        self,
        table: Loads,
        worker: Worker,
        *,
        perform: Callable[[Effects], None],
        raised: Callable[[Iterable[Alert]], None],
        resend: Callable[[bytes], bool],
        position: Callable[[Position], None],
        availability: Callable[[Availability, float | None], None],
        to_stage: Callable[[str, Command, float], None],
        written: Callable[[bytes, SkuState], None],
    ) -> None:
        """`perform` performs a command's effects now (alerts, commands); `raised` counts its
        alerts; `resend` says whether the replay window has a SKU's values sent again
        (ReplayWindow.resend_sku). At the flush, `position` and `availability` (with the
        timestamp of the input behind it, None for none) send a SKU's records, `to_stage` its
        component values (with that timestamp, 0 for none) and `written` hands its state to the
        table."""
        self._table = table
        self._worker = worker
        self._perform = perform
        self._raised = raised
        self._resend = resend
        self._position = position
        self._availability = availability
        self._to_stage = to_stage
        self._written = written
        self.pending: dict[bytes, Entry] = {}
        # per SKU touched since the last flush, the Kafka timestamp of the first input touching it
        self.caused_at: dict[bytes, float] = {}
        self.input_time = 0.0  # the timestamp of the record being handled
        self.out = Effects()  # the SKU stage's effects, performed at once: one object, reused

    def state(self, sku: str) -> SkuState:
        """The SKU's state as the stage applies its next command to it."""
        key = sku.encode()
        entry = self.pending.get(key)
        return entry[0] if entry else self._stored(sku, key)

    def _stored(self, sku: str, key: bytes) -> SkuState:
        """The SKU's state as its table holds it, an empty one if it has none."""
        found = self._table.load(key)
        return found or SkuState(sku, catalog_version=self._worker.catalog.version)

    def apply(self, command: Any, answer: bool = True) -> SkuOutcome:
        """A command to the SKU stage; its SKU is derived at the batch's end (flush)."""
        key = command.sku.encode()
        pending = self.pending
        entry = pending.get(key)
        state = entry[0] if entry else self._stored(command.sku, key)
        out = self.out
        outcome = skus_stage.handle_sku(state, command, self._worker.catalog, out, answer)
        if out.commands or out.alerts:
            self._perform(out)
            if out.alerts:
                self._raised(out.alerts)
            out.clear()
        if key not in self.caused_at:
            self.caused_at[key] = self.input_time
        locations = entry[1] if entry else set()
        locations |= outcome.touched
        resend = (entry[4] if entry else False) or outcome.duplicate
        if self._resend(key):
            resend = True
        pending[key] = (state, locations, command.occurred_at, command.event_id, resend)
        return outcome

    def flush(self) -> None:
        """Every SKU touched since the last flush derived (skus_stage.derive), its records sent and
        its state written; then none is pending."""
        catalog = self._worker.catalog
        floor = time.time_ns() // 1000  # versions above any sent before a crash (see derive)
        today = self._worker.clock.today()
        out = self.out
        caused_at = self.caused_at
        for key, (state, locations, as_of, cause, resend) in self.pending.items():
            skus_stage.derive(state, locations, as_of, cause, catalog, out, today, resend, floor)
            for record in out.positions:
                self._position(record)
            origin = caused_at.pop(key, None)
            for listing in out.availability:
                self._availability(listing, origin)
            for listing_key, update in out.commands:
                # a re-derivation has no input behind it: 0, the send time
                self._to_stage(listing_key, update, origin or 0.0)
            out.clear()
            self._written(key, state)
        self.pending.clear()
        caused_at.clear()
