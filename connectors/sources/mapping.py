"""Mapping files: how one source's export becomes our events (columns, units, SKU/location codes).

A mapping is read and checked once, before the first row: a mapping that cannot work fails the whole
import with InvalidSourceConfig, so only row-level problems ever reach the dead-letter topic.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from connectors.sources.base import InvalidSourceConfig
from streams.core.models import Bucket
from streams.errors import InvalidEvent

FileKind = Literal["adjustments", "cycle-counts", "receipts", "inbound", "pos"]
NonEmpty = Annotated[str, Field(min_length=1)]
MAX_QUANTITY = 2**63 - 1  # Avro long
_CACHE_SIZE = 65_536
_PLAIN_INT = re.compile(r"^[+-]?[0-9]{1,18}$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Columns(_Model):
    """Our field -> the source's column header. `id` lists the columns that identify a row."""

    id: list[NonEmpty] = Field(default_factory=list)
    sku: NonEmpty
    location: NonEmpty
    quantity: NonEmpty
    occurred_at: NonEmpty
    unit: str | None = None
    reason: str | None = None
    bucket: str | None = None
    po_id: str | None = None
    eta: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Timestamps(_Model):
    format: str | None = None  # strptime format; None: ISO 8601 / RFC 3339
    timezone: str | None = None  # for timestamps without an offset; None: such rows are rejected


class ReasonCode(_Model):
    reason: NonEmpty
    bucket: Bucket | None = None
    sign: Literal[1, -1] = 1  # some systems export issues as positive quantities with a code


class Mapping_(_Model):
    """The parsed mapping file; see tests/fixtures/sources/*.yaml for commented examples."""

    source: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")]
    kind: FileKind
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] = ","
    encoding: str = "utf-8"
    decimal_comma: bool = False  # "1.234,5" style numbers
    multiline_fields: bool = False  # quoted fields may contain line breaks
    columns: Columns | None = None  # CSV kinds only
    timestamps: Timestamps = Timestamps()
    date_format: str | None = None  # for eta; None: ISO 8601 (YYYY-MM-DD)
    units: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: {"EA": 1})
    pack_sizes: dict[str, dict[str, Annotated[int, Field(gt=0)]]] = Field(default_factory=dict)
    skus: dict[str, NonEmpty] = Field(default_factory=dict)
    skus_file: Path | None = None  # CSV with a header and two columns: source code, our SKU
    unmapped_skus: Literal["reject", "keep"] = "reject"
    locations: dict[str, NonEmpty] = Field(default_factory=dict)
    unmapped_locations: Literal["reject", "keep"] = "reject"
    reasons: dict[str, ReasonCode] = Field(default_factory=dict)
    unmapped_reasons: Literal["reject", "keep"] = "keep"
    buckets: dict[str, Bucket] = Field(default_factory=dict)
    default_reason: str | None = None
    default_bucket: Bucket = "sellable"
    default_disposition: Literal["resellable", "damaged", "quarantine"] = "resellable"


