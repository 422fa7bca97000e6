"""A Faust stream as batches that end on a timer, when full, or at once when a caller waits.

Faust's `Stream.take_events(max_, within)` ends a batch every `within` seconds or at `max_`
events; a reservation request then waits for the window like any stock count. `take_batches` is
the same loop (faust-streaming 0.15's `take_events`, which it follows line by line) with one more
way out: an event for which `urgent(event)` holds ends the batch as soon as it is buffered.
Guarantee, as in Faust: an event is acknowledged (its offset committable) only after the batch
that holds it has been handled, i.e. after the consumer of the generator asked for the next one;
a batch whose handling raised is never acknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import faust
from faust.types import EventT

from streams.runtime.faust_private import remove_processor, start_passive


async def take_batches(
    stream: faust.StreamT,
    max_: int,
    within: float,
    urgent: Callable[[EventT], bool] = lambda _event: False,
) -> AsyncIterator[Sequence[EventT]]:
    s = cast("faust.Stream[Any]", stream)  # the concrete stream every agent receives
    events: list[EventT] = []
    full = asyncio.Event()  # the batch should end now (full or urgent)
    consumed = asyncio.Event()  # the batch was handled: the drainer may go on
    consuming: asyncio.Future[None] | None = None  # set while a batch is being handled
    enable_acks = s.enable_acks

    async def add_to_batch(value: Any) -> Any:
        # runs in the stream's passive drainer, once per event, before the agent sees a batch
        nonlocal consuming
        try:
            if consuming is not None:
                try:
                    await consuming
                finally:
                    consuming = None
            event = s.current_event
            if event is None:
                raise RuntimeError("take_batches found current_event is None")
            events.append(event)
            if len(events) >= max_ or urgent(event):
                full.set()
            if len(events) >= max_:
                consumed.clear()
                await s.wait(consumed)  # type: ignore[arg-type]  # never more than max_
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            s.log.exception("Error adding to batch: %r", exc)
            await s.crash(exc)
        return value

    s.enable_acks = False  # acknowledged below, after the batch was handled
    s.add_processor(add_to_batch)
    start_passive(s, aiter(s.channel))
    try:
        while not s.should_stop:
            await s.wait_for_stopped(full, timeout=within)  # type: ignore[arg-type]
            if not events:
                full.clear()
                continue
            consuming = asyncio.get_running_loop().create_future()
            handled = False
            try:
                yield list(events)
                handled = True  # the consumer asked for the next batch: this one is done
            finally:
                batch, events[:] = list(events), []
                if handled:  # a batch whose handling raised stays unacknowledged: redelivered
                    for event in batch:
                        await s.ack(event)
                consuming.set_result(None)
                full.clear()
                consumed.set()
    finally:
        s.enable_acks = enable_acks
        remove_processor(s, add_to_batch)
