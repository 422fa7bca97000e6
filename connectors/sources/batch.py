"""Batch files from an ERP or WMS (adjustments, counts, receipts, inbound schedules) as events.

Guarantee: every data row of a file ends as exactly one of: an event on inventory.events, a dead
letter on inventory.dlq (its original bytes, and the line number and reason in the message), or a
counted duplicate of an earlier row of the same file. Event ids come from the row's own document
ids (or its content), never from the file's name or position, so importing a file twice changes
nothing downstream; the optional ledger also skips the second import outright.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from connectors.sources.base import InvalidSourceConfig, Tally, content_id, event_id
from connectors.sources.ledger import ImportLedger, file_digest
from connectors.sources.mapping import SourceMapping, load_mapping
from connectors.sources.metrics import SourceMetrics
from connectors.sources.progress import FileProgress
from streams.core.models import Event, parse_event
from streams.errors import DeliveryFailed, EncodingError, InvalidEvent
from streams.runtime.producer import DeliveryCounts, SourceProducer

_PROGRESS_EVERY = 4096
_ID_TAG = {
    "adjustments": "adj",
    "cycle-counts": "count",
    "receipts": "receipt",
    "inbound": "inbound",
}


@dataclass
class ImportReport:
    """What one import did; `tally.received == tally.accounted` when it finished."""

    path: str
    source: str
    kind: str
    sha256: str = ""
    tally: Tally = field(default_factory=Tally)
    seconds: float = 0.0
    skipped: bool = False  # the ledger says this file was imported completely before
    delivery: DeliveryCounts = field(default_factory=DeliveryCounts)

    @property
    def rows_per_second(self) -> float:
        return self.tally.received / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.skipped:
            return f"{self.path}: already imported (sha256 {self.sha256[:12]}), nothing produced"
        t = self.tally
        return (
            f"{self.path}: {t.received:,} records -> {t.events:,} events, "
            f"{t.dead_lettered:,} dead-lettered, {t.duplicates:,} duplicates, "
            f"{t.ignored:,} ignored "
            f"in {self.seconds:.1f} s ({self.rows_per_second:,.0f} rows/s)"
        )

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        return {
            "path": self.path,
            "source": self.source,
            "kind": self.kind,
            "sha256": self.sha256,
            "skipped": self.skipped,
            "rows": t.received,
            "produced": t.produced,
            "dead_lettered": t.dead_lettered,
            "duplicates": t.duplicates,
            "seconds": round(self.seconds, 3),
            "first_reasons": t.reasons,
        }


# ---- reading: records with their exact bytes and first line number --------------------------


@dataclass(slots=True)
class RawRecord:
    line: int  # physical line the record starts on (1 = header)
    raw: bytes  # the record's bytes exactly as in the file
    fields: list[str]
    problem: str | None = None  # undecodable bytes or broken CSV quoting


def read_records(
    handle: IO[bytes], encoding: str, delimiter: str, *, multiline: bool = False
) -> Iterator[RawRecord]:
    """CSV records with their original bytes: the csv module reads one line at a time, so the
    lines it consumed for a record are exactly the record's bytes.

    Unless `multiline` (quoted fields may hold line breaks), a record spanning several lines is
    read again line by line: one stray quote then breaks its own line, not the lines after it.
    """
    pending: list[bytes] = []
    undecodable: list[tuple[int, int]] = []  # (line, byte offset)
    consumed = 0

    def lines() -> Iterator[str]:
        nonlocal consumed
        for raw in handle:
            pending.append(raw)
            consumed += 1
            try:
                yield raw.decode(encoding)
            except UnicodeDecodeError as error:
                undecodable.append((consumed, error.start))
                yield raw.decode(encoding, errors="replace")

    def single(line: int, raw: bytes) -> RawRecord | None:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as error:
            return RawRecord(line, raw, [], f"not valid {encoding} (byte {error.start + 1})")
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True), [])
        except csv.Error as error:
            return RawRecord(line, raw, [], f"malformed CSV: {error}")
        return RawRecord(line, raw, fields) if fields else None

    reader = csv.reader(lines(), delimiter=delimiter, strict=True)
    start = 1
    while True:
        problem: str | None = None
        fields: list[str] = []
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            problem = f"malformed CSV: {error}"
        if len(pending) > 1 and not multiline:
            for offset, raw in enumerate(pending):
                record = single(start + offset, raw)
                if record is not None:
                    yield record
        else:
            if undecodable and problem is None:
                line, byte = undecodable[0]
                problem = f"not valid {encoding} (line {line}, byte {byte + 1})"
            if fields or problem:  # blank lines are no records
                yield RawRecord(start, b"".join(pending), fields, problem)
        pending.clear()
        undecodable.clear()
        start = consumed + 1


# ---- mapping rows to events ----------------------------------------------------------------

_SHAPES_CACHED = 65_536


@dataclass(frozen=True, slots=True)
class _Shape:
    sku: str
    location: str
    factor: int
    sign: int
    reason: str | None
    bucket: str


class RowMapper:
    """Builds the event of one row of a file whose header is known; InvalidEvent when it cannot."""

    def __init__(self, mapping: SourceMapping, header: list[str], name: str) -> None:
        columns = mapping.spec.columns
        if columns is None or mapping.kind == "pos":
            raise InvalidSourceConfig(f"mapping for {mapping.source} is not for CSV files")
        self.mapping = mapping
        self.kind = mapping.kind
        self.width = len(header)
        positions = {title.strip().lstrip("\ufeff"): i for i, title in enumerate(header)}
        wanted = {
            name: title
            for name, title in columns.model_dump(exclude={"id"}).items()
            if title is not None
        }
        missing = [t for t in [*columns.id, *wanted.values()] if t not in positions]
        if missing:
            raise InvalidSourceConfig(
                f"{name}: the header has no column {', '.join(map(repr, missing))} "
                f"(mapping for {mapping.source}); it has {', '.join(positions)}"
            )
        self.ids = [positions[t] for t in columns.id]
        self.id_titles = list(columns.id)
        at = {field: positions[title] for field, title in wanted.items()}
        self.i_sku, self.i_location = at["sku"], at["location"]
        self.i_quantity, self.i_at = at["quantity"], at["occurred_at"]
        self.i_unit, self.i_reason = at.get("unit", -1), at.get("reason", -1)
        self.i_bucket, self.i_po, self.i_eta = (
            at.get("bucket", -1),
            at.get("po_id", -1),
            at.get("eta", -1),
        )
        self.prefix = event_id(mapping.source, _ID_TAG[mapping.kind])
        self.event_type = "inbound-scheduled" if self.kind == "inbound" else "stock-adjusted"
        self.mode = "count" if self.kind == "cycle-counts" else "delta"
        self.default_reason = {"cycle-counts": "cycle-count", "receipts": "receipt"}.get(
            self.kind, mapping.spec.default_reason
        )
        self._seen_content: dict[str, int] = {}
        self._shapes: dict[tuple[str, ...], _Shape] = {}

    def _shape(self, key: tuple[str, ...]) -> _Shape:
        """What a row's codes mean; rows repeat them, so the answer is kept (refusals are not)."""
        m = self.mapping
        code, location, unit, reason_code, bucket_code = key
        reason = m.reason(reason_code) if self.i_reason >= 0 else None
        bucket = m.bucket(bucket_code) if self.i_bucket >= 0 else None
        if reason is not None:
            bucket = bucket or reason.bucket
        shape = _Shape(
            sku=m.sku(code),
            location=m.location(location),
            factor=m.factor(code, unit if self.i_unit >= 0 else None),
            sign=reason.sign if reason is not None else 1,
            reason=reason.reason if reason is not None else self.default_reason,
            bucket=bucket or m.spec.default_bucket,
        )
        if len(self._shapes) >= _SHAPES_CACHED:
            self._shapes.clear()
        self._shapes[key] = shape
        return shape

    def build(self, fields: list[str]) -> tuple[Event, int | str]:
        """(event, content key); the content key tells a repeated row from a conflicting one."""
        if len(fields) != self.width:
            raise InvalidEvent(f"expected {self.width} fields, found {len(fields)}")
        m = self.mapping
        content: int | str
        if self.ids:
            content = hash(tuple(fields))  # only compared within this run
            parts = [fields[index].strip() for index in self.ids]
            if not all(parts):
                empty = self.id_titles[parts.index("")]
                raise InvalidEvent(f"{empty}: empty (it identifies the row)")
            ident = ":".join([self.prefix, *parts])
        else:
            # No id in the export: the content, and which repetition of it this is in the file.
            content = content_id(*fields)
            seen = self._seen_content.get(content, 0) + 1
            self._seen_content[content] = seen
            ident = event_id(self.prefix, content, seen)
        key = (
            fields[self.i_sku],
            fields[self.i_location],
            fields[self.i_unit] if self.i_unit >= 0 else "",
            fields[self.i_reason] if self.i_reason >= 0 else "",
            fields[self.i_bucket] if self.i_bucket >= 0 else "",
        )
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shape(key)
        data: dict[str, Any] = {
            "event_id": ident,
            "type": self.event_type,
            "source": m.source,
            "occurred_at": m.timestamp(fields[self.i_at]),
            "sku": shape.sku,
            "location": shape.location,
            "quantity": m.quantity(fields[self.i_quantity], shape.factor) * shape.sign,
            "po_id": (fields[self.i_po].strip() or None) if self.i_po >= 0 else None,
        }
        if self.kind == "inbound":
            data["eta"] = m.date(fields[self.i_eta])
        else:
            data["mode"] = self.mode
            data["bucket"] = shape.bucket
            data["reason"] = shape.reason
        return parse_event(data), content


