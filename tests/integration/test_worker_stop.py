"""A worker told to stop ends in bounded time, even when its broker has gone: a worker that
lingers after SIGTERM is an orphan holding its ports until someone SIGKILLs it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from streams.runtime.faust_private import EXIT_STOP_OVERDUE, STOP_GRACE_SECONDS
from tests.integration.live import LiveSystem
from tests.integration.test_reservations import CATALOG

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