class SourceMapping:
    """A checked mapping, lookups ready: codes to our ids, units to eaches, text to values."""

    def __init__(self, spec: Mapping_, *, digest: str = "", base_dir: Path | None = None) -> None:
        self.spec = spec
        self.source = spec.source
        self.kind = spec.kind
        self.digest = digest or hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        if spec.kind != "pos" and spec.columns is None:
            raise InvalidSourceConfig(
                f"mapping for {spec.source}: a {spec.kind} file needs columns"
            )
        if spec.kind == "inbound" and spec.columns is not None:
            missing = [name for name in ("po_id", "eta") if getattr(spec.columns, name) is None]
            if missing:
                raise InvalidSourceConfig(
                    f"mapping for {spec.source}: inbound files need columns {', '.join(missing)}"
                )
        self.skus = dict(spec.skus)
        if spec.skus_file is not None:
            path = spec.skus_file if base_dir is None else base_dir / spec.skus_file
            self.skus.update(_read_code_table(path, spec.encoding))
        self.zone = _zone(spec.timestamps.timezone)
        self._timestamps: dict[str, datetime] = {}
        self._upper_units = {unit.upper(): factor for unit, factor in spec.units.items()}

    # ---- lookups; each raises InvalidEvent with a reason a person can act on -------------------

    def sku(self, code: str) -> str:
        code = code.strip()
        if not code:
            raise InvalidEvent("sku: empty")
        found = self.skus.get(code)
        if found is not None:
            return found
        if self.spec.unmapped_skus == "keep":
            return code
        raise InvalidEvent(f"sku: source code {code!r} has no mapping to one of our SKUs")

    def location(self, code: str) -> str:
        code = code.strip()
        if not code:
            raise InvalidEvent("location: empty")
        found = self.spec.locations.get(code)
        if found is not None:
            return found
        if self.spec.unmapped_locations == "keep":
            return code
        raise InvalidEvent(f"location: source code {code!r} has no mapping to one of our locations")

    def factor(self, source_sku: str, unit: str | None) -> int:
        """Eaches per `unit` of `source_sku`: its own pack size first, then the unit table."""
        if unit is None:
            return 1
        unit = unit.strip().upper()
        if not unit:
            return 1
        packs = self.spec.pack_sizes.get(source_sku.strip())
        if packs is not None:
            for name, pack in packs.items():
                if name.upper() == unit:
                    return pack
        factor = self._upper_units.get(unit)
        if factor is None:
            known = ", ".join(sorted(self._upper_units)) or "none"
            raise InvalidEvent(f"unit: {unit!r} has no conversion to eaches (known: {known})")
        return factor

    def quantity(self, text: str, factor: int = 1) -> int:
        """Whole eaches from a number as exported ("12", "-3", "12.000", "1.234,0")."""
        cleaned = text.strip()
        if _PLAIN_INT.match(cleaned):
            value = int(cleaned) * factor
        else:
            if self.spec.decimal_comma:
                cleaned = cleaned.replace(".", "").replace(",", ".")
            try:
                number = Decimal(cleaned) if cleaned.isascii() and "_" not in cleaned else None
            except InvalidOperation:
                number = None
            if number is None or not number.is_finite():
                raise InvalidEvent(f"quantity: {text.strip()!r} is not a number")
            if number.adjusted() > 18:
                raise InvalidEvent(f"quantity: {text.strip()!r} is too large")
            number *= factor
            if number != number.to_integral_value():
                raise InvalidEvent(f"quantity: {text.strip()!r} x {factor} is not a whole number")
            value = int(number)
        if not -MAX_QUANTITY <= value <= MAX_QUANTITY:
            raise InvalidEvent(f"quantity: {text.strip()!r} x {factor} does not fit 64 bits")
        return value

    def timestamp(self, text: str) -> datetime:
        """The UTC time of an exported timestamp; exports repeat them a lot, so they are cached."""
        found = self._timestamps.get(text)
        if found is None:
            found = self._parse_timestamp(text)
            if len(self._timestamps) >= _CACHE_SIZE:
                self._timestamps.clear()
            self._timestamps[text] = found
        return found

    def _parse_timestamp(self, text: str) -> datetime:
        cleaned = text.strip()
        try:
            if self.spec.timestamps.format:
                value = datetime.strptime(cleaned, self.spec.timestamps.format)
            else:
                value = datetime.fromisoformat(cleaned)
        except ValueError:
            expected = self.spec.timestamps.format or "ISO 8601, e.g. 2026-11-23T10:00:00Z"
            raise InvalidEvent(
                f"occurred_at: {cleaned!r} is not a timestamp ({expected})"
            ) from None
        if value.tzinfo is None:
            if self.zone is None:
                raise InvalidEvent(
                    f"occurred_at: {cleaned!r} has no UTC offset and the mapping sets no "
                    "timestamps.timezone"
                )
            value = value.replace(tzinfo=self.zone)
        return value.astimezone(UTC)

    def date(self, text: str) -> date:
        cleaned = text.strip()
        try:
            if self.spec.date_format:
                return datetime.strptime(cleaned, self.spec.date_format).date()
            return date.fromisoformat(cleaned)
        except ValueError:
            expected = self.spec.date_format or "YYYY-MM-DD"
            raise InvalidEvent(f"eta: {cleaned!r} is not a date ({expected})") from None

    def reason(self, code: str | None) -> ReasonCode | None:
        """Our reason (and bucket, sign) for a source reason code; None when nothing is given."""
        if code is None or not code.strip():
            return None
        code = code.strip()
        found = self.spec.reasons.get(code)
        if found is not None:
            return found
        if self.spec.unmapped_reasons == "keep":
            return ReasonCode(reason=code)
        raise InvalidEvent(f"reason: source code {code!r} has no mapping")

    def bucket(self, code: str | None) -> Bucket | None:
        if code is None or not code.strip():
            return None
        code = code.strip()
        found = self.spec.buckets.get(code)
        if found is not None:
            return found
        if code in ("sellable", "damaged", "quarantine"):
            return code  # type: ignore[return-value]
        raise InvalidEvent(f"bucket: source stock type {code!r} has no mapping")


def load_mapping(source: Path | str | Mapping[str, Any]) -> SourceMapping:
    """A SourceMapping from a YAML file path or an already parsed mapping."""
    base_dir: Path | None = None
    if isinstance(source, Mapping):
        data: Any = dict(source)
        text = repr(sorted(data.items()))
    else:
        path = Path(source)
        base_dir = path.parent
        try:
            text = path.read_text(encoding="utf-8")
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as error:
            raise InvalidSourceConfig(f"cannot read mapping file {path}: {error}") from None
    if not isinstance(data, dict):
        raise InvalidSourceConfig(
            "a mapping file must be a YAML mapping (source, kind, columns...)"
        )
    try:
        spec = Mapping_.model_validate(data)
    except ValidationError as error:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        )
        raise InvalidSourceConfig(f"invalid mapping: {details}") from None
    return SourceMapping(spec, digest=hashlib.sha256(text.encode()).hexdigest(), base_dir=base_dir)


def _zone(name: str | None) -> tzinfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSourceConfig(f"timestamps.timezone: unknown time zone {name!r}") from None


def _read_code_table(path: Path, encoding: str) -> dict[str, str]:
    try:
        with path.open(encoding=encoding, newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InvalidSourceConfig(f"cannot read SKU table {path}: {error}") from None
    table: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InvalidSourceConfig(f"{path} line {number}: expected two non-empty columns")
        table[row[0].strip()] = row[1].strip()
    return table
