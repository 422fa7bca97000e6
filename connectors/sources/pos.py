"""Store POS uploads that arrive late (offline registers): sales and returns at business time.

Guarantee: each sale or return line becomes one event whose `occurred_at` is when it happened at the
till, not when the upload arrived, so the stream core's ordering rules see it where it belongs (a
sale made before the last cycle count is already inside that count). Event ids come from store,
register, transaction and line, so an upload sent twice changes nothing downstream.

Upload format: JSON Lines, one transaction per line::

    {"store": "12", "register": "3", "transaction_id": "T-1001",
     "occurred_at": "2026-11-23T10:04:00-05:00", "voided": false,
     "lines": [{"line": 1, "type": "sale", "sku": "100100", "quantity": 2, "unit": "EA"},
               {"line": 2, "type": "return", "sku": "100200", "quantity": 1,
                "disposition": "damaged", "original_transaction": "T-0990"}]}

A sale is a `stock-adjusted` delta of -quantity (reason `pos-sale`) at the store's location; a
return is a `return-received` (disposition from the line, else the mapping's default). A voided
transaction is counted as ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from connectors.sources.base import InvalidSourceConfig, Tally, event_id
from connectors.sources.batch import ImportReport, run_import
from connectors.sources.ledger import ImportLedger
from connectors.sources.mapping import SourceMapping, load_mapping
from connectors.sources.metrics import SourceMetrics
from connectors.sources.progress import FileProgress
from streams.core.models import Event, parse_event
from streams.errors import EncodingError, InvalidEvent
from streams.runtime.producer import Outgoing, SourceProducer

SALE_REASON = "pos-sale"
_PROGRESS_EVERY = 1024


@dataclass(slots=True)
class LineResult:
    """One sale/return line (or a whole unreadable transaction): its event or why it was refused."""

    label: str  # "T-1001 line 2", for reasons and DLQ keys
    event: Event | None = None
    reason: str | None = None
    duplicate: bool = False
    ignored: bool = False


class PosTranslator:
    """Turns uploaded transactions into events; remembers line ids to spot repeats in one upload."""

    def __init__(self, mapping: SourceMapping) -> None:
        if mapping.kind != "pos":
            raise InvalidSourceConfig(
                f"mapping for {mapping.source} is for {mapping.kind} files, not POS uploads"
            )
        self.mapping = mapping
        self._seen: dict[str, str] = {}  # event id -> content

    def translate(self, raw: bytes) -> list[LineResult]:
        """The results of one transaction (one JSON line); never raises for bad input."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            return [LineResult("transaction", reason=f"malformed JSON: {error}")]
        if not isinstance(data, dict):
            return [LineResult("transaction", reason="a transaction must be a JSON object")]
        try:
            header = self._header(data)
        except InvalidEvent as error:
            label = _text(data.get("transaction_id")) or "transaction"
            return [LineResult(label, reason=error.reason)]
        transaction, lines = header[2], data["lines"]
        if data.get("voided") is True:
            return [LineResult(f"{transaction} (voided)", ignored=True)]
        results = []
        for position, line in enumerate(lines, start=1):
            number = _text(line.get("line")) if isinstance(line, dict) else None
            label = f"{transaction} line {number or position}"
            try:
                event = self._event(header, line, position)
            except InvalidEvent as error:
                results.append(LineResult(label, reason=error.reason))
                continue
            content = event.model_dump_json(exclude={"event_id"})
            earlier = self._seen.get(event.event_id)
            if earlier is None:
                self._seen[event.event_id] = content
                results.append(LineResult(label, event=event))
            elif earlier == content:
                results.append(LineResult(label, duplicate=True))
            else:
                reason = f"{event.event_id} appears again with other values"
                results.append(LineResult(label, reason=reason))
        return results

    def _header(self, data: dict[str, Any]) -> tuple[str, str, str, Any]:
        missing = [k for k in ("store", "transaction_id", "occurred_at", "lines") if k not in data]
        if missing:
            raise InvalidEvent(f"{', '.join(missing)}: required field is missing")
        store, transaction = _text(data["store"]), _text(data["transaction_id"])
        if not store or not transaction:
            raise InvalidEvent("store and transaction_id must be non-empty strings or numbers")
        register = _text(data.get("register")) or "-"
        if not isinstance(data["lines"], list) or not data["lines"]:
            raise InvalidEvent("lines: a transaction needs a non-empty list of lines")
        occurred = data["occurred_at"]
        if not isinstance(occurred, str):
            raise InvalidEvent("occurred_at: must be a timestamp string")
        return store, register, transaction, self.mapping.timestamp(occurred)

    def _event(self, header: tuple[str, str, str, Any], line: Any, position: int) -> Event:
        store, register, transaction, occurred_at = header
        if not isinstance(line, dict):
            raise InvalidEvent("a line must be a JSON object")
        m = self.mapping
        kind = line.get("type")
        if kind not in ("sale", "return"):
            raise InvalidEvent(f"type: {kind!r} is neither 'sale' nor 'return'")
        code = _text(line.get("sku"))
        if not code:
            raise InvalidEvent("sku: required field is missing")
        raw_quantity = line.get("quantity")
        if isinstance(raw_quantity, bool) or not isinstance(raw_quantity, int | str):
            raise InvalidEvent(f"quantity: {raw_quantity!r} is not a whole number")
        unit = _text(line.get("unit"))
        quantity = m.quantity(str(raw_quantity), m.factor(code, unit))
        if quantity <= 0:
            raise InvalidEvent(f"quantity: must be greater than 0 (got {quantity})")
        number = _text(line.get("line")) or str(position)
        common = {
            "event_id": event_id(m.source, store, register, transaction, number),
            "occurred_at": occurred_at,
            "source": m.source,
            "sku": m.sku(code),
            "location": m.location(store),
        }
        if kind == "sale":
            data = {
                **common,
                "type": "stock-adjusted",
                "mode": "delta",
                "quantity": -quantity,
                "reason": SALE_REASON,
            }
        else:
            data = {
                **common,
                "type": "return-received",
                "order_id": _text(line.get("original_transaction")),
                "quantity": quantity,
                "disposition": line.get("disposition") or m.spec.default_disposition,
            }
        return parse_event(data)