# ---- the importer --------------------------------------------------------------------------


def import_csv(
    path: Path | str,
    mapping: SourceMapping | Path | str,
    producer: SourceProducer,
    *,
    progress: bool = True,
    ledger: ImportLedger | None = None,
    force: bool = False,
    metrics: SourceMetrics | None = None,
    flush_timeout: float = 120.0,
) -> ImportReport:
    """Import one CSV export; returns once the broker acknowledged every record it produced.

    Raises InvalidSourceConfig (nothing produced) when the mapping does not fit the file's header,
    and DeliveryFailed when the broker did not acknowledge everything (the ledger is then not
    updated; importing again is safe).
    """
    if not isinstance(mapping, SourceMapping):
        mapping = load_mapping(mapping)
    if mapping.kind == "pos":
        raise InvalidSourceConfig(f"mapping for {mapping.source} is for POS uploads (import pos)")
    spec = mapping.spec

    def body(handle: IO[bytes], report: ImportReport, bar: FileProgress) -> None:
        records = read_records(
            handle, spec.encoding, spec.delimiter, multiline=spec.multiline_fields
        )
        header = next(records, None)
        if header is None:
            raise InvalidSourceConfig(f"{path}: empty file (a header line is expected)")
        if header.problem:
            raise InvalidSourceConfig(f"{path}: unreadable header: {header.problem}")
        mapper = RowMapper(mapping, header.fields, Path(path).name)
        _import_rows(records, mapper, producer, Path(path).name, report, bar, handle)

    return run_import(
        Path(path),
        mapping,
        producer,
        body,
        progress=progress,
        ledger=ledger,
        force=force,
        metrics=metrics,
        flush_timeout=flush_timeout,
    )


