"""`up`'s restart policy: a worker that exits is started again, unless it keeps exiting; and
where its processes' metrics are."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import cast

import pytest

from inventory_streams.up import RestartPolicy, Worker, metrics_status, serve_metrics
from streams.errors import InventoryError


def test_a_worker_that_exits_now_and_then_is_always_started_again() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    for _ in range(10):
        assert policy.allow(0)
        now[0] += 31.0  # never three exits within a minute


def test_a_crash_loop_stops_at_the_limit_and_counts_each_worker_apart() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    assert policy.allow(0) and policy.allow(0)
    assert policy.allow(1)  # another worker's exits are its own
    now[0] = 59.0
    assert not policy.allow(0)  # the third exit of worker 0 within 60 s


def test_exits_older_than_the_window_no_longer_count() -> None:
    now = [0.0]
    policy = RestartPolicy(limit=3, window=60.0, clock=lambda: now[0])
    assert policy.allow(0) and policy.allow(0)
    now[0] = 60.0  # both are a full window old
    assert policy.allow(0) and policy.allow(0)
    assert not policy.allow(0)


def test_the_status_view_names_the_process_on_each_metrics_port() -> None:
    workers = [
        Worker(i, 9101 + i, cast(subprocess.Popen[bytes], None), Path(f"worker-{i}.log"))
        for i in range(2)
    ]
    assert metrics_status(9100, workers) == "127.0.0.1: 9100 up, 9101 worker 0, 9102 worker 1"


def test_a_taken_metrics_port_stops_up_with_one_line_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InventoryError, match=f"metrics on port {port}.*METRICS_PORT"):
            serve_metrics(port)
