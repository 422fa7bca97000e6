"""A worker told to stop ends in bounded time, even when its broker has gone: a worker that
lingers after SIGTERM is an orphan holding its ports until someone SIGKILLs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from streams.runtime.faust_private import EXIT_STOP_OVERDUE, STOP_GRACE_SECONDS
from tests.integration.live import LiveSystem
from tests.integration.test_reservations import CATALOG, TOKENS

pytestmark = pytest.mark.integration


def until_logged(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout:g} s"
        time.sleep(0.2)


def test_a_worker_whose_broker_is_gone_exits_on_sigterm_within_its_grace(
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker-0.log"
    with LiveSystem(CATALOG, tmp_path) as live:
        live.start_worker(0)
        until_logged(log, "assigned partitions of inventory.events", 30)
        assert live.broker.pid is not None
        os.kill(live.broker.pid, signal.SIGKILL)  # gone without a goodbye, as a killed test's
        time.sleep(2)  # the worker's clients find it gone
        worker = live.workers.pop(0)
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(STOP_GRACE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            pytest.fail(f"still running {STOP_GRACE_SECONDS + 10:g} s after SIGTERM")
        took = time.monotonic() - started
    text = log.read_text(errors="replace")
    assert took < STOP_GRACE_SECONDS + 5, took
    if worker.returncode != 0:  # the orderly stop did not finish: it says so, and why
        assert worker.returncode == EXIT_STOP_OVERDUE, (worker.returncode, text[-2000:])
        assert "still stopping" in text and "after SIGTERM" in text, text[-2000:]


def test_a_worker_that_crashed_exits_within_its_grace_even_if_its_stop_hangs(
    tmp_path: Path,
) -> None:
    """Its API port taken, the worker crashes once it has its partitions; Faust then stops the
    app, and that stop was seen to hang (4 minutes, until `up` gave up): `up` never saw the
    worker exit, and never started it again. It now exits with code 1 past the grace."""
    import socket

    log = tmp_path / "worker-0.log"
    with socket.socket() as taken, LiveSystem(CATALOG, tmp_path) as live:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        live.start_worker(
            0,
            "--api-port",
            str(port),
            env={"HANG_STOPPING": "1", "CHANNEL_TOKENS": json.dumps(TOKENS)},
            module="tests.integration.faulty_worker",
        )
        worker = live.workers.pop(0)
        try:
            worker.wait(60 + STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            pytest.fail(f"still running {60 + STOP_GRACE_SECONDS:g} s after its start")
    text = log.read_text(errors="replace")
    assert "address already in use" in text, text[-2000:]
    assert worker.returncode == 1, (worker.returncode, text[-2000:])
