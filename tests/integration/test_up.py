"""`inventory-streams up --demo`: the main job as a user starts it, on the embedded broker."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def row(output: str, name: str) -> str:
    """The value of the last status-table row called `name`."""
    values = re.findall(rf"{re.escape(name)}\s*│\s*([^│]+?)\s*│", output)
    assert values, f"no row {name!r} in:\n{output[-3000:]}"
    return values[-1]


def reserve_while_up(port: int, deadline: float) -> tuple[int, dict[str, Any]]:
    """POST one reservation to the API the worker serves, as soon as it answers."""
    body = json.dumps(
        {
            "reservation_id": "up-test-1",
            "channel": "shopify-us",
            "lines": [{"channel_sku": "TEE-RED-M", "quantity": 1}],
        }
    ).encode()
    while True:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/reservations",
            data=body,
            headers={"Authorization": "Bearer demo-shopify-us"},
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


def test_up_demo_runs_the_whole_system_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["COLUMNS"] = "120"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env["API_PORT"] = str(s.getsockname()[1])
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "up",
            "--demo",
            "--duration",
            "25",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # the worker serves the reservation API with the demo tokens while `up` runs
        status, answer = reserve_while_up(int(env["API_PORT"]), time.monotonic() + 20)
    finally:
        out, _ = up.communicate(timeout=120)
    assert (status, answer["status"]) in ((201, "held"), (409, "rejected")), answer
    output = out
    assert up.returncode == 0, output[-3000:]
    assert "(embedded Tansu)" in output
    assert row(output, "workers alive") == "1/1"
    assert int(row(output, "events in").replace(",", "")) > 100
    assert int(row(output, "availability updates out").replace(",", "")) > 0
    # the flash sale's storefronts only order held reservations: nothing is oversold
    assert row(output, "alerts") == "0"
    assert row(output, "dead letters") == "0"
    # the channel emulators received availability through the sink connectors
    assert int(row(output, "acknowledged by shopify-us").replace(",", "")) > 0
    assert int(row(output, "acknowledged by amazon-us").replace(",", "")) > 0
    assert row(output, "reservation API").startswith(f"http://127.0.0.1:{env['API_PORT']}")
    # no process outlives `up`
    leftovers = subprocess.run(
        ["pgrep", "-f", f"--data-dir {tmp_path}/up/worker"], capture_output=True, text=True
    )
    assert leftovers.stdout.strip() == ""


def test_plain_up_runs_until_its_duration_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["COLUMNS"] = "120"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
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
