"""A whole live system for one test: its own embedded broker, topics, catalog and worker processes.

Each live test gets a fresh broker (Tansu starts in ~40 ms), because the topic names are fixed by
the SPEC and two scenarios must not see each other's records.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.core.catalog import Catalog
from streams.runtime.broker import embedded_broker
from streams.runtime.catalog_store import publish
from streams.runtime.offsets import true_end_offsets_many
from streams.runtime.tables import DeferredWrites
from streams.runtime.topics import ensure_topics, topic_specs
from streams.settings import Settings
from streams.simulate import AVAILABILITY_FIELDS, POSITION_FIELDS
from streams.tools import publish_file, read_topic
from tests.kafka_helpers import consume_all

STAGE_INPUTS = ("inventory.events", "inventory.commands")


class LiveSystem:
    def __init__(self, catalog: Catalog, workdir: Path, clock: str = "stream") -> None:
        self.catalog = catalog
        self.workdir = workdir
        self.clock = clock
        self.settings = Settings(kafka_bootstrap_servers=None, data_dir=workdir)
        self.broker = embedded_broker(self.settings)
        self.workers: dict[int, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> LiveSystem:
        self.broker.start()
        self.bootstrap = self.broker.bootstrap_servers
        ensure_topics(
            self.bootstrap, topic_specs(self.settings, [c.id for c in self.catalog.channels])
        )
        publish(self.bootstrap, self.catalog)
        return self

    def __exit__(self, *exc: object) -> None:
        for index in list(self.workers):
            self.stop_worker(index)
        self.broker.stop()

    def start_worker(
        self,
        index: int,
        *extra: str,
        env: dict[str, str] | None = None,
        module: str = "inventory_streams.cli",
        wrap: Sequence[str] = (),
    ) -> None:
        """A worker process; `extra` arguments for `worker` (--api-port ...), `env` on top;
        `module` runs another entry point with the CLI's arguments (a test double); `wrap` goes
        before the command (`ip netns exec NS`)."""
        log = (self.workdir / f"worker-{index}.log").open("ab")
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "COMMIT_INTERVAL_SECONDS": "0.2",
            # 2 SKUs decoded, the rest kept as their records' bytes (ColdSku): every live test
            # takes SKUs cold and back across its kills, restarts and rebalances
            "WARM_SKUS": os.environ.get("WARM_SKUS", "2"),
            **(env or {}),
        }
        self.workers[index] = subprocess.Popen(
            [
                *wrap,
                sys.executable,
                "-m",
                module,
                "worker",
                "--clock",
                self.clock,
                "--data-dir",
                str(self.workdir / f"worker-{index}"),
                *extra,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_worker(self, index: int) -> None:
        """SIGKILL: no flush, no commit, no goodbye."""
        process = self.workers.pop(index)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_worker(self, index: int) -> None:
        process = self.workers.pop(index)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def publish(self, path: Path, stepwise: bool = False) -> dict[str, int]:
        """Publish a JSONL file; `stepwise` waits for the topology to settle after every event.

        Stepwise gives the live topology the log's order across its stages (an order, a hold and
        a release each take their own path): what simulate's strict log order gives.
        """
        after_each = self.wait_idle if stepwise else None
        return publish_file(
            path, self.settings, self.bootstrap, progress=False, after_each=after_each
        )

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every stage has committed everything on its input topics (twice in a row)."""
        consumer = self._group_consumer()
        try:
            settled = 0
            deadline = time.monotonic() + timeout
            while settled < 2:
                if time.monotonic() > deadline:
                    raise AssertionError("the topology did not settle")
                behind = sum(self._behind(consumer).values())
                settled = settled + 1 if behind == 0 else 0
                time.sleep(0.1)
        finally:
            consumer.close()

    def lag(self) -> dict[str, int]:
        """Per stage input topic, how many records the workers' group has not committed."""
        consumer = self._group_consumer()
        try:
            return self._behind(consumer)
        finally:
            consumer.close()

    def _group_consumer(self) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.settings.app_id,
                "enable.auto.commit": False,
            }
        )

    def _behind(self, consumer: Consumer) -> dict[str, int]:
        inputs = {t: list(range(self.settings.topic_partitions)) for t in STAGE_INPUTS}
        ends = true_end_offsets_many(self.bootstrap, inputs)
        committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=5)
        behind = dict.fromkeys(inputs, 0)
        for c in committed:
            behind[c.topic] += ends[(c.topic, c.partition)] - max(c.offset, 0)
        return behind

    def latest(self, topic: str) -> dict[str, dict[str, Any]]:
        """The last record per key, in log order (what a compacted topic converges to)."""
        out: dict[str, dict[str, Any]] = {}
        for record in read_topic(topic, self.settings, self.bootstrap):
            out[record["key"]] = record["value"]
        return out

    def changelog(self, table: str) -> dict[str, Any]:
        """A table as its changelog gives it back on recovery: the last record per key, a
        tombstone removing it (a hot SKU's parts, on their own changelog, are not joined)."""
        out: dict[str, Any] = {}
        for message in consume_all(self.bootstrap, f"{self.settings.app_id}-{table}-changelog"):
            key = message.key()
            if key == DeferredWrites.MARKER:
                continue
            value = message.value()
            if value is None:
                out.pop(key.decode(), None)
            else:
                out[key.decode()] = json.loads(value)
        return out

    def view(self) -> dict[str, list[dict[str, Any]]]:
        """Positions and availability in the shape `simulate` prints them."""
        positions = sorted(
            (
                {f: v[f] for f in POSITION_FIELDS}
                for v in self.latest("inventory.positions").values()
            ),
            key=lambda p: (p["sku"], p["location"]),
        )
        availability = []
        for channel in self.catalog.channels:
            availability += [
                {f: v[f] for f in AVAILABILITY_FIELDS}
                for v in self.latest(f"availability.{channel.id}").values()
            ]
        availability.sort(key=lambda a: (a["channel"], a["channel_sku"]))
        return {"positions": positions, "availability": availability}

    def wait_for(
        self, expected: dict[str, Any], timeout: float, every: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the live view (positions, availability) equals `expected` or time runs out."""
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = self.view()
            if view == {k: expected[k] for k in ("positions", "availability")}:
                return view
            dead = [i for i, p in self.workers.items() if p.poll() is not None]
            if dead:
                log = (self.workdir / f"worker-{dead[0]}.log").read_text(errors="replace")
                raise AssertionError(f"worker {dead[0]} exited:\n{log[-3000:]}")
            time.sleep(every)
        return view

    def settle(
        self, expected: dict[str, Any], timeout: float, every: float = 1.0
    ) -> dict[str, Any]:
        """wait_for, then assert the view equals `expected`; on a mismatch the message names only
        the records that differ (a whole catalog's positions told CI nothing) and the lag left."""
        start = time.monotonic()
        view = self.wait_for(expected, timeout, every)
        problems = [
            f"{kind}: {line}"
            for kind, key in (
                ("positions", ("sku", "location")),
                ("availability", ("channel", "channel_sku")),
            )
            for line in view_diff(view.get(kind, []), expected[kind], key)
        ]
        if problems:
            waited = time.monotonic() - start
            lag = self.lag()
            raise AssertionError(
                f"after {waited:.0f} s of {timeout:.0f} s, {len(problems)} records differ from "
                f"simulate (live vs simulate); input records not yet committed: {lag}\n"
                + "\n".join(problems[:20])
            )
        return view

    def versions(self, topic: str) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for record in read_topic(topic, self.settings, self.bootstrap):
            out.setdefault(record["key"], []).append(record["value"]["version"])
        return out

    def latest_all(self, topic: str) -> list[dict[str, Any]]:
        """Every record's value, in log order."""
        return [r["value"] for r in read_topic(topic, self.settings, self.bootstrap)]

    def position_count(self) -> int:
        """How many position records exist so far."""
        from streams.runtime.offsets import true_end_offsets

        ends = true_end_offsets(
            self.bootstrap, "inventory.positions", list(range(self.settings.topic_partitions))
        )
        return sum(ends.values())

    def partition_owners(self) -> int:
        """How many running workers own partitions of inventory.events, by their last assignment.

        (Faust's own assignor protocol is not decodable by the admin API, so workers log it.)
        """
        import re

        owners = 0
        for index in self.workers:
            log = (self.workdir / f"worker-{index}.log").read_text(errors="replace")
            assigned = re.findall(r"assigned partitions of inventory.events: \[([^\]]*)\]", log)
            if assigned and assigned[-1].strip():
                owners += 1
        return owners


def view_diff(
    live: list[dict[str, Any]], expected: list[dict[str, Any]], key: tuple[str, ...]
) -> list[str]:
    """One line per record that differs: its key and the fields that differ (live vs simulate),
    or that it exists on one side only."""
    have = {tuple(r[k] for k in key): r for r in live}
    want = {tuple(r[k] for k in key): r for r in expected}
    lines = []
    for k in sorted(have.keys() | want.keys()):
        a, b = have.get(k), want.get(k)
        if a == b:
            continue
        if a is None or b is None:
            lines.append(f"{'/'.join(k)}: {'missing live' if a is None else 'live only'}")
            continue
        fields = ", ".join(f"{f} {a.get(f)} vs {b.get(f)}" for f in b if a.get(f) != b.get(f))
        lines.append(f"{'/'.join(k)}: {fields}")
    return lines
