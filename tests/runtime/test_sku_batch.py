"""The SKU stage's changes between flushes (SkuBatch): a SKU changed many times is derived and
written once per flush, from its state as the batch left it; what a command causes goes out at
once; availability carries the time of the first input behind it."""

from __future__ import annotations

from typing import Any

from streams.core.reservations import start
from streams.core.state import SkuState
from streams.runtime.clock import Clock
from streams.runtime.sku_batch import SkuBatch
from streams.stages.effects import Effects
from tests.core.builders import T0, catalog, count, delta, ev


class Worker:
    def __init__(self) -> None:
        self.catalog = catalog()
        self.clock = Clock("stream", stream_time=T0)


class Runner:
    """What the batch hands its effects to, recorded."""

    def __init__(self, stored: dict[bytes, SkuState] | None = None, resend: bool = False) -> None:
        self.stored = stored or {}
        self.resend = resend
        self.performed: list[list[tuple[str, str]]] = []
        self.alerts: list[str] = []
        self.positions: list[tuple[str, str, int]] = []
        self.availability: list[tuple[str, int, float | None]] = []
        self.to_stage: list[tuple[str, str, float]] = []
        self.written: list[tuple[bytes, SkuState]] = []
        self.batch = SkuBatch(
            self,
            Worker(),
            perform=self.perform,
            raised=lambda alerts: self.alerts.extend(a.type for a in alerts),
            resend=lambda _key: self.resend,
            position=lambda p: self.positions.append((p.sku, p.location, p.on_hand)),
            availability=lambda a, at: self.availability.append((a.channel_sku, a.available, at)),
            to_stage=lambda key, update, at: self.to_stage.append((key, type(update).__name__, at)),
            written=self.write,
        )

    def load(self, key: bytes) -> SkuState | None:
        return self.stored.get(key)

    def write(self, key: bytes, state: SkuState) -> None:
        """The state to its table, as DeferredWrites.put: the next flush's batch loads it."""
        self.written.append((key, state))
        self.stored[key] = state

    def perform(self, out: Effects) -> None:
        self.performed.append([(key, type(command).__name__) for key, command in out.commands])

    def apply(self, command: Any, at: float = 100.0, answer: bool = True) -> Any:
        self.batch.input_time = at
        return self.batch.apply(command, answer)


def test_a_sku_changed_twice_is_derived_and_written_once_at_the_flush() -> None:
    runner = Runner()
    runner.apply(count("A", "wh", 5), at=100.0)
    runner.apply(count("A", "store", 2, 1), at=101.0)
    assert runner.positions == [] and runner.written == []  # nothing before the flush
    runner.batch.flush()
    assert runner.positions == [("A", "store", 2), ("A", "wh", 5)]
    assert [key for key, _ in runner.written] == [b"A"]
    assert runner.written[0][1].locations.keys() == {"wh", "store"}
    # availability and component values carry the first input's time
    assert ("A", 7, 100.0) in runner.availability
    assert runner.to_stage == [("web|KIT", "ComponentUpdate", 100.0)]
    assert runner.batch.pending == {} and runner.batch.caused_at == {}


def test_the_next_flush_derives_only_what_changed_since() -> None:
    runner = Runner()
    runner.apply(count("A", "wh", 5))
    runner.apply(count("B", "wh", 1))
    runner.batch.flush()
    runner.positions.clear()
    runner.apply(delta("A", "wh", -1, 1), at=200.0)
    runner.batch.flush()
    assert runner.positions == [("A", "wh", 4)]
    assert ("A", 4, 200.0) in runner.availability


def test_a_state_comes_from_the_batch_then_the_table_then_empty() -> None:
    stored = SkuState("B", catalog_version=catalog().version)
    runner = Runner({b"B": stored})
    runner.apply(count("A", "wh", 5))
    assert runner.batch.state("A") is runner.batch.pending[b"A"][0]
    assert runner.batch.state("B") is stored
    fresh = runner.batch.state("C")
    assert fresh.sku == "C" and fresh.locations == {} and b"C" not in runner.batch.pending


def test_a_hold_s_answer_goes_out_at_once_unless_not_answered() -> None:
    runner = Runner()
    runner.apply(count("A", "wh", 5))
    request = ev(
        "reservation-requested",
        0,
        reservation_id="r",
        channel="web",
        lines=[{"sku": "A", "quantity": 1}],
    )
    _, tries = start(request, catalog(), T0)
    outcome = runner.apply(tries[0])
    assert outcome.hold is not None and outcome.hold.held
    assert runner.performed == [[("r", "HoldResult")]]
    assert runner.batch.out == Effects()  # performed, then cleared for the next command
    _, again = start(request.model_copy(update={"reservation_id": "s"}), catalog(), T0)
    runner.apply(again[0], answer=False)
    assert runner.performed == [[("r", "HoldResult")]]


def test_a_duplicate_or_the_replay_window_sends_every_value_again() -> None:
    event = count("A", "wh", 5)
    runner = Runner()
    runner.apply(event)
    runner.batch.flush()
    runner.positions.clear()
    runner.availability.clear()
    runner.apply(event)  # seen again: its outputs may have been lost with a crash
    runner.batch.flush()
    assert runner.positions == [("A", "wh", 5)] and runner.availability

    replaying = Runner(resend=True)
    replaying.apply(count("A", "wh", 5))
    assert replaying.batch.pending[b"A"][4] is True
