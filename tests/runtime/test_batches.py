"""take_batches: a batch ends when its window runs out, when it is full, or at once on an urgent
event (a reservation request a caller waits on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import faust

from streams.runtime.batches import take_batches

WINDOW = 2.0  # long, so that "at once" and "at the end of the window" cannot be confused


async def batches_of(
    values: list[str],
    max_: int,
    urgent: Callable[[Any], bool],
    wait: float,
    first_only: bool = False,
) -> list[tuple[list[str], float]]:
    """Put `values` through an agent that takes batches; each batch and when it came (s), after
    `wait` seconds, or as soon as one came with `first_only` (a loaded machine schedules the agent
    late: a fixed short wait failed a suite run while a benchmark shared the 2 cores)."""
    app = faust.App(f"batches-{time.monotonic_ns()}", store="memory://", web_enabled=False)
    seen: list[tuple[list[str], float]] = []
    started = [time.monotonic()]  # set again once the agent runs: its start is not the batch's

    @app.agent(app.topic("batches-in", value_type=str, value_serializer="raw"))
    async def agent(stream: faust.StreamT) -> None:
        async for batch in take_batches(stream, max_, WINDOW, urgent):
            seen.append(([e.value for e in batch], time.monotonic() - started[0]))

    async with agent.test_context() as running:
        started[0] = time.monotonic()
        for value in values:
            await running.put(value)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not (first_only and seen):
            await asyncio.sleep(0.01)
        return list(seen)  # before the agent stops (which hands over what it holds)


def is_now(event: Any) -> bool:
    return bool(event.value == "now")


async def test_an_urgent_event_ends_the_batch_at_once_with_what_came_before_it() -> None:
    seen = await batches_of(["a", "b", "now"], 100, is_now, wait=WINDOW / 2, first_only=True)
    assert [batch for batch, _ in seen] == [["a", "b", "now"]]
    assert seen[0][1] < WINDOW / 2


async def test_other_events_wait_for_the_end_of_the_window() -> None:
    seen = await batches_of(["a", "b"], 100, is_now, wait=0.5)
    assert seen == []  # still gathering
    seen = await batches_of(["a", "b"], 100, is_now, wait=WINDOW + 1.0)
    assert [batch for batch, _ in seen] == [["a", "b"]]
    assert seen[0][1] >= WINDOW / 2


async def test_a_full_batch_ends_at_once_and_the_rest_waits() -> None:
    seen = await batches_of(["a", "b", "c", "d"], 3, is_now, wait=0.5)
    assert [batch for batch, _ in seen] == [["a", "b", "c"]]


async def test_a_batch_whose_handling_raises_is_never_acknowledged() -> None:
    app = faust.App(f"batches-{time.monotonic_ns()}", store="memory://", web_enabled=False)
    acked: list[str] = []
    handled: list[list[str]] = []

    @app.agent(app.topic("batches-in", value_type=str, value_serializer="raw"))
    async def agent(stream: faust.StreamT) -> None:
        real_ack = stream.ack

        async def ack(event: Any) -> bool:
            acked.append(event.value)
            return await real_ack(event)

        stream.ack = ack  # type: ignore[method-assign]
        async for batch in take_batches(stream, 100, WINDOW, is_now):
            values = [e.value for e in batch]
            handled.append(values)
            if "boom" in values:
                raise OSError("the table store rejected a write")

    async with agent.test_context() as running:
        for values in (["a", "now"], ["boom", "now"]):
            for value in values:
                await running.put(value)
            await asyncio.sleep(0.3)
    assert handled[:2] == [["a", "now"], ["boom", "now"]]
    assert acked == ["a", "now"]  # the first batch only: the second raised
