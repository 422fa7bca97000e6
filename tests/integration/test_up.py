"""`inventory-streams up --demo`: the main job as a user starts it, on the embedded broker."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streams.runtime.broker import kafka_unavailable
from streams.settings import Settings
from tests.kafka_helpers import stock_event

# `up` starts a broker of its own (up_env drops KAFKA_BOOTSTRAP_SERVERS), whichever broker the
# pass is for: the Kafka pass would run these tests again on the same embedded Tansu. The one
# that runs `up` on the embedded Apache Kafka says so itself (own_kafka).
pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]


def row(output: str, name: str) -> str:
    """The value of the last status-table row called `name`."""
    values = re.findall(rf"{re.escape(name)}\s*│\s*([^│]+?)\s*│", output)
    assert values, f"no row {name!r} in:\n{output[-3000:]}"
    return values[-1]


def count(output: str, name: str) -> int:
    """The count of a row that shows one, its rate per second after it left out."""
    return int(row(output, name).split()[0].replace(",", ""))


def reserve_while_up(
    port: int, deadline: float, reservation_id: str = "up-test-1"
) -> tuple[int, dict[str, Any]]:
    """POST one reservation to the API the worker serves, as soon as it answers."""
    body = json.dumps(
        {
            "reservation_id": reservation_id,
            "channel": "shopify-us",
            "lines": [{"channel_sku": "TEE-RED-M", "quantity": 1}],
        }
    ).encode()
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/reservations",
            data=body,
            headers={
                "Authorization": "Bearer demo-shopify-us",
                "Content-Type": "application/json",  # urllib would say a form
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 503:
                return error.code, json.loads(error.read())
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, "the reservation API never answered"
        time.sleep(0.5)


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports free now (METRICS_PORT + i under `up`), below the
    ephemeral range: there, a port a restarted worker binds again can meanwhile be the local
    port of one of the many client connections `up` opens (a broker connection, a status read)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        first = random.randrange(10_000, low - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


def up_env(**settings: str) -> dict[str, str]:
    """The environment `up` runs in: the embedded broker, free metrics ports, wide tables."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return env | {"COLUMNS": "120", "METRICS_PORT": str(free_ports(3)), **settings}


