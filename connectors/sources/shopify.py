"""Shopify order webhooks (REST payload shape) as SPEC §2 events, verified by Shopify's HMAC scheme.

Guarantee: the events of a delivery are a pure function of its payload, with ids built from
Shopify's own ids (order, refund, refund line), so a replayed or duplicated delivery yields the
same events and the stream core applies them once. A delivery maps all-or-nothing: one bad part
dead-letters the whole payload, and re-driving it after a fix produces every event.

What is mapped (topic header `X-Shopify-Topic`):

- `orders/create` -> `order-created`: `order_id` = the order's numeric `id`, `channel` = the
  source's channel, one line per `line_items[]` entry with a SKU, `line_id` = the line item's
  `id`. A SKU that is a catalog listing of the channel (a pack, a bundle) is expanded to its
  components (`line_id` `<id>:<sku>` for bundles). Lines get a `location` only when the order
  carries a mapped `location_id` (Shopify POS orders); web orders are sourced by the core.
  A `note_attributes` entry named `reservation_id` confirms that checkout hold.
- `orders/cancelled` -> `order-cancelled` for the whole order, at `cancelled_at`.
- `refunds/create` -> per refund line by `restock_type`: `return` -> `return-received`
  (resellable, at the mapped `location_id`, else the source's `return_location`); `cancel` (an
  unfulfilled line restocked) -> one `order-cancelled` with those lines and quantities.

What is ignored (answered 200, counted as ignored): other topics; refund lines with
`no_restock` or `legacy_restock` (no stock movement we can place); line items without a SKU
(custom items, tips, gift cards); refunds that restock nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from connectors.sources.base import event_id
from streams.core.catalog import Catalog
from streams.core.models import Event, parse_event
from streams.errors import InvalidEvent

HMAC_HEADER = "X-Shopify-Hmac-Sha256"
TOPIC_HEADER = "X-Shopify-Topic"
SHOP_HEADER = "X-Shopify-Shop-Domain"
WEBHOOK_ID_HEADER = "X-Shopify-Webhook-Id"
MAPPED_TOPICS = ("orders/create", "orders/cancelled", "refunds/create")

Components = Sequence[tuple[str, int]]


def sign(secret: str, body: bytes) -> str:
    """Shopify's `X-Shopify-Hmac-Sha256`: base64 of HMAC-SHA256 over the raw body."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """True when `header` signs `body` with `secret`; compared in constant time."""
    if not header:
        return False
    given = header.strip().encode("utf-8", "surrogateescape")  # the bytes as sent, any
    return hmac.compare_digest(sign(secret, body).encode(), given)


