"""End offsets and lag on the real broker: the true end of a partition whose last batch holds many
records (Tansu's high watermark stops at its first), read without chasing a busy partition."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.runtime.offsets import LagProbe, true_end_offsets
from streams.runtime.outputs import Outputs
from tests.kafka_helpers import create_topic, produce

pytestmark = pytest.mark.integration


def one_batch(bootstrap: str, topic: str, count: int) -> None:
    """`count` records to partition 0 in one produce request (one record batch)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 200})
    for i in range(count):
        producer.produce(topic, f"v{i}".encode(), partition=0)
    assert producer.flush(10) == 0


def test_the_end_of_a_partition_counts_every_record_of_its_last_batch(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic_prefix, partitions=2)
    produce(kafka_bootstrap, topic, [(None, b"first")], partition=0)
    one_batch(kafka_bootstrap, topic, 50)
    assert true_end_offsets(kafka_bootstrap, topic, [0, 1]) == {0: 51, 1: 0}

    group = f"{unique_topic_prefix}-group"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 11)], asynchronous=False)
    consumer.close()
    probe = LagProbe(kafka_bootstrap, group)
    try:
        assert probe.behind([(topic, 0), (topic, 1)]) == {topic: 40}
    finally:
        probe.close()


def test_the_probe_tells_a_broker_whose_readers_miss_acknowledged_records(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    """A round of reservation decisions waits for one marker on a broker whose watermark covers
    every record it acknowledged, and for two where it stops at the first record of the last
    batch (Tansu): told after one marker there, a decision's record could be unread by the
    recovery after a crash. The probe must tell the two apart, whichever broker this is."""
    topic = create_topic(kafka_bootstrap, unique_topic_prefix)
    one_batch(kafka_bootstrap, topic, 50)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_topic_prefix})
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.close()
    assert high in (1, 50)  # the first of the batch (Tansu), or all of it
    outputs = Outputs(kafka_bootstrap)
    assert outputs.reads_what_it_acknowledges(topic, 0, b"probe") is (high == 50)
    pairs = 3 if high == 50 else 1  # three pairs say yes, the first one seen at Tansu's says no
    assert true_end_offsets(kafka_bootstrap, topic, [0]) == {0: 50 + 2 * pairs}


def test_a_partition_being_written_to_is_not_chased_until_the_timeout(
    kafka_bootstrap: str, unique_topic_prefix: str
) -> None:
    """Records keep arriving: the call takes its last batch and returns, well before `timeout`
    (reading on would decode every new record in the caller's process for the whole timeout)."""
    topic = create_topic(kafka_bootstrap, unique_topic_prefix)
    stop = threading.Event()
    acked = [0]

    def write() -> None:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})

        def delivered(err: object, msg: object) -> None:
            if err is None:
                acked[0] += 1

        while not stop.is_set():
            for _ in range(20):
                producer.produce(topic, b"x" * 100, partition=0, on_delivery=delivered)
            producer.poll(0.01)
        producer.flush(10)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while acked[0] < 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = acked[0]
        assert before >= 500, "the writer made no progress"
        started = time.monotonic()
        end = true_end_offsets(kafka_bootstrap, topic, [0], timeout=5.0)[0]
        took = time.monotonic() - started
    finally:
        stop.set()
        writer.join()
    assert end >= before
    assert took < 2.5, f"{took:.2f} s: the busy partition was chased to the timeout"
