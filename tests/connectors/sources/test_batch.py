"""CSV imports: every row lands once as an event or in the DLQ (bytes, line, reason); a re-import
changes nothing; a mapping that does not fit the file produces nothing at all."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectors.sources.base import InvalidSourceConfig
from connectors.sources.batch import import_csv, read_records
from connectors.sources.ledger import ImportLedger
from streams.core.models import InboundScheduled, StockAdjusted
from streams.errors import DeliveryFailed
from tests.connectors.sources.source_fakes import fake_producer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"
HEADER = "MBLNR;ZEILE;MATNR;WERKS;MENGE;MEINS;BUDAT;BWART;INSMK\n"


def write(tmp_path: Path, rows: list[str], name: str = "export.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_bytes((header + "".join(rows)).encode())
    return path


def row(doc: int, line: int = 1, qty: str = "5", sku: str = "100100", when: str = "") -> str:
    return f"{doc};{line};{sku};1000;{qty};ST;{when or '23.11.2026 08:15:00'};311;\n"


def test_erp_adjustments_map_units_reasons_and_buckets() -> None:
    producer, kafka = fake_producer()
    report = import_csv(
        FIXTURES / "erp-adjustments.csv",
        FIXTURES / "erp-adjustments.yaml",
        producer,
        progress=False,
    )
    t = report.tally
    assert (t.received, t.produced, t.dead_lettered, t.duplicates) == (6, 4, 2, 0)
    events = {e.event_id: e for e in kafka.events()}
    assert set(events) == {
        "erp:adj:4900001:1",
        "erp:adj:4900001:2",
        "erp:adj:4900002:1",
        "erp:adj:4900003:1",
    }
    mug = events["erp:adj:4900001:2"]
    assert isinstance(mug, StockAdjusted)
    assert (mug.sku, mug.quantity, mug.reason) == ("MUG", 12, "transfer-in")  # 2 cartons of 6
    shrink = events["erp:adj:4900002:1"]
    assert isinstance(shrink, StockAdjusted) and shrink.quantity == -3
    damaged = events["erp:adj:4900003:1"]
    assert isinstance(damaged, StockAdjusted)
    assert (damaged.sku, damaged.location, damaged.quantity, damaged.bucket) == (
        "HOODIE-BLK-L",
        "store-12",
        1200,
        "damaged",
    )
    letters = kafka.dead_letters()
    lines = (FIXTURES / "erp-adjustments.csv").read_bytes().splitlines(keepends=True)
    assert [d.original for d in letters] == [lines[5], lines[6]]  # exactly as in the file
    assert letters[0].reason == (
        "erp-adjustments.csv line 6: sku: source code '999999' has no mapping to one of our SKUs"
    )
    assert letters[1].reason == "erp-adjustments.csv line 7: quantity: 'abc' is not a number"
    assert {d.source for d in letters} == {"erp"}


def test_every_kind_of_file(tmp_path: Path) -> None:
    producer, kafka = fake_producer()
    for name in ("wms-cycle-counts", "erp-receipts", "erp-inbound"):
        import_csv(FIXTURES / f"{name}.csv", FIXTURES / f"{name}.yaml", producer, progress=False)
    by_source = {(type(e).__name__, getattr(e, "mode", None)) for e in kafka.events()}
    assert by_source == {
        ("StockAdjusted", "count"),
        ("StockAdjusted", "delta"),
        ("InboundScheduled", None),
    }
    receipt = next(e for e in kafka.events() if e.event_id == "erp:receipt:GR-77:1")
    assert isinstance(receipt, StockAdjusted)
    assert (receipt.quantity, receipt.po_id, receipt.reason) == (48, "PO-4711", "receipt")
    inbound = next(e for e in kafka.events() if isinstance(e, InboundScheduled))
    assert (inbound.quantity, inbound.eta.isoformat()) == (240, "2026-12-01")
    reasons = [d.reason for d in kafka.dead_letters()]
    assert reasons == [
        "wms-cycle-counts.csv line 4: stock-adjusted "
        f"{kafka.dead_letters()[0].reason.split()[4]} a count cannot be negative (got -1)",
        "erp-inbound.csv line 3: inbound-scheduled erp:inbound:PO-4712:10: quantity: "
        "Input should be greater than 0",
    ]


def test_a_file_imported_twice_yields_the_same_event_ids(tmp_path: Path) -> None:
    rows = [row(1, 1), row(1, 2), row(2, 1, qty="x")]
    first_path = write(tmp_path, rows, "monday.csv")
    again = write(tmp_path, list(reversed(rows)), "monday-resent.csv")  # other name, other order
    producer, kafka = fake_producer()
    mapping = FIXTURES / "erp-adjustments.yaml"
    import_csv(first_path, mapping, producer, progress=False)
    first = [e.event_id for e in kafka.events()]
    import_csv(again, mapping, producer, progress=False)
    second = [e.event_id for e in kafka.events()][len(first) :]
    assert sorted(first) == sorted(second) == ["erp:adj:1:1", "erp:adj:1:2"]


def test_content_ids_are_stable_when_the_export_has_no_ids(tmp_path: Path) -> None:
    header = "item,site,counted_qty,counted_at,status\n"
    same = "MUG,EAST,4,2026-11-23T06:00:00Z,AVAILABLE\n"
    other = "TEE-RED-M,EAST,9,2026-11-23T06:00:00Z,AVAILABLE\n"
    producer, kafka = fake_producer()
    mapping = FIXTURES / "wms-cycle-counts.yaml"
    import_csv(
        write(tmp_path, [same, other, same], "a.csv", header), mapping, producer, progress=False
    )
    ids_a = [e.event_id for e in kafka.events()]
    import_csv(
        write(tmp_path, [other, same, same], "b.csv", header), mapping, producer, progress=False
    )
    ids_b = [e.event_id for e in kafka.events()][3:]
    assert len(set(ids_a)) == 3  # two identical rows are two facts: occurrence 1 and 2
    assert sorted(ids_a) == sorted(ids_b)


def test_repeated_rows_are_counted_once_and_conflicting_ones_dead_lettered(tmp_path: Path) -> None:
    path = write(tmp_path, [row(7, 1), row(7, 1), row(7, 1, qty="6")])
    producer, kafka = fake_producer()
    report = import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False)
    t = report.tally
    assert (t.received, t.produced, t.duplicates, t.dead_lettered) == (3, 1, 1, 1)
    assert kafka.dead_letters()[0].reason == (
        "export.csv line 4: erp:adj:7:1 appears again with other values (first on line 2)"
    )


def test_broken_csv_lines_are_dead_lettered_alone(tmp_path: Path) -> None:
    rows = [
        row(1),
        '2;1;"100100;1000;5;ST;23.11.2026 08:15:00;311;\n',
        row(3),
        "4;1;100100\n",
        b"5;1;1001\xff00;1000;5;ST;23.11.2026 08:15:00;311;\n".decode("latin-1"),
        row(6),
    ]
    path = tmp_path / "broken.csv"
    path.write_bytes(
        HEADER.encode() + "".join(rows[:4]).encode() + rows[4].encode("latin-1") + rows[5].encode()
    )
    producer, kafka = fake_producer()
    report = import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False)
    assert report.tally.received == report.tally.accounted == 6
    assert sorted(e.event_id for e in kafka.events()) == [
        "erp:adj:1:1",
        "erp:adj:3:1",
        "erp:adj:6:1",
    ]
    letters = {d.reason.split(":")[0]: d for d in kafka.dead_letters()}
    assert set(letters) == {"broken.csv line 3", "broken.csv line 5", "broken.csv line 6"}
    assert "malformed CSV" in letters["broken.csv line 3"].reason
    assert "expected 9 fields, found 3" in letters["broken.csv line 5"].reason
    assert "not valid utf-8" in letters["broken.csv line 6"].reason
    assert letters["broken.csv line 6"].original == rows[4].encode("latin-1")


def test_multiline_fields_when_the_mapping_allows_them() -> None:
    data = b'a,b\n1,"two\nlines"\n3,4\n'
    import io

    records = list(read_records(io.BytesIO(data), "utf-8", ",", multiline=True))
    assert [(r.line, r.fields, r.raw) for r in records] == [
        (1, ["a", "b"], b"a,b\n"),
        (2, ["1", "two\nlines"], b'1,"two\nlines"\n'),
        (4, ["3", "4"], b"3,4\n"),
    ]
    split = list(read_records(io.BytesIO(data), "utf-8", ",", multiline=False))
    assert [r.line for r in split] == [1, 2, 3, 4]
    assert split[1].problem is not None and split[3].fields == ["3", "4"]


def test_a_header_without_the_mapped_columns_produces_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, [row(1)], header="DOC;LINE;MATNR;WERKS;MENGE;MEINS;BUDAT;BWART;INSMK\n")
    producer, kafka = fake_producer()
    with pytest.raises(InvalidSourceConfig, match="the header has no column 'MBLNR', 'ZEILE'"):
        import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False)
    assert kafka.log == []
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InvalidSourceConfig, match="empty file"):
        import_csv(empty, FIXTURES / "erp-adjustments.yaml", producer, progress=False)


def test_the_ledger_skips_a_complete_import_unless_forced(tmp_path: Path) -> None:
    path = write(tmp_path, [row(1), row(2)])
    ledger = ImportLedger(tmp_path / "ledger.json")
    producer, kafka = fake_producer()
    mapping = FIXTURES / "erp-adjustments.yaml"
    assert not import_csv(path, mapping, producer, progress=False, ledger=ledger).skipped
    copy = tmp_path / "copy.csv"
    shutil.copy(path, copy)  # same bytes under another name: the same file
    second = import_csv(copy, mapping, producer, progress=False, ledger=ledger)
    assert second.skipped and second.tally.received == 0 and len(kafka.log) == 2
    forced = import_csv(copy, mapping, producer, progress=False, ledger=ledger, force=True)
    assert forced.tally.produced == 2
    assert [e.event_id for e in kafka.events()] == ["erp:adj:1:1", "erp:adj:2:1"] * 2


def test_a_refused_delivery_fails_the_import_and_keeps_it_out_of_the_ledger(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, [row(1), row(2)])
    ledger = ImportLedger(tmp_path / "ledger.json")
    refused: list[bytes | None] = []

    def refuse_first(msg: object) -> bool:
        refused.append(msg.key())  # type: ignore[attr-defined]
        return len(refused) == 1

    producer, _kafka = fake_producer(fail=refuse_first)
    with pytest.raises(DeliveryFailed, match="refused 1 records"):
        import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False, ledger=ledger)
    assert not (tmp_path / "ledger.json").exists()


def test_a_full_buffer_makes_the_importer_wait_not_grow(tmp_path: Path) -> None:
    path = write(tmp_path, [row(n) for n in range(1, 51)])
    producer, kafka = fake_producer(capacity=4)
    report = import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=False)
    assert report.tally.produced == 50 and len(kafka.events()) == 50
    assert report.delivery.backpressure_waits > 0


def test_progress_bar_does_not_change_the_result(tmp_path: Path) -> None:
    path = write(tmp_path, [row(n) for n in range(1, 5000)])
    producer, _kafka = fake_producer()
    report = import_csv(path, FIXTURES / "erp-adjustments.yaml", producer, progress=True)
    assert report.tally.produced == 4999
    assert "4,999 records -> 4,999 events" in report.summary()
