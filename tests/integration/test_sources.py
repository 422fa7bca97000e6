"""Source connectors on the real embedded broker: what a producer sends is on the topics, once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from connectors.sources.batch import import_csv
from connectors.sources.ledger import ImportLedger
from connectors.sources.shopify import sign
from connectors.sources.webhook import load_sources, make_app
from streams.codec import make_codec
from streams.core.catalog import load_catalog
from streams.core.models import DeadLetter, OrderCreated, StockAdjusted
from streams.runtime.producer import SourceProducer
from streams.settings import Settings
from tests.kafka_helpers import create_topic, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.broker_agnostic]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
SECRETS = {"shopify-us": "shpss_it", "wms-east": "whsec_wms", "pos-store-12": "whsec_pos"}
SETTINGS = Settings(webhook_secrets=SECRETS)
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh-east"}, {"id": "store-12"}],
        "channels": [{"id": "shopify-us", "type": "shopify", "locations": ["wh-east"]}],
        "listings": [
            {
                "channel": "shopify-us",
                "channel_sku": "TEE-6PK",
                "components": [{"sku": "TEE-RED-M", "quantity": 6}],
            },
        ],
    }
)
CODEC = make_codec()
ROWS = 100_000
HEADER = b"MBLNR;ZEILE;MATNR;WERKS;MENGE;MEINS;BUDAT;BWART;INSMK\n"


@pytest.fixture
def topics(kafka_bootstrap: str, unique_topic_prefix: str) -> tuple[str, str]:
    events = create_topic(kafka_bootstrap, f"{unique_topic_prefix}.inventory.events", 4)
    dlq = create_topic(kafka_bootstrap, f"{unique_topic_prefix}.inventory.dlq", 1)
    return events, dlq


@pytest.fixture
def producer(kafka_bootstrap: str, topics: tuple[str, str]) -> Iterator[SourceProducer]:
    events, dlq = topics
    producer = SourceProducer(kafka_bootstrap, codec=CODEC, events_topic=events, dlq_topic=dlq)
    yield producer
    producer.close()


def read_all(bootstrap: str, topic: str, expected: int, idle: float = 0.5) -> list[Message]:
    """Every record of `topic`: at least `expected`, then whatever else arrives within `idle` s.

    Not bounded by the high watermark: Tansu's can trail the acknowledged offsets (it stayed a
    few hundred records short after 100k acknowledged records, and 3 short after 3), so reading
    up to it, as consume_all does, misses records.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("sources-read"),
            "enable.auto.commit": False,
        }
    )
    messages: list[Message] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            for message in batch:
                assert message.error() is None, message.error()
                messages.append(message)
            if batch:
                quiet_since = time.monotonic()
            elif len(messages) >= expected and time.monotonic() - quiet_since > idle:
                break
    finally:
        consumer.close()
    return messages


def next_offsets(messages: list[Message]) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in messages:
        out[m.partition() or 0] = max(out.get(m.partition() or 0, 0), (m.offset() or 0) + 1)
    return out


# ---- the webhook receiver ------------------------------------------------------------------


