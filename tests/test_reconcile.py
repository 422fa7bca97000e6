"""reconcile's comparison, alerts and corrections, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.codec import make_codec
from streams.reconcile import (
    InvalidSnapshot,
    Report,
    Thresholds,
    compare,
    correction_event,
    drift_alert,
    parse_snapshot,
)
from streams.simulate import read_catalog

CATALOG = read_catalog(Path(__file__).parent / "scenarios" / "basic" / "catalog.yaml")
HEADER = "system,sku,location_or_channel,quantity,as_of\n"


def rows(text: str) -> list:
    return parse_snapshot((HEADER + text).splitlines(keepends=True))


def pos(on_hand: int, as_of: str = "2026-11-01T09:00:00Z") -> dict:
    return {"on_hand": on_hand, "as_of": as_of, "cause_event_id": "e9"}


POSITIONS = {"TEE-RED-M|wh-east": pos(38), "MUG|wh-east": pos(8, "2026-11-01T12:00:00Z")}
AVAILABILITY = {("shopify-us", "TEE-RED-M"): {"available": 38, "as_of": "2026-11-01T09:00:00Z"}}


def test_each_kind_of_row_gets_its_status_and_reason() -> None:
    findings = compare(
        rows(
            "wms,TEE-RED-M,wh-east,38,2026-11-01T10:00:00Z\n"  # equal
            "wms,TEE-RED-M,wh-east2,1,2026-11-01T10:00:00Z\n"  # unknown place
            "erp,TEE-RED-M,wh-east,30,2026-11-01T10:00:00Z\n"  # drift
            "erp,MUG,wh-east,20,2026-11-01T10:00:00Z\n"  # we moved after their count
            "wms,SOCK,store-12,4,2026-11-01T10:00:00Z\n"  # no record
            "shop,TEE-RED-M,shopify-us,35,2026-11-01T10:00:00Z\n"  # channel drift
            "shop,NOPE,shopify-us,1,2026-11-01T10:00:00Z\n"  # not listed
        ),
        CATALOG,
        POSITIONS,
        AVAILABILITY,
        Thresholds(),
    )
    assert [f.status for f in findings] == [
        "ok",
        "unmatched",
        "drift",
        "stale",
        "unmatched",
        "drift",
        "unmatched",
    ]
    ok, unknown, drift, stale, missing, channel, unlisted = findings
    assert (ok.ours, ok.difference, ok.exceeds) == (38, 0, False)
    assert "neither a location nor a channel" in unknown.note
    assert (drift.location, drift.ours, drift.theirs, drift.difference) == ("wh-east", 38, 30, -8)
    assert stale.exceeds and "may be stale" in stale.note
    assert "no position for SOCK at store-12" in missing.note
    assert (channel.channel, channel.ours, channel.difference) == ("shopify-us", 38, -3)
    assert "not a listing of channel shopify-us" in unlisted.note
    report = Report(findings)
    assert report.drift and report.counts() == {"ok": 1, "drift": 2, "stale": 1, "unmatched": 3}
    text = report.to_text()
    assert "drift" in text and "7 rows" in text


@pytest.mark.parametrize(
    ("thresholds", "ours", "theirs", "exceeds"),
    [
        (Thresholds(), 10, 10, False),
        (Thresholds(), 10, 11, True),
        (Thresholds(units=2), 10, 12, False),
        (Thresholds(units=2), 10, 13, True),
        (Thresholds(percent=10), 95, 100, False),
        (Thresholds(percent=10), 89, 100, True),
        (Thresholds(units=5, percent=1), 90, 100, True),  # both exceeded
        (Thresholds(units=20, percent=1), 90, 100, False),  # within the units
        (Thresholds(percent=50), 3, 0, True),  # they count none: any difference is over
    ],
)
def test_thresholds_tolerate_up_to_both_limits(
    thresholds: Thresholds, ours: int, theirs: int, exceeds: bool
) -> None:
    assert thresholds.exceeded(ours, theirs) is exceeds


def test_a_correction_is_their_count_as_of_their_time_with_an_id_from_the_row() -> None:
    snapshot = "erp,TEE-RED-M,wh-east,30,2026-11-01T10:00:00+01:00\n"
    first = compare(rows(snapshot), CATALOG, POSITIONS, AVAILABILITY, Thresholds())[0]
    again = compare(rows(snapshot), CATALOG, {"TEE-RED-M|wh-east": pos(31)}, {}, Thresholds())[0]
    event = correction_event(first)
    assert event.mode == "count" and event.quantity == 30 and event.source == "erp"
    assert event.occurred_at == datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    assert (event.sku, event.location, event.bucket) == ("TEE-RED-M", "wh-east", "sellable")
    assert correction_event(again).event_id == event.event_id  # a re-run cannot double-apply
    channel = compare(
        rows("shop,TEE-RED-M,shopify-us,35,2026-11-01T10:00:00Z\n"),
        CATALOG,
        {},
        AVAILABILITY,
        Thresholds(),
    )[0]
    with pytest.raises(ValueError, match="only location rows"):
        correction_event(channel)


def test_a_drift_alert_fits_the_alert_schema_and_names_the_ids() -> None:
    finding = compare(
        rows("erp,TEE-RED-M,wh-east,30,2026-11-01T10:00:00Z\n"),
        CATALOG,
        POSITIONS,
        {},
        Thresholds(),
    )[0]
    now = datetime(2026, 11, 2, tzinfo=UTC)
    alert = drift_alert(finding, now, "reconcile-x")
    assert alert.type == "drift" and alert.quantity == -8 and alert.ids == ["e9", "reconcile-x"]
    assert "erp counts 30 of TEE-RED-M at wh-east" in alert.message
    assert drift_alert(finding, now).alert_id == alert.alert_id
    codec = make_codec()
    assert codec.decode(codec.encode(alert, "inventory.alerts"), "inventory.alerts") == alert


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sku,quantity\nA,1\n", "missing: system, location_or_channel, as_of"),
        (HEADER + "wms,A,wh-east,x,2026-11-01T10:00:00Z\n", "line 2: quantity 'x'"),
        (HEADER + "wms,A,wh-east,-1,2026-11-01T10:00:00Z\n", "negative"),
        (HEADER + "wms,A,wh-east,1,yesterday\n", "not an RFC 3339"),
        (HEADER + "wms,A,wh-east,1,2026-11-01T10:00:00\n", "no timezone"),
        (HEADER + "wms,,wh-east,1,2026-11-01T10:00:00Z\n", "empty sku"),
        (
            HEADER + "wms,A,wh-east,1,2026-11-01T10:00:00Z\nwms,A,wh-east,2,2026-11-01T11:00:00Z\n",
            "line 3: same system, sku and location_or_channel as line 2",
        ),
    ],
)
def test_bad_snapshots_are_refused_with_the_line(text: str, reason: str) -> None:
    with pytest.raises(InvalidSnapshot, match=reason):
        parse_snapshot(text.splitlines(keepends=True))
