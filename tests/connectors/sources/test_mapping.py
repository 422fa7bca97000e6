"""Mapping files: codes, units and timestamps as ERPs export them; refusals a person can act on."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.sources.base import InvalidSourceConfig
from connectors.sources.mapping import load_mapping
from streams.errors import InvalidEvent

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "sources"


def test_codes_map_to_our_skus_and_locations_including_the_sku_table_file() -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")
    assert m.sku("100100") == "TEE-RED-M"
    assert m.sku(" 100400 ") == "CAP-NAVY"  # from erp-skus.csv
    assert m.location("2000") == "store-12"
    with pytest.raises(InvalidEvent, match="'999' has no mapping to one of our SKUs"):
        m.sku("999")
    with pytest.raises(InvalidEvent, match="location: source code '3000'"):
        m.location("3000")


def test_units_convert_to_eaches_with_per_sku_pack_sizes_first() -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")
    assert m.factor("100100", "KAR") == 12  # the general carton
    assert m.factor("100200", "kar") == 6  # this SKU's own carton
    assert m.factor("100100", None) == 1
    assert m.quantity("2", m.factor("100200", "KAR")) == 12
    with pytest.raises(InvalidEvent, match="unit: 'PAL' has no conversion to eaches"):
        m.factor("100100", "PAL")


@pytest.mark.parametrize(
    ("text", "factor", "expected"),
    [("12", 1, 12), ("-3", 1, -3), ("1.200,000", 1, 1200), ("2,5", 2, 5), (" 7 ", 3, 21)],
)
def test_quantities_as_exported(text: str, factor: int, expected: int) -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")  # decimal_comma: true
    assert m.quantity(text, factor) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "is not a number"),
        ("2,5", "is not a whole number"),
        ("1e40", "too large"),
        ("NaN", "is not a number"),
        ("9" * 5000, "too large"),
        ("", "is not a number"),
    ],
)
def test_quantities_that_are_refused(text: str, reason: str) -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")
    with pytest.raises(InvalidEvent, match=reason):
        m.quantity(text, 1)


def test_quantity_must_fit_avro_long() -> None:
    m = load_mapping(FIXTURES / "erp-receipts.yaml")
    with pytest.raises(InvalidEvent, match="does not fit 64 bits"):
        m.quantity("999999999999999999", 24)


def test_local_timestamps_take_the_mapping_time_zone() -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")  # Europe/Berlin, dd.mm.yyyy
    assert m.timestamp("23.11.2026 08:15:00") == datetime(2026, 11, 23, 7, 15, tzinfo=UTC)
    with pytest.raises(InvalidEvent, match="is not a timestamp"):
        m.timestamp("2026-11-23 08:15")


def test_naive_timestamps_are_refused_without_a_time_zone() -> None:
    m = load_mapping(FIXTURES / "wms-cycle-counts.yaml")
    assert m.timestamp("2026-11-23T06:00:00Z") == datetime(2026, 11, 23, 6, tzinfo=UTC)
    with pytest.raises(InvalidEvent, match="no UTC offset and the mapping sets no"):
        m.timestamp("2026-11-23T06:00:00")


def test_dates_use_the_mapping_format() -> None:
    assert load_mapping(FIXTURES / "erp-inbound.yaml").date("20261201") == date(2026, 12, 1)


def test_reason_codes_carry_bucket_and_sign() -> None:
    m = load_mapping(FIXTURES / "erp-adjustments.yaml")
    damage = m.reason("551")
    assert damage is not None and (damage.reason, damage.bucket) == ("damage", "damaged")
    shrink = m.reason("702")
    assert shrink is not None and shrink.sign == -1
    with pytest.raises(InvalidEvent, match="reason: source code '999' has no mapping"):
        m.reason("999")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "x", "kind": "adjustments"}, "needs columns"),
        ({"source": "x", "kind": "teleport"}, "kind"),
        ({"source": "x y", "kind": "pos"}, "source"),
        (
            {
                "source": "x",
                "kind": "inbound",
                "columns": {"sku": "a", "location": "b", "quantity": "c", "occurred_at": "d"},
            },
            "inbound files need columns po_id, eta",
        ),
        ({"source": "x", "kind": "pos", "timestamps": {"timezone": "Mars/Olympus"}}, "time zone"),
        ({"source": "x", "kind": "pos", "units": {"EA": 0}}, "units.EA"),
    ],
)
def test_broken_mappings_fail_before_any_row(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSourceConfig, match=message):
        load_mapping(data)


def test_unreadable_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidSourceConfig, match="cannot read mapping file"):
        load_mapping(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(InvalidSourceConfig, match="must be a YAML mapping"):
        load_mapping(tmp_path / "list.yaml")