def _text(value: Any) -> str | None:
    """A non-empty identifier from a JSON string or integer, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def collect(
    results: list[LineResult],
    raw: bytes,
    source: str,
    producer: SourceProducer,
    tally: Tally,
    where: str,
) -> list[Outgoing]:
    """The records of one transaction, encoded: its events, and a dead letter per refused line
    (the transaction's bytes, and which line and why); every line counted in `tally`."""
    out: list[Outgoing] = []
    for result in results:
        tally.received += 1
        if result.duplicate:
            tally.duplicates += 1
            continue
        if result.ignored:
            tally.ignored += 1
            continue
        reason = result.reason
        if result.event is not None:
            try:
                out.append(producer.encode_event(result.event))
            except EncodingError as error:
                reason = str(error)
            else:
                tally.produced += 1
                tally.events += 1
                continue
        text = f"{where}: {result.label}: {reason}"
        key = f"{where}:{result.label}".encode()
        out.append(producer.encode_dead_letter(raw, source, text, key=key))
        tally.dead_lettered += 1
        tally.note(text)
    return out


def import_pos(
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
    """Import one POS upload (JSON Lines); returns once the broker acknowledged every record.

    `tally.received` counts sale/return lines, plus one per transaction too broken to have lines.
    """
    if not isinstance(mapping, SourceMapping):
        mapping = load_mapping(mapping)
    translator = PosTranslator(mapping)
    name = Path(path).name

    def body(handle: IO[bytes], report: ImportReport, bar: FileProgress) -> None:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{name} line {number}"
            results = translator.translate(raw)
            for record in collect(results, raw, mapping.source, producer, report.tally, where):
                producer.send(record)
            if number % _PROGRESS_EVERY == 0:
                bar.update(handle.tell(), report.tally.received)

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
