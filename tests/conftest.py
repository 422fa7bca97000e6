"""Shared fixtures; one broker per session: KAFKA_BOOTSTRAP_SERVERS, else Docker, else embedded.

The embedded backend is INVENTORY_TEST_BROKER (kafka or tansu, default tansu), passed on as
EMBEDDED_BROKER so the `up` and workers the tests start as subprocesses run on it too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.kafka_helpers import unique_name

log = logging.getLogger(__name__)

TEST_BROKER = os.environ.get("INVENTORY_TEST_BROKER", "tansu")
if TEST_BROKER not in ("kafka", "tansu"):
    raise pytest.UsageError(f"INVENTORY_TEST_BROKER must be kafka or tansu, not {TEST_BROKER!r}")
os.environ["EMBEDDED_BROKER"] = TEST_BROKER


def _docker_engine_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no client library, no socket, no engine: all mean "no Docker"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker, started once and stopped at the end."""
    from streams.runtime import embedded_broker, wait_for_kafka
    from streams.settings import Settings

    configured = Settings().kafka_bootstrap_servers
    if configured:
        wait_for_kafka(configured, timeout=15.0)
        yield configured
    elif _docker_engine_reachable():
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        with embedded_broker(Settings()) as broker:
            log.info("session broker: %r", broker)
            yield broker.bootstrap_servers


@pytest.fixture
def unique_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A per-test prefix for topic and group names, so tests never collide on the shared broker."""
    return unique_name(request.node.name)
