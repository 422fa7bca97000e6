"""Typed events and output records of SPEC §2 and §5.

Input is validated here once, with reasons a person can read.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from streams.errors import InvalidEvent

_M = TypeVar("_M", bound=BaseModel)

DEFAULT_TTL_SECONDS = 900
MAX_TTL_SECONDS = 14400
SYSTEM_SOURCE = "inventory-streams"

Bucket = Literal["sellable", "damaged", "quarantine"]
Disposition = Literal["resellable", "damaged", "quarantine"]
NonEmpty = Annotated[str, Field(min_length=1)]
MAX_QUANTITY = 2**63 - 1  # the records carry quantities as Avro longs
PositiveQty = Annotated[int, Field(gt=0, le=MAX_QUANTITY, strict=True)]


def utc(value: datetime) -> datetime:
    """Normalise an aware timestamp to UTC; naive ones are refused (RFC 3339 needs an offset)."""
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (RFC 3339, e.g. 2026-11-23T10:00:00Z)")
    return value.astimezone(UTC)


def format_ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class _Event(_Model):
    event_id: NonEmpty
    occurred_at: datetime
    source: NonEmpty

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return utc(value)


class StockAdjusted(_Event):
    type: Literal["stock-adjusted"] = "stock-adjusted"
    sku: NonEmpty
    location: NonEmpty
    mode: Literal["delta", "count"]
    quantity: Annotated[int, Field(strict=True)]
    bucket: Bucket = "sellable"
    reason: str | None = None
    po_id: str | None = None

    @field_validator("bucket", mode="before")
    @classmethod
    def _default_bucket(cls, value: Any) -> Any:
        return "sellable" if value is None else value

    @model_validator(mode="after")
    def _quantity_fits_mode(self) -> StockAdjusted:
        if self.mode == "count" and self.quantity < 0:
            raise ValueError(f"a count cannot be negative (got {self.quantity})")
        if self.mode == "delta" and self.quantity == 0:
            raise ValueError("a delta of 0 changes nothing; quantity must not be 0")
        return self


class OrderLine(_Model):
    line_id: NonEmpty
    sku: NonEmpty
    quantity: PositiveQty
    location: str | None = None


class OrderCreated(_Event):
    type: Literal["order-created"] = "order-created"
    order_id: NonEmpty
    channel: NonEmpty
    reservation_id: str | None = None
    lines: Annotated[list[OrderLine], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_lines(self) -> OrderCreated:
        ids = [line.line_id for line in self.lines]
        if len(set(ids)) != len(ids):
            raise ValueError("line_id values must be unique within an order")
        return self


class CancelLine(_Model):
    line_id: NonEmpty
    quantity: PositiveQty


class OrderCancelled(_Event):
    type: Literal["order-cancelled"] = "order-cancelled"
    order_id: NonEmpty
    lines: list[CancelLine] | None = None


class PickConfirmed(_Event):
    type: Literal["pick-confirmed"] = "pick-confirmed"
    order_id: str | None = None
    line_id: str | None = None
    sku: NonEmpty
    location: NonEmpty
    quantity: PositiveQty


class ReturnReceived(_Event):
    type: Literal["return-received"] = "return-received"
    order_id: str | None = None
    sku: NonEmpty
    location: NonEmpty
    quantity: PositiveQty
    disposition: Disposition


class InboundScheduled(_Event):
    type: Literal["inbound-scheduled"] = "inbound-scheduled"
    po_id: NonEmpty
    sku: NonEmpty
    location: NonEmpty
    quantity: PositiveQty
    eta: date


class ReservationLine(_Model):
    sku: str | None = None
    channel_sku: str | None = None
    quantity: PositiveQty
    location: str | None = None

    @model_validator(mode="after")
    def _one_item(self) -> ReservationLine:
        if bool(self.sku) == bool(self.channel_sku):
            raise ValueError("each line needs exactly one of sku or channel_sku")
        return self


class ReservationRequested(_Event):
    type: Literal["reservation-requested"] = "reservation-requested"
    reservation_id: NonEmpty
    channel: NonEmpty
    ttl_seconds: Annotated[int, Field(gt=0, le=MAX_TTL_SECONDS, strict=True)] | None = None
    lines: Annotated[list[ReservationLine], Field(min_length=1)]

    @property
    def ttl(self) -> int:
        return self.ttl_seconds or DEFAULT_TTL_SECONDS


class ReservationReleased(_Event):
    type: Literal["reservation-released"] = "reservation-released"
    reservation_id: NonEmpty


class ReservationExpired(_Event):
    type: Literal["reservation-expired"] = "reservation-expired"
    reservation_id: NonEmpty


Event = Annotated[
    StockAdjusted
    | OrderCreated
    | OrderCancelled
    | PickConfirmed
    | ReturnReceived
    | InboundScheduled
    | ReservationRequested
    | ReservationReleased
    | ReservationExpired,
    Field(discriminator="type"),
]

EVENT_TYPES: dict[str, type[_Event]] = {
    "stock-adjusted": StockAdjusted,
    "order-created": OrderCreated,
    "order-cancelled": OrderCancelled,
    "pick-confirmed": PickConfirmed,
    "return-received": ReturnReceived,
    "inbound-scheduled": InboundScheduled,
    "reservation-requested": ReservationRequested,
    "reservation-released": ReservationReleased,
    "reservation-expired": ReservationExpired,
}

# the events about one SKU at one location: each goes to its SKU's stage as it is
SingleSkuEvent = StockAdjusted | PickConfirmed | ReturnReceived | InboundScheduled
SINGLE_SKU_EVENTS: tuple[type[_Event], ...] = get_args(SingleSkuEvent)

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if p not in EVENT_TYPES)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_event(data: Any) -> Event:
    """A validated event from a decoded JSON/Avro mapping, or InvalidEvent with a clear reason."""
    if not isinstance(data, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind is None:
        raise InvalidEvent("type: required field is missing")
    if not isinstance(kind, str):
        raise InvalidEvent(f"type: must be a string, got {type(kind).__name__}")
    if kind not in EVENT_TYPES:
        known = ", ".join(EVENT_TYPES)
        raise InvalidEvent(f"type: unknown event type {kind!r} (known: {known})")
    try:
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as error:
        ident = data.get("event_id")
        prefix = f"{kind} {ident}: " if isinstance(ident, str) else f"{kind}: "
        raise InvalidEvent(prefix + _describe(error)) from None


def parse_event_json(raw: bytes | str) -> Event:
    """Parse one JSON line; malformed JSON is an InvalidEvent, never another kind of exception."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidEvent(f"malformed JSON: {error}") from None
    except RecursionError:
        raise InvalidEvent("malformed JSON: nested too deeply") from None
    return parse_event(data)


