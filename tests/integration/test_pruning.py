"""Live, the stages forget what simulate forgets: the same order and reservation records."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.core.models import event_to_json
from streams.simulate import run
from tests.core.builders import catalog, count, delta, ev
from tests.core.test_pruning import LATER, order, pick, request
from tests.integration.live import LiveSystem

pytestmark = pytest.mark.integration


def test_live_stages_forget_what_simulate_forgets(tmp_path: Path) -> None:
    events = [
        count("A", "wh", 10),
        count("B", "wh", 10),
        order("o1", 1, ("1", "A", 2)),
        pick("o1", "1", "A", 2, 2),  # o1 is done: forgotten with its line
        order("o2", 3, ("1", "A", 2), ("2", "B", 3)),
        pick("o2", "1", "A", 2, 4),  # o2 keeps its open line on B
        ev("order-cancelled", 5, order_id="o4"),  # its order never comes
        request("r1", 6),
        order("o6", 7, ("1", "A", 2), reservation_id="r1"),  # r1: confirmed, then a tombstone
        request("r2", 8, ttl_seconds=60),  # r2: expires, then a tombstone
        delta("B", "wh", 1, 60),  # r2's expiry, well before the day moves
        delta("A", "wh", 1, LATER),
        delta("B", "wh", 1, LATER + 1),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events))
    # live, holds expire on a timer of the reservation stage, not at the event that moves the
    # clock past them: the days after r2's expiry are published once it has expired
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    before.write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events[:-2]))
    after.write_text("".join(json.dumps(event_to_json(e)) + "\n" for e in events[-2:]))
    cat = catalog()
    with path.open("rb") as handle:
        engine, _, _ = run(cat, handle)
    expected = (
        {k: v.to_dict() for k, v in engine.orders.items()},
        {k: v.to_dict() for k, v in engine.reservations.items()},
    )
    assert sorted(expected[0]) == ["o2", "o6"]
    assert {k: (v["st"], v.get("l")) for k, v in expected[1].items()} == {
        "r1": ("confirmed", None),
        "r2": ("expired", None),
    }
    with LiveSystem(cat, tmp_path) as live:
        live.start_worker(0)
        live.publish(before, stepwise=True)
        deadline = time.monotonic() + 60
        while live.latest("inventory.reservation-decisions").get("r2", {}).get("status") != (
            "expired"
        ):
            assert time.monotonic() < deadline, "r2 did not expire"
            time.sleep(0.3)
        live.wait_idle()
        live.publish(after, stepwise=True)
        deadline = time.monotonic() + 60
        while True:
            got = (live.changelog("orders"), live.changelog("reservations"))
            if got == expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got == expected
