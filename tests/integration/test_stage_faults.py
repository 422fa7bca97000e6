"""A failure inside a stage batch loses nothing: its events are not acknowledged, the worker stops,
and after a restart the final state equals `simulate` of the same log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from streams.simulate import read_catalog, simulate
from tests.integration.live import LiveSystem
from tests.integration.test_topology import big_scenario

pytestmark = pytest.mark.integration


def test_a_table_write_that_raises_loses_no_event(tmp_path: Path) -> None:
    skus, n = 200, 5_000
    catalog, expected = big_scenario(tmp_path, skus, n)
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(
            0,
            module="tests.integration.faulty_worker",
            env={"FAIL_TABLE_WRITE_AT": "1500"},
        )
        live.publish(tmp_path / "events.jsonl")
        # the worker must stop on the failure, not go on with the batch's events acknowledged
        process = live.workers[0]
        deadline = time.monotonic() + 90
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        log = (tmp_path / "worker-0.log").read_text(errors="replace")
        assert process.poll() is not None, "the worker went on after a failed batch"
        assert process.returncode != 0, log[-2000:]
        assert "injected: the table store rejected write 1500" in log
        live.workers.pop(0)
        live.start_worker(0)
        view = live.wait_for(expected, timeout=180, every=3)
        assert view["positions"] == expected["positions"]  # no event lost, none counted twice
        # and no listing kept a value the dead worker sent before the state it was sent from was
        # committed (the replay window; the next test makes that crash happen every time)
        assert view["availability"] == expected["availability"]


def test_a_crash_between_a_batch_and_its_commit_leaves_no_stale_listing(tmp_path: Path) -> None:
    """The dead worker sent LAMP's 4 and died before the commit that would have written it; the
    restart recovers the record that published 5 and applies -1 and +1 in one batch: 5 again,
    which the record says was published. It must go out anyway, or the channel keeps the 4."""
    (tmp_path / "catalog.yaml").write_text(
        "locations: [{id: wh}]\n"
        "channels:\n"
        "  - {id: web, type: shopify, locations: [wh], allocation_percent: 100, buffer_units: 0}\n"
        "listings:\n"
        "  - {channel: web, channel_sku: LAMP, components: [{sku: LAMP, quantity: 1}]}\n"
        "  - {channel: web, channel_sku: LAMP-KIT,\n"
        "     components: [{sku: LAMP, quantity: 1}, {sku: SHADE, quantity: 1}]}\n"
    )
    catalog = read_catalog(tmp_path / "catalog.yaml")

    def events(name: str, *lines: tuple[str, str, int]) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "event_id": event_id,
                        "type": "stock-adjusted",
                        "occurred_at": "2026-11-01T08:00:00Z",
                        "source": "test",
                        "sku": sku,
                        "location": "wh",
                        "mode": "delta",
                        "quantity": quantity,
                    }
                )
                + "\n"
                for event_id, sku, quantity in lines
            )
        )
        return path

    first = events("first", ("a", "LAMP", 5), ("b", "SHADE", 9))
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(
            0, module="tests.integration.faulty_worker", env={"DIE_AT_COMMIT_OF": "LAMP:2"}
        )
        live.publish(first)
        live.wait_idle()  # LAMP's record, published 5, is in the changelog and committed
        live.publish(events("second", ("c", "LAMP", -1)))
        process = live.workers.pop(0)
        assert process.wait(60) == 70, (tmp_path / "worker-0.log").read_text(errors="replace")
        stale = live.latest("availability.web")
        assert stale["LAMP"]["available"] == 4  # sent by the worker that died
        live.publish(events("third", ("d", "LAMP", 1)))
        live.start_worker(0)
        lines = [
            line
            for name in ("first", "second", "third")
            for line in (tmp_path / f"{name}.jsonl").read_bytes().splitlines()
        ]
        expected = simulate(catalog, lines)
        live.settle(expected, timeout=60)


def test_a_broker_out_of_reach_at_the_replay_window_read_stops_nothing(tmp_path: Path) -> None:
    """A worker cut off from the broker when it reads its partitions' end offsets (bench/faults.py's
    worker-partition found it exiting on _ALL_BROKERS_DOWN) waits for the broker and goes on."""
    catalog, expected = big_scenario(tmp_path, 50, 1_000)
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(
            0, module="tests.integration.faulty_worker", env={"FAIL_END_OFFSETS": "2"}
        )
        live.publish(tmp_path / "events.jsonl")
        view = live.wait_for(expected, timeout=90, every=2)  # raises if the worker exited
        log = (tmp_path / "worker-0.log").read_text(errors="replace")
        assert log.count("injected: end offsets read with every broker down") == 2
        assert view["positions"] == expected["positions"]
        assert view["availability"] == expected["availability"]


def test_a_release_whose_outputs_died_with_the_worker_is_given_back_after_the_restart(
    tmp_path: Path,
) -> None:
    """The worker decides a release, and dies with the decision untold and the SKU's release
    command still queued while the commit has written the reservation's record as released
    (bench/faults.py found releases answered 200 whose reservation stayed held). The redelivered
    release finds the record released: it must send the decision and the release again, or the
    units stay held."""
    (tmp_path / "catalog.yaml").write_text(
        "locations: [{id: wh}]\n"
        "channels:\n"
        "  - {id: web, type: shopify, locations: [wh], allocation_percent: 100, buffer_units: 0}\n"
        "listings:\n"
        "  - {channel: web, channel_sku: LAMP, components: [{sku: LAMP, quantity: 1}]}\n"
    )
    catalog = read_catalog(tmp_path / "catalog.yaml")

    def events(name: str, *records: dict[str, object]) -> Path:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"occurred_at": "2026-11-01T08:00:00Z", "source": "test", **r}) + "\n"
                for r in records
            )
        )
        return path

    first = events(
        "first",
        {
            "event_id": "a",
            "type": "stock-adjusted",
            "sku": "LAMP",
            "location": "wh",
            "mode": "delta",
            "quantity": 5,
        },
        {
            "event_id": "b",
            "type": "reservation-requested",
            "reservation_id": "r1",
            "channel": "web",
            "ttl_seconds": 3600,
            "lines": [{"sku": "LAMP", "quantity": 2}],
        },
    )
    second = events(
        "second", {"event_id": "c", "type": "reservation-released", "reservation_id": "r1"}
    )
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(
            0, module="tests.integration.faulty_worker", env={"LOSE_BATCH_OF": "r1:released"}
        )
        live.publish(first)
        live.wait_idle()
        assert live.latest("inventory.reservation-decisions")["r1"]["status"] == "held"
        live.publish(second)
        process = live.workers.pop(0)
        log = tmp_path / "worker-0.log"
        assert process.wait(60) == 70, log.read_text(errors="replace")
        # the SKU's release command lost; the decision is told only after the records, so it
        # was never sent
        assert "injected: an output to inventory.commands lost" in log.read_text()
        assert live.latest("inventory.reservation-decisions")["r1"]["status"] == "held"
        live.start_worker(0)
        lines = [line for path in (first, second) for line in path.read_bytes().splitlines()]
        expected = simulate(catalog, lines)
        live.settle(expected, timeout=60)  # LAMP reserved 0 again
        assert live.latest("inventory.reservation-decisions")["r1"]["status"] == "released"
