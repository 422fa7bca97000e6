"""`publish`, `tail`, `explain`: produce events; print our topics as JSON lines; read live state.

Reads start from the beginning and stop at the end offsets fixed when the read starts.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

from streams.client import kafka_config
from streams.codec import make_codec, record_to_json
from streams.commands import CommandCodec, is_envelope, unpack
from streams.core.catalog import Catalog
from streams.core.explain import Explanation, explain
from streams.core.models import parse_event_json
from streams.core.state import join_parts, part_count, part_key, part_of
from streams.errors import BrokerError, EncodingError, InvalidEvent, InventoryError
from streams.runtime.offsets import true_end_offsets
from streams.runtime.producer import SourceProducer
from streams.runtime.progress import StageProgress
from streams.runtime.topics import (
    AVAILABILITY_PREFIX,
    EVENTS,
    availability_topic,
    changelog_topic,
    partition_for,
)
from streams.settings import Settings

INTERNAL_PREFIXES = ("inventory.commands", "inventory.reservation-decisions")


def publish_file(
    path: Path,
    settings: Settings,
    bootstrap: str,
    progress: bool = True,
    after_each: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Validate every line; good events go to inventory.events, bad lines to inventory.dlq.

    `after_each`, when given, runs after every line is acknowledged (one record at a time: tests
    use it to let the topology settle between events).
    """
    try:
        size = path.stat().st_size
        handle = path.open("rb")
    except OSError as error:
        raise InventoryError(f"cannot read {path}: {error.strerror}") from None
    producer = SourceProducer(bootstrap, settings=settings)
    published = rejected = 0
    source = f"publish:{path.name}"
    with (
        handle,
        Progress(
            TextColumn("publishing {task.fields[name]}"),
            BarColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[counts]}"),
            disable=not progress or not sys.stderr.isatty(),
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("publish", total=size, name=path.name, counts="")
        for number, raw in enumerate(handle, start=1):
            bar.advance(task, len(raw))
            if not raw.strip():
                continue
            try:
                event = parse_event_json(raw)
            except InvalidEvent as error:
                producer.dead_letter(raw.rstrip(b"\n"), source, f"line {number}: {error.reason}")
                rejected += 1
                continue
            producer.send_event(event)
            published += 1
            if after_each is not None:
                producer.flush()
                after_each()
            if number % 5000 == 0:
                bar.update(task, counts=f"{published:,} events, {rejected:,} rejected")
    counts = producer.close()
    if counts.failed:
        raise BrokerError(f"{counts.failed} records were not acknowledged: {producer.errors()[:3]}")
    return {"published": published, "rejected": rejected}


def decode_record(topic: str, value: bytes | None, codec: Any, commands: CommandCodec) -> Any:
    if value is None:
        return None  # a tombstone
    try:
        if topic.startswith(INTERNAL_PREFIXES) or topic.endswith("-changelog"):
            if is_envelope(value):  # a batch's commands for one partition, each as its own record
                return {
                    "envelope": [
                        {
                            "key": item.key.decode(errors="replace"),
                            "value": decode_record(topic, item.value, codec, commands),
                        }
                        for item in unpack(value)
                    ]
                }
            if value[:1] == b"{":
                return json.loads(value)
            return record_to_json(commands.decode(value))  # type: ignore[arg-type]
        return record_to_json(codec.decode(value, topic))
    except (EncodingError, InvalidEvent) as error:
        return {"undecodable": str(error)}


def _reader(bootstrap: str, purpose: str) -> Consumer:
    """A consumer that reads from the start with no group of its own to commit to."""
    return Consumer(
        {
            **kafka_config(bootstrap),
            "group.id": f"{purpose}-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def _partition_count(consumer: Consumer, topic: str) -> int:
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise InventoryError(f"topic {topic!r} does not exist")
    return len(metadata.partitions)


def tail(
    topic: str,
    settings: Settings,
    bootstrap: str,
    out: IO[str],
    *,
    follow: bool = False,
    idle_timeout: float = 2.0,
    limit: int | None = None,
    progress: StageProgress | None = None,
) -> int:
    """Print every record of `topic` from the beginning as one JSON line; returns the count.

    `progress` is told the offsets read of those up to the end as the read starts."""
    codec = make_codec(settings)
    commands = CommandCodec(codec)
    consumer = _reader(bootstrap, "tail")
    try:
        partitions = list(range(_partition_count(consumer, topic)))
        ends = true_end_offsets(bootstrap, topic, partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        seen = 0
        positions = dict.fromkeys(partitions, 0)
        if progress is not None:
            progress.stage(f"reading {topic}", sum(ends.values()))
        last = time.monotonic()
        while limit is None or seen < limit:
            if not follow and all(positions[p] >= ends[p] for p in partitions):
                break
            message = consumer.poll(0.2)
            if message is None:
                if not follow and time.monotonic() - last > idle_timeout + 10:
                    break
                continue
            if message.error():
                continue
            last = time.monotonic()
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on every consumed record
            positions[partition] = offset + 1
            key = message.key()
            line = {
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "key": key.decode("utf-8", "replace") if key is not None else None,
                "value": decode_record(topic, message.value(), codec, commands),
            }
            out.write(json.dumps(line, default=str) + "\n")
            seen += 1
            if progress is not None and seen % 1000 == 0:
                progress.update(sum(min(positions[p], ends[p]) for p in partitions))
        if progress is not None:
            progress.update(sum(min(positions[p], ends[p]) for p in partitions))
        return seen
    except KafkaException as error:
        raise BrokerError(f"cannot read {topic}: {error}") from None
    finally:
        consumer.close()


def read_topic(
    topic: str, settings: Settings, bootstrap: str, progress: StageProgress | None = None
) -> Iterator[dict[str, Any]]:
    """All records of a topic, decoded, as dicts (used by tests and replay checks)."""
    import io

    buffer = io.StringIO()
    tail(topic, settings, bootstrap, buffer, progress=progress)
    for line in buffer.getvalue().splitlines():
        yield json.loads(line)


def latest_values(
    topic: str,
    bootstrap: str,
    keys: Iterable[bytes],
    timeout: float = 30.0,
    partitioner: Callable[[bytes, int], int] = partition_for,
) -> dict[bytes, bytes | None]:
    """The last value of each of `keys` on `topic` (None: a tombstone), reading only the partitions
    the keys go to: every topic of ours is keyed and partitioned by murmur2 (a hot SKU's parts
    go to their SKU's partition: `partitioner`)."""
    wanted = set(keys)
    consumer = _reader(bootstrap, "explain")
    try:
        count = _partition_count(consumer, topic)
        partitions = sorted({partitioner(k, count) for k in wanted})
        ends = true_end_offsets(bootstrap, topic, partitions)
        todo = {p for p in partitions if ends[p] > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in todo])
        found: dict[bytes, bytes | None] = {}
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} took more than {timeout:g} s")
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            key = message.key()
            if key in wanted:
                found[key] = message.value()
            if offset + 1 >= ends[partition]:
                todo.discard(partition)
        return found
    except KafkaException as error:
        raise BrokerError(f"cannot read {topic}: {error}") from None
    finally:
        consumer.close()


class ApiUnavailable(InventoryError):
    """The API did not explain the listing (not reachable, no token, or an error): why."""


def explain_from_api(
    settings: Settings, url: str, channel: str, channel_sku: str, timeout: float = 5.0
) -> tuple[Explanation, dict[str, Any] | None, dict[str, str]]:
    """The explanation as the API at `url` gives it (`GET /explain/...` with the channel's token
    from CHANNEL_TOKENS): each SKU's state from the memory of the worker that owns it, where a
    worker serving the API holds it, else as last committed; with the record last published and
    where each SKU's state came from (`owner` or `changelog`). ApiUnavailable says why not."""
    token = settings.channel_tokens.get(channel)
    if token is None:
        raise ApiUnavailable(f"CHANNEL_TOKENS has no token for channel {channel}")
    request = urllib.request.Request(
        f"{url.rstrip('/')}/explain/{quote(channel, safe='')}/{quote(channel_sku, safe='')}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as error:
        try:
            reason = json.loads(error.read()).get("error", error.reason)
        except (ValueError, AttributeError):
            reason = error.reason
        raise ApiUnavailable(f"the API at {url} answered {error.code}: {reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        why = getattr(error, "reason", error)
        raise ApiUnavailable(f"the API at {url} did not answer: {why}") from None
    try:
        explanation = Explanation.from_json(body)
        return explanation, body.get("published"), dict(body.get("state_source", {}))
    except (KeyError, TypeError, ValueError) as error:
        raise ApiUnavailable(
            f"the API at {url} answered what is not an explanation: {error!r}"
        ) from None


def explain_live(
    catalog: Catalog,
    channel: str,
    channel_sku: str,
    settings: Settings,
    bootstrap: str,
    clock_date: date,
) -> tuple[Explanation, dict[str, Any] | None]:
    """The explanation from the SKU states the workers last committed (their `skus` table's
    changelog), and the record last published on availability.<channel>, if any."""
    listing = catalog.listing_by_key.get((channel, channel_sku))
    if listing is None:
        raise InventoryError(f"channel {channel} has no listing {channel_sku!r}")
    skus = {c.sku for c in listing.components}
    values = latest_values(
        changelog_topic(settings.app_id, "skus"), bootstrap, (s.encode() for s in skus)
    )
    records = {key: json.loads(value) for key, value in values.items() if value is not None}
    by_sku: dict[bytes, dict[int | str, Any]] = {}

    def read_parts(names: list[bytes]) -> None:
        parts = latest_values(
            changelog_topic(settings.app_id, "sku_parts"),
            bootstrap,
            names,
            partitioner=lambda name, count: partition_for(part_of(name)[0], count),
        )
        for name, part in parts.items():
            if part is not None:
                key, index = part_of(name)
                by_sku.setdefault(key, {})[index] = json.loads(part)

    # the parts, those of the next layout too (join_parts), and of a wide SKU the index of its
    # location records; then the parts of any newer layout a part says, and the locations
    names = [
        part_key(key, i) for key, record in records.items() for i in range(2 * part_count(record))
    ]
    names += [part_key(key, "") for key, record in records.items() if record.get("w")]
    if names:
        read_parts(names)
    more: list[bytes] = []
    for key, found in by_sku.items():
        split_id = records[key].get("s", "")  # parts of another split are not read (join_parts)
        newest = max(
            (
                p.get("n", 0)
                for i, p in found.items()
                if isinstance(i, int) and p.get("s", "") == split_id
            ),
            default=0,
        )
        more += [part_key(key, i) for i in range(1 << newest) if i not in found]
        more += [part_key(key, loc) for loc in found.get("", ())]
    if more:
        read_parts(more)
    states = {
        key.decode(): join_parts(record, by_sku.get(key, {}).get) for key, record in records.items()
    }
    explanation = explain(catalog, states, channel, channel_sku, clock_date)
    topic = availability_topic(channel)
    record = latest_values(topic, bootstrap, [channel_sku.encode()]).get(channel_sku.encode())
    published = None
    if record is not None:
        published = record_to_json(make_codec(settings).decode(record, topic))
    return explanation, published


__all__ = [
    "AVAILABILITY_PREFIX",
    "EVENTS",
    "ApiUnavailable",
    "explain_from_api",
    "explain_live",
    "latest_values",
    "publish_file",
    "read_topic",
    "tail",
]