def up_demo(tmp_path: Path, duration: int, **settings: str) -> tuple[subprocess.Popen[str], int]:
    """`up --demo` as a user starts it; the process and the port of its reservation API.

    Started with SIGINT ignored, as a shell script's `up &` (or a CI job started that way)
    starts it: a Ctrl-C sent to it must stop it all the same. (A fresh-clone run started in
    the background hung here for 120 s: `up` never saw the SIGINT.)"""
    port = free_ports(2)  # API_PORT + i: worker 0's, again after a restart
    env = up_env(**{"API_PORT": str(port), **settings})
    command = ["up", "--demo", "--duration", str(duration), "--data-dir", str(tmp_path)]
    up = subprocess.Popen(
        [sys.executable, "-m", "inventory_streams.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    return up, port


def workers_of(tmp_path: Path) -> list[int]:
    """The pids of the worker processes `up` started with its data in `tmp_path`."""
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--data-dir {tmp_path}/up/worker-"], capture_output=True, text=True
    )
    assert found.returncode in (0, 1), found.stderr  # 1: none; anything else: pgrep failed
    return [int(pid) for pid in found.stdout.split()]


def test_up_demo_runs_the_whole_system_and_stops_cleanly(tmp_path: Path) -> None:
    up, port = up_demo(tmp_path, 25)
    try:
        # the worker serves the reservation API with the demo tokens while `up` runs
        status, answer = reserve_while_up(port, time.monotonic() + 20)
    finally:
        out, _ = up.communicate(timeout=120)
    assert (status, answer["status"]) in ((201, "held"), (409, "rejected")), answer
    output = out
    assert up.returncode == 0, output[-3000:]
    if os.environ["EMBEDDED_BROKER"] == "kafka":
        assert "(embedded Apache Kafka, data in" in output
    else:  # the first screen says what a restart loses
        assert "(embedded Tansu, memory only: data is lost when up stops)" in output
    assert row(output, "workers alive") == "1/1"
    assert count(output, "events in") > 100
    assert count(output, "availability updates out") > 0
    assert row(output, "events in").endswith("/s)")  # with its rate
    # p50 / p99 of the worker's batches, read off its /metrics
    assert re.fullmatch(
        r"[\d.,]+ m?s / [\d.,]+ m?s|idle", row(output, "batch latency (sku stage) p50 / p99")
    )
    # the flash sale's storefronts only order held reservations: nothing is oversold
    assert row(output, "alerts") == "0"
    assert row(output, "dead letters") == "0"
    # the channel emulators received availability through the sink connectors
    assert int(row(output, "acknowledged by shopify-us").replace(",", "")) > 0
    assert int(row(output, "acknowledged by amazon-us").replace(",", "")) > 0
    assert row(output, "reservation API").startswith(f"http://127.0.0.1:{port}")
    served = re.fullmatch(
        r"127\.0\.0\.1: (\d+) up, (\d+) worker 0", row(output, "metrics (Prometheus)")
    )
    assert served and int(served[2]) == int(served[1]) + 1  # METRICS_PORT + i
    assert workers_of(tmp_path) == []  # no process outlives `up`


def test_plain_up_runs_until_its_duration_and_stops_cleanly(tmp_path: Path) -> None:
    env = up_env()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "inventory_streams.cli",
            "up",
            "--duration",
            "10",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert row(output, "workers alive") == "1/1"
    assert row(output, "webhook receiver").startswith("off")
    assert row(output, "reservation API").startswith("off")
    assert "Traceback" not in output


def worker_pid(tmp_path: Path, deadline: float) -> int:
    while True:
        found = workers_of(tmp_path)
        if found:
            return found[0]
        assert time.monotonic() < deadline, "no worker process"
        time.sleep(0.2)


def stopped_within(up: subprocess.Popen[str], seconds: float, tmp_path: Path) -> str:
    """`up`'s output once it has ended; if it is still running after `seconds`, the test fails
    with where each of its threads was (SIGUSR1) and the end of its workers' logs."""
    try:
        return up.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        up.send_signal(signal.SIGUSR1)
        time.sleep(1.0)
        up.kill()
        output = up.communicate()[0]
        logs = "".join(
            f"\n--- {log.name}:\n" + log.read_text(errors="replace")[-2000:]
            for log in sorted((tmp_path / "up").glob("worker-*.log"))
        )
        pytest.fail(f"up did not stop within {seconds:g} s:\n{output[-6000:]}{logs}")


def test_a_worker_killed_while_up_runs_is_started_again_and_serves_again(tmp_path: Path) -> None:
    # stopped by Ctrl-C below; the duration is only a safety cap, well past the test's own waits
    # (two reservations of up to 30 s each, the start and a restart): on a loaded machine a cap
    # of 90 s ran out first, and `up` ended by its duration instead of by the Ctrl-C
    up, port = up_demo(tmp_path, 240)
    try:
        first = reserve_while_up(port, time.monotonic() + 30, "before-the-kill")
        killed = worker_pid(tmp_path, time.monotonic() + 5)
        os.kill(killed, signal.SIGKILL)
        # the API is the new worker's: it answers once that worker has started and recovered
        second = reserve_while_up(port, time.monotonic() + 30, "after-the-kill")
        assert worker_pid(tmp_path, time.monotonic() + 5) != killed
        time.sleep(1.5)  # one more status refresh
    finally:
        up.send_signal(signal.SIGINT)  # Ctrl-C
        output = stopped_within(up, 120, tmp_path)
    shown = output[-4000:]
    assert up.returncode == 0, shown
    assert "stopping..." in output, shown
    assert {first[0], second[0]} <= {201, 409}, (first, second)
    assert "worker 0 exited with code -9" in output, shown
    assert "worker 0 started again" in output, shown
    assert row(output, "workers alive") == "1/1 (1 restarted)", shown
    assert row(output, "alerts") == "0", shown  # nothing oversold across the restart
    assert row(output, "dead letters") == "0", shown


def test_a_worker_that_keeps_exiting_stops_up_with_its_error(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the API's port is in use: every worker start fails on it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a window wide enough for two slow starts on a loaded machine (CI once took > 60 s)
        up, _ = up_demo(
            tmp_path,
            240,
            API_PORT=str(port),
            WORKER_RESTART_LIMIT="2",
            WORKER_RESTART_WINDOW_SECONDS="300",
        )
        output, _ = up.communicate(timeout=240)
    assert up.returncode == 1, output[-3000:]
    assert output.count("worker 0 exited with code 1: OSError") == 2
    assert "stopping: worker 0 exited 2 times within 300 s; the last time: OSError" in output
    assert "address already in use" in output


def test_publish_finds_a_running_up_and_sigterm_stops_up_cleanly(tmp_path: Path) -> None:
    env = up_env()
    up = subprocess.Popen(
        [sys.executable, "-m", "inventory_streams.cli", "up", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "up.json").exists():
            assert up.poll() is None, up.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "up never announced its broker"
            time.sleep(0.2)
        events = tmp_path / "one.jsonl"
        events.write_text(stock_event("found-up-1") + "\n")
        # no KAFKA_BOOTSTRAP_SERVERS: publish reaches the broker of the `up` on this data dir
        published = subprocess.run(
            [sys.executable, "-m", "inventory_streams.cli", "publish", str(events)],
            env={**env, "DATA_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        time.sleep(3)  # let the worker start before it is stopped
    finally:
        up.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        try:
            output, _ = up.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            up.kill()
            pytest.fail(f"up did not stop within 10 s of SIGTERM:\n{up.communicate()[0][-3000:]}")
    assert time.monotonic() - stopped < 10
    assert up.returncode == 0, output[-3000:]
    assert workers_of(tmp_path) == []  # no process outlives `up`
    assert not (tmp_path / "up.json").exists()
    assert "Traceback" not in output


no_kafka = kafka_unavailable(Settings().embedded_kafka_home)


@pytest.mark.own_kafka
@pytest.mark.skipif(no_kafka is not None, reason=f"embedded Apache Kafka: {no_kafka}")
def test_up_on_the_embedded_kafka_has_its_data_back_after_a_restart(tmp_path: Path) -> None:
    up, port = up_demo(tmp_path, 25, EMBEDDED_BROKER="kafka")
    try:
        reserve_while_up(port, time.monotonic() + 40)
    finally:
        first, _ = up.communicate(timeout=120)
    assert up.returncode == 0, first[-3000:]
    assert "(embedded Apache Kafka, data in" in first, first[-3000:]
    before = {
        name: count(first, name)
        for name in ("events in", "positions out", "availability updates out")
    }
    assert min(before.values()) > 0, before
    # no --demo: nothing new comes in, so everything shown was kept by the broker
    command = ["up", "--broker", "kafka", "--duration", "8", "--data-dir", str(tmp_path)]
    again = subprocess.run(
        [sys.executable, "-m", "inventory_streams.cli", *command],
        env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
        | {"COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    second = again.stdout + again.stderr
    assert again.returncode == 0, second[-3000:]
    after = {name: count(second, name) for name in before}
    assert all(after[name] >= before[name] for name in before), (before, after)
    assert row(second, "dead letters") == "0"
