"""`inventory-streams reconcile`: audit another system's counts against the live state.

The comparison (`compare`) is pure: rows of a snapshot, the catalog and the latest records in, one
finding per row out. Alerts and corrections derived from it carry ids computed from the row alone,
so running the same audit twice publishes nothing new: a correction is the same `count` event.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from streams.core.catalog import Catalog
from streams.core.keys import position_key
from streams.core.models import Alert, StockAdjusted, format_ts
from streams.errors import InventoryError
from streams.runtime.progress import StageProgress

COLUMNS = ("system", "sku", "location_or_channel", "quantity", "as_of")

Status = Literal["ok", "drift", "stale", "unmatched"]


class InvalidSnapshot(InventoryError):
    """A snapshot CSV that cannot be audited; names every bad line."""


@dataclass(frozen=True)
class SnapshotRow:
    line: int
    system: str
    sku: str
    target: str  # location_or_channel
    quantity: int
    as_of: datetime


@dataclass(frozen=True)
class Thresholds:
    """A difference is drift only when it exceeds both: `units` and `percent` of their count."""

    units: int = 0
    percent: float = 0.0

    def exceeded(self, ours: int, theirs: int) -> bool:
        diff = abs(theirs - ours)
        return diff > self.units and diff * 100 > self.percent * abs(theirs)


@dataclass(frozen=True)
class Finding:
    line: int
    system: str
    sku: str
    target: str  # their location_or_channel, as written
    location: str | None
    channel: str | None
    theirs: int
    their_as_of: str
    status: Status
    ours: int | None = None
    difference: int | None = None  # theirs - ours
    exceeds: bool = False
    our_as_of: str | None = None
    our_cause_event_id: str | None = None
    note: str = ""
    correction: str | None = None  # what --correct did or why it could not

    @property
    def where(self) -> str:
        return self.target


def parse_snapshot(lines: Iterable[str]) -> list[SnapshotRow]:
    """Rows of a snapshot CSV, or InvalidSnapshot listing every bad line (nothing half-read)."""
    reader = csv.DictReader(lines)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InvalidSnapshot(
            f"the header must name the columns {','.join(COLUMNS)}; missing: {', '.join(missing)}"
        )
    reader.fieldnames = header
    rows: list[SnapshotRow] = []
    problems: list[str] = []
    seen: dict[tuple[str, str, str], int] = {}
    for record in reader:
        line = reader.line_num
        values = {c: (record.get(c) or "").strip() for c in COLUMNS}
        empty = [c for c in COLUMNS if not values[c]]
        if empty:
            problems.append(f"line {line}: empty {', '.join(empty)}")
            continue
        try:
            quantity = int(values["quantity"])
        except ValueError:
            problems.append(f"line {line}: quantity {values['quantity']!r} is not a whole number")
            continue
        if quantity < 0:
            problems.append(f"line {line}: quantity {quantity} is negative (a count is >= 0)")
            continue
        try:
            as_of = datetime.fromisoformat(values["as_of"])
        except ValueError:
            problems.append(f"line {line}: as_of {values['as_of']!r} is not an RFC 3339 timestamp")
            continue
        if as_of.tzinfo is None:
            problems.append(f"line {line}: as_of {values['as_of']!r} has no timezone (add Z)")
            continue
        key = (values["system"], values["sku"], values["location_or_channel"])
        if key in seen:
            problems.append(
                f"line {line}: same system, sku and location_or_channel as line {seen[key]}"
            )
            continue
        seen[key] = line
        rows.append(SnapshotRow(line, key[0], key[1], key[2], quantity, as_of.astimezone(UTC)))
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InvalidSnapshot(f"{len(problems)} bad rows: {shown}{more}")
    return rows


def _ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            return None
    return None


def compare(
    rows: Sequence[SnapshotRow],
    catalog: Catalog,
    positions: Mapping[str, Mapping[str, Any]],
    availability: Mapping[tuple[str, str], Mapping[str, Any]],
    thresholds: Thresholds,
) -> list[Finding]:
    """One finding per row.

    `positions` holds the latest `inventory.positions` value per `sku|location`; `availability`
    the latest `availability.<channel>` value per (channel, channel_sku). A difference over the
    thresholds is `drift`, unless our record is newer than their count: then it is `stale` (their
    snapshot predates movements we applied), reported but neither alerted nor corrected.
    """
    findings = []
    for row in rows:
        base: dict[str, Any] = {
            "line": row.line,
            "system": row.system,
            "sku": row.sku,
            "target": row.target,
            "theirs": row.quantity,
            "their_as_of": format_ts(row.as_of),
        }
        if row.target in catalog.location_ids:
            base["location"], base["channel"] = row.target, None
            record = positions.get(position_key(row.sku, row.target))
            field_name, missing = "on_hand", f"no position for {row.sku} at {row.target}"
        elif row.target in catalog.channel_by_id:
            base["location"], base["channel"] = None, row.target
            if (row.target, row.sku) not in catalog.listing_by_key:
                findings.append(
                    Finding(
                        **base,
                        status="unmatched",
                        note=f"{row.sku} is not a listing of channel {row.target}",
                    )
                )
                continue
            record = availability.get((row.target, row.sku))
            field_name, missing = "available", f"no availability for {row.sku} on {row.target}"
        else:
            findings.append(
                Finding(
                    **base,
                    location=None,
                    channel=None,
                    status="unmatched",
                    note=f"{row.target!r} is neither a location nor a channel of the catalog",
                )
            )
            continue
        if record is None:
            findings.append(
                Finding(**base, status="unmatched", note=missing + " (no event seen for it yet)")
            )
            continue
        ours = int(record[field_name])
        our_as_of = _ts(record.get("as_of"))
        exceeds = thresholds.exceeded(ours, row.quantity)
        status: Status = "ok"
        note = ""
        if exceeds:
            if our_as_of is not None and our_as_of > row.as_of:
                status = "stale"
                note = (
                    f"our record is as of {format_ts(our_as_of)}, after their count: their "
                    "snapshot may be stale (movements since then explain part of the gap)"
                )
            else:
                status = "drift"
        findings.append(
            Finding(
                **base,
                status=status,
                ours=ours,
                difference=row.quantity - ours,
                exceeds=exceeds,
                our_as_of=format_ts(our_as_of) if our_as_of else None,
                our_cause_event_id=record.get("cause_event_id"),
                note=note,
            )
        )
    return findings


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def correction_event(finding: Finding) -> StockAdjusted:
    """Their count, as of their time, as a `count` event whose id is derived from the row alone."""
    if finding.location is None:
        raise ValueError("only location rows can be corrected by a count")
    return StockAdjusted(
        event_id="reconcile-"
        + _digest(
            finding.system, finding.sku, finding.location, finding.theirs, finding.their_as_of
        ),
        occurred_at=datetime.fromisoformat(finding.their_as_of),
        source=finding.system,
        sku=finding.sku,
        location=finding.location,
        mode="count",
        quantity=finding.theirs,
        bucket="sellable",
        reason="cycle-count",
    )


def drift_alert(finding: Finding, now: datetime, correction_id: str | None = None) -> Alert:
    where = f"at {finding.location}" if finding.location else f"on channel {finding.channel}"
    what = "on hand" if finding.location else "available"
    return Alert(
        alert_id="drift-"
        + _digest(
            finding.system,
            finding.sku,
            finding.where,
            finding.theirs,
            finding.their_as_of,
            finding.ours,
        ),
        type="drift",
        sku=finding.sku,
        location=finding.location,
        channel=finding.channel,
        quantity=finding.difference,
        ids=[i for i in (finding.our_cause_event_id, correction_id) if i],
        message=(
            f"{finding.system} counts {finding.theirs} of {finding.sku} {where} as of "
            f"{finding.their_as_of}; we have {finding.ours} {what} "
            f"(difference {finding.difference:+d})"
        ),
        occurred_at=now,
    )


def drift_origin(alert: Alert) -> tuple[str, str]:
    """(system, kind) of a drift alert drift_alert made: the system whose count differs, and
    `on-hand` (a location row) or `available` (a channel row). Read from the message, as the
    alert has no field for the system."""
    system = alert.message.split(" counts ", 1)[0] if " counts " in alert.message else "unknown"
    return system, "on-hand" if alert.location else "available"


@dataclass
class Report:
    findings: list[Finding]
    alerts_published: int = 0
    corrections_published: int = 0
    catalog_version: int | None = None
    errors: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("ok", "drift", "stale", "unmatched"), 0)
        for f in self.findings:
            out[f.status] += 1
        return out

    @property
    def drift(self) -> bool:
        return any(f.status == "drift" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [{**asdict(f), "where": f.where} for f in self.findings],
            "summary": {
                "rows": len(self.findings),
                **self.counts(),
                "alerts_published": self.alerts_published,
                "corrections_published": self.corrections_published,
                "catalog_version": self.catalog_version,
            },
        }

    def to_text(self) -> str:
        out = io.StringIO()
        header = ("STATUS", "SYSTEM", "SKU", "LOCATION/CHANNEL", "OURS", "THEIRS", "DIFF")
        table = [header]
        for f in self.findings:
            table.append(
                (
                    f.status + ("*" if f.exceeds and f.status != "drift" else ""),
                    f.system,
                    f.sku,
                    f.where,
                    "-" if f.ours is None else str(f.ours),
                    str(f.theirs),
                    "-" if f.difference is None else f"{f.difference:+d}",
                )
            )
        widths = [max(len(r[i]) for r in table) for i in range(len(header))]
        for index, cells in enumerate(table):
            out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
            out.write("\n")
            if index:
                row = self.findings[index - 1]
                for text in (row.note, row.correction):
                    if text:
                        out.write(f"    line {row.line}: {text}\n")
        c = self.counts()
        out.write(
            f"{len(self.findings)} rows: {c['ok']} ok, {c['drift']} drift, {c['stale']} stale, "
            f"{c['unmatched']} unmatched; {self.alerts_published} drift alerts and "
            f"{self.corrections_published} corrections published\n"
        )
        return out.getvalue()


def reconcile(
    snapshot: Path,
    bootstrap: str,
    *,
    settings: Any,
    thresholds: Thresholds,
    correct: bool = False,
    catalog: Catalog | None = None,
    now: datetime | None = None,
    progress: StageProgress | None = None,
) -> Report:
    """Read the snapshot and the live state, compare, publish drift alerts (and corrections);
    `progress` is told the topics read and the rows checked, stage by stage."""
    from streams.runtime.catalog_store import read_latest
    from streams.runtime.producer import Outgoing, SourceProducer
    from streams.runtime.topics import ALERTS, POSITIONS, availability_topic
    from streams.tools import read_topic

    try:
        with snapshot.open(encoding="utf-8", newline="") as handle:
            rows = parse_snapshot(handle)
    except OSError as error:
        raise InvalidSnapshot(f"cannot read {snapshot}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InvalidSnapshot(f"{snapshot} is not UTF-8 text: {error}") from None
    live_catalog = catalog or read_latest(bootstrap)
    if live_catalog is None:
        raise InventoryError(
            "no catalog on inventory.catalog: publish one with `inventory-streams catalog FILE` "
            "or pass --catalog"
        )

    progress = progress or StageProgress(enabled=False)

    def latest(topic: str) -> dict[str, dict[str, Any]]:
        try:
            return {r["key"]: r["value"] for r in read_topic(topic, settings, bootstrap, progress)}
        except InventoryError as error:
            if "does not exist" in str(error):
                return {}
            raise

    positions = (
        latest(POSITIONS) if any(r.target in live_catalog.location_ids for r in rows) else {}
    )
    availability: dict[tuple[str, str], dict[str, Any]] = {}
    for channel in sorted({r.target for r in rows} & set(live_catalog.channel_by_id)):
        for key, value in latest(availability_topic(channel)).items():
            availability[(channel, key)] = value
    findings = compare(rows, live_catalog, positions, availability, thresholds)

    now = now or datetime.now(UTC)
    producer = SourceProducer(bootstrap, settings=settings)
    report = Report(findings=[], catalog_version=live_catalog.version)
    codec = producer.codec
    progress.stage("checking rows", len(findings), "rows")
    for finding in findings:
        progress.advance()
        correction_id = None
        if finding.status == "drift" and correct:
            if finding.location is not None:
                event = correction_event(finding)
                producer.send_event(event)
                correction_id = event.event_id
                report.corrections_published += 1
                finding = _with(
                    finding,
                    correction=f"published count {finding.theirs} as of {finding.their_as_of} "
                    f"({event.event_id})",
                )
            else:
                finding = _with(
                    finding,
                    correction="not corrected: a channel's availability is derived, a count "
                    "cannot set it (correct the locations' counts instead)",
                )
        elif finding.status == "stale" and correct:
            finding = _with(
                finding,
                correction="not corrected: ask for a newer snapshot (or publish the count "
                "as an event yourself)",
            )
        if finding.status == "drift":
            alert = drift_alert(finding, now, correction_id)
            producer.send(Outgoing(ALERTS, alert.sku.encode(), codec.encode(alert, ALERTS), False))
            report.alerts_published += 1
        report.findings.append(finding)
    counts = producer.close()
    if counts.failed:
        raise InventoryError(
            f"{counts.failed} records were not acknowledged: {producer.errors()[:3]}"
        )
    return report


def _with(finding: Finding, **changes: Any) -> Finding:
    from dataclasses import replace

    return replace(finding, **changes)
