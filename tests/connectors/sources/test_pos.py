"""POS uploads: sales and returns keep their till time, so late uploads obey the ordering rules."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.sources.mapping import load_mapping
from connectors.sources.pos import PosTranslator, import_pos
from streams.core.catalog import load_catalog
from streams.core.models import ReturnReceived, StockAdjusted, event_to_json
from streams.simulate import simulate
from tests.connectors.sources.source_fakes import fake_producer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
CATALOG = load_catalog(
    {
        "locations": [{"id": "wh-east"}, {"id": "store-12"}],
        "channels": [{"id": "web", "locations": ["store-12"]}],
        "listings": [
            {
                "channel": "web",
                "channel_sku": "TEE-RED-M",
                "components": [{"sku": "TEE-RED-M", "quantity": 1}],
            },
        ],
    }
)


def transaction(txn: str, at: str, *lines: dict[str, object], **extra: object) -> bytes:
    body = {
        "store": "12",
        "register": "3",
        "transaction_id": txn,
        "occurred_at": at,
        "lines": list(lines),
        **extra,
    }
    return json.dumps(body).encode() + b"\n"


def sale(line: int, qty: int = 1, sku: str = "100100") -> dict[str, object]:
    return {"line": line, "type": "sale", "sku": sku, "quantity": qty}


def test_the_fixture_upload_every_line_accounted_for() -> None:
    producer, kafka = fake_producer()
    report = import_pos(
        FIXTURES / "pos-store-12.jsonl", FIXTURES / "pos-store-12.yaml", producer, progress=False
    )
    t = report.tally
    assert (t.received, t.produced, t.dead_lettered, t.ignored, t.duplicates) == (7, 3, 3, 1, 0)
    sale_1, sale_2, back = kafka.events()
    assert isinstance(sale_1, StockAdjusted) and isinstance(sale_2, StockAdjusted)
    assert (sale_1.event_id, sale_1.quantity, sale_1.reason, sale_1.location) == (
        "pos-store-12:12:3:T-1001:1",
        -2,
        "pos-sale",
        "store-12",
    )
    assert (sale_2.sku, sale_2.quantity) == ("MUG", -6)  # one 6-pack
    assert sale_1.occurred_at.isoformat() == "2026-11-23T15:04:00+00:00"  # till time, in UTC
    assert isinstance(back, ReturnReceived)
    assert (back.order_id, back.disposition, back.quantity) == ("T-0990", "damaged", 1)
    assert back.occurred_at.isoformat() == "2026-11-23T15:30:00+00:00"  # local time, New York
    reasons = [d.reason for d in kafka.dead_letters()]
    assert reasons[0] == (
        "pos-store-12.jsonl line 4: T-1004 line 1: sku: source code '777777' has no mapping to "
        "one of our SKUs"
    )
    assert reasons[1] == (
        "pos-store-12.jsonl line 4: T-1004 line 2: quantity: must be greater than 0 (got 0)"
    )
    assert reasons[2].startswith("pos-store-12.jsonl line 5: transaction: malformed JSON")
    lines = (FIXTURES / "pos-store-12.jsonl").read_bytes().splitlines(keepends=True)
    assert kafka.dead_letters()[0].original == lines[3]


def test_a_late_sale_before_the_last_count_is_inside_that_count(tmp_path: Path) -> None:
    """The count (10 at 10:10) arrives first; the store's upload arrives later with a sale at
    10:04 (already in the count) and one at 10:20 (after it): on_hand ends at 9, not 7."""
    count = StockAdjusted(
        event_id="wms:count:1",
        occurred_at="2026-11-23T15:10:00Z",
        source="wms",  # type: ignore[arg-type]
        sku="TEE-RED-M",
        location="store-12",
        mode="count",
        quantity=10,
    )
    upload = tmp_path / "late.jsonl"
    upload.write_bytes(
        transaction("T-1", "2026-11-23T10:04:00-05:00", sale(1, 2))
        + transaction("T-2", "2026-11-23T10:20:00-05:00", sale(1, 1))
    )
    producer, kafka = fake_producer()
    import_pos(upload, FIXTURES / "pos-store-12.yaml", producer, progress=False)
    arrival = [count, *kafka.events()]
    result = simulate(CATALOG, [json.dumps(event_to_json(e)) for e in arrival])
    (position,) = result["positions"]
    assert position["on_hand"] == 9
    assert result["rejected"] == []


def test_uploading_the_same_batch_twice_changes_nothing_downstream(tmp_path: Path) -> None:
    upload = tmp_path / "u.jsonl"
    upload.write_bytes(transaction("T-9", "2026-11-23T10:04:00-05:00", sale(1, 2), sale(2, 1)))
    producer, kafka = fake_producer()
    mapping = FIXTURES / "pos-store-12.yaml"
    import_pos(upload, mapping, producer, progress=False)
    import_pos(upload, mapping, producer, progress=False)
    ids = [e.event_id for e in kafka.events()]
    assert ids[:2] == ids[2:] == ["pos-store-12:12:3:T-9:1", "pos-store-12:12:3:T-9:2"]
    seed = StockAdjusted(
        event_id="seed",
        occurred_at="2026-11-23T00:00:00Z",
        source="wms",  # type: ignore[arg-type]
        sku="TEE-RED-M",
        location="store-12",
        mode="delta",
        quantity=20,
    )
    result = simulate(CATALOG, [json.dumps(event_to_json(e)) for e in [seed, *kafka.events()]])
    assert result["positions"][0]["on_hand"] == 17


def test_repeats_within_one_upload() -> None:
    translator = PosTranslator(load_mapping(FIXTURES / "pos-store-12.yaml"))
    first = translator.translate(transaction("T-5", "2026-11-23T10:00:00Z", sale(1)))
    again = translator.translate(transaction("T-5", "2026-11-23T10:00:00Z", sale(1)))
    changed = translator.translate(transaction("T-5", "2026-11-23T10:00:00Z", sale(1, 3)))
    assert first[0].event is not None
    assert again[0].duplicate
    assert changed[0].reason == "pos-store-12:12:3:T-5:1 appears again with other values"


def test_malformed_transactions_are_refused_whole() -> None:
    translator = PosTranslator(load_mapping(FIXTURES / "pos-store-12.yaml"))
    cases = {
        b"[1, 2]": "a transaction must be a JSON object",
        b'{"store": "12"}': "transaction_id, occurred_at, lines: required field is missing",
        transaction("T-1", "2026-11-23T10:00:00Z"): "lines: a transaction needs a non-empty list",
        transaction("T-1", "yesterday", sale(1)): "occurred_at: 'yesterday' is not a timestamp",
        transaction("T-1", "2026-11-23T10:00:00Z", {"line": 1, "type": "gift"}): "type: 'gift'",
        transaction(
            "T-1", "2026-11-23T10:00:00Z", {"type": "sale", "sku": "100100", "quantity": True}
        ): "quantity: True",
    }
    for raw, reason in cases.items():
        (result,) = translator.translate(raw)
        assert result.event is None and result.reason is not None
        assert reason in result.reason, (raw, result.reason)
