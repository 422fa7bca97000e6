"""Against a cluster that does not answer, every tool fails in its timeout with one line; with no
cluster named, the tools find the broker of a running `up`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.errors import InventoryError
from streams.runtime.broker import free_port
from streams.runtime.running import announced, resolve_bootstrap, running_bootstrap
from streams.settings import Settings

TIMEOUT = 2.0


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "{tmp}/events.jsonl"],
        ["tail", "inventory.positions"],
        ["topics"],
        ["catalog", "{tmp}/catalog.yaml"],
        ["import", "csv", "{tmp}/counts.csv", "--mapping", "{tmp}/mapping.yaml"],
    ],
    ids=lambda command: command[0],
)
def test_an_unreachable_cluster_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, command: list[str]
) -> None:
    closed = free_port()  # nothing listens there
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
        "KAFKA_TIMEOUT_SECONDS": str(TIMEOUT),
        "DATA_DIR": str(tmp_path),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "inventory_streams.cli", *(c.format(tmp=tmp_path) for c in command)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert elapsed < TIMEOUT + 8, elapsed  # the timeout, plus the interpreter's start
    lines = [line for line in done.stderr.splitlines() if not line.startswith("streams.core:")]
    assert lines == [
        f"inventory-streams {command[0]}: cannot reach Kafka at 127.0.0.1:{closed} "
        f"(from KAFKA_BOOTSTRAP_SERVERS) within {TIMEOUT:g} s (KAFKA_TIMEOUT_SECONDS)"
    ]


def test_a_running_up_is_found_on_its_data_directory(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=None, data_dir=tmp_path)
    with pytest.raises(InventoryError, match="no `inventory-streams up` runs on"):
        resolve_bootstrap(settings, check=False)
    with announced(tmp_path, "127.0.0.1:9999"):
        assert running_bootstrap(tmp_path) == "127.0.0.1:9999"
        assert resolve_bootstrap(settings, check=False) == "127.0.0.1:9999"
        # the setting wins over a running `up`
        named = Settings(kafka_bootstrap_servers="kafka:9092", data_dir=tmp_path)
        assert resolve_bootstrap(named, check=False) == "kafka:9092"
    assert running_bootstrap(tmp_path) is None  # gone when `up` stops


def test_the_file_of_an_up_that_was_killed_is_not_trusted(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / "up.json").write_text(f'{{"bootstrap_servers": "127.0.0.1:1", "pid": {gone.pid}}}')
    assert running_bootstrap(tmp_path) is None
    (tmp_path / "up.json").write_text("{not json")
    assert running_bootstrap(tmp_path) is None
