"""Every topic we use, created idempotently: co-partitioned topics always agree on partitions."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from aiokafka.partitioner import murmur2  # the hash Faust's producer and our murmur2_random use
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from streams.client import kafka_config
from streams.errors import BrokerError, InvalidCatalog
from streams.settings import Settings

log = logging.getLogger(__name__)

# SPEC §5: fixed names other teams depend on.
EVENTS = "inventory.events"
POSITIONS = "inventory.positions"
ALERTS = "inventory.alerts"
DLQ = "inventory.dlq"
AVAILABILITY_PREFIX = "availability."

# Internal topics: our design. Everything keyed by SKU is co-partitioned with EVENTS.
CATALOG = "inventory.catalog"
# The stages' commands to each other, each keyed by its stage's table key (streams.topology).
COMMANDS = "inventory.commands"
RESERVATION_DECISIONS = "inventory.reservation-decisions"
# The headers our own records carry, each a (name, value) pair.
# On a request the reservation API waits on: the stage that receives it ends its batch at once
# instead of at the end of its window (streams.runtime.batches).
CALLER_WAITING = ("inventory-caller-waiting", b"1")
# On an order the SKU stage has committed in place (commit_here in streams.topology).
COMMITTED = ("inventory-committed", b"1")

_LEGAL_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


TABLES = ("skus", "sku_parts", "orders", "reservations", "listings")


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for a table's changelog topic."""
    return f"{app_id}-{table}-changelog"


def availability_topic(channel_id: str) -> str:
    name = f"{AVAILABILITY_PREFIX}{channel_id}"
    if not channel_id or not _LEGAL_TOPIC.match(name):
        raise InvalidCatalog(
            f"channel id {channel_id!r} cannot name a Kafka topic "
            "(use letters, digits, '.', '_' or '-', at most 236 characters)"
        )
    return name


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    compacted: bool = False
    retention_ms: int | None = None  # None: the broker's default
    extra: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        """The topic-level configs to create the topic with."""
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            configs["retention.ms"] = str(self.retention_ms)
        configs.update(self.extra)
        return configs


def topic_specs(settings: Settings, channel_ids: Iterable[str]) -> list[TopicSpec]:
    """The SPEC §5 topics plus our internal ones, sized from `settings`."""
    n, rf = settings.topic_partitions, settings.topic_replication
    specs = [
        TopicSpec(EVENTS, n, rf, retention_ms=settings.events_retention_ms),
        TopicSpec(POSITIONS, n, rf, compacted=True),
        *(
            TopicSpec(availability_topic(channel), n, rf, compacted=True)
            for channel in dict.fromkeys(channel_ids)
        ),
        TopicSpec(ALERTS, n, rf),
        # Dead letters wait for a fix and a re-drive: kept as long as the event log.
        TopicSpec(DLQ, n, rf, retention_ms=settings.events_retention_ms),
        # One partition: catalog changes are totally ordered; compacted: latest catalog wins.
        TopicSpec(CATALOG, 1, rf, compacted=True),
        TopicSpec(COMMANDS, n, rf),
        # the reservation stage's answers (held / rejected, then released / expired / confirmed)
        TopicSpec(RESERVATION_DECISIONS, n, rf),
        # The stream tables' changelogs: created here so they are co-partitioned and compacted
        # before the first worker declares them.
        *(TopicSpec(changelog_topic(settings.app_id, t), n, rf, compacted=True) for t in TABLES),
    ]
    return specs


def ensure_topics(bootstrap: str, specs: Sequence[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics of `specs` that do not exist; return the names created.

    Idempotent. Raises BrokerError, before creating anything, if an existing topic has another
    partition count than its spec: keys would land on other partitions than their co-partitioned
    peers, silently splitting a SKU's state.
    """
    by_name: dict[str, TopicSpec] = {}
    for spec in specs:
        if by_name.setdefault(spec.name, spec) != spec:
            raise ValueError(f"topic {spec.name} is specified twice, differently")
    admin = AdminClient({**kafka_config(bootstrap), "log_level": 0})
    existing = _partition_counts(admin, timeout)
    _check_partitions(by_name.values(), existing)
    _warn_if_not_compacted(
        admin, [s for s in by_name.values() if s.compacted and s.name in existing], timeout
    )

    missing = [spec for spec in by_name.values() if spec.name not in existing]
    created: list[str] = []
    deadline = time.monotonic() + timeout
    while missing:
        made, raced = _create(admin, missing, bootstrap, timeout)
        created += made
        counts = _partition_counts(admin, timeout) if raced else {}
        _check_partitions([by_name[name] for name in raced], counts)
        # "already exists" for a topic no metadata lists: a deletion still under way (Kafka
        # refuses to create a topic marked for deletion); created once it is gone
        missing = [by_name[name] for name in raced if name not in counts]
        if missing:
            if time.monotonic() > deadline:
                names = ", ".join(sorted(spec.name for spec in missing))
                raise BrokerError(f"{names}: still being deleted on {bootstrap}; try again")
            time.sleep(0.2)
    if created:
        log.info("created topics %s", ", ".join(sorted(created)))
    return sorted(created)


def _create(
    admin: AdminClient, specs: Sequence[TopicSpec], bootstrap: str, timeout: float
) -> tuple[list[str], list[str]]:
    """Create `specs`: the names created, and those the broker said already exist."""
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication,
                config=spec.configs(),
            )
            for spec in specs
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created: list[str] = []
    raced: list[str] = []
    failures: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)  # another worker created it first: check it like any other
            else:
                failures.append(f"{name}: {error.str() if isinstance(error, KafkaError) else exc}")
        else:
            created.append(name)
    if failures:
        raise BrokerError("could not create topics on " + bootstrap + ": " + "; ".join(failures))
    return created, raced


def _partition_counts(admin: AdminClient, timeout: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _check_partitions(specs: Iterable[TopicSpec], existing: dict[str, int]) -> None:
    wrong = [
        f"{spec.name} has {existing[spec.name]} partitions, expected {spec.partitions}"
        for spec in specs
        if spec.name in existing and existing[spec.name] != spec.partitions
    ]
    if wrong:
        raise BrokerError(
            "existing topics do not match their partition count, which would break "
            "co-partitioning by SKU: " + "; ".join(wrong) + " (delete and recreate them, "
            "or set TOPIC_PARTITIONS to match)"
        )


def _warn_if_not_compacted(admin: AdminClient, specs: Sequence[TopicSpec], timeout: float) -> None:
    """Log existing topics that should be compacted but are not: they would lose latest values."""
    if not specs:
        return
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
        for resource, future in futures.items():
            entry = future.result(timeout=timeout).get("cleanup.policy")
            if entry is None or "compact" not in (entry.value or ""):
                log.warning(
                    "topic %s exists without cleanup.policy=compact; its latest values per key "
                    "can be deleted by retention",
                    resource.name,
                )
    except KafkaException as exc:
        log.warning("could not check compaction of existing topics: %s", exc)


@lru_cache(maxsize=1 << 18)  # aiokafka's murmur2 is pure Python; SKU keys come back all the time
def partition_for(key: bytes, partitions: int) -> int:
    """The partition every topic of ours puts `key` on (keyed, murmur2, as Java clients do)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
