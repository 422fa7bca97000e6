"""Telling reservation decisions: a decision goes to its caller (inventory.reservation-decisions
and the API waiting in this process) only once the table records that made it are on the broker,
in the order made, one round at a time.

Told before, a decision could be made again after a crash, differently: the request is
redelivered, and a hold's expiry or release appended meanwhile, or commands of another partition,
reach the SKU stage before it this time (a 409 became a hold; once a 201 a rejection). With the
SKU record on the changelog, a restarted worker knows the id and answers with the reservation's
status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from streams.core.reservations import ReservationState

log = logging.getLogger(__name__)

LocalDecisions = Callable[[list[dict[str, Any]]], None]


class Settles(Protocol):
    """The table writes a decision waits for (DeferredWrites)."""

    drops: int

    async def settle(self, drops: int) -> bool: ...


class DecisionTeller:
    """The decisions of the stage's batches: due (made in a batch not flushed yet), untold
    (flushed, their records on their way to the broker), then told by a round (tell)."""

    def __init__(
        self,
        writes: Settles,
        *,
        publish: Callable[[str, bytes], None],
        poll: Callable[[], None],
        local: Callable[[], LocalDecisions | None],
        unflushed: Callable[[], bool],
        flush: Callable[[], None],
        stop: Callable[[], None],
    ) -> None:
        """`publish` sends a decision to inventory.reservation-decisions and `poll` serves the
        producer; `local` is the reservation API served by this worker, if any, read at each
        round; `unflushed` says whether a batch of take_now waits for its flush, which `flush`
        does (the stage's batch of no record); `stop` ends the process (stop_at_once)."""
        self._writes = writes
        self._publish = publish
        self._poll = poll
        self._local = local
        self._unflushed = unflushed
        self._flush = flush
        self._stop = stop
        self._due: list[tuple[str, bytes]] = []  # sent after the batch's commands (see decide)
        # decisions made and flushed, not yet told: their records are on their way to the broker
        self._untold: list[tuple[str, bytes]] = []
        self._untold_since = 0  # writes.drops when the first of them was made (see settle)
        self._telling: asyncio.Task[None] | None = None  # the round in flight (see tell)

    @property
    def due(self) -> bool:
        """Decisions made in a batch whose outputs are not flushed yet."""
        return bool(self._due)

    def decide(self, state: ReservationState) -> None:
        """Tell the caller, after this batch's commands: the reservation's record goes first, so a
        release the caller sends on reading the decision comes after it. Encoded now: the state
        may change again later in the batch, and each decision says what it was when made."""
        self._due.append((state.reservation_id, orjson.dumps(state.decision())))

    def start_for_due(self) -> bool:
        """A batch left unflushed (take_now): a round for its decisions if none is in flight (the
        round flushes the batch first); False when there is nothing to start."""
        if self._due and self._telling is None:
            self.tell_soon()
            return True
        return False

    def flushed(self) -> None:
        """The batch's outputs are flushed: its decisions are told by the next round."""
        if self._due:
            if not self._untold:
                self._untold_since = self._writes.drops
            self._untold.extend(self._due)
            self._due.clear()
            self.tell_soon()

    def tell_soon(self) -> None:
        if self._telling is None:
            self._telling = asyncio.ensure_future(self.tell())

    async def tell(self) -> None:
        """One round: tell decisions once the table records that made them are on the broker.

        A round waits for one acknowledgement from the broker, two on Tansu
        (DeferredWrites.settle); the decisions made meanwhile go with the next round, one round
        at a time. (Two in flight, a
        round writing while the one before waits, was slower on bench/reservations.py's flash
        sale: p50 59 ms against 45, the worker spending more of its CPU on the hot SKU's record.)
        """
        try:
            if self._unflushed() or self._due:  # take_now's batch, not flushed yet
                self._flush()
            if not self._untold:
                return
            batch = list(self._untold)
            self._untold.clear()
            if not await self._writes.settle(self._untold_since):
                log.warning(
                    "%d decisions not told: records behind them went to another worker, which "
                    "decides the requests again",
                    len(batch),
                )
                return
            for reservation_id, decision in batch:
                self._publish(reservation_id, decision)
            self._poll()
            local = self._local()
            if local is not None:
                local([orjson.loads(decision) for _, decision in batch])
        except Exception:
            # a changelog record not stored: the decisions stay untold, and the commit would
            # fail the same way
            self._stop()
        finally:
            self._telling = None
            if self._untold or self._due:
                self.tell_soon()
