"""Every client over SSL and SASL_SSL (PLAIN, SCRAM-SHA-256/512) on a real Apache Kafka; refused
credentials and certificates are one line and a non-zero exit; no secret is ever printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.broker import kafka_unavailable
from streams.runtime.topics import topic_specs
from streams.settings import Settings
from tests.integration.secured import SecuredKafka, start_secured_kafka
from tests.kafka_helpers import stock_event

no_kafka = kafka_unavailable(Settings().embedded_kafka_home)
pytestmark = [
    pytest.mark.own_kafka,
    pytest.mark.integration,
    pytest.mark.skipif(no_kafka is not None, reason=f"embedded Apache Kafka: {no_kafka}"),
]

SECURED = [
    ("SSL", None),
    ("SASL_SSL", "PLAIN"),
    ("SASL_SSL", "SCRAM-SHA-256"),
    ("SASL_SSL", "SCRAM-SHA-512"),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafka]:
    """One broker for the module: started once (~3 s), topics made over its PLAINTEXT listener."""
    from streams.runtime.topics import ensure_topics

    kafka = start_secured_kafka(tmp_path_factory.mktemp("secured"))
    try:
        ensure_topics(kafka.broker.bootstrap_servers, topic_specs(Settings(), []))
        yield kafka
    finally:
        kafka.broker.stop()


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SCHEMA_"))}
    return subprocess.run(
        [sys.executable, "-m", "inventory_streams.cli", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_no_secret(kafka: SecuredKafka, *outputs: str) -> None:
    for output in outputs:
        for secret in kafka.secrets:
            assert secret not in output, "a secret was printed"


@pytest.mark.parametrize(("protocol", "mechanism"), SECURED)
def test_publish_and_tail_over_a_secured_listener(
    secured: SecuredKafka, tmp_path: Path, protocol: str, mechanism: str | None
) -> None:
    event_id = f"secured-{protocol}-{mechanism}"
    events = tmp_path / "events.jsonl"
    events.write_text(stock_event(event_id) + "\n")
    env = secured.env(protocol, mechanism) | {"DATA_DIR": str(tmp_path)}
    if mechanism == "SCRAM-SHA-512":  # as a container platform mounts it
        (tmp_path / "password").write_text(env.pop("KAFKA_SASL_PASSWORD") + "\n")
        env["KAFKA_SASL_PASSWORD_FILE"] = str(tmp_path / "password")
    published = cli("publish", str(events), env=env)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout.splitlines()[-1])["published"] == 1, published.stdout
    tailed = cli("tail", "inventory.events", env=env)
    assert tailed.returncode == 0, tailed.stderr
    values = [json.loads(line)["value"] for line in tailed.stdout.splitlines()]
    assert event_id in {value.get("event_id") for value in values}, tailed.stdout[-2000:]
    assert_no_secret(secured, published.stdout, published.stderr, tailed.stdout, tailed.stderr)


@pytest.mark.parametrize(
    ("mechanism", "command"),
    [
        ("PLAIN", "publish"),
        ("SCRAM-SHA-256", "publish"),
        ("SCRAM-SHA-512", "worker"),
        ("SCRAM-SHA-256", "connect"),
    ],
)
def test_a_wrong_password_is_one_line_and_a_non_zero_exit(
    secured: SecuredKafka, tmp_path: Path, mechanism: str, command: str
) -> None:
    """Also for worker and connect, which reconnect on their own: no retry loop on a refusal."""
    events = tmp_path / "events.jsonl"
    events.write_text(stock_event("never-published") + "\n")
    wrong = "wrong-" + secured.scram_password
    env = secured.env("SASL_SSL", mechanism, password=wrong) | {"DATA_DIR": str(tmp_path)}
    started = time.monotonic()
    args = [str(events)] if command == "publish" else []
    done = cli(command, *args, env=env, timeout=30)
    assert time.monotonic() - started < 15  # refused at once, not after KAFKA_TIMEOUT_SECONDS
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "refused" in lines[0] and "uthentication" in lines[0], lines[0]
    assert wrong not in done.stdout + done.stderr
    assert_no_secret(secured, done.stdout, done.stderr)


def test_an_untrusted_certificate_is_one_line_and_a_non_zero_exit(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    env = secured.env("SSL") | {"KAFKA_SSL_CA_LOCATION": str(secured.other_ca)}
    started = time.monotonic()
    done = cli("tail", "inventory.events", env=env | {"DATA_DIR": str(tmp_path)}, timeout=30)
    assert time.monotonic() - started < 15
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "certificate verify failed" in lines[0], lines[0]


def test_up_runs_workers_connectors_and_the_api_over_sasl_scram(
    secured: SecuredKafka, tmp_path: Path
) -> None:
    """The Faust worker (aiokafka), the sink connectors, the flash sale's producers, the API and
    the status view, all over SASL_SSL with SCRAM; nothing any of them logs shows a secret."""
    from tests.integration.test_up import count, reserve_while_up, row, up_demo

    env = secured.env("SASL_SSL", "SCRAM-SHA-256") | {"KAFKA_TIMEOUT_SECONDS": "30"}
    up, port = up_demo(tmp_path, 30, **env)
    try:
        status, answer = reserve_while_up(port, time.monotonic() + 40)
    finally:
        output, _ = up.communicate(timeout=120)
    assert up.returncode == 0, output[-3000:]
    assert (status, answer["status"]) in ((201, "held"), (409, "rejected")), answer
    assert row(output, "workers alive") == "1/1"
    assert count(output, "positions out") > 0
    assert count(output, "availability updates out") > 0
    assert count(output, "acknowledged by shopify-us") > 0
    assert secured.broker.log_path is not None
    written = [*tmp_path.rglob("*.log"), *secured.broker.log_path.parent.glob("*.log")]
    logs = [path.read_text(errors="replace") for path in written]
    assert len(logs) >= 3, f"too few logs to scan: {written}"  # worker, kafka, zookeeper
    assert_no_secret(secured, output, *logs)