async def test_a_signed_shopify_order_lands_as_order_created(
    kafka_bootstrap: str, topics: tuple[str, str], producer: SourceProducer
) -> None:
    events, dlq = topics
    body = (FIXTURES / "shopify-orders-create.json").read_bytes()
    app = make_app(
        SETTINGS, producer, sources=load_sources(FIXTURES / "sources.yaml", SETTINGS, CATALOG)
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/webhooks/shopify-us",
            data=body,
            headers={
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Hmac-Sha256": sign(SECRETS["shopify-us"], body),
                "X-Shopify-Shop-Domain": "inventory-demo.myshopify.com",
                "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            },
        )
        assert response.status == 200, await response.text()
    (message,) = read_all(kafka_bootstrap, events, 1)  # acknowledged before the 200
    assert message.key() == b"TEE-RED-M"  # SPEC §5: keyed by SKU (the order's first)
    event = CODEC.decode(message.value(), events)
    assert isinstance(event, OrderCreated)
    assert event.event_id == "shopify-us:order:820982911946154508:created"
    assert [(line.line_id, line.sku, line.quantity) for line in event.lines] == [
        ("466157049", "TEE-RED-M", 2),
        ("518995019", "TEE-RED-M", 6),
    ]
    assert read_all(kafka_bootstrap, dlq, 0, idle=0.3) == []


async def test_a_bad_signature_gets_401_and_nothing_is_produced(
    kafka_bootstrap: str, topics: tuple[str, str], producer: SourceProducer
) -> None:
    events, dlq = topics
    body = (FIXTURES / "shopify-orders-create.json").read_bytes()
    app = make_app(
        SETTINGS, producer, sources=load_sources(FIXTURES / "sources.yaml", SETTINGS, CATALOG)
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.post(
            "/webhooks/shopify-us",
            data=body,
            headers={
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Hmac-Sha256": sign("not-the-secret", body),
            },
        )
        assert response.status == 401
        assert (await response.json())["error"] == (
            "missing or wrong X-Shopify-Hmac-Sha256 signature"
        )
    assert producer.flush().sent == 0
    assert read_all(kafka_bootstrap, events, 0, idle=0.3) == []
    assert read_all(kafka_bootstrap, dlq, 0, idle=0.3) == []


# ---- the batch importer --------------------------------------------------------------------


def bad_kind(n: int) -> str | None:
    """Which malformation row n carries, if any (about 1.3% of the rows)."""
    if n % 211 == 0:
        return "quantity"
    if n % 307 == 0:
        return "sku"
    if n % 401 == 0:
        return "short"
    if n % 503 == 0:
        return "date"
    return None


def write_export(path: Path) -> tuple[int, dict[int, str]]:
    """ROWS data rows; returns the good count and {line number: malformation} of the bad ones."""
    bad: dict[int, str] = {}
    with path.open("wb") as out:
        out.write(HEADER)
        for n in range(1, ROWS + 1):
            doc, line = 6_000_000 + n // 10, n % 10 + 1
            qty, sku, when = str(n % 40 + 1), "100100", "23.11.2026 08:15:00"
            kind = bad_kind(n)
            if kind == "quantity":
                qty = "12x"
            elif kind == "sku":
                sku = "999999"
            elif kind == "date":
                when = "31.02.2026 08:15:00"
            text = f"{doc};{line};{sku};1000;{qty};ST;{when};311;"
            if kind == "short":
                text = f"{doc};{line};{sku}"
            if kind is not None:
                bad[n + 1] = kind  # the header is line 1
            out.write(text.encode() + b"\n")
    return ROWS - len(bad), bad


def test_a_100k_row_export_lands_every_good_row_once_and_every_bad_row_in_the_dlq(
    kafka_bootstrap: str,
    topics: tuple[str, str],
    producer: SourceProducer,
    tmp_path: Path,
) -> None:
    events, dlq = topics
    path = tmp_path / "erp-movements-2026-11-23.csv"
    good, bad = write_export(path)
    mapping = FIXTURES / "erp-adjustments.yaml"
    ledger = ImportLedger(tmp_path / "ledger.json")

    started = time.perf_counter()
    report = import_csv(path, mapping, producer, progress=False, ledger=ledger)
    elapsed = time.perf_counter() - started
    t = report.tally
    assert (t.received, t.produced, t.dead_lettered, t.duplicates) == (ROWS, good, len(bad), 0)
    assert report.delivery.events_acked == good and report.delivery.dead_letters_acked == len(bad)

    produced = read_all(kafka_bootstrap, events, good)
    ids = [CODEC.decode(m.value(), events).event_id for m in produced]
    assert len(ids) == len(set(ids)) == good  # every good row exactly once
    sample = CODEC.decode(produced[0].value(), events)
    assert isinstance(sample, StockAdjusted) and sample.location == "wh-east"

    letters = [CODEC.decode(m.value(), dlq) for m in read_all(kafka_bootstrap, dlq, len(bad))]
    assert all(isinstance(letter, DeadLetter) for letter in letters)
    by_line = {int(d.reason.split(" line ")[1].split(":")[0]): d for d in letters}  # type: ignore[attr-defined]
    assert set(by_line) == set(bad)  # every bad row, by its line number
    lines = path.read_bytes().splitlines(keepends=True)
    expected_reason = {
        "quantity": "quantity: '12x' is not a number",
        "sku": "sku: source code '999999' has no mapping to one of our SKUs",
        "short": "expected 9 fields, found 3",
        "date": "occurred_at: '31.02.2026 08:15:00' is not a timestamp",
    }
    for number, kind in bad.items():
        letter = by_line[number]
        assert letter.original == lines[number - 1]  # type: ignore[attr-defined]
        assert letter.reason.startswith(  # type: ignore[attr-defined]
            f"{path.name} line {number}: {expected_reason[kind]}"
        )

    # Importing it again adds nothing: the ledger knows the file, so no record is produced.
    again = import_csv(path, mapping, producer, progress=False, ledger=ledger)
    assert again.skipped and again.tally.received == 0
    assert producer.flush().sent == ROWS
    assert len(read_all(kafka_bootstrap, events, good)) == good
    assert len(read_all(kafka_bootstrap, dlq, len(bad))) == len(bad)

    # Without the ledger (--force, another machine) the re-import produces exactly the same
    # event ids, which the stream core's dedupe by event_id ignores: nothing changes downstream.
    forced = import_csv(path, mapping, producer, progress=False, ledger=ledger, force=True)
    assert forced.tally.produced == good
    first_ends = next_offsets(produced)
    replayed = [
        CODEC.decode(m.value(), events).event_id
        for m in read_all(kafka_bootstrap, events, 2 * good)
        if (m.offset() or 0) >= first_ends.get(m.partition() or 0, 0)
    ]
    assert sorted(replayed) == sorted(ids)
    print(f"\n100k-row import into Kafka: {elapsed:.1f} s ({ROWS / elapsed:,.0f} rows/s)")


def test_pos_upload_lands_with_business_time(
    kafka_bootstrap: str, topics: tuple[str, str], producer: SourceProducer
) -> None:
    from connectors.sources.pos import import_pos

    events, dlq = topics
    report = import_pos(
        FIXTURES / "pos-store-12.jsonl", FIXTURES / "pos-store-12.yaml", producer, progress=False
    )
    assert report.tally.produced == 3 and report.tally.dead_lettered == 3
    decoded = [CODEC.decode(m.value(), events) for m in read_all(kafka_bootstrap, events, 3)]
    assert {json.dumps(e.occurred_at.isoformat()) for e in decoded} == {  # type: ignore[attr-defined]
        '"2026-11-23T15:04:00+00:00"',
        '"2026-11-23T15:30:00+00:00"',
    }
    assert len(read_all(kafka_bootstrap, dlq, 3)) == 3


def test_the_import_command(
    kafka_bootstrap: str,
    unique_topic_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import argparse

    from connectors.sources.cli import add_import_parser, run_import

    parser = argparse.ArgumentParser(prog="inventory-streams")
    add_import_parser(parser.add_subparsers(dest="command"))
    argv = [
        "import",
        "csv",
        str(FIXTURES / "erp-adjustments.csv"),
        "--mapping",
        str(FIXTURES / "erp-adjustments.yaml"),
        "--no-progress",
    ]
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, data_dir=tmp_path)
    events = f"{unique_topic_prefix}.inventory.events"
    dlq = f"{unique_topic_prefix}.inventory.dlq"

    def run() -> int:
        args = parser.parse_args(argv)
        status: int = args.run(args, settings, events_topic=events, dlq_topic=dlq)
        return status

    assert run_import is parser.parse_args(argv).run
    assert run() == 1  # completed, two rows dead-lettered
    out = capsys.readouterr().out
    assert "6 records -> 4 events, 2 dead-lettered" in out
    assert "dead-lettered: erp-adjustments.csv line 6: sku: source code '999999'" in out
    assert run() == 0  # the ledger in data_dir knows the file
    assert "already imported" in capsys.readouterr().out
    assert len(read_all(kafka_bootstrap, events, 4)) == 4
    assert len(read_all(kafka_bootstrap, dlq, 2)) == 2


def test_a_fresh_broker_gets_a_file_imported_again(tmp_path: Path) -> None:
    """The ledger belongs to the cluster it was written for: a new broker (here a Tansu started
    afresh, with the same data directory) receives the file's events again."""
    import argparse

    from connectors.sources.cli import add_import_parser
    from streams.runtime.broker import EmbeddedBroker

    parser = argparse.ArgumentParser(prog="inventory-streams")
    add_import_parser(parser.add_subparsers(dest="command"))
    argv = ["import", "csv", str(FIXTURES / "erp-adjustments.csv"), "--mapping"]
    argv += [str(FIXTURES / "erp-adjustments.yaml"), "--no-progress"]
    imported = []
    for _ in range(2):
        with EmbeddedBroker() as broker:
            settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, data_dir=tmp_path)
            args = parser.parse_args(argv)
            assert args.run(args, settings) == 1  # imported: four events, two dead letters
            assert args.run(args, settings) == 0  # the same cluster already has it
            imported.append(len(read_all(broker.bootstrap_servers, "inventory.events", 4)))
    assert imported == [4, 4]
    assert len(list((tmp_path / "clusters").iterdir())) == 2
