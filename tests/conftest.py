"""Shared fixtures; one broker per session: KAFKA_BOOTSTRAP_SERVERS, else Docker, else Tansu."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.kafka_helpers import unique_name

log = logging.getLogger(__name__)


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
    from streams.runtime import EmbeddedBroker, wait_for_kafka
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
        with EmbeddedBroker() as broker:
            log.info("session broker: tansu on %s", broker.bootstrap_servers)
            yield broker.bootstrap_servers


@pytest.fixture
def unique_topic_prefix(request: pytest.FixtureRequest) -> str:
    """A per-test prefix for topic and group names, so tests never collide on the shared broker."""
    return unique_name(request.node.name)