ImportBody = Callable[[IO[bytes], ImportReport, FileProgress], None]


def run_import(
    path: Path,
    mapping: SourceMapping,
    producer: SourceProducer,
    body: ImportBody,
    *,
    progress: bool,
    ledger: ImportLedger | None,
    force: bool,
    metrics: SourceMetrics | None,
    flush_timeout: float,
) -> ImportReport:
    """What every file import does around reading its records: the ledger, the progress bar, and
    waiting for the broker's acknowledgement of everything before the file counts as imported."""
    report = ImportReport(str(path), mapping.source, mapping.kind)
    key = ""
    if ledger is not None:
        try:
            report.sha256 = file_digest(path)
        except OSError as error:
            raise InvalidSourceConfig(f"cannot read {path}: {error.strerror}") from None
        key = ledger.key(mapping.source, mapping.kind, report.sha256, mapping.digest)
        if not force and ledger.get(key) is not None:
            report.skipped = True
            return report
    started = time.perf_counter()
    before = producer.counts()
    try:
        handle = path.open("rb")
        size = path.stat().st_size
    except OSError as error:
        raise InvalidSourceConfig(f"cannot read {path}: {error.strerror}") from None
    with handle, FileProgress(path.name, size, progress) as bar:
        body(handle, report, bar)
        bar.update(size, report.tally.received)
    report.delivery = producer.flush(flush_timeout) - before
    report.seconds = time.perf_counter() - started
    if report.delivery.failed:
        errors = "; ".join(producer.errors()[:3])
        raise DeliveryFailed(
            f"{path}: the broker refused {report.delivery.failed} records ({errors}); "
            "nothing is recorded as imported, import the file again"
        )
    if metrics is not None:
        metrics.record(mapping.source, report.tally)
    if ledger is not None:
        ledger.record(key, {**report.to_json(), "imported_at": time.time()})
    return report


def _import_rows(
    records: Iterator[RawRecord],
    mapper: RowMapper,
    producer: SourceProducer,
    name: str,
    report: ImportReport,
    bar: FileProgress,
    handle: IO[bytes],
) -> None:
    tally, source = report.tally, mapper.mapping.source
    # event id -> first line and content; atomic values keep these dicts out of the GC's scans
    first_line: dict[str, int] = {}
    first_content: dict[str, int | str] = {}
    for record in records:
        tally.received += 1
        try:
            if record.problem:
                raise InvalidEvent(record.problem)
            event, content = mapper.build(record.fields)
            ident = event.event_id
            earlier = first_content.get(ident)
            if earlier is not None:
                if earlier == content:
                    tally.duplicates += 1
                    continue
                raise InvalidEvent(
                    f"{ident} appears again with other values (first on line {first_line[ident]})"
                )
            first_line[ident] = record.line
            first_content[ident] = content
            out = producer.encode_event(event)
        except (InvalidEvent, EncodingError) as error:
            reason = f"{name} line {record.line}: {getattr(error, 'reason', None) or error}"
            producer.dead_letter(record.raw, source, reason, key=f"{name}:{record.line}".encode())
            tally.dead_lettered += 1
            tally.note(reason)
        else:
            producer.send(out)
            tally.produced += 1
            tally.events += 1
        if tally.received % _PROGRESS_EVERY == 0:
            bar.update(handle.tell(), tally.received)
