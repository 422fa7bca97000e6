"""`inventory-streams up --demo`: the main job as a user starts it, on the embedded broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def row(output: str, name: str) -> str:
    """The value of the last status-table row called `name`."""
    values = re.findall(rf"{re.escape(name)}\s*│\s*([^│]+?)\s*│", output)
    assert values, f"no row {name!r} in:\n{output[-3000:]}"
    return values[-1]


def test_up_demo_runs_the_whole_system_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["COLUMNS"] = "120"
    done = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
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
    # the reservation API answered with demo tokens while it ran
    assert row(output, "reservation API").startswith("http://127.0.0.1:")
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
