"""Two workers, a random one SIGKILLed three times while a stream with duplicates goes in: the end
equals `simulate` of the same log, and no listing's version ever goes backwards
(bench/faults.py runs this and the other faults at scale, with figures)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from streams.simulate import simulate
from tests.integration.live import LiveSystem
from tests.integration.test_topology import big_scenario

pytestmark = pytest.mark.integration


def test_repeated_sigkills_of_either_worker_lose_and_double_nothing(tmp_path: Path) -> None:
    catalog, _ = big_scenario(tmp_path, skus=200, events=8_000)
    rng = random.Random(21)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    for index in range(len(lines) - 1, -1, -1):  # 5 % sent again, up to 200 events later
        if rng.random() < 0.05:
            lines.insert(min(len(lines), index + rng.randint(1, 200)), lines[index])
    expected = simulate(catalog, lines)
    chunks = [lines[i * len(lines) // 4 : (i + 1) * len(lines) // 4] for i in range(4)]
    with LiveSystem(catalog, tmp_path) as live:
        live.start_worker(0)
        live.start_worker(1)
        for number, chunk in enumerate(chunks):
            path = tmp_path / f"chunk-{number}.jsonl"
            path.write_text("\n".join(chunk) + "\n")
            live.publish(path)
            if number < 3:  # while that chunk is being worked on, without warning
                index = rng.choice(sorted(live.workers))
                live.kill_worker(index)
                live.start_worker(index)
        live.settle(expected, timeout=240, every=3)  # no event lost, none counted twice
        for channel in ("web", "amz"):
            for key, versions in live.versions(f"availability.{channel}").items():
                assert versions == sorted(versions), (channel, key, versions)