class ShopifySourceConfig(BaseModel):
    """One shop's webhook source: where its refunds restock and which channel its orders are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    kind: str = "shopify"
    channel: str = Field(min_length=1)
    shop_domain: str | None = None  # when set, deliveries for another shop are refused
    locations: dict[str, str] = Field(default_factory=dict)  # Shopify location id -> ours
    return_location: str | None = None  # for restocks without a (mapped) location


@dataclass(frozen=True)
class Translation:
    """The events of one delivery, or why it maps to nothing."""

    events: list[Event] = field(default_factory=list)
    ignored: str | None = None


class ShopifyAdapter:
    """Maps one shop's order webhooks to events; raises InvalidEvent with a reason otherwise."""

    def __init__(
        self, config: ShopifySourceConfig, listings: Mapping[str, Components] | None = None
    ) -> None:
        self.config = config
        self.source = config.source
        self.listings = dict(listings or {})

    @classmethod
    def for_catalog(cls, config: ShopifySourceConfig, catalog: Catalog | None) -> ShopifyAdapter:
        listings: dict[str, Components] = {}
        if catalog is not None:
            for listing in catalog.listings:
                if listing.channel == config.channel:
                    listings[listing.channel_sku] = [
                        (c.sku, c.quantity) for c in listing.components
                    ]
        return cls(config, listings)

    def translate(self, topic: str | None, payload: Any) -> Translation:
        if not topic:
            raise InvalidEvent(f"{TOPIC_HEADER}: header is missing")
        if topic not in MAPPED_TOPICS:
            return Translation(ignored=f"topic {topic} is not mapped to inventory events")
        if not isinstance(payload, dict):
            raise InvalidEvent(f"{topic}: the payload must be a JSON object")
        if topic == "orders/create":
            return self._created(payload)
        if topic == "orders/cancelled":
            return self._cancelled(payload)
        return self._refund(payload)

    # ---- topics ----

    def _created(self, order: dict[str, Any]) -> Translation:
        order_id = _ident(order, "id")
        location = self._location(order.get("location_id"), required=False)
        lines: list[dict[str, Any]] = []
        for index, item in enumerate(_list(order, "line_items")):
            where = f"line_items[{index}]"
            if not isinstance(item, dict):
                raise InvalidEvent(f"{where}: must be an object")
            sku = _sku(item)
            if sku is None or item.get("gift_card") is True:
                continue
            quantity = _count(item, "quantity", where)
            if quantity == 0:
                continue  # removed by an edit before the webhook was sent
            line_id = _ident(item, "id", where)
            for part_id, part_sku, part_quantity in self._expand(line_id, sku, quantity):
                line = {"line_id": part_id, "sku": part_sku, "quantity": part_quantity}
                if location is not None:
                    line["location"] = location
                lines.append(line)
        if not lines:
            return Translation(ignored=f"order {order_id} has no line items with a SKU")
        event = parse_event(
            {
                "type": "order-created",
                "event_id": event_id(self.source, "order", order_id, "created"),
                "occurred_at": _timestamp(order, "created_at"),
                "source": self.source,
                "order_id": order_id,
                "channel": self.config.channel,
                "reservation_id": _note_attribute(order, "reservation_id"),
                "lines": lines,
            }
        )
        return Translation([event])

    def _cancelled(self, order: dict[str, Any]) -> Translation:
        order_id = _ident(order, "id")
        at = order.get("cancelled_at") or order.get("updated_at")
        if at is None:
            raise InvalidEvent("cancelled_at: required field is missing")
        event = parse_event(
            {
                "type": "order-cancelled",
                "event_id": event_id(self.source, "order", order_id, "cancelled"),
                "occurred_at": at,
                "source": self.source,
                "order_id": order_id,
            }
        )
        return Translation([event])

    def _refund(self, refund: dict[str, Any]) -> Translation:
        refund_id = _ident(refund, "id")
        order_id = _ident(refund, "order_id")
        at = refund.get("processed_at") or refund.get("created_at")
        if at is None:
            raise InvalidEvent("created_at: required field is missing")
        events: list[Event] = []
        cancel_lines: list[dict[str, Any]] = []
        for index, item in enumerate(_list(refund, "refund_line_items")):
            where = f"refund_line_items[{index}]"
            if not isinstance(item, dict):
                raise InvalidEvent(f"{where}: must be an object")
            restock = str(item.get("restock_type") or "no_restock").lower()
            if restock not in ("return", "cancel"):
                continue
            line_item = item.get("line_item")
            sku = _sku(line_item) if isinstance(line_item, dict) else None
            if sku is None:
                continue
            quantity = _count(item, "quantity", where)
            if quantity == 0:
                continue
            line_id = _ident(item, "line_item_id", where)
            parts = self._expand(line_id, sku, quantity)
            if restock == "cancel":
                cancel_lines.extend({"line_id": p, "quantity": q} for p, _, q in parts)
                continue
            location = self._location(item.get("location_id"), required=True, where=where)
            item_id = _ident(item, "id", where)
            for _part_id, part_sku, part_quantity in parts:
                suffix = [part_sku] if len(parts) > 1 else []
                events.append(
                    parse_event(
                        {
                            "type": "return-received",
                            "event_id": event_id(
                                self.source, "refund", refund_id, item_id, *suffix
                            ),
                            "occurred_at": at,
                            "source": self.source,
                            "order_id": order_id,
                            "sku": part_sku,
                            "location": location,
                            "quantity": part_quantity,
                            "disposition": "resellable",
                        }
                    )
                )
        if cancel_lines:
            events.append(
                parse_event(
                    {
                        "type": "order-cancelled",
                        "event_id": event_id(self.source, "refund", refund_id, "cancel"),
                        "occurred_at": at,
                        "source": self.source,
                        "order_id": order_id,
                        "lines": _merge(cancel_lines),
                    }
                )
            )
        if not events:
            return Translation(ignored=f"refund {refund_id} restocks nothing")
        return Translation(events)

    # ---- helpers ----

    def _expand(self, line_id: str, sku: str, quantity: int) -> list[tuple[str, str, int]]:
        """(line id, our SKU, units) per component of a listing; a plain SKU is its own part."""
        components = self.listings.get(sku) or [(sku, 1)]
        if len(components) == 1:
            only, per = components[0]
            return [(line_id, only, quantity * per)]
        return [(f"{line_id}:{part}", part, quantity * per) for part, per in components]

    def _location(self, shopify_id: Any, *, required: bool, where: str = "") -> str | None:
        if shopify_id is not None and not isinstance(shopify_id, bool):
            key = str(shopify_id).rsplit("/", 1)[-1]  # numeric id or gid://shopify/Location/<id>
            found = self.config.locations.get(key) or self.config.locations.get(str(shopify_id))
            if found is not None:
                return found
        if not required:
            return None
        if self.config.return_location is not None:
            return self.config.return_location
        prefix = f"{where}." if where else ""
        raise InvalidEvent(
            f"{prefix}location_id: Shopify location {shopify_id!r} is not mapped for source "
            f"{self.source} (add it to locations, or set return_location)"
        )


def _ident(obj: dict[str, Any], name: str, where: str = "") -> str:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        prefix = f"{where}." if where else ""
        shown = "missing" if value is None else f"{value!r} is not an id"
        raise InvalidEvent(f"{prefix}{name}: {shown}")
    return str(value).strip()


def _count(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(f"{where}.{name}: {value!r} is not a whole number of units")
    return value


def _list(obj: dict[str, Any], name: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise InvalidEvent(f"{name}: {'missing' if value is None else 'must be a list'}")
    return value


def _sku(item: dict[str, Any]) -> str | None:
    sku = item.get("sku")
    return sku.strip() if isinstance(sku, str) and sku.strip() else None


def _timestamp(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(f"{name}: required field is missing")
    return value


def _note_attribute(order: dict[str, Any], name: str) -> str | None:
    attributes = order.get("note_attributes")
    if not isinstance(attributes, list):
        return None
    for attribute in attributes:
        if isinstance(attribute, dict) and attribute.get("name") == name:
            value = attribute.get("value")
            return str(value) if isinstance(value, str | int) and str(value) else None
    return None


def _merge(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One cancel line per line id (a refund may list the same line item twice)."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line["line_id"]] = merged.get(line["line_id"], 0) + line["quantity"]
    return [{"line_id": line_id, "quantity": quantity} for line_id, quantity in merged.items()]