def event_to_json(event: _Event) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude_none=False)


# ---- output records (SPEC §5) -------------------------------------------------------------


# the slots every pydantic model instance carries, set through their descriptors directly
_new_object = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted(cls: type[_M], **values: Any) -> _M:
    """Build a record from values the core computed itself: no validation, a fraction of the cost.

    Pydantic's own `model_construct` spends most of its time on defaults and fields-set bookkeeping
    that records built from complete, typed values do not need.
    """
    obj = _new_object(cls)
    _set_dict(obj, values)
    _set_fields_set(obj, set(values))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


class Position(_Model):
    sku: str
    location: str
    on_hand: int
    reserved: int
    committed: int
    damaged: int
    quarantine: int
    incoming: int
    safety_stock: int
    location_ats: int
    version: int
    as_of: datetime
    cause_event_id: str


class Availability(_Model):
    channel: str
    channel_sku: str
    available: int
    backorderable: int
    restock_date: date | None
    version: int
    as_of: datetime
    cause_event_id: str


class Alert(_Model):
    alert_id: str
    type: str  # oversell | negative-on-hand | drift | stale-count | ...
    sku: str
    location: str | None = None
    channel: str | None = None
    quantity: int | None = None
    ids: list[str] = Field(default_factory=list)  # event, order, reservation ids involved
    message: str
    occurred_at: datetime


class DeadLetter(_Model):
    original: bytes
    source: str
    reason: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    rejected_at: datetime
